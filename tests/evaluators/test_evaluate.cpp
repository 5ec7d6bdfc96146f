// `draftalign evaluate` end to end, as the real binary: a tiny target with SmolLM2's tokenizer, a drafter that shares
// its embeddings and head, and a copy of the target as a second drafter, on a 4-prompt file. The report files are all
// written; every number in report.json agrees with the per-prompt records and the formulas; the copy of the target is
// always accepted; greedy outputs are as long as the target's own. Bad inputs (a drafter with another vocabulary, a
// missing or corrupt checkpoint, gamma 0, an empty prompt file) are one clear error each, and the report already in
// the directory survives them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "evaluators/metrics.h"
#include "tiny_models.h"

namespace draftalign::eval {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;
using testing::run_command;

struct World {
  testing::ScratchDir d;
  World() {
    testing::save_tiny(d / "target", 2, 5, 30.0);
    testing::save_tiny(d / "drafter" / "final", 1, 9, 1.0, d / "target");
    fsys::create_directories(d / "same");
    for (const auto& e : fsys::directory_iterator(d / "target")) fsys::copy(e.path(), d / "same" / e.path().filename());
    std::string prompts;
    for (int i = 0; i < 4; ++i)
      prompts += json({{"turns", {str_cat("Tell me about the number ", i, "."), "And more?"}},
                       {"question_id", 80 + i}}).dump() + "\n";
    testing::write_text(d / "prompts.jsonl", prompts);
  }
  std::string evaluate(const std::string& extra = "") const {
    return str_cat(DRAFTALIGN_BIN, " evaluate run.threads=2 run.output_dir=", (d / "run").string(), " target.dir=",
                   (d / "target").string(), " evaluate.drafters=[", (d / "drafter" / "final").string(), ",",
                   (d / "same").string(), "] evaluate.prompts=[", (d / "prompts.jsonl").string(),
                   "] evaluate.report_dir=", (d / "report").string(),
                   " evaluate.gammas=[1,3] evaluate.temperatures=[0,1] evaluate.max_new_tokens=24 evaluate.repeats=2",
                   " evaluate.python=", DRAFTALIGN_TEST_PYTHON, " ", extra);
  }
};

std::vector<json> jsonl(const fsys::path& file) {
  std::vector<json> out;
  std::istringstream in(testing::read_text(file));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// Sums the per-prompt counters of one drafter and setting, through the same SpecCounters the evaluator uses.
SpecCounters sum_prompts(const std::vector<json>& records, const std::string& drafter, double t, int64_t g,
                         int64_t* prompts) {
  SpecCounters s;
  *prompts = 0;
  for (const json& r : records) {
    if (r["drafter"] != drafter || r["temperature"].get<double>() != t || r["gamma"].get<int64_t>() != g) continue;
    const json& c = r["counters"];
    SpecCounters x;
    x.num_drafts = c["num_drafts"], x.num_draft_tokens = c["num_draft_tokens"];
    x.num_accepted_tokens = c["num_accepted_tokens"];
    x.num_accepted_tokens_per_pos = c["num_accepted_tokens_per_pos"].get<std::vector<int64_t>>();
    x.acceptance_counts = c["acceptance_counts"].get<std::vector<int64_t>>();
    x.num_emitted_tokens = c["num_emitted_tokens"], x.num_target_calls = c["num_target_calls"];
    x.num_drafter_calls = c["num_drafter_calls"];
    s.add(x);
    ++*prompts;
  }
  return s;
}

TEST(Evaluate, ReportNumbersAgreeWithTheCounters) {
  World w;
  const auto r = run_command(w.evaluate());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fsys::path dir = w.d / "report";
  for (const char* f : {"report.json", "report.md", "prompts.jsonl", "plot_report.py", "acceptance_by_position.png",
                        "tau_vs_gamma.png", "speedup_vs_gamma.png"})
    EXPECT_TRUE(fsys::exists(dir / f)) << f << "\n" << r.output;
  const json rep = json::parse(testing::read_text(dir / "report.json"));
  const auto records = jsonl(dir / "prompts.jsonl");
  EXPECT_EQ(records.size(), 4u * (2 + 2 * 2 * 2));  // prompts x (baselines + drafters x temperatures x gammas)
  EXPECT_EQ(rep["prompts"], 4);
  ASSERT_EQ(rep["drafters"].size(), 2u);
  EXPECT_EQ(rep["drafters"][0]["name"], "drafter");
  EXPECT_EQ(rep["drafters"][1]["name"], "same");
  const int64_t target_params = rep["target"]["params"];

  std::map<double, double> baseline_tps;
  std::map<double, int64_t> baseline_tokens;
  for (const json& b : rep["baselines"]) {
    int64_t n = 0;
    const SpecCounters s = sum_prompts(records, "target-only", b["temperature"], 0, &n);
    EXPECT_EQ(n, 4);
    EXPECT_EQ(b["num_emitted_tokens"].get<int64_t>(), s.num_emitted_tokens);
    EXPECT_EQ(s.num_target_calls, s.num_emitted_tokens);  // one token per call
    ASSERT_EQ(b["seconds"].size(), 2u);
    baseline_tps[b["temperature"]] = s.num_emitted_tokens / median(b["seconds"].get<std::vector<double>>());
    EXPECT_NEAR(b["tokens_per_s"].get<double>(), baseline_tps[b["temperature"]], 1e-9);
    baseline_tokens[b["temperature"]] = s.num_emitted_tokens;
  }
  for (const json& d : rep["drafters"]) {
    const double c = static_cast<double>(target_params) / d["params"].get<int64_t>();
    EXPECT_NEAR(d["param_ratio"].get<double>(), c, 1e-9);
    ASSERT_EQ(d["points"].size(), 4u);
    for (const json& p : d["points"]) {
      const double t = p["temperature"];
      const int64_t g = p["gamma"];
      int64_t n = 0;
      const SpecCounters s = sum_prompts(records, d["name"], t, g, &n);
      EXPECT_EQ(n, 4);
      const json& pc = p["counters"];
      EXPECT_EQ(pc["num_drafts"].get<int64_t>(), s.num_drafts);
      EXPECT_EQ(pc["num_accepted_tokens"].get<int64_t>(), s.num_accepted_tokens);
      EXPECT_EQ(pc["num_accepted_tokens_per_pos"].get<std::vector<int64_t>>(), s.num_accepted_tokens_per_pos);
      EXPECT_EQ(pc["acceptance_counts"].get<std::vector<int64_t>>(), s.acceptance_counts);
      EXPECT_EQ(pc["num_emitted_tokens"].get<int64_t>(), s.num_emitted_tokens);
      EXPECT_EQ(s.num_draft_tokens, g * s.num_drafts);
      EXPECT_EQ(s.num_drafts, s.num_target_calls);
      const double tau = static_cast<double>(s.num_emitted_tokens) / s.num_target_calls;
      const json& m = p["metrics"];
      EXPECT_NEAR(m["block_efficiency"].get<double>(), tau, 1e-12);
      EXPECT_NEAR(m["mean_acceptance_length"].get<double>(), 1.0 + double(s.num_accepted_tokens) / s.num_drafts, 1e-12);
      EXPECT_NEAR(m["acceptance_rate_per_pos"][0].get<double>(),
                  double(s.num_accepted_tokens_per_pos[0]) / s.num_drafts, 1e-12);
      EXPECT_NEAR(p["mbsu"].get<double>(), c * tau / (c + g), 1e-12);
      const double tps = s.num_emitted_tokens / median(p["seconds"].get<std::vector<double>>());
      EXPECT_NEAR(p["tokens_per_s"].get<double>(), tps, 1e-9);
      EXPECT_NEAR(p["speedup"].get<double>(), tps / baseline_tps[t], 1e-9);
      if (t == 0) EXPECT_EQ(s.num_emitted_tokens, baseline_tokens[0]) << "greedy output must equal the target's";
      if (d["name"] == "same") {
        EXPECT_EQ(s.num_accepted_tokens, s.num_draft_tokens) << "the target as its own drafter, T " << t << " g " << g;
      } else {
        EXPECT_LT(s.num_accepted_tokens, s.num_draft_tokens);
      }
    }
  }
  const std::string md = testing::read_text(dir / "report.md");
  EXPECT_HAS(md, "### Block efficiency tau");
  EXPECT_HAS(md, "| drafter | g=1 | g=3 |");
}

// An evaluation stopped part-way resumes from sweep.jsonl: the points already there are not run again (their wall times
// come back unchanged), the rest are, and the report equals the uninterrupted one's counters. A damaged record is one
// error naming the file and line; a log made from other inputs is started over.
TEST(Evaluate, InterruptedRunResumesFromTheSweepLog) {
  World w;
  const std::string cmd =
      w.evaluate(str_cat("evaluate.repeats=1 evaluate.drafters=[", (w.d / "drafter" / "final").string(), "]"));
  const fsys::path dir = w.d / "report", log = dir / "sweep.jsonl";
  auto r = run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json full = json::parse(testing::read_text(dir / "report.json"));
  std::vector<std::string> lines;
  {
    std::istringstream in(testing::read_text(log));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 1u + 2 + 4);  // header, 2 baselines, 1 drafter x 2 temperatures x 2 gammas

  // Stopped after the baselines and the first drafter point.
  testing::write_text(log, lines[0] + "\n" + lines[1] + "\n" + lines[2] + "\n" + lines[3] + "\n");
  fsys::remove(dir / "report.json");
  r = run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "resuming: 3 sweep points already done");
  const json resumed = json::parse(testing::read_text(dir / "report.json"));
  ASSERT_EQ(resumed["baselines"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(resumed["baselines"][i]["seconds"], full["baselines"][i]["seconds"]) << "not run again";
    EXPECT_EQ(resumed["baselines"][i]["num_emitted_tokens"], full["baselines"][i]["num_emitted_tokens"]);
  }
  const json& a = full["drafters"][0]["points"];
  const json& b = resumed["drafters"][0]["points"];
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0]["seconds"], a[0]["seconds"]) << "not run again";
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(b[i]["counters"], a[i]["counters"]) << i;
  EXPECT_NE(b[3]["seconds"], a[3]["seconds"]) << "timed again";
  EXPECT_EQ(jsonl(log).size(), lines.size());

