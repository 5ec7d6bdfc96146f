#include "trainers/pretrain.h"

#include <chrono>
#include <cmath>
#include <random>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/metrics.h"
#include "data/shards.h"
#include "tokenizer/tokenizer.h"
#include "trainers/train_loop.h"

namespace draftalign::train {
namespace {

using torch::Tensor;
namespace F = torch::nn::functional;

// Windows of seq_len + 1 tokens of a token stream, visited in a seeded random order per epoch.
class WindowSampler {
 public:
  WindowSampler(const data::TokenStream& stream, int64_t seq_len, uint64_t seed)
      : stream_(stream), seq_len_(seq_len), seed_(seed), windows_((stream.size() - 1) / seq_len) {}

  int64_t windows() const { return windows_; }

  // The tokens of global sequence g into out[0 .. seq_len].
  void fill(int64_t g, int64_t* out) {
    const int64_t epoch = g / windows_;
    if (epoch != epoch_) shuffle(epoch);
    stream_.read(perm_[g % windows_] * seq_len_, seq_len_ + 1, out);
  }

 private:
  // Fisher-Yates with mt19937_64: the same order on every platform and rank.
  void shuffle(int64_t epoch) {
    perm_.resize(windows_);
    for (int64_t i = 0; i < windows_; ++i) perm_[i] = i;
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = windows_ - 1; i > 0; --i) std::swap(perm_[i], perm_[rng() % static_cast<uint64_t>(i + 1)]);
    epoch_ = epoch;
  }

  const data::TokenStream& stream_;
  int64_t seq_len_;
  uint64_t seed_;
  int64_t windows_, epoch_ = -1;
  std::vector<int64_t> perm_;
};

struct Batch {
  Tensor x, y, segments;  // [B, T]
};

// Inputs, targets and (with document masking) the document index of each input token: a document starts after
// every end-of-document token.
Batch make_batch(Tensor rows, int64_t eos, bool document_mask, torch::Device device) {
  Batch b;
  rows = rows.to(device);
  const int64_t t = rows.size(1) - 1;
  b.x = rows.narrow(1, 0, t);
  b.y = rows.narrow(1, 1, t);
  if (document_mask) {
    const Tensor ends = (b.x == eos).to(torch::kInt64);
    b.segments = ends.cumsum(1) - ends;
  }
  return b;
}

Tensor next_token_loss(model::Llama& model, const Batch& b, bool autocast) {
  AutocastGuard guard(autocast);
  const Tensor logits = model.forward(b.x, b.segments);
  return F::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32), b.y.reshape({-1}));
}

// Mean next-token loss over the first eval_batches * micro_batch_size non-overlapping windows of the validation split
// (fewer when it is short), rank r taking every world-th window: the same windows whatever the world size.
double validation_loss(model::Llama& model, const data::TokenStream& val, const config::TrainSection& t, int64_t eos,
                       bool document_mask, Runtime& rt) {
  torch::NoGradGuard no_grad;
  model.eval();
  const int64_t seq = t.seq_len;
  const int64_t windows = std::min((val.size() - 1) / seq, t.eval_batches * t.micro_batch_size);
  Tensor sum = torch::zeros({2}, torch::TensorOptions().dtype(torch::kFloat64).device(rt.device));
  std::vector<int64_t> mine;
  for (int64_t w = rt.dist->rank(); w < windows; w += rt.dist->world()) mine.push_back(w);
  for (size_t i = 0; i < mine.size(); i += t.micro_batch_size) {
    const int64_t n = std::min<int64_t>(t.micro_batch_size, mine.size() - i);
    Tensor rows = torch::empty({n, seq + 1}, torch::kInt64);
    for (int64_t r = 0; r < n; ++r) val.read(mine[i + r] * seq, seq + 1, rows[r].data_ptr<int64_t>());
    const Batch b = make_batch(rows, eos, document_mask, rt.device);
    const Tensor loss = next_token_loss(model, b, rt.bf16_autocast);
    sum[0] += loss.to(torch::kFloat64) * static_cast<double>(b.y.numel());
    sum[1] += static_cast<double>(b.y.numel());
  }
  rt.dist->all_reduce_sum(sum, "validation-loss all-reduce");
  model.train();
  const Tensor s = sum.cpu();
  return s[1].item<double>() > 0 ? s[0].item<double>() / s[1].item<double>() : std::nan("");
}

