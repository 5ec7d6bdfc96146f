// distill_eagle3.cpp: distill.kind = eagle3, an EAGLE-3 head (model/eagle3.h) trained against the online target it
// reads, with the training-time test (train/ttt_loss.h).
//
// Training sequences come from two sources, interleaved by global sequence index g as on_policy_sequence interleaves
// (sequence g is a corpus window when floor((g + 1) f) > floor(g f), f = distill.eagle3.corpus_fraction):
//   answers   the records of distill.data_dir (generate, magpie, data import) minus the held-out prompts, in a seeded
//             order per epoch; the positions predicting a response token train;
//   corpus    non-overlapping windows of train.seq_len + 1 tokens of the pretraining corpus's train split
//             (distill.eagle3.corpus, prepare-data shards), in a seeded order per epoch; every position trains.
// Both cost only the target's teacher-forced forward (prefill speed), which gives the three taps and the logits.
// Step i of the head at position t embeds x_{t+1+i} and predicts x_{t+2+i}: its teacher is the target's logits at
// t + 1 + i. The draft vocabulary is the draft_vocab_size tokens most frequent in the training answers (prompts and
// responses) and the first vocab_count_tokens tokens of the corpus, never in an evaluation set; the target's stop
// tokens are always in.
//
// Validation (held-out answers, teacher-forced): per-step agreement of the head's argmax (as a target id) with the
// target's over every response position (a target token outside the draft vocabulary counts as a miss), and the mean
// run of leading agreeing steps, an estimate of the accepted length per draft of ttt_steps tokens; and step 0's
// negative log-likelihood of the target's most likely token where the draft vocabulary holds it (val_step0_nll).
//
// Output: <distill.output_dir>/eagle3-<loss>/ with checkpoints (the head in the EAGLE-3 layout + optimizer, rng and
// trainer state), metrics.jsonl and final/ (an EAGLE-3 head directory, model::save_eagle3).
#include <algorithm>
#include <cmath>
#include <memory>
#include <tuple>

#include "common/error.h"
#include "common/log.h"
#include "data/draft_vocab.h"
#include "data/shards.h"
#include "model/eagle3.h"
#include "model/llama.h"
#include "train/losses.h"
#include "train/runtime.h"
#include "train/sampler.h"
#include "train/ttt_loss.h"
#include "trainers/distill.h"
#include "trainers/train_loop.h"

