#include "trainers/distill.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <tuple>

#include "common/checksum.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "data/draft_vocab.h"
#include "data/shards.h"
#include "evaluators/metrics.h"
#include "evaluators/stats.h"
#include "io/safetensors.h"
#include "model/generation.h"
#include "train/losses.h"
#include "train/runtime.h"
#include "train/sampler.h"
#include "trainers/train_loop.h"

namespace draftalign::train {
namespace {

using torch::Tensor;
namespace F = torch::nn::functional;

constexpr int64_t kMaxGamma = 8;  // tau(g) is logged for g = 1 .. kMaxGamma

// A micro-batch: inputs, targets and the response positions (where target token j + 1 belongs to the response).
struct PairBatch {
  Tensor x, y;                     // [B, T]
  Tensor positions;                // [N] flat indices into B * T of the response positions
  Tensor ce_rows;                  // [N'] the rows of `positions` from target-written responses; undefined = all N
  Tensor topk_ids, topk_logprobs;  // [N, k] the stored teacher of each response position, offline teacher only
};

PairBatch make_batch(const std::vector<const Pair*>& recs, int64_t seq_len, int64_t pad, bool offline,
                     torch::Device device) {
  int64_t len = 0;
  for (const Pair* p : recs) len = std::max<int64_t>(len, p->tokens.size());
  len = std::min(len, seq_len + 1);
  const int64_t b = static_cast<int64_t>(recs.size()), t = len - 1;
  Tensor x = torch::full({b, t}, pad, torch::kInt64), y = torch::full({b, t}, pad, torch::kInt64);
  std::vector<int64_t> positions, ce_rows;
  bool any_on_policy = false;
  std::vector<Tensor> ids, lps;
  auto* xp = x.data_ptr<int64_t>();
  auto* yp = y.data_ptr<int64_t>();
  for (int64_t r = 0; r < b; ++r) {
    const Pair& p = *recs[r];
    const int64_t n = std::min<int64_t>(p.tokens.size(), len);
    for (int64_t j = 0; j + 1 < n; ++j) {
      xp[r * t + j] = p.tokens[j], yp[r * t + j] = p.tokens[j + 1];
      if (j + 1 < p.prompt_len) continue;
      if (!p.on_policy) ce_rows.push_back(static_cast<int64_t>(positions.size()));
      positions.push_back(r * t + j);
    }
    any_on_policy = any_on_policy || p.on_policy;
    const int64_t kept = std::max<int64_t>(0, n - p.prompt_len);  // response positions of this record in the batch
    if (offline && kept > 0) ids.push_back(p.topk_ids.narrow(0, 0, kept)), lps.push_back(p.topk_logprobs.narrow(0, 0, kept));
  }
  PairBatch out;
  out.x = x.to(device), out.y = y.to(device);
  out.positions = torch::tensor(positions, torch::kInt64).to(device);
  if (any_on_policy) out.ce_rows = torch::tensor(ce_rows, torch::kInt64).to(device);
  if (offline && !ids.empty()) out.topk_ids = torch::cat(ids).to(device), out.topk_logprobs = torch::cat(lps).to(device);
  return out;
}

// The final hidden states of the response positions only, [N, hidden]: the decoder runs over the whole batch, but
// only the N response rows reach the vocabulary-wide output head (prompt and padding rows never do).
Tensor response_hidden(model::Llama& m, const Tensor& x, const Tensor& positions) {
  const Tensor h = m.hidden(x);
  return h.reshape({-1, h.size(-1)}).index_select(0, positions);
}

// Their logits, [N, V] (validation; training fuses the head with the loss).
Tensor response_logits(model::Llama& m, const Tensor& x, const Tensor& positions) {
  return m.logits(response_hidden(m, x, positions));
}

// A drafter with a draft vocabulary chooses it again from the target's answers it distils on (their response tokens,
// the training split only): most frequent first, the stop tokens always, and the pretraining corpus's choice filling
// what the answers leave (data/draft_vocab.h rank_draft_tokens). Same data, same choice: exact on resume.
void choose_draft_vocab(model::Llama& student, const std::vector<const Pair*>& train_set) {
  const int64_t V = student.config().vocab_size;
  data::TokenCounter counter(V);
  for (const Pair* p : train_set)
    counter.add(p->tokens.data() + p->prompt_len, static_cast<int64_t>(p->tokens.size()) - p->prompt_len,
                "distill.data_dir");
  data::DraftVocab before, after;
  before.target_vocab = after.target_vocab = V;
  before.ids = student.config().draft_token_ids;
  after.ids = data::rank_draft_tokens(counter.counts(), student.head_rows(), student.config().eos_token_ids, before.ids);
  student.set_draft_vocab(after.ids);
  log::info("distill: draft vocabulary of ", after.size(), " tokens chosen on the ", counter.total(),
            " training answer tokens: it covers ", 100.0 * after.coverage(counter.counts()), "% of them (the "
            "pretraining corpus's choice ", 100.0 * before.coverage(counter.counts()), "%)");
}

}  // namespace

// Every record of a complete generate output directory, by request id. Errors name the file and the record.
std::vector<Pair> load_pairs(const stdfs::path& dir, bool need_topk, int64_t vocab) {
  DA_CHECK(stdfs::is_directory(dir), dir.string(), ": not a directory (distill.data_dir; run `draftalign generate`)");
  // The shards the finished run listed, no more and no fewer (a shard added or removed since is an error).
  const data::GenerateManifest manifest = data::read_generate_manifest(dir);
  const std::vector<stdfs::path> files = data::shard_files(dir);
  DA_CHECK(files.size() == manifest.shards.size(), dir.string(), ": ", files.size(),
           " shard files but manifest.json "
           "lists ",
           manifest.shards.size(), " (run `draftalign generate` again on the directory)");
  std::vector<Pair> out;
  int64_t records = 0;
  for (size_t k = 0; k < files.size(); ++k) {
    const stdfs::path& file = files[k];
    DA_CHECK(file.filename() == manifest.shards[k].file, file.string(), ": not listed in ",
             (dir / data::kManifestFile).string(), " (it lists ", manifest.shards[k].file, " there)");
    DA_CHECK(file_checksum_hex(file, manifest.checksum_algorithm) == manifest.shards[k].checksum, file.string(),
             ": checksum does not match ", (dir / data::kManifestFile).string(),
             " (the file changed since generate wrote "
             "it: run `draftalign generate` again on a fresh directory)");
    const auto f = io::SafetensorsFile::open(file);
    for (const char* name : {"tokens", "offsets", "prompt_lens", "request_ids"})
      DA_CHECK(f.contains(name), file.string(), ": no tensor '", name, "' (not a generate shard)");
    if (need_topk)
      DA_CHECK(f.contains("topk_ids") && f.contains("topk_logprobs"), file.string(),
               ": no top-k log-probs; distill.teacher = offline needs them: run generate with "
               "generate.topk_logprobs = k > 0, or use distill.teacher = online");
    const Tensor tokens = f.get("tokens").to(torch::kInt64), offsets = f.get("offsets").to(torch::kInt64);
    const Tensor plen = f.get("prompt_lens").to(torch::kInt64), req = f.get("request_ids").to(torch::kInt64);
    const int64_t n = req.size(0);
    records += n;
    DA_CHECK(offsets.dim() == 1 && offsets.size(0) == n + 1 && plen.size(0) == n &&
                 offsets[n].item<int64_t>() == tokens.size(0) && offsets[0].item<int64_t>() == 0,
             file.string(), ": inconsistent record counts or offsets");
    if (tokens.numel() > 0)
      DA_CHECK(tokens.min().item<int64_t>() >= 0 && tokens.max().item<int64_t>() < vocab, file.string(),
               ": a token id outside the drafter's vocabulary of ", vocab);
    Tensor ids, lps;
    int64_t row = 0;
    if (need_topk) {
      ids = f.get("topk_ids").to(torch::kInt64), lps = f.get("topk_logprobs").to(torch::kFloat32);
      DA_CHECK(ids.dim() == 2 && ids.sizes() == lps.sizes(), file.string(), ": topk_ids and topk_logprobs differ in shape");
      DA_CHECK(ids.numel() == 0 || (ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < vocab),
               file.string(), ": a top-k token id outside the vocabulary of ", vocab);
      DA_CHECK(ids.size(1) >= 1 && ids.size(1) <= vocab, file.string(), ": ", ids.size(1), " top-k columns for a "
               "vocabulary of ", vocab);
      DA_CHECK(lps.numel() == 0 || (lps.isfinite().all().item<bool>() && lps.max().item<float>() <= 1e-3f),
               file.string(), ": topk_logprobs holds a value that is not a finite log-probability (<= 0)");
    }
    const auto* o = offsets.data_ptr<int64_t>();
    const auto* t = tokens.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      Pair p;
      p.request = req[i].item<int64_t>();
      p.prompt_len = plen[i].item<int64_t>();
      DA_CHECK(o[i] <= o[i + 1] && p.prompt_len >= 1 && p.prompt_len <= o[i + 1] - o[i], file.string(), ": record ", i,
               " has bad offsets or prompt length");
      p.tokens.assign(t + o[i], t + o[i + 1]);
      const int64_t response = o[i + 1] - o[i] - p.prompt_len;
      if (need_topk) {
        DA_CHECK(row + response <= ids.size(0), file.string(), ": record ", i, " has no top-k rows left");
        p.topk_ids = ids.narrow(0, row, response), p.topk_logprobs = lps.narrow(0, row, response);
        row += response;
      }
      if (response > 0) out.push_back(std::move(p));
    }
    if (need_topk) DA_CHECK(row == ids.size(0), file.string(), ": ", ids.size(0) - row, " top-k rows left over");
  }
  DA_CHECK(records == manifest.records, dir.string(), ": the shards hold ", records, " records but manifest.json says ",
           manifest.records);
  std::sort(out.begin(), out.end(), [](const Pair& a, const Pair& b) { return a.request < b.request; });
  return out;
}