  // A damaged record.
  testing::write_text(log, lines[0] + "\n" + lines[1] + "\n{\"who\": \"target-only\"}\n");
  r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "sweep.jsonl:3: not a sweep record");
  EXPECT_EQ(json::parse(testing::read_text(dir / "report.json")), resumed) << "the report survives";

  // Other inputs: the old log is not used.
  r = run_command(cmd + " evaluate.max_new_tokens=12");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "made from other inputs; the sweep starts over");
  EXPECT_EQ(jsonl(log).size(), lines.size());
}

TEST(Evaluate, BadInputsAreOneClearErrorAndTheOldReportSurvives) {
  World w;
  testing::write_text(w.d / "report" / "report.json", "old");
  auto expect_error = [&](const std::string& extra, const std::string& want) {
    const auto r = run_command(w.evaluate(extra));
    EXPECT_EQ(r.exit_code, 1) << extra << "\n" << r.output;
    EXPECT_HAS(r.output, want);
    EXPECT_EQ(testing::read_text(w.d / "report" / "report.json"), "old") << extra;
  };
  // A drafter with another vocabulary (config.json says so, before any weight is read).
  auto cfg = json::parse(testing::read_text(w.d / "same" / "config.json"));
  cfg["vocab_size"] = 32000;
  testing::write_text(w.d / "other" / "config.json", cfg.dump());
  expect_error(str_cat("evaluate.drafters=[", (w.d / "other").string(), "]"), "vocabulary of 32000 tokens");
  expect_error(str_cat("evaluate.drafters=[", (w.d / "missing").string(), "]"), "missing is not a directory");
  testing::write_text(w.d / "corrupt" / "config.json", "{\"vocab_size\": ");
  expect_error(str_cat("evaluate.drafters=[", (w.d / "corrupt").string(), "]"), "corrupt/config.json");
  // Weights cut short: the config passes, the safetensors file does not.
  fsys::create_directories(w.d / "cut");
  fsys::copy_file(w.d / "same" / "config.json", w.d / "cut" / "config.json");
  const std::string weights = testing::read_text(w.d / "same" / "model.safetensors");
  testing::write_text(w.d / "cut" / "model.safetensors", weights.substr(0, weights.size() / 2));
  expect_error(str_cat("evaluate.drafters=[", (w.d / "cut").string(), "]"), "model.safetensors");
  expect_error("evaluate.gammas=[0,2]", "evaluate.gammas");
  testing::write_text(w.d / "empty.jsonl", "\n");
  expect_error(str_cat("evaluate.prompts=[", (w.d / "empty.jsonl").string(), "]"), "hold no prompt");
}

}  // namespace
}  // namespace draftalign::eval
