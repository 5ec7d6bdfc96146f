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

}  // namespace

int distill_eagle3(const config::Config& given) {
  const config::Config cfg = config::with_stage_seed(given, given.distill.seed);
  const config::DistillSection& d = cfg.distill;
  const config::Eagle3Section& e = d.eagle3;
  const config::TrainSection t = config::distill_train(d);
  DA_CHECK(d.loss != config::Loss::kCe, "distill.loss = ce with distill.kind = eagle3: the head's steps are trained "
           "against the target's distributions; use fkl, rkl, tvd or tvdpp");
  Runtime rt = make_runtime(cfg.run, t);
  const stdfs::path out = distill_run_dir(d);

  std::shared_ptr<model::Llama> target = load_frozen_target(cfg, rt.device);
  const io::LlamaConfig& tc = target->config();
  const int64_t vocab = tc.vocab_size, L = tc.num_hidden_layers;
  std::vector<int64_t> taps = e.taps.empty() ? std::vector<int64_t>{2, L / 2, L - 3} : e.taps;
  DA_CHECK(taps.size() == 3 && taps[0] >= 0 && taps[0] < taps[1] && taps[1] < taps[2] && taps[2] <= L,
           "distill.eagle3.taps = [", taps[0], ", ", taps[1], ", ", taps[2], "]: the target ", cfg.target.dir, " has ",
           L, " layers, so a head reads 3 ascending hidden states in [0, ", L, "]",
           e.taps.empty() ? " (the default 2, L/2, L-3 needs at least 6 layers; set distill.eagle3.taps)" : "");
  DA_CHECK(e.draft_vocab_size <= vocab, "distill.eagle3.draft_vocab_size = ", e.draft_vocab_size,
           " exceeds the vocabulary of the target ", cfg.target.dir, " (", vocab, " tokens)");
  DA_CHECK(t.seq_len < tc.max_position_embeddings, "distill.train.seq_len (", t.seq_len,
           ") must be below the target's max_position_embeddings (", tc.max_position_embeddings, ")");
  const int64_t pad = tc.eos_token_ids.empty() ? 0 : tc.eos_token_ids[0];
  const int64_t steps = e.ttt_steps;

  // Answers: held out by prompt as for the model drafter.
  const std::vector<Pair> pairs = load_pairs(d.data_dir, false, vocab);
  const auto [train_set, val_set] = split_pairs(pairs, d, t);

  // Corpus windows (and the corpus head the draft vocabulary is counted on, at any corpus_fraction).
  std::unique_ptr<data::TokenStream> corpus;
  int64_t windows = 0;
  if (!e.corpus.empty() && (e.corpus_fraction > 0 || e.vocab_count_tokens > 0)) {
    const data::DatasetIndex index = data::read_index(e.corpus);
    DA_CHECK(index.vocab_size == vocab, e.corpus, "/index.json: the corpus is tokenized for a vocabulary of ",
             index.vocab_size, ", the target ", cfg.target.dir, " has ", vocab);
    corpus = std::make_unique<data::TokenStream>(e.corpus, index, "train");
    windows = corpus->size() / (t.seq_len + 1);
    DA_CHECK(windows > 0 || e.corpus_fraction == 0, e.corpus, ": the train split has ", corpus->size(),
             " tokens, fewer than one window of distill.train.seq_len + 1 = ", t.seq_len + 1);
  }

  // The draft vocabulary, counted on the training text.
  data::TokenCounter counter(vocab);
  for (const Pair* p : train_set) counter.add(p->tokens, d.data_dir.c_str());
  if (corpus && e.vocab_count_tokens > 0) {
    const int64_t n = std::min(corpus->size(), e.vocab_count_tokens);
    std::vector<int64_t> buf(static_cast<size_t>(std::min<int64_t>(n, 1 << 20)));
    for (int64_t at = 0; at < n; at += static_cast<int64_t>(buf.size())) {
      const int64_t m = std::min<int64_t>(static_cast<int64_t>(buf.size()), n - at);
      corpus->read(at, m, buf.data());
      counter.add(buf.data(), m, e.corpus.c_str());
    }
  }
  model::Eagle3Config hc;
  hc.layer = tc;
  hc.layer.model_type = "llama", hc.layer.qkv_bias = hc.layer.o_bias = hc.layer.qk_norm = false;
  hc.layer.sliding_window = 0, hc.layer.sliding_layers.clear(), hc.layer.max_window_layers = 0;
  hc.layer.num_hidden_layers = 1;
  hc.target_hidden = tc.hidden_size;
  hc.taps = taps;
  hc.vocab = data::select_draft_vocab(counter.counts(), e.draft_vocab_size, tc.eos_token_ids);
  const Tensor target_embed = target->named_parameters()["model.embed_tokens.weight"];
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  model::Eagle3Head head(hc, target_embed, torch::TensorOptions().device(rt.device).dtype(torch::kFloat32));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : head.parameters()) rt.dist->broadcast(p, "initial-weights broadcast");
  }
  const Tensor draft_ids = torch::tensor(hc.vocab.ids, torch::kInt64).to(rt.device);
  const Tensor to_draft = torch::tensor(hc.vocab.target_to_draft(), torch::kInt64).to(rt.device);
  log::info("distill: EAGLE-3 head (", head.num_params(), " parameters, taps ", taps[0], ", ", taps[1], ", ", taps[2],
            ", draft vocabulary ", hc.vocab.size(), " covering ", hc.vocab.coverage(counter.counts()),
            " of the counted tokens) on ", cfg.target.dir, "; ", train_set.size(), " training answers, ",
            val_set.size(), " held out", corpus ? str_cat(", ", windows, " corpus windows (fraction ",
                                                          e.corpus_fraction, ")") : std::string(),
            "; ", steps, " test-time steps, ", d.loss, " loss");

  EpochOrder answer_order(static_cast<int64_t>(train_set.size()), static_cast<uint64_t>(cfg.run.seed));
  EpochOrder corpus_order(std::max<int64_t>(windows, 1), static_cast<uint64_t>(cfg.run.seed) ^ 0xc0de);
  auto sequence = [&](int64_t g) {
    Sequence s;
    const int64_t before = static_cast<int64_t>(std::floor(static_cast<double>(g) * e.corpus_fraction));
    if (corpus && on_policy_sequence(g, e.corpus_fraction)) {  // the same interleaving rule
      s.tokens.resize(static_cast<size_t>(t.seq_len + 1));
      corpus->read(corpus_order.at(before) * (t.seq_len + 1), t.seq_len + 1, s.tokens.data());
      s.first = 2;
    } else {
      const Pair& p = *train_set[static_cast<size_t>(answer_order.at(g - before))];
      s.tokens = p.tokens, s.first = p.prompt_len;
    }
    return s;
  };

  // The target's taps and logits over a batch (no gradient), the head's step logits, and each step's slices.
  struct Forward {
    std::vector<Tensor> head, teacher;  // step i: [B, T - 1 - i, draft vocab], [B, T - 1 - i, vocab]
  };
  auto forward = [&](const HeadBatch& b) {
    model::Taps tapped{taps, {}};
    Tensor logits;
    {
      torch::NoGradGuard no_grad;
      logits = target->logits(target->hidden(b.x, {}, &tapped)).to(torch::kFloat32);
    }
    AutocastGuard guard(rt.bf16_autocast);
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < b.mask.size(); ++i) inputs.push_back(shifted(b.x, static_cast<int64_t>(i), pad));
    const std::vector<Tensor> hs = head.unroll(head.project(tapped.out), inputs);
    Forward f;
    const int64_t T = b.x.size(1);
    for (size_t i = 0; i < hs.size(); ++i) {
      const int64_t n = T - 1 - static_cast<int64_t>(i);
      f.head.push_back(head.logits(hs[i].narrow(1, 0, n)).to(torch::kFloat32));
      f.teacher.push_back(logits.narrow(1, 1 + static_cast<int64_t>(i), n));
    }
    return f;
  };

  const KdOptions kd = KdOptions::of(d);
  Recipe recipe;
  recipe.name = "distill";
  recipe.validate_at_start = true;
  recipe.micro_batch = [&](const std::vector<int64_t>& seqs) {
    std::vector<Sequence> batch;
    for (const int64_t g : seqs) batch.push_back(sequence(g));
    const HeadBatch b = make_head_batch(batch, t.seq_len, steps, pad, rt.device);
    const int64_t rows = b.mask.empty() ? 0 : b.mask[0].sum().item<int64_t>();
    if (rows == 0) return MicroBatch::empty({"kd", "agree0"});
    const Forward f = forward(b);
    const TttLoss l = ttt_loss(f.head, f.teacher, b.mask, draft_ids, kd, e.decay);
    return MicroBatch{l.loss, rows, {{"kd", l.loss.detach()}, {"agree0", torch::tensor(l.step_agree[0])}}};
  };
  if (!val_set.empty())
    recipe.validate = [&](int64_t step) {
      // Sums: per step i, positions and agreements (slots 2i, 2i + 1); the leading-run sum and its positions; step
      // 0's negative log-likelihood of the target's argmax where the draft vocabulary holds it, and those positions.
      const int64_t width = 2 * steps + 4;
      const Tensor c = held_out_sums(head, rt, static_cast<int64_t>(val_set.size()), t.micro_batch_size, width,
                                     [&](const std::vector<int64_t>& mine, Tensor& sums) {
        std::vector<Sequence> batch;
        for (const int64_t i : mine) {
          const Pair& p = *val_set[static_cast<size_t>(i)];
          batch.push_back({p.tokens, p.prompt_len});
        }
        const HeadBatch b = make_head_batch(batch, t.seq_len, steps, pad, rt.device);
        if (b.mask.empty()) return;
        const Forward f = forward(b);
        std::vector<Tensor> agree;
        for (size_t i = 0; i < f.head.size(); ++i) {
          const Tensor a = head.to_target(f.head[i].argmax(-1)).eq(f.teacher[i].argmax(-1)) & b.mask[i];
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
        sums[width - 4] += (run * valid.to(torch::kFloat64)).sum();
        sums[width - 3] += valid.sum().to(torch::kFloat64);
        const Tensor want = to_draft.index({f.teacher[0].argmax(-1)});  // [B, T - 1], -1 outside the vocabulary
        const Tensor rows = b.mask[0] & want.ge(0);
        const Tensor nll = -torch::log_softmax(f.head[0], -1).gather(-1, want.clamp_min(0).unsqueeze(-1)).squeeze(-1);
        sums[width - 2] += (nll.to(torch::kFloat64) * rows.to(torch::kFloat64)).sum();
        sums[width - 1] += rows.sum().to(torch::kFloat64);
      });
      nlohmann::json per_step = nlohmann::json::array();
      for (int64_t i = 0; i < static_cast<int64_t>(steps); ++i)
        per_step.push_back(c[2 * i + 1].item<double>() / std::max(1.0, c[2 * i].item<double>()));
      const double run = c[width - 4].item<double>() / std::max(1.0, c[width - 3].item<double>());
      const double nll = c[width - 2].item<double>() / std::max(1.0, c[width - 1].item<double>());
      log::info("distill: step ", step, " held-out (", val_set.size(), " answers, ",
                static_cast<int64_t>(c[0].item<double>()), " positions): head agreement by step ", per_step.dump(),
                ", mean leading run of ", steps, " steps ", run, ", step-0 NLL of the target's token ", nll);
      return nlohmann::json{{"val_step_agreement", per_step}, {"val_greedy_agreement", per_step[0]},
                            {"val_leading_run", run}, {"val_step0_nll", nll},
                            {"val_tokens", static_cast<int64_t>(c[0].item<double>())}};
    };

  ModelIO io;
  io.save = [&](const stdfs::path& dir) { model::save_eagle3(head, dir, torch::kFloat32); };
  io.load = [&](const stdfs::path& dir) {
    auto saved = model::load_eagle3(dir, target_embed, torch::kCPU, torch::kFloat32);
    const model::Eagle3Config& sc = saved->config();
    DA_CHECK(sc.taps == hc.taps && sc.vocab.ids == hc.vocab.ids && sc.layer.hidden_size == hc.layer.hidden_size &&
                 sc.layer.intermediate_size == hc.layer.intermediate_size,
             (dir / "config.json").string(), ": the checkpoint's head (taps, draft vocabulary or shape) is not the one "
             "this configuration trains (resume with the config and data it was trained with, or train.resume=none)");
    torch::NoGradGuard no_grad;
    auto dst = head.named_parameters();
    for (const auto& kv : saved->named_parameters()) dst[kv.key()].copy_(kv.value());
  };
  run_training(cfg, t, out, rt, head, io, recipe);
  return 0;
}

}  // namespace draftalign::train
