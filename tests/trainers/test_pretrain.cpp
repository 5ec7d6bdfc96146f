// `draftalign pretrain` end to end on a tiny drafter with SmolLM2's vocabulary, run as the real binary: the loss
// falls; a run killed with SIGKILL and restarted ends bitwise equal to an uninterrupted one; damaged checkpoints and
// non-finite losses give clear errors; and (label multiprocess) two Gloo ranks equal one process over the same global
// batch, and a rank that dies makes the other fail fast instead of hanging.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "data/shards.h"
#include "io/hf_config.h"
#include "model/llama.h"
#include "test_util.h"
#include "tiny_models.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/sampler.h"
#include "trainers/prepare_data.h"
#include "trainers/pretrain.h"
#include "trainers/train_loop.h"

namespace draftalign::train {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;
using testing::run_command;
using testing::ScratchDir;

using testing::kSmolDir;

// A small dataset of English-like sentences with SmolLM2's tokenizer.
fsys::path make_dataset(const ScratchDir& d) {
  const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "red", "big"};
  std::string lines;
  for (int i = 0; i < 400; ++i) {
    std::string text;
    for (int w = 0; w < 20 + i % 30; ++w) text += str_cat(words[(i * 7 + w * w) % 13], w % 9 == 8 ? ". " : " ");
    lines += json({{"text", text}}).dump() + "\n";
  }
  testing::write_text(d / "corpus.jsonl", lines);
  config::Config cfg;
  cfg.target.dir = kSmolDir.string();
  cfg.prepare.inputs = {(d / "corpus.jsonl").string()};
  cfg.prepare.output_dir = (d / "shards").string();
  cfg.prepare.val_fraction = 0.05;
  prepare_data(cfg);
  return d / "shards";
}

// The command line of a tiny pretraining run (1 CPU thread: bitwise reproducible), its head over the whole vocabulary
// (the draft-vocabulary test sets its own after it: the last value of a key wins).
std::string pretrain_cmd(const fsys::path& shards, const fsys::path& out, const std::string& extra = "") {
  return str_cat(DRAFTALIGN_BIN, " pretrain run.threads=1 run.log_every=1 run.output_dir=", out.string(),
                 " pretrain.data_dir=", shards.string(), " pretrain.output_dir=", out.string(),
                 " pretrain.model.hidden_size=32 pretrain.model.intermediate_size=64 pretrain.model.num_layers=2",
                 " pretrain.model.num_heads=4 pretrain.model.num_kv_heads=2 pretrain.train.seq_len=32",
                 " pretrain.train.micro_batch_size=4 pretrain.train.steps=12 pretrain.train.eval_every=6",
                 " pretrain.train.eval_batches=2 pretrain.train.save_every=3 pretrain.train.keep_last=2",
                 " pretrain.train.optim.lr=0.01 pretrain.train.optim.min_lr=0.001 pretrain.train.optim.warmup_steps=2",
                 " pretrain.embedding_init=normal pretrain.model.draft_vocab_size=0 ", extra);
}

// The metrics records without the wall-clock fields.
std::vector<json> metrics_of(const fsys::path& out) {
  std::vector<json> records;
  std::ifstream in(out / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line);
    j.erase("time");
    j.erase("tokens_per_s");
    records.push_back(j);
  }
  return records;
}