namespace draftalign::train {
namespace {

using torch::Tensor;

// A training sequence and the index of the first token it trains the head to predict.
struct Sequence {
  std::vector<int64_t> tokens;
  int64_t first = 2;  // answers: the prompt length; corpus windows: 2 (step 0 at t = 0 predicts x_2)
};

struct HeadBatch {
  Tensor x;                  // [B, T]
  std::vector<Tensor> mask;  // step i: [B, T - 1 - i], position t trains when x_{t+2+i} exists and is trained
};

HeadBatch make_head_batch(const std::vector<Sequence>& seqs, int64_t seq_len, int64_t steps, int64_t pad,
                          torch::Device device) {
  int64_t len = 2;
  for (const Sequence& s : seqs) len = std::max<int64_t>(len, static_cast<int64_t>(s.tokens.size()));
  len = std::min(len, seq_len + 1);
  const int64_t B = static_cast<int64_t>(seqs.size());
  Tensor x = torch::full({B, len}, pad, torch::kInt64);
  Tensor n = torch::zeros({B, 1}, torch::kInt64), first = torch::zeros({B, 1}, torch::kInt64);
  for (int64_t r = 0; r < B; ++r) {
    const Sequence& s = seqs[static_cast<size_t>(r)];
    const int64_t m = std::min<int64_t>(static_cast<int64_t>(s.tokens.size()), len);
    std::copy(s.tokens.begin(), s.tokens.begin() + m, x.data_ptr<int64_t>() + r * len);
    n[r][0] = m, first[r][0] = s.first;
  }
  HeadBatch b;
  b.x = x.to(device);
  for (int64_t i = 0; i < steps && i < len - 1; ++i) {
    const Tensor predicted = torch::arange(len - 1 - i, torch::kInt64).view({1, -1}) + 2 + i;  // x_{t+2+i}
    b.mask.push_back(((predicted < n) & (predicted >= first)).to(device));
  }
  return b;
}

// Step i's input tokens [B, T]: x_{t+1+i} at t (pad past the end).
Tensor shifted(const Tensor& x, int64_t i, int64_t pad) {
  const int64_t T = x.size(1), k = std::min(T, 1 + i);
  return torch::cat({x.narrow(1, k, T - k), torch::full({x.size(0), k}, pad, x.options())}, 1);
}

// The held-out pass's sums (held_out_sums): per step i, its positions and agreements at 2 i and 2 i + 1; then these,
// counted from the end of the steps' slots (ValTail + 2 * steps).
enum ValTail : int64_t {
  kValRunSum,        // the leading run of agreeing steps, summed over the positions where every step exists
  kValRunPositions,  // those positions
  kValNllSum,        // step 0's negative log-likelihood of the target's argmax where the draft vocabulary holds it
  kValNllPositions,  // those positions
  kValTail
};

// The target's taps and logits over a batch (no gradient), the head's step logits, and each step's slices.
struct Forward {
  std::vector<Tensor> head, teacher;  // step i: [B, T - 1 - i, draft vocab], [B, T - 1 - i, vocab]
};

// The stage for an EAGLE-3 head, as distill.cpp's recipe reads: set-up (the target, the answers and corpus windows,
// the draft vocabulary, the head), the training-time-test loss of a micro-batch, the held-out validation, and the
// head's checkpoint I/O; run_training (train_loop.h) runs the steps, checkpoints and exact resume.
class Eagle3Recipe {
 public:
  explicit Eagle3Recipe(const config::Config& cfg)
      : cfg_(cfg),
        d_(cfg_.distill),
        e_(d_.eagle3),
        t_(config::distill_train(d_)),
        steps_(e_.ttt_steps),
        kd_(KdOptions::of(d_)) {
    DA_CHECK(d_.loss != config::Loss::kCe,
             "distill.loss = ce with distill.kind = eagle3: the head's steps are "
             "trained against the target's distributions; use fkl, rkl, tvd or tvdpp");
    rt_ = make_runtime(cfg_.run, t_);
    load_target();
    load_data();
    make_head();
  }

  void train() {
    Recipe recipe;
    recipe.name = "distill";
    recipe.validate_at_start = true;
    recipe.micro_batch = [this](const std::vector<int64_t>& seqs) { return micro_batch(seqs); };
    if (!val_set_.empty()) recipe.validate = [this](int64_t step) { return validate(step); };
    ModelIO io;
    io.save = [this](const stdfs::path& dir) { model::save_eagle3(*head_, dir, torch::kFloat32); };
    io.load = [this](const stdfs::path& dir) { load_checkpoint(dir); };
    run_training(cfg_, t_, config::distill_run_dir(d_), rt_, *head_, io, recipe);
  }

 private:
  // The frozen target and the taps the head reads (default 2, L/2, L - 3).
  void load_target() {
    target_ = load_frozen_target(cfg_, rt_.device);
    const io::LlamaConfig& tc = target_->config();
    const int64_t L = tc.num_hidden_layers;
    taps_ = e_.taps.empty() ? std::vector<int64_t>{2, L / 2, L - 3} : e_.taps;
    DA_CHECK(taps_.size() == 3 && taps_[0] >= 0 && taps_[0] < taps_[1] && taps_[1] < taps_[2] && taps_[2] <= L,
             "distill.eagle3.taps = [", taps_[0], ", ", taps_[1], ", ", taps_[2], "]: the target ", cfg_.target.dir,
             " has ", L, " layers, so a head reads 3 ascending hidden states in [0, ", L, "]",
             e_.taps.empty() ? " (the default 2, L/2, L-3 needs at least 6 layers; set distill.eagle3.taps)" : "");
    DA_CHECK(e_.draft_vocab_size <= tc.vocab_size, "distill.eagle3.draft_vocab_size = ", e_.draft_vocab_size,
             " exceeds the vocabulary of the target ", cfg_.target.dir, " (", tc.vocab_size, " tokens)");
    DA_CHECK(t_.seq_len < tc.max_position_embeddings, "distill.train.seq_len (", t_.seq_len,
             ") must be below the target's max_position_embeddings (", tc.max_position_embeddings, ")");
    pad_ = tc.eos_token_ids.empty() ? 0 : tc.eos_token_ids[0];
  }