std::pair<std::vector<const Pair*>, std::vector<const Pair*>> split_pairs(const std::vector<Pair>& pairs,
                                                                          const config::DistillSection& d,
                                                                          const config::TrainSection& t) {
  std::vector<std::vector<int64_t>> prompts;
  for (const Pair& p : pairs) prompts.emplace_back(p.tokens.begin(), p.tokens.begin() + p.prompt_len);
  const std::vector<bool> held_out = held_out_by_prompt(prompts, d.val_fraction);
  std::vector<const Pair*> train_set, val_set;
  for (size_t i = 0; i < pairs.size(); ++i) (held_out[i] ? val_set : train_set).push_back(&pairs[i]);
  DA_CHECK(!train_set.empty(), d.data_dir, ": no training records (", pairs.size(), " records with a response, ",
           val_set.size(), " held out)");
  if (val_set.size() > static_cast<size_t>(t.eval_batches * t.micro_batch_size))
    val_set.resize(static_cast<size_t>(t.eval_batches * t.micro_batch_size));
  return {train_set, val_set};
}

bool on_policy_sequence(int64_t g, double fraction) {
  return std::floor(static_cast<double>(g + 1) * fraction) > std::floor(static_cast<double>(g) * fraction);
}

std::vector<std::vector<int64_t>> sample_responses(model::Llama& student, const std::vector<std::vector<int64_t>>& prompts,
                                                   const std::vector<int64_t>& max_new,
                                                   const std::vector<uint64_t>& seeds, double temperature) {
  DA_CHECK(prompts.size() == max_new.size() && prompts.size() == seeds.size(),
           "sample_responses: prompts, max_new and seeds differ in length");
  if (prompts.empty()) return {};
  model::SamplingParams sp;
  sp.temperature = temperature;
  sp.max_new_tokens = *std::max_element(max_new.begin(), max_new.end());
  sp.stop_ids = student.config().eos_token_ids;
  std::vector<model::Request> requests;
  for (size_t i = 0; i < prompts.size(); ++i) requests.push_back({static_cast<int64_t>(i), prompts[i], seeds[i]});
  const bool was_training = student.is_training();
  student.eval();
  std::vector<model::Completion> done =
      model::Generator(student, sp, static_cast<int64_t>(prompts.size())).run(requests);
  student.train(was_training);
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < done.size(); ++i) {
    std::vector<int64_t>& r = done[i].tokens;
    // A request's own limit cuts its sample: a prefix of a longer sample is a sample of the shorter length.
    if (static_cast<int64_t>(r.size()) > max_new[i]) r.resize(static_cast<size_t>(max_new[i]));
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<bool> held_out_by_prompt(const std::vector<std::vector<int64_t>>& prompts, double val_fraction) {
  const int64_t every = val_fraction > 0 ? std::max<int64_t>(2, std::llround(1.0 / val_fraction)) : 0;
  std::map<std::vector<int64_t>, int64_t> order;  // prompt -> order of first appearance
  std::vector<bool> out;
  for (const auto& p : prompts) {
    const int64_t k = order.emplace(p, static_cast<int64_t>(order.size())).first->second;
    out.push_back(every > 0 && k % every == every - 1);
  }
  return out;
}

namespace {

// The held-out pass's sums (held_out_sums), one named slot each; then, for held-out record i, its alpha at
// kValSlots + 2 i and its response tokens at kValSlots + 2 i + 1 (for the interval over its prompts).
enum ValSlot : int64_t {
  kValAlpha,         // alpha against the real target, summed over response tokens
  kValTokens,        // response tokens
  kValCe,            // the student's cross-entropy on the target's tokens inside its head
  kValAgree,         // greedy agreement with the target
  kValAlphaOffline,  // alpha over the stored top-k + rest bins (offline teacher only)
  kValCeTokens,      // the tokens kValCe is over (with a draft vocabulary, those inside it)
  kValSlots
};

// The stage as torchtune's KD recipe reads: set-up (the models, then the data), the loss of a micro-batch, and the
// held-out validation; run_training (train_loop.h) runs the steps, checkpoints and exact resume.
class DistillRecipe {
 public:
  explicit DistillRecipe(const config::Config& cfg)
      : cfg_(cfg),
        d_(cfg_.distill),
        t_(d_.train),
        rt_(make_runtime(cfg_.run, t_)),
        offline_(d_.teacher == config::Teacher::kOffline),
        kd_(KdOptions::of(d_)) {
    DA_CHECK(!offline_ || d_.temperature == 1.0, "distill.temperature = ", d_.temperature,
             " with distill.teacher = offline: the stored top-k log-probs are the target's at temperature 1, so an "
             "offline run needs distill.temperature = 1 (or distill.teacher = online)");
    load_models();
    load_data();
  }

  void train() {
    Recipe recipe;
    recipe.name = "distill";
    recipe.validate_at_start = true;
    recipe.micro_batch = [this](const std::vector<int64_t>& sequences) { return micro_batch(sequences); };
    if (!val_set_.empty()) recipe.validate = [this](int64_t step) { return validate(step); };
    run_training(cfg_, t_, config::distill_run_dir(d_), d_.student, rt_, *student_, recipe);
  }

 private:
  // The student in fp32 master weights; the target frozen in target.dtype (bf16 on CUDA by default): the teacher when
  // online, and always the reference of validation (an offline run scores its held-out records against the real
  // target too, not against the stored top-k).
  void load_models() {
    student_ = model::load_llama(d_.student, rt_.device, torch::kFloat32);
    const int64_t vocab = student_->config().vocab_size;
    target_ = train::load_frozen_target(cfg_, rt_.device);
    DA_CHECK(target_->config().vocab_size == vocab, "the drafter ", d_.student, " has a vocabulary of ", vocab,
             " tokens, the target ", cfg_.target.dir, " one of ", target_->config().vocab_size,
             ": distillation needs the same vocabulary");
    DA_CHECK(t_.seq_len < target_->config().max_position_embeddings, "distill.train.seq_len (", t_.seq_len,
             ") must be below the target's max_position_embeddings (", target_->config().max_position_embeddings, ")");
    DA_CHECK(t_.seq_len < student_->config().max_position_embeddings, "distill.train.seq_len (", t_.seq_len,
             ") must be below the drafter's max_position_embeddings (", student_->config().max_position_embeddings,
             ")");
    pad_ = student_->config().eos_token_ids.empty() ? 0 : student_->config().eos_token_ids[0];
  }

  // The records, held out by prompt (every round(1 / val_fraction)-th distinct prompt, in order of first appearance,
  // with all its responses), so that no prompt has answers on both sides; the rest in a seeded order per epoch.
  void load_data() {
    pairs_ = load_pairs(d_.data_dir, offline_, student_->config().vocab_size);
    std::tie(train_set_, val_set_) = split_pairs(pairs_, d_, t_);
    std::map<std::vector<int64_t>, size_t> index;  // the held-out records' prompts: the unit of alpha's interval
    for (const Pair* p : val_set_) {
      const auto [it, fresh] =
          index.emplace(std::vector<int64_t>(p->tokens.begin(), p->tokens.begin() + p->prompt_len), val_clusters_);
      val_clusters_ += fresh;
      val_cluster_.push_back(it->second);
    }
    if (student_->has_draft_vocab()) choose_draft_vocab(*student_, train_set_);
    order_ =
        std::make_unique<EpochOrder>(static_cast<int64_t>(train_set_.size()), static_cast<uint64_t>(cfg_.run.seed));
    log::info("distill: ", config::distill_run_name(d_), " from ", d_.student, " (", student_->num_params(),
              " parameters) against ", offline_ ? "the stored top-k log-probs" : cfg_.target.dir, "; ",
              train_set_.size(), " training and ", val_set_.size(), " held-out records; kd_weight ", d_.kd_weight,
              ", ce_weight ", d_.ce_weight, ", temperature ", d_.temperature);
  }

  // The loss of one micro-batch of the global sequences `sequences` (train/sampler.h).
  MicroBatch micro_batch(const std::vector<int64_t>& sequences) {
    std::vector<const Pair*> recs;
    for (const int64_t g : sequences) recs.push_back(train_set_[order_->at(g)]);
    std::vector<Pair> sampled;
    if (d_.on_policy_fraction > 0) with_on_policy(recs, sequences, sampled);
    const PairBatch b = make_batch(recs, t_.seq_len, pad_, offline_, rt_.device);
    // Every record's prompt fills the whole train.seq_len window: nothing to learn from (run_training counts it).
    if (b.positions.size(0) == 0) return MicroBatch::empty({"kd", "ce", "alpha"});
    const DistillRows rows = objective_rows(b);
    AutocastGuard guard(rt_.bf16_autocast);  // the heads' products in bf16, as the student's forward
    const DistillTerms o = distill_objective(rows, kd_, d_.loss, d_.kd_weight, d_.ce_weight);
    const double n = static_cast<double>(b.positions.size(0));
    return MicroBatch{o.loss, b.positions.size(0), {{"kd", o.kd}, {"ce", o.ce}, {"alpha", o.alpha_sum / n}}};
  }

  // The rows of a training micro-batch's objective: the student's and (online) the target's final hidden states at
  // the response positions with their heads, or (offline) the stored top-k; distill_objective fuses the heads with the
  // loss, so neither model's [N, V] logits exist.
  DistillRows objective_rows(const PairBatch& b) {
    DistillRows r;
    {
      AutocastGuard guard(rt_.bf16_autocast);
      r.student_hidden = response_hidden(*student_, b.x, b.positions);
    }
    r.student_head = student_->head_weight();
    if (offline_) {
      r.topk_ids = student_->head_row_of(b.topk_ids), r.topk_logprobs = b.topk_logprobs;  // as head rows
      r.topk_outside = student_->has_draft_vocab();
    } else {
      torch::NoGradGuard no_grad;
      r.teacher_hidden = response_hidden(*target_, b.x, b.positions);
      r.teacher_head = model::head_rows_for(*target_, *student_);
    }
    // CE only on the target's own responses: on the student's samples it would reinforce whatever it drew. With a
    // draft vocabulary, as rows of its head (-1, not trained, outside it).
    r.targets = student_->head_row_of(b.y.reshape({-1}).index_select(0, b.positions));
    if (b.ce_rows.defined()) {
      const Tensor keep = torch::zeros_like(r.targets, torch::kBool).index_fill_(0, b.ce_rows, true);
      r.targets = torch::where(keep, r.targets, torch::full_like(r.targets, -100));
    }
    return r;
  }

  // On-policy sequences (distill.on_policy_fraction): the record's prompt with a response the student samples now,
  // as long as the target's (within the train.seq_len window), seeded by the run seed and the global sequence index,
  // so a resumed run samples the same tokens from the same restored weights. `sampled` holds the new records.
  void with_on_policy(std::vector<const Pair*>& recs, const std::vector<int64_t>& sequences,
                      std::vector<Pair>& sampled) {
    std::vector<size_t> which;
    std::vector<std::vector<int64_t>> prompts;
    std::vector<int64_t> room;
    std::vector<uint64_t> seeds;
    for (size_t i = 0; i < recs.size(); ++i) {
      const int64_t g = sequences[i];
      const Pair& p = *recs[i];
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(p.tokens.size()), t_.seq_len + 1) - p.prompt_len;
      if (!on_policy_sequence(g, d_.on_policy_fraction) || n <= 0) continue;
      which.push_back(i);
      prompts.emplace_back(p.tokens.begin(), p.tokens.begin() + p.prompt_len);
      room.push_back(n);
      seeds.push_back(
          model::splitmix64(static_cast<uint64_t>(cfg_.run.seed) ^ model::splitmix64(static_cast<uint64_t>(g))));
    }
    const auto responses = sample_responses(*student_, prompts, room, seeds, d_.on_policy_temperature);
    sampled.reserve(which.size());
    for (size_t k = 0; k < which.size(); ++k) {
      Pair p = *recs[which[k]];
      p.tokens = prompts[k];
      p.tokens.insert(p.tokens.end(), responses[k].begin(), responses[k].end());
      p.on_policy = true;
      sampled.push_back(std::move(p));
      recs[which[k]] = &sampled.back();
    }
  }

  // Adds the held-out records `mine` (indices into val_set_) into `sums` (ValSlot), the real target as reference.
  void add_held_out(const std::vector<int64_t>& mine, Tensor& sums) {
    std::vector<const Pair*> recs;
    for (const int64_t i : mine) recs.push_back(val_set_[i]);
    const PairBatch b = make_batch(recs, t_.seq_len, pad_, offline_, rt_.device);
    if (b.positions.size(0) == 0) return;
    Tensor s, p;
    {
      AutocastGuard guard(rt_.bf16_autocast);
      s = response_logits(*student_, b.x, b.positions);
    }
    {
      torch::NoGradGuard no_grad;
      p = response_logits(*target_, b.x, b.positions);
    }
    const Tensor y = b.y.reshape({-1}).index_select(0, b.positions);
    const Tensor a = acceptance(s, p, d_.temperature).to(torch::kFloat64);  // [N]
    sums[kValAlpha] += a.sum();
    sums[kValTokens] += static_cast<double>(b.positions.size(0));
    // Per record: the row of each position (positions are flat indices into B x T), scattered to its slots.
    const Tensor slot = torch::tensor(mine, torch::kInt64).to(rt_.device).mul(2).add(kValSlots);
    const Tensor rows = b.positions.div(b.x.size(1), "floor");
    sums.index_add_(0, slot.index_select(0, rows), a);
    sums.index_add_(0, slot.index_select(0, rows).add(1), torch::ones_like(a));
    // With a draft vocabulary the CE is over the tokens in it; alpha and agreement over all.
    const Tensor in_head = student_->head_row_of(y).ge(0);
    const Tensor y_in = torch::where(in_head, y, torch::full_like(y, -100));  // ignored by cross_entropy
    sums[kValCe] += F::cross_entropy(s.to(torch::kFloat32), y_in, F::CrossEntropyFuncOptions().reduction(torch::kSum))
                        .to(torch::kFloat64);
    sums[kValCeTokens] += in_head.sum().to(torch::kFloat64);
    sums[kValAgree] += s.argmax(-1).eq(p.argmax(-1)).sum().to(torch::kFloat64);
    if (offline_) {
      const TopkBins bins = topk_bins(s, b.topk_ids, b.topk_logprobs);
      sums[kValAlphaOffline] += acceptance(bins.student, bins.teacher, 1.0).sum().to(torch::kFloat64);
    }
  }

  // Held-out alpha against the real target (with its interval over the held-out prompts), greedy agreement, response
  // CE and the i.i.d. tau it predicts, for the record of `step`; every rank calls it.
  nlohmann::json validate(int64_t step) {
    const int64_t n_val = static_cast<int64_t>(val_set_.size());
    const Tensor c =
        held_out_sums(*student_, rt_, n_val, t_.micro_batch_size, kValSlots + 2 * n_val,
                      [this](const std::vector<int64_t>& mine, Tensor& sums) { add_held_out(mine, sums); });
    // The interval of held-out alpha: a bootstrap over the held-out prompts (all responses to one prompt together).
    std::vector<double> alpha_by_prompt(val_clusters_, 0.0), tokens_by_prompt(val_clusters_, 0.0);
    for (int64_t i = 0; i < n_val; ++i) {
      alpha_by_prompt[val_cluster_[i]] += c[kValSlots + 2 * i].item<double>();
      tokens_by_prompt[val_cluster_[i]] += c[kValSlots + 2 * i + 1].item<double>();
    }
    const eval::Interval alpha_ci =
        eval::bootstrap_ratio(alpha_by_prompt, tokens_by_prompt, 2000, static_cast<uint64_t>(cfg_.run.seed) ^ 0xa1);
    const double tokens = std::max(1.0, c[kValTokens].item<double>());
    const double alpha = c[kValAlpha].item<double>() / tokens;
    const double ce = c[kValCe].item<double>() / std::max(1.0, c[kValCeTokens].item<double>());
    const double agree = c[kValAgree].item<double>() / tokens;
    nlohmann::json tau = nlohmann::json::array();
    for (int64_t g = 1; g <= kMaxGamma; ++g) tau.push_back(eval::iid_tokens_per_call(alpha, g));
    log::info("distill: step ", step, " held-out (real target, ", n_val, " records of ", val_clusters_,
              " prompts): alpha ", alpha, " [", alpha_ci.lo, ", ", alpha_ci.hi, "], greedy agreement ", agree,
              ", response CE ", ce, ", i.i.d. tau prediction (1..", kMaxGamma, ") ", tau[0].get<double>(), " .. ",
              tau[kMaxGamma - 1].get<double>(), " (", static_cast<int64_t>(tokens), " tokens)");
    nlohmann::json out = {{"val_alpha", alpha},
                          {"val_tvd", 1.0 - alpha},
                          {"val_greedy_agreement", agree},
                          {"val_tau_iid_prediction", tau},
                          {"val_ce", ce},
                          {"val_tokens", static_cast<int64_t>(tokens)},
                          {"val_records", n_val},
                          {"val_prompts", static_cast<int64_t>(val_clusters_)},
                          {"val_alpha_lo", alpha_ci.lo},
                          {"val_alpha_hi", alpha_ci.hi}};
    if (offline_) out["val_alpha_offline_teacher"] = c[kValAlphaOffline].item<double>() / tokens;
    return out;
  }

  const config::Config cfg_;
  const config::DistillSection& d_;
  const config::TrainSection& t_;
  Runtime rt_;
  const bool offline_;
  const KdOptions kd_;
  std::shared_ptr<model::Llama> student_, target_;
  int64_t pad_ = 0;
  std::vector<Pair> pairs_;
  std::vector<const Pair*> train_set_, val_set_;
  std::vector<size_t> val_cluster_;  // each held-out record's prompt (0 .. val_clusters_ - 1)
  size_t val_clusters_ = 0;
  std::unique_ptr<EpochOrder> order_;
};

}  // namespace