std::vector<double> losses_of(const std::vector<json>& records) {
  std::vector<double> out;
  for (const auto& r : records)
    if (r.contains("loss")) out.push_back(r["loss"].get<double>());
  return out;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(Pretrain, LossFallsAndKeepsTheLastCheckpoints) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  auto r = run_command(pretrain_cmd(shards, d / "run", "pretrain.train.steps=40 pretrain.train.save_every=10"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto records = metrics_of(d / "run");
  const auto losses = losses_of(records);
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_NEAR(losses.front(), std::log(49152.0), 0.3) << "a fresh model predicts about uniformly";
  EXPECT_LT(losses.back(), losses.front() - 3.0) << r.output;
  std::vector<double> val;
  for (const auto& j : records)
    if (j.contains("val_loss")) val.push_back(j["val_loss"].get<double>());
  ASSERT_GE(val.size(), 2u);
  EXPECT_LT(val.back(), val.front());

  std::vector<std::string> kept;
  for (const auto& e : fsys::directory_iterator(d / "run" / "checkpoints")) kept.push_back(e.path().filename());
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(kept, (std::vector<std::string>{"step-0000030", "step-0000040"}));
  // Checkpoint checksums are XXH3-64, named in trainer_state.json, and Debian's xxhsum reproduces them.
  const fsys::path ckpt = d / "run" / "checkpoints" / "step-0000040";
  const json state = json::parse(testing::read_text(ckpt / "trainer_state.json"));
  EXPECT_EQ(state["checksum"], "xxh3-64");
  for (const char* f : {"model.safetensors", "optimizer.pt"}) {
    const auto xxh = run_command(str_cat("xxhsum -H3 ", (ckpt / f).string()));
    ASSERT_EQ(xxh.exit_code, 0) << xxh.output;
    EXPECT_HAS(xxh.output, state["checksums"][f].get<std::string>());
  }
  auto final_model = model::load_llama(d / "run" / "final");
  EXPECT_EQ(final_model->config().hidden_size, 32);
  EXPECT_TRUE(fsys::exists(d / "run" / "final" / "tokenizer.json"));

  // pretrain.init_from continues from those weights: its first loss is the trained model's, not a fresh one's.
  r = run_command(pretrain_cmd(shards, d / "more", "pretrain.train.steps=2 pretrain.init_from=" +
                                                       (d / "run" / "final").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "starting from");
  EXPECT_LT(losses_of(metrics_of(d / "more")).front(), losses.front() - 3.0);

  // pretrain.embedding_init = target-svd: the embedding starts from the target's; not with init_from.
  const std::string svd = " pretrain.embedding_init=target-svd target.dir=" + kSmolDir.string();
  r = run_command(pretrain_cmd(shards, d / "svd", "pretrain.train.steps=2" + svd));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "top 32 right singular vectors");
  r = run_command(pretrain_cmd(shards, d / "svd2", "pretrain.train.steps=2 pretrain.init_from=" +
                                                       (d / "run" / "final").string() + svd));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "pretrain.embedding_init = target-svd initialises a drafter from scratch");
}

// The target-svd embedding is E V_d for the top d right singular vectors of E: its columns are orthogonal with squared
// norms the top d squared singular values (from LibTorch's SVD, another algorithm than the eigensolver used), in
// descending order, and it keeps as much of E as any rank-d projection can: |E V_d|^2 = sum of those.
TEST(Pretrain, TargetSvdEmbeddingIsTheTopSingularSubspace) {
  ScratchDir d;
  const fsys::path target = testing::save_tiny(d / "t", 1, 3, 1.0);
  const torch::Tensor e = model::load_llama(target)->named_parameters()["model.embed_tokens.weight"].to(torch::kFloat64);
  const int64_t k = 8;
  const torch::Tensor r = target_svd_embedding(target, e.size(0), k).to(torch::kFloat64);
  ASSERT_EQ(r.sizes(), (std::vector<int64_t>{e.size(0), k}));
  const torch::Tensor sv = torch::linalg_svdvals(e).narrow(0, 0, k);
  const torch::Tensor gram = r.t().mm(r);
  EXPECT_LT(((gram.diagonal() - sv * sv).abs() / (sv * sv)).max().item<double>(), 1e-5);
  EXPECT_LT((gram - torch::diag(gram.diagonal())).abs().max().item<double>(), 1e-5 * gram.diagonal().max().item<double>());
  // Each column lies in E's row space: projecting E on the columns' directions reproduces them.
  const torch::Tensor v = torch::linalg_pinv(e).mm(r);  // [H, k]: E v = r
  EXPECT_LT(((e.mm(v) - r).norm() / r.norm()).item<double>(), 1e-6);
  EXPECT_LT((v.t().mm(v) - torch::eye(k, torch::kFloat64)).abs().max().item<double>(), 1e-5) << "orthonormal";
  // Deterministic signs: each direction's largest entry is positive.
  EXPECT_TRUE((v.gather(0, v.abs().argmax(0, true)) > 0).all().item<bool>());
  EXPECT_HAS(testing::error_of([&] { target_svd_embedding(target, e.size(0), e.size(1) + 1); }),
             "exceeds the target's");
  EXPECT_HAS(testing::error_of([&] { target_svd_embedding(target, 1000, k); }), "vocabulary has 1000 tokens");
}

// Run `a` ended as run `b`: the same metrics, final weights and optimizer state at `last_step`, byte for byte.
void expect_same_final(const fsys::path& a, const fsys::path& b, int64_t last_step) {
  EXPECT_EQ(metrics_of(a), metrics_of(b));
  EXPECT_TRUE(testing::read_text(a / "final/model.safetensors") == testing::read_text(b / "final/model.safetensors"))
      << "final weights differ";
  const fsys::path opt = checkpoint_dir(fsys::path(), last_step) / "optimizer.pt";
  EXPECT_TRUE(testing::read_text(a / opt) == testing::read_text(b / opt)) << "optimizer states differ";
}

TEST(Pretrain, SigkillThenResumeIsBitwiseEqualToAnUninterruptedRun) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  auto r = run_command(pretrain_cmd(shards, d / "whole"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const fsys::path out = d / "killed";
  r = run_command(str_cat("timeout 120 bash -c '", pretrain_cmd(shards, out), " > ", (d / "log").string(),
                          " 2>&1 & pid=$!; while [ ! -d ", (out / "checkpoints/step-0000006").string(),
                          " ]; do sleep 0.02; done; kill -9 $pid; wait $pid; echo killed=$?'"));
  ASSERT_HAS(r.output, "killed=137");
  ASSERT_FALSE(fsys::exists(out / "final")) << "the run was killed before it finished";
  r = run_command(pretrain_cmd(shards, out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "resumed from");
  expect_same_final(out, d / "whole", 12);
}

// Starts `cmd` in the background with its output in `log`, waits until <out>/metrics.jsonl has `lines` records, sends
// it `signals` (e.g. "TERM", or "TERM TERM" for a second signal when `log` shows `wait_for`), waits for it and
// returns "rc=<exit code>".
std::string signal_mid_run(const std::string& cmd, const fsys::path& out, const fsys::path& log, int lines,
                           const std::string& signal, const std::string& wait_for = "") {
  std::string script =
      str_cat(cmd, " > ", log.string(), " 2>&1 & pid=$!; while [ \"$(cat ", (out / "metrics.jsonl").string(),
              " 2>/dev/null | wc -l)\" -lt ", lines, " ]; do sleep 0.01; done; kill -", signal, " $pid; ");
  if (!wait_for.empty())
    script += str_cat("while ! grep -q \"", wait_for, "\" ", log.string(), "; do sleep 0.01; done; kill -", signal,
                      " $pid; ");
  return run_command(str_cat("timeout 120 bash -c '", script, "wait $pid; echo rc=$?'")).output;
}

// The complete checkpoints of a run (steps), and whether anything else is there.
std::vector<int64_t> checkpoint_steps(const fsys::path& out) {
  std::vector<int64_t> steps;
  if (!fsys::exists(out / "checkpoints")) return steps;
  for (const auto& e : fsys::directory_iterator(out / "checkpoints"))
    if (checkpoint_step(e.path()) >= 0) steps.push_back(checkpoint_step(e.path()));
  std::sort(steps.begin(), steps.end());
  return steps;
}

// Preemption: SIGTERM, SIGUSR1 or SIGINT mid-run finishes the step, writes a checkpoint of it (save_every is 0 here,
// so it is the only one) and exits 75; the same command resumes and ends bitwise equal to an uninterrupted run. A
// second signal while the checkpoint is being written (held there by the test hook) exits at once with 128 + 15,
// leaving no checkpoint under its final name and removing the file in progress; the next run clears the cut-short
// directory and, with no checkpoint, starts over to the same result.
TEST(Pretrain, ASignalCheckpointsTheStepAndTheSameCommandResumesBitwiseEqual) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  const std::string opts = "pretrain.train.steps=40 pretrain.train.save_every=0";
  auto r = run_command(pretrain_cmd(shards, d / "whole", opts));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  for (const char* sig : {"TERM", "USR1", "INT"}) {
    SCOPED_TRACE(sig);
    const fsys::path out = d / str_cat("sig", sig), log = d / str_cat("sig", sig, ".log");
    const std::string rc = signal_mid_run(pretrain_cmd(shards, out, opts), out, log, 5, sig);
    const std::string text = testing::read_text(log);
    ASSERT_HAS(rc, "rc=75");
    const std::vector<int64_t> steps = checkpoint_steps(out);
    ASSERT_EQ(steps.size(), 1u) << text;
    EXPECT_GE(steps[0], 5);
    EXPECT_LT(steps[0], 40);
    EXPECT_HAS(text, str_cat("stopped (SIG", sig, "): pretrain stopped after step ", steps[0], " of 40; "));
    EXPECT_HAS(text, "run the same command again to resume");
    EXPECT_FALSE(fsys::exists(out / "final"));
    r = run_command(pretrain_cmd(shards, out, opts));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_HAS(r.output, str_cat("resumed from ", checkpoint_dir(out, steps[0]).string(), " at step ", steps[0]));
    expect_same_final(out, d / "whole", 40);
  }

  const fsys::path out = d / "twice", log = d / "twice.log";
  const std::string rc = signal_mid_run("DRAFTALIGN_FAULT=stall@optimizer.pt " + pretrain_cmd(shards, out, opts), out,
                                        log, 3, "TERM", "stalling at");
  const std::string text = testing::read_text(log);
  ASSERT_HAS(rc, "rc=143");
  EXPECT_HAS(text, "received again: stopping now");
  EXPECT_TRUE(checkpoint_steps(out).empty()) << text;
  int unfinished = 0;
  for (const auto& e : fsys::recursive_directory_iterator(out / "checkpoints")) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(name.find("optimizer.pt.tmp-"), std::string::npos) << "the file in progress is left: " << e.path();
    unfinished += name.find(".tmp-") != std::string::npos && e.is_directory();
  }
  EXPECT_EQ(unfinished, 1) << "the checkpoint directory being written";
  r = run_command(pretrain_cmd(shards, out, opts));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "a checkpoint whose writing was cut short");
  EXPECT_EQ(r.output.find("resumed from"), std::string::npos);
  expect_same_final(out, d / "whole", 40);
}

