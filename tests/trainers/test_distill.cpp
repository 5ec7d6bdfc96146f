// `draftalign distill` end to end, as the real binary, on a tiny pair: a random 2-layer target with SmolLM2's tokenizer
// answers 32 prompts through `draftalign generate` (with top-k log-probs), and a different random 1-layer drafter is
// distilled on the answers. With TVD++ against the online teacher the held-out alpha rises over the starting
// checkpoint's (0.663 -> 0.699 when written); TVD against the offline top-k teacher runs; a run resumed from a mid-way checkpoint ends with the same
// weights as the uninterrupted one; missing top-k data and an unfinished generate run are clear errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tiny_models.h"
#include "data/draft_vocab.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/eagle3.h"
#include "model/llama.h"
#include "model/generation.h"
#include "trainers/distill.h"

namespace draftalign::train {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;
using testing::run_command;
using testing::ScratchDir;

struct World {
  ScratchDir d;
  World() {
    testing::save_tiny(d / "target", 2, 5, 30.0);
    testing::save_tiny(d / "drafter", 1, 9, 1.0, d / "target");
    std::string prompts;
    for (int i = 0; i < 32; ++i)
      prompts += json({{"instruction", str_cat("Write a line about the number ", i, ".")}}).dump() + "\n";
    testing::write_text(d / "prompts.jsonl", prompts);
  }
  std::string generate(const std::string& out, const std::string& extra = "") const {
    return str_cat(DRAFTALIGN_BIN, " generate run.threads=2 run.output_dir=", (d / "run").string(), " target.dir=", (d / "target").string(),
                   " generate.prompts=[", (d / "prompts.jsonl").string(), "] generate.output_dir=", (d / out).string(),
                   " generate.shard_size=16 generate.batch_size=16 generate.max_new_tokens=32 ", extra);
  }
  static constexpr double kLr = 0.001;  // distill's peak learning rate
  std::string distill(const std::string& data, const std::string& extra) const {
    return str_cat(DRAFTALIGN_BIN, " distill run.threads=2 run.log_every=5 distill.teacher=online run.output_dir=", (d / "run").string(),
                   " target.dir=", (d / "target").string(),
                   " distill.data_dir=", (d / data).string(), " distill.student=", (d / "drafter").string(),
                   " distill.output_dir=", (d / "out").string(),
                   " distill.val_fraction=0.25 distill.train.steps=30 distill.train.seq_len=64",
                   " distill.train.micro_batch_size=4 distill.train.eval_every=0 distill.train.eval_batches=2",
                   " distill.train.save_every=0 distill.train.optim.lr=", kLr, " distill.train.optim.min_lr=0.0001",
                   " distill.train.optim.warmup_steps=3 ", extra);
  }
  // Drops the last checkpoint (step `steps`) and the final model of a finished run in `run`, runs it again with the
  // same `extra`: it must resume from the checkpoint before and end with the same weights.
  void expect_exact_resume(const std::string& data, const std::string& extra, const fsys::path& run,
                           int64_t steps) const {
    const std::string whole = testing::read_text(run / "final" / "model.safetensors");
    char step[32];
    std::snprintf(step, sizeof step, "step-%07lld", static_cast<long long>(steps));
    fs::remove_tree(run / "checkpoints" / step);
    fs::remove_tree(run / "final");
    const auto r = run_command(distill(data, extra));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_HAS(r.output, "resumed from");
    EXPECT_TRUE(testing::read_text(run / "final" / "model.safetensors") == whole) << "resumed run ends elsewhere";
  }
};

// The records of metrics.jsonl that hold `key`.
std::vector<json> records_with(const fsys::path& metrics, const std::string& key) {
  std::vector<json> out;
  std::istringstream in(testing::read_text(metrics));
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && json::parse(line).contains(key)) out.push_back(json::parse(line));
  return out;
}