int distill(const config::Config& given) {
  if (given.distill.kind == config::DrafterKind::kEagle3) return distill_eagle3(given);
  // distill.seed >= 0: this seed's run, seeded by it (data order, on-policy samples) and written to <run>/seed-<n>.
  DistillRecipe(config::with_stage_seed(given, given.distill.seed)).train();
  return 0;
}

cli::Stage distill_stage() {
  return {
      .name = "distill",
      .summary = "finetune the drafter on the target's distributions (TVD++, FKL, RKL, TVD)",
      .description =
          "Knowledge distillation of the pretrained drafter against the target's token distributions on the\n"
          "generated responses, with TVD++ (fused CUDA kernel on GPU) or a baseline loss. Online teacher (the target\n"
          "runs alongside) or offline (the top-k log-probs generate stored). Loss on response tokens only; logs the\n"
          "held-out expected acceptance alpha and tau(g). Data parallel, checkpoints and exact resume as pretrain.",
      .sections = {"run", "target", "distill"},
      .run = distill,
      .outputs =
          [](const config::Config& c) {
            return std::vector<std::string>{(stdfs::path(config::distill_run_dir(c.distill)) / kFinalDir).string()};
          },
      .is_complete =
          [](const config::Config& c) {
            return training_complete(config::distill_run_dir(c.distill), config::distill_train(c.distill).steps);
          }};
}

}  // namespace draftalign::train