// The drafter: from pretrain.init_from, or pretrain.model.* with the tokenizer's special ids, initialised from the
// run seed (the same on every rank; rank 0's weights are broadcast besides).
std::shared_ptr<model::Llama> make_model(const config::PretrainSection& p, const tok::Tokenizer& tokenizer,
                                         int64_t seed, Runtime& rt) {
  std::shared_ptr<model::Llama> m;
  if (!p.init_from.empty()) {
    m = model::load_llama(p.init_from, rt.device, torch::kFloat32);
    log::info("pretrain: starting from ", p.init_from, " (", m->num_params(), " parameters)");
  } else {
    io::LlamaConfig c = p.model.hf_config();
    c.bos_token_id = tokenizer.special().bos;
    if (tokenizer.special().eos >= 0) c.eos_token_ids = {tokenizer.special().eos};
    c.pad_token_id = tokenizer.special().pad;
    torch::manual_seed(static_cast<uint64_t>(seed));
    m = std::make_shared<model::Llama>(c, torch::TensorOptions().device(rt.device));
    log::info("pretrain: new drafter, ", m->num_params(), " parameters (", c.num_hidden_layers, " layers, hidden ",
              c.hidden_size, ", vocab ", c.vocab_size, ")");
  }
  torch::NoGradGuard no_grad;
  for (auto& t : m->parameters()) rt.dist->broadcast(t, "initial-weights broadcast");
  return m;
}

}  // namespace