// Several responses to one prompt never land on both sides of the held-out split.
TEST(Distill, HeldOutSplitIsByPrompt) {
  const std::vector<int64_t> a = {1, 2}, b = {3}, c = {4, 5, 6}, e = {7};
  // Two responses per prompt, interleaved as generate writes them; 1 in 4 prompts held out: the 4th, e.
  const std::vector<std::vector<int64_t>> prompts = {a, a, b, b, c, c, e, e, a};
  EXPECT_EQ(held_out_by_prompt(prompts, 0.25),
            (std::vector<bool>{false, false, false, false, false, false, true, true, false}));
  // 1 in 2: b and e, with every one of their responses.
  EXPECT_EQ(held_out_by_prompt(prompts, 0.5),
            (std::vector<bool>{false, false, true, true, false, false, true, true, false}));
  EXPECT_EQ(held_out_by_prompt(prompts, 0), std::vector<bool>(prompts.size(), false));
}

TEST(Distill, TvdppOnlineRaisesHeldOutAlphaOfflineRunsAndResumeIsExact) {
  World w;
  auto r = run_command(w.generate("data", "generate.topk_logprobs=20"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // TVD++ against the online teacher.
  r = run_command(w.distill("data", "distill.loss=tvdpp"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fsys::path run = w.d / "out" / "tvdpp-token-q";
  auto val = records_with(run / "metrics.jsonl", "val_alpha");
  ASSERT_EQ(val.size(), 2u) << "validation at the start and at the end";
  EXPECT_EQ(val[0]["step"], 0);
  EXPECT_EQ(val[1]["step"], 30);
  const double a0 = val[0]["val_alpha"], a1 = val[1]["val_alpha"];
  EXPECT_GT(a1, a0 + 0.02) << "held-out alpha " << a0 << " -> " << a1 << "\n" << testing::read_text(run / "metrics.jsonl");
  EXPECT_EQ(val[1]["val_tau_iid_prediction"].size(), 8u);
  EXPECT_NEAR(val[1]["val_tau_iid_prediction"][0].get<double>(), 1 + a1, 1e-9);
  EXPECT_GT(val[1]["val_greedy_agreement"].get<double>(), 0);
  EXPECT_FALSE(val[1].contains("val_alpha_offline_teacher")) << "online: the teacher is the target";
  const auto steps = records_with(run / "metrics.jsonl", "kd");
  ASSERT_FALSE(steps.empty());
  EXPECT_TRUE(steps.back().contains("alpha") && steps.back().contains("ce"));
  EXPECT_TRUE(fsys::exists(run / "final" / "model.safetensors"));
  std::printf("tvdpp online: held-out alpha %.4f -> %.4f\n", a0, a1);

  // TVD against the offline top-k teacher.
  r = run_command(w.distill("data", "distill.loss=tvd distill.teacher=offline"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  val = records_with(w.d / "out" / "tvd" / "metrics.jsonl", "val_alpha");
  ASSERT_EQ(val.size(), 2u);
  for (const json& v : val) EXPECT_TRUE(v["val_alpha"].get<double>() > 0 && v["val_alpha"].get<double>() < 1);
  // Validation is against the real target whatever the teacher: at step 0 (the same student, the same held-out
  // records) the offline run's alpha is the online run's, and the stored top-k teacher's alpha is a separate key.
  EXPECT_NEAR(val[0]["val_alpha"].get<double>(), a0, 1e-9);
  ASSERT_TRUE(val[0].contains("val_alpha_offline_teacher"));
  EXPECT_NE(val[0]["val_alpha_offline_teacher"].get<double>(), val[0]["val_alpha"].get<double>());
  std::printf("tvd offline: held-out alpha (real target) %.4f -> %.4f; against the stored top-20 teacher %.4f -> "
              "%.4f\n", val[0]["val_alpha"].get<double>(), val[1]["val_alpha"].get<double>(),
              val[0]["val_alpha_offline_teacher"].get<double>(), val[1]["val_alpha_offline_teacher"].get<double>());

  // Resume: FKL, 12 steps with a checkpoint at 6; drop the last checkpoint and the final model, run again.
  const std::string fkl = "distill.loss=fkl distill.train.steps=12 distill.train.save_every=6 distill.train.keep_last=3";
  r = run_command(w.distill("data", fkl));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  w.expect_exact_resume("data", fkl, w.d / "out" / "fkl", 12);
}

// The offline teacher with k = V is the online teacher: the same loss, alpha and gradient norm at every step, the
// same weights at the end, and at step 0 the stored teacher's alpha is the real target's. Besides the top-k + rest
// binning (at k = V the vocabulary reordered), this checks that generate's stored rows line up with distill's
// response positions: one row off and every figure differs. The stored rows come from the generator's KV-cached
// decode, the online teacher from one full forward, so they agree to float rounding, not bit for bit. The run uses
// tvdpp_stats = vocab: with stats q a rounding-level flip of r = 1[p > q] at a near-tie token that holds most of q's
// mass moves the row's mean E_q[r] and weight 1 / sd by O(1) (weights then differ by 2e-5 after three steps, not 6e-7),
// which would test the tie, not the bins.
TEST(Distill, OfflineWithFullTopkIsTheOnlineLoss) {
  World w;
  const int64_t vocab = 49152;  // SmolLM2's tokenizer, which the tiny models share
  auto r = run_command(w.generate("full", str_cat("generate.topk_logprobs=", vocab,
                                                  " generate.max_prompts=8 generate.max_new_tokens=8")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(w.generate("over", str_cat("generate.topk_logprobs=", vocab + 1, " generate.max_prompts=1")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "generate.topk_logprobs = 49153 is more than the target's vocabulary");
  const int steps = 3;
  const std::string run = str_cat("distill.loss=tvdpp distill.tvdpp_stats=vocab distill.train.steps=", steps,
                                  " distill.train.micro_batch_size=2 run.log_every=1 ");
  r = run_command(w.distill("full", run));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fsys::path online = w.d / "out" / "tvdpp-token-q-vocab";
  fsys::rename(online, w.d / "online");
  r = run_command(w.distill("full", run + "distill.teacher=offline"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto a = records_with(w.d / "online" / "metrics.jsonl", "kd"), b = records_with(online / "metrics.jsonl", "kd");
  ASSERT_EQ(a.size(), static_cast<size_t>(steps));
  ASSERT_EQ(b.size(), static_cast<size_t>(steps));
  for (size_t i = 0; i < a.size(); ++i)
    for (const char* key : {"loss", "kd", "alpha", "grad_norm"}) {
      const double x = a[i][key], y = b[i][key];
      EXPECT_NEAR(y, x, 1e-4 * std::max(1.0, std::abs(x))) << "step " << a[i]["step"] << " " << key;
    }
  const auto val = records_with(online / "metrics.jsonl", "val_alpha");
  ASSERT_FALSE(val.empty());
  EXPECT_NEAR(val[0]["val_alpha_offline_teacher"].get<double>(), val[0]["val_alpha"].get<double>(), 1e-5);
  // The same three updates, up to the near-ties above: AdamW's first step moves every weight by about lr * sign(g),
  // so a gradient element that is rounding noise around 0 (a token whose 1[p > q] flips between the two teachers) can
  // move by up to 2 lr per step the other way. At most 1 weight in 10^4 may differ, each by at most that bound; a
  // misaligned row changes every gradient and so most weights.
  const auto wa = io::SafetensorsFile::open(w.d / "online" / "final" / "model.safetensors");
  const auto wb = io::SafetensorsFile::open(online / "final" / "model.safetensors");
  int64_t differing = 0, total = 0;
  for (const auto& e : wa.entries()) {
    const torch::Tensor diff = (wa.get(e.name).to(torch::kFloat64) - wb.get(e.name).to(torch::kFloat64)).abs();
    const int64_t n = (diff > 1e-5).sum().item<int64_t>();
    EXPECT_LE(n, std::max<int64_t>(1, diff.numel() / 10000)) << e.name << ": weights that differ by more than 1e-5";
    EXPECT_LE(diff.max().item<double>(), 2 * World::kLr * steps * 1.01) << e.name << ": more than a sign flip per step";
    differing += n;
    total += diff.numel();
  }
  std::printf("k = V: %lld of %lld weights differ by more than 1e-5\n", static_cast<long long>(differing),
              static_cast<long long>(total));
  std::printf("k = V: step-1 kd %.6f online, %.6f offline; grad norm %.6f, %.6f\n", a[0]["kd"].get<double>(),
              b[0]["kd"].get<double>(), a[0]["grad_norm"].get<double>(), b[0]["grad_norm"].get<double>());
}

TEST(Distill, MissingTopkAndUnfinishedDataAreClearErrors) {
  World w;
  auto r = run_command(w.generate("plain", "generate.topk_logprobs=0"));  // no top-k: offline cannot work
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(w.distill("plain", "distill.teacher=offline"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "generate.topk_logprobs");
  EXPECT_HAS(r.output, "shard-00000.safetensors");
  // A window (train.seq_len = 8) that every prompt fills: no response position in any micro-batch. Each is skipped
  // and counted, not turned into a NaN or an exception.
  r = run_command(w.distill("plain", "distill.train.seq_len=8 distill.train.steps=3 distill.train.grad_accum=2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto steps = records_with(w.d / "out" / "tvdpp-token-q" / "metrics.jsonl", "empty_micro_batches");
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps.back()["empty_micro_batches"], 6);
  EXPECT_EQ(steps.back()["loss"], 0.0);
  fsys::remove(w.d / "plain" / "manifest.json");
  r = run_command(w.distill("plain", ""));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "manifest.json is missing");
}

// A drafter with a draft vocabulary (model.draft_vocab_size): distill chooses it again on the training answers'
// response tokens, the stop token first and the checkpoint's own choice filling what the answers leave; it trains
// through the reduced head (held-out alpha, against the real target over the whole vocabulary, rises), resumes
// exactly, and trains against the offline teacher too, whose stored top-k spans the whole vocabulary.
TEST(Distill, ADraftVocabularyIsChosenAgainOnTheAnswersTrainsAndResumesExactly) {
  World w;
  auto r = run_command(w.generate("data", "generate.topk_logprobs=20"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto m = model::load_llama(w.d / "drafter");
  // Most of the vocabulary: the random tiny target's answers are not Zipfian, so a held-out answer's tokens are
  // rarely a training answer's; the restriction itself is tested in test_speculative.cpp.
  const int64_t eos = m->config().eos_token_ids.at(0), n = 40000;
  std::vector<int64_t> before = {eos};  // the lowest ids: not what the answers use
  for (int64_t t = 0; static_cast<int64_t>(before.size()) < n; ++t)
    if (t != eos) before.push_back(t);
  m->set_draft_vocab(before);
  model::save_llama(*m, w.d / "drafter-dv", torch::kFloat32, testing::kSmolDir);
  const std::string student = " distill.student=" + (w.d / "drafter-dv").string();

  r = run_command(w.distill("data", "distill.loss=tvdpp" + student));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, str_cat("draft vocabulary of ", n, " tokens chosen on the"));
  const fsys::path run = w.d / "out" / "tvdpp-token-q";
  // The choice, counted here on the same training split.
  config::DistillSection d;
  d.val_fraction = 0.25, d.train.eval_batches = 2, d.train.micro_batch_size = 4;
  const std::vector<Pair> pairs = load_pairs(w.d / "data", false, 49152);
  data::TokenCounter counter(49152);
  for (const Pair* p : split_pairs(pairs, d, d.train).first)
    counter.add(std::vector<int64_t>(p->tokens.begin() + p->prompt_len, p->tokens.end()), "test");
  const std::vector<int64_t> want = data::rank_draft_tokens(counter.counts(), n, {eos}, before);
  EXPECT_NE(want, before);
  EXPECT_EQ(io::read_hf_config(run / "final" / "config.json").draft_token_ids, want);
  const auto val = records_with(run / "metrics.jsonl", "val_alpha");
  ASSERT_EQ(val.size(), 2u);
  const double a0 = val[0]["val_alpha"], a1 = val[1]["val_alpha"];
  EXPECT_GT(a1, a0 + 0.02) << "held-out alpha " << a0 << " -> " << a1;
  EXPECT_TRUE(std::isfinite(val[1]["val_ce"].get<double>()));
  std::printf("tvdpp online, draft vocabulary of %lld: held-out alpha %.4f -> %.4f\n", static_cast<long long>(n), a0,
              a1);

  const std::string fkl = "distill.loss=fkl distill.train.steps=12 distill.train.save_every=6 distill.train.keep_last=3";
  r = run_command(w.distill("data", fkl + student));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  w.expect_exact_resume("data", fkl + student, w.d / "out" / "fkl", 12);

  // The offline teacher: stored top-k tokens outside the draft vocabulary join the rest bucket (losses.h topk_bins).
  r = run_command(w.distill("data", "distill.loss=tvd distill.teacher=offline" + student));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto off = records_with(w.d / "out" / "tvd" / "metrics.jsonl", "val_alpha");
  ASSERT_EQ(off.size(), 2u);
  EXPECT_NEAR(off[0]["val_alpha"].get<double>(), a0, 1e-9) << "the same student and held-out records at step 0";
  // (Offline TVD lowers held-out alpha in this tiny world with or without a draft vocabulary: see the test above.)
  EXPECT_TRUE(off[1]["val_alpha_offline_teacher"].get<double>() > 0 && off[1]["val_alpha"].get<double>() > 0);
  for (const auto& j : records_with(w.d / "out" / "tvd" / "metrics.jsonl", "loss"))
    EXPECT_TRUE(std::isfinite(j["loss"].get<double>())) << j.dump();
}

// Any n consecutive sequences hold n * lambda (+-1) on-policy ones, whatever the start; lambda = 0 picks none.
TEST(Distill, OnPolicySequencesAreTheRequestedShare) {
  for (const double f : {0.0, 0.1, 0.25, 0.5, 1.0})
    for (const int64_t start : {0, 7, 1000}) {
      int64_t n = 0;
      for (int64_t g = start; g < start + 200; ++g) n += on_policy_sequence(g, f);
      EXPECT_NEAR(static_cast<double>(n), 200 * f, 1.0) << "fraction " << f << " from " << start;
    }
  for (int64_t g = 0; g < 100; ++g) EXPECT_FALSE(on_policy_sequence(g, 0.0));
}

// The on-policy responses are the student's own samples: the first response token over 2400 seeds follows
// softmax(logits / T) of the student (chi-square), and does not follow it at another temperature; T = 0 is the argmax;
// a response stops at max_new or after an end token.
TEST(Distill, OnPolicyResponsesFollowTheStudentsDistribution) {
  torch::manual_seed(3);
  model::Llama m(testing::tiny_smol_config(1));
  const std::vector<int64_t> prompt = {1, 17, 923, 4005};
  torch::Tensor logits;
  {
    // Sharpen the final norm until the first token's perplexity is below 40: mass on a few dozen tokens, so that the
    // chi-square has cells to compare (a random tiny model is near-uniform over 49k tokens).
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 40; ++i) {
      logits = m.forward(torch::tensor(prompt).unsqueeze(0))[0][-1].to(torch::kFloat64);
      const torch::Tensor p = torch::softmax(logits, -1);
      if (std::exp(-(p * p.clamp_min(1e-300).log()).sum().item<double>()) < 40) break;
      m.named_parameters()["model.norm.weight"].mul_(1.25);
    }
  }
  const int64_t n = 2400, chunk = 200;
  for (const double temperature : {1.0, 0.7}) {
    std::map<int64_t, int64_t> counts;
    for (int64_t c = 0; c < n; c += chunk) {
      std::vector<uint64_t> seeds;
      for (int64_t i = 0; i < chunk; ++i) seeds.push_back(model::splitmix64(static_cast<uint64_t>(c + i)));
      const auto r = sample_responses(m, std::vector<std::vector<int64_t>>(chunk, prompt),
                                      std::vector<int64_t>(chunk, 3), seeds, temperature);
      for (const auto& tokens : r) {
        ASSERT_FALSE(tokens.empty());
        ASSERT_LE(tokens.size(), 3u);
        if (tokens.size() < 3) EXPECT_EQ(tokens.back(), 2) << "only an end token stops a response early";
        ++counts[tokens[0]];
      }
    }
    auto probs = [&](double t) {
      const torch::Tensor p = torch::softmax(logits / t, -1).contiguous();
      return std::vector<double>(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
    };
    const auto [stat, crit] = testing::chi_square(counts, probs(temperature), n);
    const auto [wrong, wrong_crit] = testing::chi_square(counts, probs(temperature == 1.0 ? 0.7 : 1.0), n);
    std::printf("T %.1f: first-token probability %.3f; chi-square %.1f (critical %.1f); against the other temperature %.1f (critical %.1f)\n",
                temperature, torch::softmax(logits / temperature, -1).max().item<double>(), stat, crit, wrong,
                wrong_crit);
    EXPECT_LT(stat, crit) << "samples at T " << temperature << " do not follow the student's distribution";
    EXPECT_GT(wrong, wrong_crit) << "the test cannot tell the two temperatures apart";
  }
  const auto greedy = sample_responses(m, {prompt, prompt}, {1, 1}, {1, 2}, 0.0);
  EXPECT_EQ(greedy[0], std::vector<int64_t>{logits.argmax().item<int64_t>()});
  EXPECT_EQ(greedy[1], greedy[0]);
}

// On-policy distillation end to end: lambda = 0.5 trains (alpha is logged, the run writes to its own directory), its
// weights differ from the off-policy run's, a run resumed from the mid-way checkpoint ends with the same weights, and
// lambda = 0 at another on-policy temperature is the off-policy run bit for bit. The offline teacher is refused.
TEST(Distill, OnPolicyRunsResumeExactlyAndZeroIsOffPolicy) {
  World w;
  auto r = run_command(w.generate("data"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string base = "distill.loss=tvdpp distill.train.steps=8 distill.train.save_every=4 distill.train.keep_last=3";
  r = run_command(w.distill("data", base));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string off = testing::read_text(w.d / "out" / "tvdpp-token-q" / "final" / "model.safetensors");
  fs::remove_tree(w.d / "out" / "tvdpp-token-q");
  r = run_command(w.distill("data", base + " distill.on_policy_fraction=0 distill.on_policy_temperature=0.3"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(testing::read_text(w.d / "out" / "tvdpp-token-q" / "final" / "model.safetensors") == off)
      << "on_policy_fraction = 0 is not the off-policy run";

  const std::string on = base + " distill.on_policy_fraction=0.5 distill.on_policy_temperature=1";
  r = run_command(w.distill("data", on));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fsys::path run = w.d / "out" / "tvdpp-token-q-onpolicy0.5";
  const std::string whole = testing::read_text(run / "final" / "model.safetensors");
  EXPECT_FALSE(whole == off) << "half the responses sampled by the student, yet the off-policy weights";
  const auto steps = records_with(run / "metrics.jsonl", "kd");
  ASSERT_FALSE(steps.empty());
  EXPECT_TRUE(std::isfinite(steps.back()["kd"].get<double>()) && steps.back()["alpha"].get<double>() > 0);
  w.expect_exact_resume("data", on, run, 8);

  r = run_command(w.distill("data", "distill.teacher=offline distill.on_policy_fraction=0.5"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "distill.on_policy_fraction");
}

// distill.kind = eagle3: an EAGLE-3 head on the tiny target's three hidden states, trained on the generated answers and
// on corpus windows the target reads (prepare-data shards), with a 3-step training-time test. Its held-out
// likelihood of the target's tokens rises from the random start; the final head loads back in the EAGLE-3 layout with the
// configured taps and draft vocabulary; a run resumed from a mid-way checkpoint ends with the same weights; a default
// tap set the target is too shallow for, a draft vocabulary larger than the target's and an offline teacher are one
// clear error each.
TEST(Distill, Eagle3HeadLearnsLoadsBackAndResumesExactly) {
  World w;
  auto r = run_command(w.generate("data"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string corpus;
  const char* words[] = {"the", "number", "line", "is", "a", "write", "about", "one", "two", "and", "of", "red"};
  for (int i = 0; i < 200; ++i) {
    std::string text;
    for (int k = 0; k < 30; ++k) text += str_cat(words[(i * 5 + k * k) % 12], k % 7 == 6 ? ". " : " ");
    corpus += json({{"text", text}}).dump() + "\n";
  }
  testing::write_text(w.d / "corpus.jsonl", corpus);
  r = run_command(str_cat(DRAFTALIGN_BIN, " prepare-data run.output_dir=", (w.d / "run").string(), " target.dir=", (w.d / "target").string(), " prepare.inputs=[",
                          (w.d / "corpus.jsonl").string(), "] prepare.output_dir=", (w.d / "shards").string(),
                          " prepare.val_fraction=0.05"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string head = str_cat("distill.kind=eagle3 distill.loss=fkl distill.eagle3.taps=[0,1,2] ",
                                   "distill.eagle3.draft_vocab_size=600 distill.eagle3.ttt_steps=3 distill.eagle3.corpus=",
                                   (w.d / "shards").string(), " distill.eagle3.corpus_fraction=0.5 ",
                                   "distill.eagle3.lr=0.003 ");
  r = run_command(w.distill("data", head));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "corpus windows");
  const fsys::path run = w.d / "out" / "eagle3-fkl";
  const auto val = records_with(run / "metrics.jsonl", "val_greedy_agreement");
  ASSERT_EQ(val.size(), 2u) << "validation at the start and at the end";
  // The random tiny target is a hard function to imitate in 30 steps: the head learns its token distribution (the
  // held-out NLL of the target's token falls from about log 600) long before its argmax agrees.
  const double a0 = val[0]["val_greedy_agreement"], a1 = val[1]["val_greedy_agreement"];
  const double n0 = val[0]["val_step0_nll"], n1 = val[1]["val_step0_nll"];
  EXPECT_LT(n1, n0 - 0.3) << "held-out step-0 NLL " << n0 << " -> " << n1;
  ASSERT_EQ(val[1]["val_step_agreement"].size(), 3u);
  std::printf("eagle3 head: held-out step-0 NLL %.3f -> %.3f, greedy agreement %.4f -> %.4f, by step %s, leading run "
              "%.3f\n", n0, n1, a0, a1,
              val[1]["val_step_agreement"].dump().c_str(), val[1]["val_leading_run"].get<double>());
  const auto target = model::load_llama(w.d / "target");
  const auto loaded = model::load_eagle3(run / "final", target->named_parameters()["model.embed_tokens.weight"]);
  EXPECT_EQ(loaded->config().taps, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(loaded->config().vocab.size(), 600);
  // export: the head in bf16 beside the target's tokenizer; without its target, one clear error.
  const std::string exp = str_cat(DRAFTALIGN_BIN, " export run.output_dir=", (w.d / "run").string(), " export.checkpoint=", (run / "final").string(),
                                  " export.output_dir=", (w.d / "exported").string(), " export.dtype=bf16 target.dir=");
  r = run_command(exp + (w.d / "target").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "\"method\": \"eagle3\"");
  EXPECT_TRUE(fsys::exists(w.d / "exported" / "tokenizer.json"));
  EXPECT_EQ(io::SafetensorsFile::open(w.d / "exported" / "model.safetensors").entry("fc.weight").dtype, "BF16");
  r = run_command(exp + (w.d / "no-target").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "is an EAGLE-3 head");

  const std::string resume = head + str_cat(" distill.output_dir=", (w.d / "resume").string(),
                                            " distill.train.steps=12 distill.train.save_every=6 distill.train.keep_last=3");
  r = run_command(w.distill("data", resume));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  w.expect_exact_resume("data", resume, w.d / "resume" / "eagle3-fkl", 12);

  r = run_command(w.distill("data", "distill.kind=eagle3 distill.loss=fkl"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "distill.eagle3.taps");
  r = run_command(w.distill("data", head + " distill.eagle3.draft_vocab_size=100000"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "exceeds the vocabulary of the target");
  r = run_command(w.distill("data", head + " distill.teacher=offline"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "distill.teacher = online");
}

}  // namespace
}  // namespace draftalign::train