  // The answers (held out by prompt as for the model drafter) and the corpus windows, each in a seeded order.
  void load_data() {
    const int64_t vocab = target_->config().vocab_size;
    pairs_ = load_pairs(d_.data_dir, false, vocab);
    std::tie(train_set_, val_set_) = split_pairs(pairs_, d_, t_);
    // Corpus windows (and the corpus head the draft vocabulary is counted on, at any corpus_fraction).
    if (!e_.corpus.empty() && (e_.corpus_fraction > 0 || e_.vocab_count_tokens > 0)) {
      const data::DatasetIndex index = data::read_index(e_.corpus);
      DA_CHECK(index.vocab_size == vocab, e_.corpus, "/index.json: the corpus is tokenized for a vocabulary of ",
               index.vocab_size, ", the target ", cfg_.target.dir, " has ", vocab);
      corpus_ = std::make_unique<data::TokenStream>(e_.corpus, index, "train");
      windows_ = corpus_->size() / (t_.seq_len + 1);
      DA_CHECK(windows_ > 0 || e_.corpus_fraction == 0, e_.corpus, ": the train split has ", corpus_->size(),
               " tokens, fewer than one window of distill.train.seq_len + 1 = ", t_.seq_len + 1);
    }
    const uint64_t seed = static_cast<uint64_t>(cfg_.run.seed);
    answer_order_ = std::make_unique<EpochOrder>(static_cast<int64_t>(train_set_.size()), seed);
    corpus_order_ = std::make_unique<EpochOrder>(std::max<int64_t>(windows_, 1), seed ^ 0xc0de);
  }

  // The draft vocabulary, counted on the training text, and the head, seeded by the run seed.
  void make_head() {
    const io::LlamaConfig& tc = target_->config();
    data::TokenCounter counter(tc.vocab_size);
    for (const Pair* p : train_set_) counter.add(p->tokens, d_.data_dir.c_str());
    if (corpus_ && e_.vocab_count_tokens > 0) {
      const int64_t n = std::min(corpus_->size(), e_.vocab_count_tokens);
      std::vector<int64_t> buf(static_cast<size_t>(std::min<int64_t>(n, 1 << 20)));
      for (int64_t at = 0; at < n; at += static_cast<int64_t>(buf.size())) {
        const int64_t m = std::min<int64_t>(static_cast<int64_t>(buf.size()), n - at);
        corpus_->read(at, m, buf.data());
        counter.add(buf.data(), m, e_.corpus.c_str());
      }
    }
    hc_.layer = tc;
    hc_.layer.model_type = "llama", hc_.layer.qkv_bias = hc_.layer.o_bias = hc_.layer.qk_norm = false;
    hc_.layer.sliding_window = 0, hc_.layer.sliding_layers.clear(), hc_.layer.max_window_layers = 0;
    hc_.layer.num_hidden_layers = 1;
    hc_.target_hidden = tc.hidden_size;
    hc_.taps = taps_;
    hc_.vocab = data::select_draft_vocab(counter.counts(), e_.draft_vocab_size, tc.eos_token_ids);
    target_embed_ = target_->named_parameters()["model.embed_tokens.weight"];
    torch::manual_seed(static_cast<uint64_t>(cfg_.run.seed));
    head_ = std::make_unique<model::Eagle3Head>(hc_, target_embed_,
                                                torch::TensorOptions().device(rt_.device).dtype(torch::kFloat32));
    {
      torch::NoGradGuard no_grad;
      for (auto& p : head_->parameters()) rt_.dist->broadcast(p, "initial-weights broadcast");
    }
    draft_ids_ = torch::tensor(hc_.vocab.ids, torch::kInt64).to(rt_.device);
    to_draft_ = torch::tensor(hc_.vocab.target_to_draft(), torch::kInt64).to(rt_.device);
    log::info("distill: EAGLE-3 head (", head_->num_params(), " parameters, taps ", taps_[0], ", ", taps_[1], ", ",
              taps_[2], ", draft vocabulary ", hc_.vocab.size(), " covering ", hc_.vocab.coverage(counter.counts()),
              " of the counted tokens) on ", cfg_.target.dir, "; ", train_set_.size(), " training answers, ",
              val_set_.size(), " held out",
              corpus_ ? str_cat(", ", windows_, " corpus windows (fraction ", e_.corpus_fraction, ")") : std::string(),
              "; ", steps_, " test-time steps, ", d_.loss, " loss");
  }