// Failed writes: ENOSPC or EIO injected at each write point of a checkpoint (each file's first and last write and its
// sync). The run fails with one error line naming the file and the errno; the previous checkpoint stays whole and
// nothing half-written is left; the same command then resumes from it and ends as an uninterrupted run.
TEST(Pretrain, AFailedCheckpointWriteKeepsThePreviousOneAndTheRunResumes) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  const std::string opts = "pretrain.train.steps=9 pretrain.train.keep_last=3 pretrain.train.eval_every=0";
  auto r = run_command(pretrain_cmd(shards, d / "whole", opts));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto faults = testing::write_faults(pretrain_cmd(shards, d / "trace", opts), "step-0000006");
  // config.json, generation_config.json, model.safetensors, the tokenizer files, optimizer.pt, rng.pt, trainer_state
  ASSERT_GE(faults.size(), 16u);
  std::printf("%zu write points of a checkpoint faulted\n", faults.size());
  for (const testing::WriteFault& fault : faults) {
    SCOPED_TRACE(fault.spec + " at " + fault.point);
    const fsys::path out = d / "run";
    fs::remove_tree(out);
    r = run_command(str_cat("DRAFTALIGN_FAULT=", fault.spec, " ", pretrain_cmd(shards, out, opts)));
    ASSERT_NO_FATAL_FAILURE(testing::expect_one_write_error(r, fault));
    EXPECT_EQ(checkpoint_steps(out), (std::vector<int64_t>{3}));
    EXPECT_EQ(testing::temp_files_under(out), std::vector<std::string>());
    r = run_command(pretrain_cmd(shards, out, opts));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_HAS(r.output, "at step 3");
    expect_same_final(out, d / "whole", 9);
  }
}