int pretrain(const config::Config& cfg) {
  const config::PretrainSection& p = cfg.pretrain;
  const config::TrainSection& t = p.train;
  Runtime rt = make_runtime(cfg.run, t);
  Dist& dist = *rt.dist;
  const stdfs::path out = p.output_dir;

  // Data.
  const data::DatasetIndex index = data::read_index(p.data_dir);
  const data::TokenStream train(p.data_dir, index, "train");
  std::unique_ptr<data::TokenStream> val;
  if (index.splits.count("val")) val = std::make_unique<data::TokenStream>(p.data_dir, index, "val");
  const stdfs::path tokenizer_dir = stdfs::path(index.tokenizer).parent_path();
  const auto tokenizer = tok::load_tokenizer(tokenizer_dir);
  WindowSampler sampler(train, t.seq_len, static_cast<uint64_t>(cfg.run.seed));
  DA_CHECK(sampler.windows() > 0, p.data_dir, ": the train split has ", train.size(),
           " tokens, fewer than one sequence of pretrain.train.seq_len + 1 = ", t.seq_len + 1);

  // Model, optimizer, resume.
  auto model = make_model(p, *tokenizer, cfg.run.seed, rt);
  DA_CHECK(model->config().vocab_size == index.vocab_size, "pretrain.model.vocab_size (", model->config().vocab_size,
           ") differs from the dataset's vocabulary (", index.vocab_size, " in ", p.data_dir, "/index.json)");
  DA_CHECK(t.seq_len <= model->config().max_position_embeddings, "pretrain.train.seq_len (", t.seq_len,
           ") exceeds the model's max_position_embeddings (", model->config().max_position_embeddings, ")");
  model->train();
  std::vector<Tensor> params = model->parameters();
  AdamW opt(params, t.optim);
  TrainerState state;
  std::optional<stdfs::path> resume = resume_checkpoint(out, t.resume);
  {
    // Every rank must resume from the same step.
    Tensor step = torch::tensor({resume ? checkpoint_step(*resume) : int64_t{-1}}).to(rt.device);
    for (const Tensor& s : dist.all_gather(step, "resume-step gather"))
      DA_CHECK(s.item<int64_t>() == step.item<int64_t>(), "ranks see different checkpoints in ", out.string(),
               "/checkpoints (is output_dir on a shared file system?)");
  }
  if (resume) {
    state = load_checkpoint(*resume, *model, opt, dist);
    log::info("pretrain: resumed from ", resume->string(), " at step ", state.step);
  }
  if (dist.rank() == 0) {
    fs::ensure_dir(out);
    if (resume)
      truncate_metrics(out / "metrics.jsonl", state.step);
    else
      stdfs::remove(out / "metrics.jsonl");
  }
  std::unique_ptr<MetricsLog> metrics_file =
      dist.rank() == 0 ? std::make_unique<MetricsLog>(out / "metrics.jsonl") : std::make_unique<MetricsLog>();
  MetricsLog& metrics = *metrics_file;

  GradSync sync(dist, params, static_cast<int64_t>(t.bucket_mb * (1 << 20)));
  const int64_t world = dist.world(), mbs = t.micro_batch_size;
  const int64_t global_batch = mbs * world * t.grad_accum;
  const int64_t eos = index.eos_id;
  log::info("pretrain: ", t.steps, " steps of ", global_batch, " sequences x ", t.seq_len, " tokens (",
            mbs, " per micro-batch x ", world, " ranks x ", t.grad_accum, " accumulation), ", train.size(),
            " train tokens = ", sampler.windows(), " windows", sync.num_buckets() ? str_cat(", ", sync.num_buckets(),
            " gradient buckets") : std::string());

  auto checkpoint_note = [&] {
    auto last = latest_checkpoint(out);
    return last ? "the last good checkpoint is " + last->string() : std::string("no checkpoint was written yet");
  };
  log::Progress progress("pretrain", t.steps, "step", stdout, -1, cfg.run.progress_interval_s);
  progress.update(state.step);
  auto interval_start = std::chrono::steady_clock::now();
  int64_t interval_tokens = 0;
  Tensor rows = torch::empty({mbs, t.seq_len + 1}, torch::kInt64);
  for (int64_t step = state.step; step < t.steps; ++step) {
    const double lr = lr_at(step, t);
    opt.set_lr(lr);
    Tensor loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(rt.device));
    for (int64_t m = 0; m < t.grad_accum; ++m) {
      for (int64_t b = 0; b < mbs; ++b)
        sampler.fill(state.consumed + (m * world + dist.rank()) * mbs + b, rows[b].data_ptr<int64_t>());
      const Batch batch = make_batch(rows, eos, p.document_mask, rt.device);
      const Tensor loss = next_token_loss(*model, batch, rt.bf16_autocast);
      if (m == t.grad_accum - 1) sync.arm();
      (loss / static_cast<double>(t.grad_accum)).backward();
      loss_sum += loss.detach() / static_cast<double>(t.grad_accum);
    }
    sync.finish();
    dist.all_reduce_sum(loss_sum, "loss all-reduce");
    const double loss = loss_sum.item<double>() / static_cast<double>(world);
    const double grad_norm = torch::nn::utils::clip_grad_norm_(
        params, t.optim.grad_clip > 0 ? t.optim.grad_clip : std::numeric_limits<double>::infinity());
    const bool finite = std::isfinite(loss) && std::isfinite(grad_norm);
    if (finite) {
      opt.step();
    } else if (t.on_nonfinite == "stop") {
      throw Error(str_cat("pretrain: non-finite loss or gradient (loss ", loss, ", gradient norm ", grad_norm, ") at step ", step + 1,
                          "; ", checkpoint_note(), ". Lower pretrain.train.optim.lr, or set ",
                          "pretrain.train.on_nonfinite=skip to skip such steps"));
    } else {
      ++state.skipped;
      log::warn("pretrain: step ", step + 1, " skipped: non-finite loss or gradient (loss ", loss, ", gradient norm ", grad_norm,
                "); ", state.skipped, " skipped so far");
    }
    opt.zero_grad();
    state.step = step + 1;
    state.consumed += global_batch;
    state.tokens += global_batch * t.seq_len;
    interval_tokens += global_batch * t.seq_len;

    const bool last = state.step == t.steps;
    if (state.step % cfg.run.log_every == 0 || last) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - interval_start).count();
      metrics.write({{"step", state.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                     {"tokens", state.tokens}, {"tokens_per_s", interval_tokens / std::max(secs, 1e-9)},
                     {"skipped", state.skipped}});
      interval_start = std::chrono::steady_clock::now();
      interval_tokens = 0;
    }
    if (val && ((t.eval_every > 0 && state.step % t.eval_every == 0) || last)) {
      const double vl = validation_loss(*model, *val, t, eos, p.document_mask, rt);
      metrics.write({{"step", state.step}, {"val_loss", vl}, {"val_ppl", std::exp(vl)}});
      log::info("pretrain: step ", state.step, " validation loss ", vl, " (perplexity ", std::exp(vl), ")");
    }
    if ((t.save_every > 0 && state.step % t.save_every == 0) || last)
      save_checkpoint(out, *model, opt, state, dist, tokenizer_dir, t.keep_last);
    progress.update(state.step, str_cat("loss ", loss, " lr ", lr));
  }
  progress.finish();
  if (dist.rank() == 0) {
    model::save_llama(*model, out / "final", torch::kFloat32, tokenizer_dir);
    log::info("pretrain: done; the drafter is in ", (out / "final").string(), " (", state.tokens, " tokens, ",
              state.skipped, " skipped steps)");
  }
  dist.barrier("end-of-training barrier");
  return 0;
}

}  // namespace draftalign::train