  // Global training sequence g: a corpus window or an answer, interleaved as on_policy_sequence interleaves.
  Sequence sequence(int64_t g) {
    Sequence s;
    const int64_t before = static_cast<int64_t>(std::floor(static_cast<double>(g) * e_.corpus_fraction));
    if (corpus_ && on_policy_sequence(g, e_.corpus_fraction)) {  // the same interleaving rule
      s.tokens.resize(static_cast<size_t>(t_.seq_len + 1));
      corpus_->read(corpus_order_->at(before) * (t_.seq_len + 1), t_.seq_len + 1, s.tokens.data());
      s.first = 2;
    } else {
      const Pair& p = *train_set_[static_cast<size_t>(answer_order_->at(g - before))];
      s.tokens = p.tokens, s.first = p.prompt_len;
    }
    return s;
  }

  Forward forward(const HeadBatch& b) {
    model::Taps tapped{taps_, {}};
    Tensor logits;
    {
      torch::NoGradGuard no_grad;
      logits = target_->logits(target_->hidden(b.x, {}, &tapped)).to(torch::kFloat32);
    }
    AutocastGuard guard(rt_.bf16_autocast);
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < b.mask.size(); ++i) inputs.push_back(shifted(b.x, static_cast<int64_t>(i), pad_));
    const std::vector<Tensor> hs = head_->unroll(head_->project(tapped.out), inputs);
    Forward f;
    const int64_t T = b.x.size(1);
    for (size_t i = 0; i < hs.size(); ++i) {
      const int64_t n = T - 1 - static_cast<int64_t>(i);
      f.head.push_back(head_->logits(hs[i].narrow(1, 0, n)).to(torch::kFloat32));
      f.teacher.push_back(logits.narrow(1, 1 + static_cast<int64_t>(i), n));
    }
    return f;
  }

  MicroBatch micro_batch(const std::vector<int64_t>& seqs) {
    std::vector<Sequence> batch;
    for (const int64_t g : seqs) batch.push_back(sequence(g));
    const HeadBatch b = make_head_batch(batch, t_.seq_len, steps_, pad_, rt_.device);
    const int64_t rows = b.mask.empty() ? 0 : b.mask[0].sum().item<int64_t>();
    if (rows == 0) return MicroBatch::empty({"kd", "agree0"});
    const Forward f = forward(b);
    const TttLoss l = ttt_loss(f.head, f.teacher, b.mask, draft_ids_, kd_, e_.decay);
    return MicroBatch{l.loss, rows, {{"kd", l.loss.detach()}, {"agree0", torch::tensor(l.step_agree[0])}}};
  }

  // Adds the held-out answers `mine` (indices into val_set_) into `sums` (per-step slots, then ValTail).
  void add_held_out(const std::vector<int64_t>& mine, Tensor& sums) {
    const int64_t tail = 2 * steps_;
    std::vector<Sequence> batch;
    for (const int64_t i : mine) {
      const Pair& p = *val_set_[static_cast<size_t>(i)];
      batch.push_back({p.tokens, p.prompt_len});
    }
    const HeadBatch b = make_head_batch(batch, t_.seq_len, steps_, pad_, rt_.device);
    if (b.mask.empty()) return;
    const Forward f = forward(b);
    std::vector<Tensor> agree;
    for (size_t i = 0; i < f.head.size(); ++i) {
      const Tensor a = head_->to_target(f.head[i].argmax(-1)).eq(f.teacher[i].argmax(-1)) & b.mask[i];
      sums[2 * static_cast<int64_t>(i)] += b.mask[i].sum().to(torch::kFloat64);
      sums[2 * static_cast<int64_t>(i) + 1] += a.sum().to(torch::kFloat64);
      agree.push_back(a);
    }
    // Positions where all steps exist: the leading run of agreeing steps.
    const int64_t n = agree.back().size(1);
    Tensor run = torch::zeros_like(agree.back(), torch::kFloat64), all = torch::ones_like(run);
    for (const Tensor& a : agree) {
      all = all * a.narrow(1, 0, n).to(torch::kFloat64);
      run = run + all;
    }
    const Tensor valid = b.mask.back();
    sums[tail + kValRunSum] += (run * valid.to(torch::kFloat64)).sum();
    sums[tail + kValRunPositions] += valid.sum().to(torch::kFloat64);
    const Tensor want = to_draft_.index({f.teacher[0].argmax(-1)});  // [B, T - 1], -1 outside the vocabulary
    const Tensor rows = b.mask[0] & want.ge(0);
    const Tensor nll = -torch::log_softmax(f.head[0], -1).gather(-1, want.clamp_min(0).unsqueeze(-1)).squeeze(-1);
    sums[tail + kValNllSum] += (nll.to(torch::kFloat64) * rows.to(torch::kFloat64)).sum();
    sums[tail + kValNllPositions] += rows.sum().to(torch::kFloat64);
  }