// The numeric fields of each record of metrics.jsonl as {name: [[step, value], ...]}, as the trackers should have them.
std::map<std::string, std::vector<std::pair<int64_t, double>>> metric_series(const fsys::path& out) {
  std::map<std::string, std::vector<std::pair<int64_t, double>>> series;
  std::ifstream in(out / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line);
    for (const auto& [k, v] : j.items())
      if (k != "step" && k != "time" && v.is_number())
        series[k].emplace_back(j["step"].get<int64_t>(), v.get<double>());
  }
  return series;
}

void expect_series_equal(const std::map<std::string, std::vector<std::pair<int64_t, double>>>& want, const json& got,
                         double rel, const std::string& tracker) {
  ASSERT_TRUE(got.is_object()) << tracker << ": " << got.dump();
  EXPECT_EQ(got.size(), want.size()) << tracker << " tags: " << got.dump().substr(0, 400);
  for (const auto& [key, points] : want) {
    ASSERT_TRUE(got.contains(key)) << tracker << " lacks " << key;
    const json& g = got[key];
    ASSERT_EQ(g.size(), points.size()) << tracker << " " << key << ": " << g.dump();
    for (size_t i = 0; i < points.size(); ++i) {
      EXPECT_EQ(g[i][0].get<int64_t>(), points[i].first) << tracker << " " << key << " point " << i;
      EXPECT_NEAR(g[i][1].get<double>(), points[i].second, rel * std::abs(points[i].second) + 1e-12)
          << tracker << " " << key << " at step " << points[i].first;
    }
  }
}

