#include "trainers/pretrain.h"

#include <cmath>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/metrics.h"
#include "data/draft_vocab.h"
#include "data/shards.h"
#include "io/hf_checkpoint.h"
#include "tokenizer/tokenizer.h"
#include "train/losses.h"
#include "train/runtime.h"
#include "train/sampler.h"
#include "trainers/train_loop.h"

namespace draftalign::train {
namespace {

using torch::Tensor;

// Windows of seq_len + 1 tokens of a token stream, visited in a seeded random order per epoch.
class WindowSampler {
 public:
  WindowSampler(const data::TokenStream& stream, int64_t seq_len, uint64_t seed)
      : stream_(stream), seq_len_(seq_len), order_((stream.size() - 1) / seq_len, seed) {}

  int64_t windows() const { return order_.size(); }

  // The tokens of global sequence g into out[0 .. seq_len].
  void fill(int64_t g, int64_t* out) { stream_.read(order_.at(g) * seq_len_, seq_len_ + 1, out); }

 private:
  const data::TokenStream& stream_;
  int64_t seq_len_;
  EpochOrder order_;
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

// The target as the drafter's teacher (pretrain.teacher = target): frozen, reading the same windows.
struct Teacher {
  model::Llama* model = nullptr;  // null: next-token cross-entropy alone
  KdOptions kd;
  double kd_weight = 0, ce_weight = 1;
};

// The loss of a batch, with the output head fused into it (train/losses.h): the [B T, V] logits exist one chunk of
// rows at a time. Without a teacher, the mean next-token cross-entropy. With one, at every position
// kd_weight * kd_loss(target || drafter) + ce_weight * cross-entropy, the target's logits made chunk by chunk from its
// hidden states; its CE term is the same closed form, so kd_weight 0 is plain pretraining bit for bit.
struct BatchLoss {
  Tensor loss, kd, ce;  // kd and ce: detached, with a teacher
};
// With a draft vocabulary (model.draft_vocab_size) the head's logits cover its tokens only: the cross-entropy is the
// mean over the positions whose next token is one of them (the others are masked, as EAGLE-3 trains its head), and
// the target's distribution is restricted to them (its head's rows gathered, so it is renormalised there).
BatchLoss next_token_loss(model::Llama& model, const Batch& b, bool autocast, const Teacher& teacher = {}) {
  AutocastGuard guard(autocast);
  const Tensor h = model.hidden(b.x, b.segments);
  const Tensor hidden = h.reshape({-1, h.size(-1)}), targets = model.head_row_of(b.y.reshape({-1}));
  const double rows = static_cast<double>(targets.size(0));
  const double count = model.has_draft_vocab() ? std::max(1.0, targets.ge(0).sum().item<double>()) : rows;
  if (!teacher.model) {
    const HeadScore score = [&](const Tensor& logits, int64_t begin, int64_t end) {
      return cross_entropy_chunk(logits, targets.narrow(0, begin, end - begin), count);
    };
    return {fused_head_loss(hidden, model.head_weight(), score), {}, {}};
  }
  Tensor teacher_head;  // [head rows, H']
  {
    torch::NoGradGuard no_grad;
    teacher_head = model::head_rows_for(*teacher.model, model);
  }
  Tensor teacher_hidden;
  {
    torch::NoGradGuard no_grad;
    const Tensor th = teacher.model->hidden(b.x, b.segments);
    teacher_hidden = th.reshape({-1, th.size(-1)});
  }
  Tensor kd_sum, ce_sum;
  auto add = [](Tensor& sum, const Tensor& x) { sum = sum.defined() ? sum + x : x; };
  const HeadScore score = [&](const Tensor& logits, int64_t begin, int64_t end) {
    const HeadChunk ce = cross_entropy_chunk(logits, targets.narrow(0, begin, end - begin), count);
    Tensor target_logits;
    {
      torch::NoGradGuard no_grad;
      target_logits = torch::matmul(teacher_hidden.narrow(0, begin, end - begin), teacher_head.t());
    }
    const double share = static_cast<double>(end - begin) / rows;  // this chunk's part of the mean over all rows
    const HeadChunk kd = score_by_autograd(logits, [&](const Tensor& leaf) {
      return kd_loss(leaf, target_logits, teacher.kd) * share;
    });
    add(kd_sum, kd.value), add(ce_sum, ce.value);
    return HeadChunk{teacher.kd_weight * kd.value + teacher.ce_weight * ce.value,
                     teacher.kd_weight * kd.grad + teacher.ce_weight * ce.grad};
  };
  const Tensor loss = fused_head_loss(hidden, model.head_weight(), score);
  return {loss, kd_sum, ce_sum};
}

// Mean next-token loss over the first eval_batches * micro_batch_size non-overlapping windows of the validation split
// (fewer when it is short), rank r taking every world-th window: the same windows whatever the world size.
double validation_loss(model::Llama& model, const data::TokenStream& val, const config::TrainSection& t, int64_t eos,
                       bool document_mask, Runtime& rt) {
  const int64_t seq = t.seq_len;
  const int64_t windows = std::min((val.size() - 1) / seq, t.eval_batches * t.micro_batch_size);
  const Tensor s = held_out_sums(model, rt, windows, t.micro_batch_size, 2,
                                 [&](const std::vector<int64_t>& mine, Tensor& sum) {
    const int64_t n = static_cast<int64_t>(mine.size());
    Tensor rows = torch::empty({n, seq + 1}, torch::kInt64);
    for (int64_t r = 0; r < n; ++r) val.read(mine[r] * seq, seq + 1, rows[r].data_ptr<int64_t>());
    const Batch b = make_batch(rows, eos, document_mask, rt.device);
    const Tensor loss = next_token_loss(model, b, rt.bf16_autocast).loss;
    sum[0] += loss.to(torch::kFloat64) * static_cast<double>(b.y.numel());
    sum[1] += static_cast<double>(b.y.numel());
  });
  return s[1].item<double>() > 0 ? s[0].item<double>() / s[1].item<double>() : std::nan("");
}

}  // namespace

Tensor target_svd_embedding(const stdfs::path& target_dir, int64_t vocab, int64_t hidden) {
  torch::NoGradGuard no_grad;
  const io::HfCheckpoint ck = io::HfCheckpoint::open(target_dir);
  const std::string name = "model.embed_tokens.weight";
  DA_CHECK(ck.contains(name), target_dir.string(), ": no tensor '", name, "' (pretrain.embedding_init = target-svd)");
  const Tensor e = ck.get(name).to(torch::kFloat64);
  DA_CHECK(e.dim() == 2 && e.size(0) == vocab, target_dir.string(), ": ", name, " is ", io::shape_text(e.sizes()),
           ", but the drafter's vocabulary has ", vocab, " tokens (pretrain.embedding_init = target-svd)");
  DA_CHECK(hidden <= e.size(1), "pretrain.embedding_init = target-svd: the drafter's hidden_size ", hidden,
           " exceeds the target's ", e.size(1), " (", target_dir.string(), ")");
  // The right singular vectors of E are the eigenvectors of E^T E (hidden x hidden, cheap beside an SVD of E); eigh
  // returns them in ascending order of eigenvalue, so the last `hidden` columns, reversed, are the top ones. Each is
  // signed so that its largest entry is positive, which makes the result independent of the eigensolver's signs.
  const auto [values, vectors] = torch::linalg_eigh(e.t().mm(e));
  Tensor v = vectors.narrow(1, e.size(1) - hidden, hidden).flip({1});
  const Tensor at_max = v.gather(0, v.abs().argmax(0, /*keepdim=*/true));
  v = v * at_max.sign();
  return e.mm(v).to(torch::kFloat32);
}

namespace {

// The drafter: from pretrain.init_from, or pretrain.model.* with the tokenizer's special ids, initialised from the
// run seed (the same on every rank; rank 0's weights are broadcast besides); with embedding_init = target-svd its
// embedding (and the tied head) starts as target_svd_embedding.
std::shared_ptr<model::Llama> make_model(const config::PretrainSection& p, const stdfs::path& target_dir,
                                         const tok::Tokenizer& tokenizer, int64_t seed, Runtime& rt) {
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
    if (p.embedding_init == config::EmbeddingInit::kTargetSvd) {
      torch::NoGradGuard no_grad;
      const Tensor e = target_svd_embedding(target_dir, c.vocab_size, c.hidden_size);
      for (auto& item : m->named_parameters())
        if (item.key() == "model.embed_tokens.weight") item.value().copy_(e);
      log::info("pretrain: embedding from the target's (", target_dir.string(), ") top ", c.hidden_size,
                " right singular vectors");
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& t : m->parameters()) rt.dist->broadcast(t, "initial-weights broadcast");
  return m;
}

// The teacher of pretrain.teacher = target: the frozen target of target.dir, whose vocabulary must be the drafter's.
std::shared_ptr<model::Llama> load_teacher(const config::Config& cfg, int64_t vocab, torch::Device device) {
  const stdfs::path config_json = stdfs::path(cfg.target.dir) / "config.json";
  DA_CHECK(stdfs::exists(config_json), "pretrain.teacher = target needs the target model: ", config_json.string(),
           ": no such file (target.dir)");
  auto target = load_frozen_target(cfg, device);
  DA_CHECK(target->config().vocab_size == vocab, "pretrain.teacher = target: the target's vocabulary (",
           target->config().vocab_size, " in ", config_json.string(), ") differs from the drafter's (", vocab, ")");
  return target;
}

// model.draft_vocab_size: the head's tokens are the n most frequent of the training split (the stop tokens always),
// the same on every rank and on resume, since the count is of the data alone.
void choose_draft_vocab(model::Llama& model, const data::TokenStream& train, int64_t n, const std::string& data_dir) {
  data::TokenCounter counter(model.config().vocab_size);
  std::vector<int64_t> chunk;
  for (int64_t at = 0; at < train.size(); at += int64_t{1} << 20) {
    chunk.resize(static_cast<size_t>(std::min<int64_t>(int64_t{1} << 20, train.size() - at)));
    train.read(at, static_cast<int64_t>(chunk.size()), chunk.data());
    counter.add(chunk, data_dir.c_str());
  }
  const std::vector<int64_t> ids = data::rank_draft_tokens(counter.counts(), n, model.config().eos_token_ids);
  model.set_draft_vocab(ids);
  data::DraftVocab v;
  v.target_vocab = model.config().vocab_size, v.ids = ids;
  log::info("pretrain: draft vocabulary of ", n, " tokens (of ", model.config().vocab_size, ") covering ",
            100.0 * v.coverage(counter.counts()), "% of the ", counter.total(), " training tokens");
}

}  // namespace

int pretrain(const config::Config& given) {
  // pretrain.seed >= 0: this seed's run, seeded by it and written to output_dir/seed-<n>.
  config::Config cfg = config::with_stage_seed(given, given.pretrain.seed);
  cfg.pretrain.output_dir = config::seed_dir(given.pretrain.output_dir, given.pretrain.seed);
  const config::PretrainSection& p = cfg.pretrain;
  const config::TrainSection& t = p.train;
  Runtime rt = make_runtime(cfg.run, t);

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

  // Model and the loop.
  DA_CHECK(p.embedding_init == config::EmbeddingInit::kNormal || p.init_from.empty(),
           "pretrain.embedding_init = ", p.embedding_init,
           " initialises a drafter from scratch, but pretrain.init_from = ", p.init_from, " loads one");
  auto model = make_model(p, cfg.target.dir, *tokenizer, cfg.run.seed, rt);
  DA_CHECK(model->config().vocab_size == index.vocab_size, "pretrain.model.vocab_size (", model->config().vocab_size,
           ") differs from the dataset's vocabulary (", index.vocab_size, " in ", p.data_dir, "/index.json)");
  DA_CHECK(t.seq_len <= model->config().max_position_embeddings, "pretrain.train.seq_len (", t.seq_len,
           ") exceeds the model's max_position_embeddings (", model->config().max_position_embeddings, ")");
  log::info("pretrain: ", train.size(), " train tokens = ", sampler.windows(), " windows of ", t.seq_len, " tokens");
  if (p.model.draft_vocab_size > 0) choose_draft_vocab(*model, train, p.model.draft_vocab_size, p.data_dir);
  std::shared_ptr<model::Llama> target;
  Teacher teacher;
  if (p.teacher == config::PretrainTeacher::kTarget) {
    target = load_teacher(cfg, model->config().vocab_size, rt.device);
    teacher.model = target.get(), teacher.kd.loss = p.kd_loss;
    teacher.kd_weight = p.kd_weight, teacher.ce_weight = p.ce_weight;
    log::info("pretrain: distillation from the target ", cfg.target.dir, " (", target->num_params(),
              " parameters) at every position: ", p.kd_weight, " x ", p.kd_loss, " + ", p.ce_weight,
              " x cross-entropy");
  }
  const int64_t mbs = t.micro_batch_size, eos = index.eos_id;
  Tensor rows = torch::empty({mbs, t.seq_len + 1}, torch::kInt64);
  Recipe recipe;
  recipe.name = "pretrain";
  recipe.micro_batch = [&](const std::vector<int64_t>& sequences) {
    for (int64_t b = 0; b < mbs; ++b) sampler.fill(sequences[b], rows[b].data_ptr<int64_t>());
    const Batch batch = make_batch(rows, eos, p.document_mask, rt.device);
    BatchLoss l = next_token_loss(*model, batch, rt.bf16_autocast, teacher);
    if (!teacher.model) return MicroBatch{l.loss, mbs * t.seq_len, {}};
    return MicroBatch{l.loss, mbs * t.seq_len, {{"kd", l.kd}, {"ce", l.ce}}};
  };
  if (val)
    recipe.validate = [&](int64_t step) {
      const double vl = validation_loss(*model, *val, t, eos, p.document_mask, rt);
      log::info("pretrain: step ", step, " validation loss ", vl, " (perplexity ", std::exp(vl), ")");
      return nlohmann::json{{"val_loss", vl}, {"val_ppl", std::exp(vl)}};
    };
  run_training(cfg, t, p.output_dir, tokenizer_dir, rt, *model, recipe);
  return 0;
}

namespace {
// The run directory of pretrain.seed (config::seed_dir).
std::string pretrain_run_dir(const config::Config& c) {
  return config::seed_dir(c.pretrain.output_dir, c.pretrain.seed);
}
}  // namespace

cli::Stage pretrain_stage() {
  return {.name = "pretrain",
          .summary = "pretrain the drafter on token shards (data parallel)",
          .description =
              "Trains a Llama-architecture drafter with next-token cross-entropy on the shards of prepare-data.\n"
              "Data parallel over c10d (NCCL on GPU, Gloo on CPU) when launched with torchrun or srun.",
          .sections = {"run", "pretrain"},
          .run = pretrain,
          .outputs =
              [](const config::Config& c) { return std::vector<std::string>{pretrain_run_dir(c) + "/" + kFinalDir}; },
          .is_complete =
              [](const config::Config& c) { return training_complete(pretrain_run_dir(c), c.pretrain.train.steps); }};
}

}  // namespace draftalign::train