  nlohmann::json validate(int64_t step) {
    const int64_t tail = 2 * steps_;
    const Tensor c =
        held_out_sums(*head_, rt_, static_cast<int64_t>(val_set_.size()), t_.micro_batch_size, tail + kValTail,
                      [this](const std::vector<int64_t>& mine, Tensor& sums) { add_held_out(mine, sums); });
    nlohmann::json per_step = nlohmann::json::array();
    for (int64_t i = 0; i < steps_; ++i)
      per_step.push_back(c[2 * i + 1].item<double>() / std::max(1.0, c[2 * i].item<double>()));
    const double run = c[tail + kValRunSum].item<double>() / std::max(1.0, c[tail + kValRunPositions].item<double>());
    const double nll = c[tail + kValNllSum].item<double>() / std::max(1.0, c[tail + kValNllPositions].item<double>());
    log::info("distill: step ", step, " held-out (", val_set_.size(), " answers, ",
              static_cast<int64_t>(c[0].item<double>()), " positions): head agreement by step ", per_step.dump(),
              ", mean leading run of ", steps_, " steps ", run, ", step-0 NLL of the target's token ", nll);
    return nlohmann::json{{"val_step_agreement", per_step},
                          {"val_greedy_agreement", per_step[0]},
                          {"val_leading_run", run},
                          {"val_step0_nll", nll},
                          {"val_tokens", static_cast<int64_t>(c[0].item<double>())}};
  }

  // A checkpoint's head into this one, which must be the same head (taps, draft vocabulary, shape).
  void load_checkpoint(const stdfs::path& dir) {
    auto saved = model::load_eagle3(dir, target_embed_, torch::kCPU, torch::kFloat32);
    const model::Eagle3Config& sc = saved->config();
    DA_CHECK(sc.taps == hc_.taps && sc.vocab.ids == hc_.vocab.ids && sc.layer.hidden_size == hc_.layer.hidden_size &&
                 sc.layer.intermediate_size == hc_.layer.intermediate_size,
             (dir / "config.json").string(),
             ": the checkpoint's head (taps, draft vocabulary or shape) is not the one "
             "this configuration trains (resume with the config and data it was trained with, or train.resume=none)");
    torch::NoGradGuard no_grad;
    auto dst = head_->named_parameters();
    for (const auto& kv : saved->named_parameters()) dst[kv.key()].copy_(kv.value());
  }

  const config::Config cfg_;
  const config::DistillSection& d_;
  const config::Eagle3Section& e_;
  const config::TrainSection t_;
  const int64_t steps_;  // test-time steps
  const KdOptions kd_;
  Runtime rt_;
  std::shared_ptr<model::Llama> target_;
  std::vector<int64_t> taps_;
  int64_t pad_ = 0;
  std::vector<Pair> pairs_;
  std::vector<const Pair*> train_set_, val_set_;
  std::unique_ptr<data::TokenStream> corpus_;
  int64_t windows_ = 0;
  std::unique_ptr<EpochOrder> answer_order_, corpus_order_;
  model::Eagle3Config hc_;
  Tensor target_embed_, draft_ids_, to_draft_;
  std::unique_ptr<model::Eagle3Head> head_;
};

}  // namespace

int distill_eagle3(const config::Config& given) {
  Eagle3Recipe(config::with_stage_seed(given, given.distill.seed)).train();
  return 0;
}

}  // namespace draftalign::train