// run.report_to: [jsonl, tensorboard, wandb] on a real run. tensorboard's own EventAccumulator reads the event file and
// the W&B offline run (no API key: offline) is decoded from its transaction log (tools/read_trackers.py); both hold
// every numeric field of every metrics.jsonl record at its step. A resumed run rewrites the TensorBoard file (no step
// twice) and continues the same W&B run with the new steps only. A Python that cannot run the sidecar is named.
TEST(Pretrain, TensorBoardAndOfflineWandbHoldEveryMetricAtItsStep) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d), out = d / "run";
  const std::string env = str_cat("env -u WANDB_API_KEY -u WANDB_MODE HOME=", d.path().string(), " ");
  const std::string trackers = " 'run.report_to=[jsonl,tensorboard,wandb]' run.wandb_project=draftalign-test";
  auto r = run_command(env + pretrain_cmd(shards, out, trackers));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "(offline)");
  auto read_back = [&] {
    auto rb = run_command(
        str_cat(DRAFTALIGN_TEST_PYTHON, " ", DRAFTALIGN_SOURCE_DIR, "/tools/read_trackers.py ", out.string()));
    EXPECT_EQ(rb.exit_code, 0) << rb.output;
    return json::parse(rb.output.substr(rb.output.find('{')));
  };
  json got = read_back();
  const auto want = metric_series(out);
  ASSERT_EQ(want.at("loss").size(), 12u);
  ASSERT_EQ(want.at("val_loss").size(), 2u);
  expect_series_equal(want, got["tensorboard"], 1e-6, "tensorboard");  // float32 scalars
  ASSERT_EQ(got["wandb"].size(), 1u) << got["wandb"].dump();
  expect_series_equal(want, got["wandb"][0]["history"], 1e-12, "wandb");
  const std::string id = got["wandb"][0]["id"];
  EXPECT_EQ(testing::read_text(out / "wandb" / "run-id"), id);

  // Resume to 16 steps: one TensorBoard curve of 16 points; the second W&B log of the same run holds steps 13-16.
  r = run_command(env + pretrain_cmd(shards, out, trackers + " pretrain.train.steps=16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "resumed from");
  got = read_back();
  expect_series_equal(metric_series(out), got["tensorboard"], 1e-6, "tensorboard after resume");
  ASSERT_EQ(got["wandb"].size(), 2u) << got["wandb"].dump();
  EXPECT_EQ(got["wandb"][1]["id"], id);
  std::vector<int64_t> steps;
  for (const auto& p : got["wandb"][1]["history"]["loss"]) steps.push_back(p[0]);
  EXPECT_EQ(steps, (std::vector<int64_t>{13, 14, 15, 16}));

  r = run_command(str_cat("DRAFTALIGN_PYTHON=/nonexistent/python3 ",
                          pretrain_cmd(shards, d / "nopython", " 'run.report_to=[wandb]'")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "cannot start '/nonexistent/python3' for the W&B sidecar");
  r = run_command(pretrain_cmd(shards, d / "unknown", " 'run.report_to=[jsonl,mlflow]'"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_HAS(r.output, "run.report_to");
}

// Mean KL(target || drafter) of the next-token distributions over the first 64 tokens of the validation split.
double kl_to(const fsys::path& target, const fsys::path& drafter, const fsys::path& shards) {
  torch::NoGradGuard no_grad;
  const data::DatasetIndex index = data::read_index(shards);
  const data::TokenStream val(shards, index, "val");
  torch::Tensor x = torch::empty({1, 64}, torch::kInt64);
  val.read(0, 64, x.data_ptr<int64_t>());
  const torch::Tensor lp = torch::log_softmax(model::load_llama(target)->forward(x), -1);
  const torch::Tensor lq = torch::log_softmax(model::load_llama(drafter)->forward(x), -1);
  return (lp.exp() * (lp - lq)).sum(-1).mean().item<double>();
}

// pretrain.teacher = target: with kd_weight 0 it is plain pretraining bit for bit (the same losses and weights); with
// KD alone the KD term falls and the drafter ends near the target's distributions on held-out windows (mutations
// checked: the drafter's own logits as the teacher fail it, and so does a CE gradient off by 1e-6 at kd_weight 0).
// A run without its target, or with ce as the distribution loss, is one error.
TEST(Pretrain, DistillationFromTheTargetLearnsItsDistributionsAndWeightZeroIsPlainPretraining) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  const fsys::path target = testing::save_tiny(d / "target", 2, 11, 4.0);  // peaked, unlike the corpus
  const std::string teacher = " pretrain.teacher=target target.dir=" + target.string();
  auto r = run_command(pretrain_cmd(shards, d / "plain", "pretrain.train.steps=30"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(pretrain_cmd(shards, d / "kd0", "pretrain.train.steps=30 pretrain.kd_weight=0 pretrain.ce_weight=1" +
                                                      teacher));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "distillation from the target");
  EXPECT_EQ(losses_of(metrics_of(d / "plain")), losses_of(metrics_of(d / "kd0")));
  EXPECT_TRUE(testing::read_text(d / "plain/final/model.safetensors") ==
              testing::read_text(d / "kd0/final/model.safetensors")) << "kd_weight 0 changed the weights";

  r = run_command(pretrain_cmd(shards, d / "kd", "pretrain.train.steps=30" + teacher));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<double> kd;
  for (const auto& j : metrics_of(d / "kd"))
    if (j.contains("kd")) kd.push_back(j["kd"].get<double>());
  ASSERT_EQ(kd.size(), 30u);
  EXPECT_LT(kd.back(), 0.5 * kd.front()) << r.output;
  EXPECT_EQ(losses_of(metrics_of(d / "kd")), kd) << "kd_weight 1, ce_weight 0: the loss is the KD term";
  const double kl_kd = kl_to(target, d / "kd/final", shards), kl_plain = kl_to(target, d / "plain/final", shards);
  // On held-out windows: a quarter of the KL the drafter started at (the first step's KD), and below plain
  // pretraining's (which learns the corpus, not this target).
  EXPECT_LT(kl_kd, 0.25 * kd.front()) << "KD " << kl_kd << ", at the start " << kd.front();
  EXPECT_LT(kl_kd, kl_plain) << "KD " << kl_kd << ", plain " << kl_plain;

  r = run_command(pretrain_cmd(shards, d / "none", " pretrain.teacher=target target.dir=" + (d / "nowhere").string()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "pretrain.teacher = target needs the target model: " + (d / "nowhere/config.json").string());
  r = run_command(pretrain_cmd(shards, d / "ce", " pretrain.kd_loss=ce" + teacher));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "pretrain.kd_loss");
  EXPECT_FALSE(fsys::exists(d / "none/final"));
}

// pretrain.model.draft_vocab_size: the head covers the n most frequent tokens of the training split (the stop token
// always), most frequent first, stored in the checkpoint's config.json; the loss falls, with and without the target as
// teacher; a resume with another draft vocabulary is refused naming the file; n past the vocabulary is a config error.
TEST(Pretrain, ADraftVocabularyIsTheCorpussMostFrequentTokensAndTrains) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  const int64_t n = 12;
  auto r = run_command(pretrain_cmd(shards, d / "dv", str_cat("pretrain.model.draft_vocab_size=", n)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, str_cat("draft vocabulary of ", n, " tokens (of 49152)"));
  const io::LlamaConfig c = io::read_hf_config(d / "dv/final/config.json");
  ASSERT_EQ(c.draft_token_ids.size(), static_cast<size_t>(n));
  // The expected choice, counted here over the train split.
  const data::DatasetIndex index = data::read_index(shards);
  const data::TokenStream train(shards, index, "train");
  std::vector<int64_t> tokens(static_cast<size_t>(train.size()));
  train.read(0, train.size(), tokens.data());
  std::map<int64_t, int64_t> count;
  for (int64_t t : tokens) ++count[t];
  EXPECT_EQ(c.draft_token_ids[0], index.eos_id) << "the stop token first";
  for (int64_t i = 2; i < n; ++i)
    EXPECT_GE(count[c.draft_token_ids[i - 1]], count[c.draft_token_ids[i]]) << "not most frequent first at " << i;
  int64_t kth = count[c.draft_token_ids[n - 1]], above = 0;
  for (const auto& [t, k] : count) above += k > kth && t != index.eos_id;
  EXPECT_LE(above, n - 1) << "a token more frequent than the last chosen one is left out";
  const std::vector<double> losses = losses_of(metrics_of(d / "dv"));
  EXPECT_NEAR(losses.front(), std::log(static_cast<double>(n)), 0.3) << "cross-entropy over the n head tokens";
  EXPECT_LT(losses.back(), losses.front() - 0.05);

  const fsys::path target = testing::save_tiny(d / "target", 2, 11, 4.0);
  r = run_command(pretrain_cmd(shards, d / "dv-kd", str_cat("pretrain.model.draft_vocab_size=", n,
                                                            " pretrain.teacher=target target.dir=", target.string())));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<double> kd;
  for (const auto& j : metrics_of(d / "dv-kd"))
    if (j.contains("kd")) kd.push_back(j["kd"].get<double>());
  ASSERT_EQ(kd.size(), 12u);
  EXPECT_LT(kd.back(), kd.front());

  r = run_command(pretrain_cmd(shards, d / "dv", str_cat("pretrain.model.draft_vocab_size=", n + 1,
                                                         " pretrain.train.steps=15")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, (d / "dv/checkpoints/step-0000012/config.json").string() + ": its draft vocabulary (12 tokens");
  r = run_command(pretrain_cmd(shards, d / "big", "pretrain.model.draft_vocab_size=50000"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "50000 is larger than the vocabulary");
  EXPECT_FALSE(fsys::exists(d / "big/final"));
}

TEST(Pretrain, DamagedCheckpointAndDataAreNamed) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  const fsys::path out = d / "run";
  auto r = run_command(pretrain_cmd(shards, out, "pretrain.train.steps=6"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fsys::path ckpt = out / "checkpoints/step-0000006";
  const std::string more = "pretrain.train.steps=9";

  const std::string weights = testing::read_text(ckpt / "model.safetensors");
  std::string flipped = weights;
  flipped[flipped.size() - 7] ^= 0x10;
  testing::write_text(ckpt / "model.safetensors", flipped);
  r = run_command(pretrain_cmd(shards, out, more));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, (ckpt / "model.safetensors").string() + ": checksum does not match");
  testing::write_text(ckpt / "model.safetensors", weights);

  testing::write_text(ckpt / "trainer_state.json", "{\"step\": ");
  r = run_command(pretrain_cmd(shards, out, more));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, (ckpt / "trainer_state.json").string() + ": not valid JSON");

  r = run_command(pretrain_cmd(shards, out, more + " pretrain.train.resume=" + (out / "nowhere").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "is not a checkpoint directory");

  // A different architecture than the checkpoint's.
  r = run_command(pretrain_cmd(shards, out, more + " pretrain.train.resume=" +
                                               (out / "checkpoints/step-0000003").string() +
                                               " pretrain.model.intermediate_size=96"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "intermediate_size is 64 but the configured model has 96");

  const fsys::path shard = shards / "train-00000.bin";
  std::string bytes = testing::read_text(shard);
  bytes[100] ^= 0x01;
  testing::write_text(shard, bytes);
  r = run_command(pretrain_cmd(shards, d / "other"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, shard.string() + ": corrupt token shard: checksum mismatch");
}

TEST(Pretrain, NonFiniteLossStopsNamingTheCheckpointOrIsSkipped) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  const std::string blow_up = "pretrain.train.optim.lr=1e30 pretrain.train.save_every=1 pretrain.train.steps=4";
  auto r = run_command(pretrain_cmd(shards, d / "stop", blow_up));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_HAS(r.output, "non-finite loss or gradient");
  EXPECT_HAS(r.output, "at step 2; the last good checkpoint is " + (d / "stop/checkpoints/step-0000001").string());

  r = run_command(pretrain_cmd(shards, d / "skip", blow_up + " pretrain.train.on_nonfinite=skip"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto records = metrics_of(d / "skip");
  int64_t skipped = -1;
  for (const auto& j : records)
    if (j.contains("skipped")) skipped = j["skipped"];
  EXPECT_EQ(skipped, 3);
  EXPECT_HAS(r.output, "3 skipped so far");
}

// Two ranks (2 sequences each, 2 accumulation steps, small buckets so there are several) against one process with
// 4 accumulation steps: the same 8 sequences per step.
TEST(MultiprocessPretrain, TwoGlooRanksEqualOneProcessOverTheSameGlobalBatch) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  auto r = run_command(pretrain_cmd(shards, d / "one", "pretrain.train.micro_batch_size=2 pretrain.train.grad_accum=4"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string two = pretrain_cmd(shards, d / "two",
                                       "pretrain.train.micro_batch_size=2 pretrain.train.grad_accum=2 "
                                       "pretrain.train.bucket_mb=0.01 run.dist_timeout_s=60");
  const std::string env = str_cat("MASTER_ADDR=127.0.0.1 MASTER_PORT=", free_port(), " WORLD_SIZE=2");
  r = run_command(str_cat("timeout 300 bash -c '", env, " RANK=1 LOCAL_RANK=1 ", two, " > ", (d / "rank1.log").string(),
                          " 2>&1 & ", env, " RANK=0 LOCAL_RANK=0 ", two, "; rc0=$?; wait $!; echo rc=$rc0,$?'"));
  ASSERT_HAS(r.output, "rc=0,0");
  EXPECT_HAS(r.output, "Gloo backend");
  EXPECT_HAS(r.output, "gradient buckets");

  const auto a = metrics_of(d / "one"), b = metrics_of(d / "two");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    for (const char* key : {"loss", "val_loss", "grad_norm"})
      if (a[i].contains(key)) EXPECT_NEAR(a[i][key].get<double>(), b[i][key].get<double>(), 1e-4) << key << " " << i;
  auto ma = model::load_llama(d / "one/final"), mb = model::load_llama(d / "two/final");
  auto pb = mb->named_parameters();
  for (const auto& kv : ma->named_parameters())
    EXPECT_LT((kv.value() - pb[kv.key()]).abs().max().item<double>(), 1e-4) << kv.key();
}

// The launch line users type: torchrun (its agent hosts the rendezvous store) starting our binary.
TEST(MultiprocessPretrain, TorchrunLaunchesTwoRanks) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  auto r = run_command(str_cat("timeout 300 ", DRAFTALIGN_TEST_PYTHON, " -m torch.distributed.run --nproc-per-node=2 ",
                               "--no-python --master-port=", free_port(), " ",
                               pretrain_cmd(shards, d / "run", "pretrain.train.steps=4 run.dist_timeout_s=60")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "data parallel: 2 ranks, Gloo backend");
  EXPECT_EQ(losses_of(metrics_of(d / "run")).size(), 4u);
  EXPECT_TRUE(fsys::exists(d / "run/final/model.safetensors"));
}

// One of two Gloo ranks is signalled: the stop request travels in the step's all-reduce, so both finish the same
// step, write its checkpoint together and exit 75; both resumed, the run equals an uninterrupted two-rank run.
TEST(MultiprocessPretrain, ASignalToOneRankStopsEveryRankAfterTheSameStep) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  const std::string opts =
      "pretrain.train.steps=40 pretrain.train.save_every=0 pretrain.train.micro_batch_size=2 "
      "pretrain.train.grad_accum=2 run.dist_timeout_s=60";
  auto two_ranks = [&](const fsys::path& out, const std::string& then) {
    const std::string cmd = pretrain_cmd(shards, out, opts);
    const std::string env = str_cat("MASTER_ADDR=127.0.0.1 MASTER_PORT=", free_port(), " WORLD_SIZE=2");
    return run_command(str_cat("timeout 300 bash -c '", env, " RANK=1 LOCAL_RANK=1 ", cmd, " > ",
                               (out.string() + ".rank1.log"), " 2>&1 & r1=$!; ", env, " RANK=0 LOCAL_RANK=0 ", cmd,
                               " > ", (out.string() + ".rank0.log"), " 2>&1 & r0=$!; ", then,
                               "wait $r0; a=$?; wait $r1; echo rc=$a,$?'"))
        .output;
  };
  ASSERT_HAS(two_ranks(d / "whole", ""), "rc=0,0");
  const fsys::path out = d / "run";
  const std::string rc =
      two_ranks(out, str_cat("while [ \"$(cat ", (out / "metrics.jsonl").string(),
                             " 2>/dev/null | wc -l)\" -lt 5 ]; do sleep 0.01; done; kill -TERM $r1; "));
  const std::string log0 = testing::read_text(out.string() + ".rank0.log"),
                    log1 = testing::read_text(out.string() + ".rank1.log");
  ASSERT_HAS(rc, "rc=75,75") << log0 << log1;
  const std::vector<int64_t> steps = checkpoint_steps(out);
  ASSERT_EQ(steps.size(), 1u);
  const std::string stopped = str_cat("pretrain stopped after step ", steps[0], " of 40");
  EXPECT_HAS(log1, "stopped (SIGTERM): " + stopped);
  EXPECT_HAS(log0, "stopped (a signal reached another rank): " + stopped);
  ASSERT_HAS(two_ranks(out, ""), "rc=0,0");
  EXPECT_HAS(testing::read_text(out.string() + ".rank0.log"), str_cat("at step ", steps[0]));
  expect_same_final(out, d / "whole", 40);
}

TEST(MultiprocessPretrain, ADeadRankMakesTheOtherFailFast) {
  ScratchDir d;
  const fsys::path shards = make_dataset(d);
  const std::string cmd = pretrain_cmd(shards, d / "run", "pretrain.train.steps=100000 run.dist_timeout_s=60");
  const std::string env = str_cat("MASTER_ADDR=127.0.0.1 MASTER_PORT=", free_port(), " WORLD_SIZE=2");
  const auto start = std::chrono::steady_clock::now();
  auto r = run_command(str_cat(
      "timeout 120 bash -c '", env, " RANK=1 LOCAL_RANK=1 ", cmd, " > /dev/null 2>&1 & victim=$!; ", env,
      " RANK=0 LOCAL_RANK=0 ", cmd, " > ", (d / "rank0.log").string(), " 2>&1 & survivor=$!; ",
      "while [ ! -d ", (d / "run/checkpoints/step-0000003").string(), " ]; do sleep 0.05; done; kill -9 $victim; ",
      "wait $survivor; echo survivor=$?'"));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_HAS(r.output, "survivor=1");
  EXPECT_LT(secs, 90.0);
  const std::string log = testing::read_text(d / "rank0.log");
  EXPECT_HAS(log, "error: data-parallel");
  EXPECT_HAS(log, "failed on rank 0");
}

}  // namespace
}  // namespace draftalign::train
