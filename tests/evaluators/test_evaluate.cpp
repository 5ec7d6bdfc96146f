// `draftalign evaluate` end to end, as the real binary: a tiny target with SmolLM2's tokenizer, a drafter that shares
// its embeddings and head, and a copy of the target as a second drafter, plus prompt lookup, on a 4-prompt file of two
// turns each. The report files are all written; every number in report.json agrees with the per-prompt records and
// the formulas; the one-pass exact counters of the timed greedy turns equal the real decoder's; the copy of the
// target is always accepted; greedy outputs are as long as the target's own. Bad inputs (a drafter with another vocabulary, a
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
    // The drafter's run log, as distill writes it: held-out alpha at steps 0, 5, 10, the loss every step; the last
    // line cut short by a kill.
    std::string metrics;
    for (int step = 0; step <= 10; ++step) {
      if (step > 0) metrics += json({{"step", step}, {"loss", 2.0 / step}, {"lr", 1e-3}}).dump() + "\n";
      if (step % 5 == 0)
        metrics += json({{"step", step}, {"val_alpha", 0.3 + 0.01 * step}, {"val_tvd", 0.7}}).dump() + "\n";
    }
    testing::write_text(d / "drafter" / "metrics.jsonl", metrics + "{\"step\": 11, \"lo");
    fsys::create_directories(d / "same");
    for (const auto& e : fsys::directory_iterator(d / "target")) fsys::copy(e.path(), d / "same" / e.path().filename());
    std::string prompts;
    for (int i = 0; i < 4; ++i)
      prompts += json({{"turns", {str_cat("Tell me about the number ", i, "."), "And more?"}},
                       {"question_id", 80 + i}, {"category", i < 2 ? "math" : "writing"}}).dump() + "\n";
    testing::write_text(d / "prompts.jsonl", prompts);
  }
  std::string evaluate(const std::string& extra = "") const {
    return str_cat(DRAFTALIGN_BIN, " evaluate run.threads=2 run.output_dir=", (d / "run").string(), " target.dir=",
                   (d / "target").string(), " evaluate.drafters=[", (d / "drafter" / "final").string(), ",",
                   (d / "same").string(), "] evaluate.prompts=[", (d / "prompts.jsonl").string(),
                   "] evaluate.report_dir=", (d / "report").string(),
                   " evaluate.gammas=[1,3] evaluate.temperatures=[0,1] evaluate.max_new_tokens=24 evaluate.repeats=2",
                   " evaluate.timed_prompts=4 evaluate.timed_max_new_tokens=24 evaluate.exact_gammas=[1,2,3,4]",
                   " evaluate.sampling_prompts=8 evaluate.sampling_max_new_tokens=48 evaluate.sampling_gamma=4",
                   " evaluate.context_max_new_tokens=64 evaluate.python=", DRAFTALIGN_TEST_PYTHON, " ", extra);
  }
};

std::vector<json> jsonl(const fsys::path& file) {
  std::vector<json> out;
  std::istringstream in(testing::read_text(file));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

SpecCounters counters_of(const json& c) {
  SpecCounters x;
  x.num_drafts = c["num_drafts"], x.num_draft_tokens = c["num_draft_tokens"];
  x.num_accepted_tokens = c["num_accepted_tokens"];
  x.num_accepted_tokens_per_pos = c["num_accepted_tokens_per_pos"].get<std::vector<int64_t>>();
  x.acceptance_counts = c["acceptance_counts"].get<std::vector<int64_t>>();
  x.num_emitted_tokens = c["num_emitted_tokens"], x.num_target_calls = c["num_target_calls"];
  x.num_drafter_calls = c["num_drafter_calls"];
  return x;
}

// Sums the per-prompt counters of one drafter and setting, through the same SpecCounters the evaluator uses.
SpecCounters sum_prompts(const std::vector<json>& records, const std::string& drafter, double t, int64_t g,
                         int64_t* prompts) {
  SpecCounters s;
  *prompts = 0;
  for (const json& r : records) {
    if (r["drafter"] != drafter || r["temperature"].get<double>() != t || r["gamma"].get<int64_t>() != g) continue;
    s.add(counters_of(r["counters"]));
    ++*prompts;
  }
  return s;
}

TEST(Evaluate, ReportNumbersAgreeWithTheCounters) {
  World w;
  const auto r = run_command(w.evaluate());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fsys::path dir = w.d / "report";
  for (const char* f :
       {"report.json", "report.md", "prompts.jsonl", "exact.jsonl", "plot_report.py", "acceptance_by_position.png",
        "tau_vs_gamma.png", "speedup_vs_gamma.png", "training_loss.png", "heldout_alpha.png"})
    EXPECT_TRUE(fsys::exists(dir / f)) << f << "\n" << r.output;
  const json rep = json::parse(testing::read_text(dir / "report.json"));
  // Training curves: the drafter from a run (drafter/final) has them, read from its metrics.jsonl; "same" has none.
  ASSERT_EQ(rep["training_curves"].size(), 1u) << rep["training_curves"].dump();
  const json& curve = rep["training_curves"][0];
  EXPECT_EQ(curve["name"], "drafter");
  EXPECT_EQ(curve["skipped_lines"], 1);
  EXPECT_EQ(curve["train"]["step"], json({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_DOUBLE_EQ(curve["train"]["loss"][3].get<double>(), 2.0 / 4);
  EXPECT_EQ(curve["validation"]["step"], json({0, 5, 10}));
  EXPECT_DOUBLE_EQ(curve["validation"]["val_alpha"][2].get<double>(), 0.3 + 0.01 * 10);
  EXPECT_HAS(testing::read_text(dir / "report.md"),
             "| drafter | 10 | 2.0000 -> 0.2000 | val_alpha | 0.3000 -> 0.4000 |");
  EXPECT_EQ(rep["prompts"], 4);
  EXPECT_FALSE(rep["environment"]["libtorch"].get<std::string>().empty());
  EXPECT_FALSE(rep["environment"]["git_commit"].get<std::string>().empty());

  // Exact greedy tau: 4 prompts x 2 turns, every drafter (prompt lookup first) at g = 1..4.
  const json& ex = rep["exact_greedy"];
  EXPECT_EQ(ex["items"], 8);
  EXPECT_EQ(ex["clusters"], 4) << "both turns of a question are one cluster";
  EXPECT_EQ(ex["turns"], json({1, 2}));
  EXPECT_EQ(ex["categories"], json({"math", "writing"}));
  // Prompt lookup, then each model drafter and its hybrid with prompt lookup (evaluate.hybrid, on by default).
  ASSERT_EQ(ex["drafters"].size(), 5u);
  const std::vector<std::pair<std::string, std::string>> kinds = {{"prompt-lookup", "prompt-lookup"},
                                                                  {"drafter", "model"},
                                                                  {"drafter+lookup", "hybrid"},
                                                                  {"same", "model"},
                                                                  {"same+lookup", "hybrid"}};
  for (size_t i = 0; i < kinds.size(); ++i) {
    EXPECT_EQ(ex["drafters"][i]["name"], kinds[i].first);
    EXPECT_EQ(ex["drafters"][i]["kind"], kinds[i].second);
  }
  const auto exact = jsonl(dir / "exact.jsonl");
  EXPECT_EQ(exact.size(), 5u * 4 * 8);
  // The second turn follows the target's full first answer (decoded up to context_max_new_tokens = 64 with the stop
  // tokens), not the measured 24 tokens of it: some first answers run past 24 tokens into the second turn's prompt.
  int64_t longer = 0;
  for (const json& e : exact)
    if (e["turn"] == 1 && e["drafter"] == "prompt-lookup" && e["gamma"] == 1) {
      EXPECT_EQ(e["cluster"], e["prompt_id"]);
      EXPECT_LE(e["context_tokens"].get<int64_t>(), 64);
      longer += e["context_tokens"].get<int64_t>() > 24;
    }
  EXPECT_GT(longer, 0);
  std::map<std::string, SpecCounters> exact_by;  // drafter/gamma/prompt -> counters
  for (const json& e : exact)
    exact_by[str_cat(e["drafter"].get<std::string>(), "/", e["gamma"].get<int64_t>(), "/",
                     e["prompt_id"].get<std::string>())] = counters_of(e["counters"]);
  for (const json& d : ex["drafters"])
    for (const json& p : d["points"]) {
      SpecCounters sum;
      int64_t n = 0;
      for (const json& e : exact)
        if (e["drafter"] == d["name"] && e["gamma"] == p["gamma"]) sum.add(counters_of(e["counters"])), ++n;
      EXPECT_EQ(n, 8);
      EXPECT_EQ(counters_of(p["counters"]), sum) << d["name"] << " g " << p["gamma"];
      const double tau = static_cast<double>(sum.num_emitted_tokens) / sum.num_target_calls;
      EXPECT_NEAR(p["tau"].get<double>(), tau, 1e-12);
      EXPECT_LE(p["tau_ci"][0].get<double>(), tau + 1e-12);
      EXPECT_GE(p["tau_ci"][1].get<double>(), tau - 1e-12);
      if (d["name"] == "same") EXPECT_EQ(sum.num_accepted_tokens, sum.num_draft_tokens) << "the target drafts itself";
    }

  // Timed: every (drafter, temperature, gamma) point against the plain runs it alternated with.
  const auto records = jsonl(dir / "prompts.jsonl");
  EXPECT_EQ(records.size(), 4u * 5 * 2 * 2);  // timed prompts x drafters x temperatures x gammas
  ASSERT_EQ(rep["drafters"].size(), 5u);
  const int64_t target_params = rep["target"]["params"];
  for (const json& d : rep["drafters"]) {
    if (d["params"].get<int64_t>() > 0) {
      const double c = static_cast<double>(target_params) / d["params"].get<int64_t>();
      EXPECT_NEAR(d["param_ratio"].get<double>(), c, 1e-9);
    }
    ASSERT_EQ(d["points"].size(), 4u);
    for (const json& p : d["points"]) {
      const double t = p["temperature"];
      const int64_t g = p["gamma"];
      int64_t n = 0;
      const SpecCounters s = sum_prompts(records, d["name"], t, g, &n);
      EXPECT_EQ(n, 4);
      EXPECT_EQ(counters_of(p["counters"]), s);
      const double tau = static_cast<double>(s.num_emitted_tokens) / s.num_target_calls;
      EXPECT_NEAR(p["metrics"]["block_efficiency"].get<double>(), tau, 1e-12);
      ASSERT_EQ(p["seconds"].size(), 2u);
      ASSERT_EQ(p["baseline_seconds"].size(), 2u);
      // The speed-up from the per-turn medians of the repeats (two repeats: their mean), as prompts.jsonl has them.
      double tokens = 0, secs = 0, base_tokens = 0, base_secs = 0;
      for (const json& rec : records) {
        if (rec["drafter"] != d["name"] || rec["temperature"].get<double>() != t || rec["gamma"] != g) continue;
        ASSERT_EQ(rec["seconds"].size(), 2u);
        tokens += rec["counters"]["num_emitted_tokens"].get<double>();
        secs += median(rec["seconds"].get<std::vector<double>>());
        base_tokens += rec["baseline_tokens"].get<double>();
        base_secs += median(rec["baseline_seconds"].get<std::vector<double>>());
      }
      EXPECT_NEAR(p["speedup"].get<double>(), (tokens / secs) / (base_tokens / base_secs), 1e-9);
      EXPECT_LE(p["speedup_ci"][0].get<double>(), p["speedup"].get<double>() + 1e-12);
      EXPECT_GE(p["speedup_ci"][1].get<double>(), p["speedup"].get<double>() - 1e-12);
      if (t == 0) {
        EXPECT_EQ(s.num_emitted_tokens, p["baseline_tokens"].get<int64_t>()) << "greedy output must be the target's";
        // The one-pass counters of each timed greedy turn are the real decoder's, counter for counter.
        for (const json& rec : records)
          if (rec["drafter"] == d["name"] && rec["temperature"].get<double>() == 0 && rec["gamma"] == g) {
            const std::string key = str_cat(d["name"].get<std::string>(), "/", g, "/",
                                            rec["prompt_id"].get<std::string>());
            ASSERT_TRUE(exact_by.count(key)) << key;
            EXPECT_EQ(exact_by[key], counters_of(rec["counters"])) << key;
          }
      }
      if (d["name"] == "same") {
        EXPECT_EQ(s.num_accepted_tokens, s.num_draft_tokens) << "the target as its own drafter, T " << t << " g " << g;
        EXPECT_EQ(s.num_drafts, s.num_target_calls);
      } else if (d["name"] == "drafter") {
        EXPECT_LT(s.num_accepted_tokens, s.num_draft_tokens);
        EXPECT_EQ(s.num_draft_tokens, g * s.num_drafts);
      }
    }
  }
  // The sampling check at T = 1 on all 8 turns: the one-pass alpha on the target's sampled answers predicts the
  // first-position acceptance the real decoder measures, within sampling error. The copy of the target has alpha 1
  // and every draft accepted.
  const json& sc = rep["sampling"];
  EXPECT_EQ(sc["turns"], 8);
  ASSERT_EQ(sc["drafters"].size(), 2u) << "model drafters only";
  for (const json& d : sc["drafters"]) {
    ASSERT_EQ(d["points"].size(), 1u);
    const json& p = d["points"][0];
    EXPECT_EQ(p["temperature"].get<double>(), 1.0);
    EXPECT_EQ(p["gamma"], 4);
    const double alpha = p["alpha"], first = p["measured_first_position_acceptance"];
    EXPECT_GT(p["positions"].get<double>(), 100) << "sampled answer tokens scored";
    EXPECT_GT(p["measured_drafts"].get<int64_t>(), 40) << "first positions measured";
    std::printf("sampling check, %s: one-pass alpha %.4f [%.4f, %.4f], measured first-position acceptance %.4f "
                "[%.4f, %.4f] over %lld drafts, z %.2f; tau at g=4 %.3f measured, %.3f i.i.d. estimate\n",
                d["name"].get<std::string>().c_str(), alpha, p["alpha_ci"][0].get<double>(),
                p["alpha_ci"][1].get<double>(), first, p["measured_first_position_acceptance_ci"][0].get<double>(),
                p["measured_first_position_acceptance_ci"][1].get<double>(),
                static_cast<long long>(p["measured_drafts"].get<int64_t>()), p["agreement_z"].get<double>(),
                p["measured_tau"].get<double>(), p["tau_iid_estimate"][3].get<double>());
    EXPECT_EQ(p["tau_iid_estimate"].size(), 8u);
    EXPECT_NEAR(p["tau_iid_estimate"][0].get<double>(), 1 + alpha, 1e-12);
    EXPECT_LT(std::abs(p["agreement_z"].get<double>()), 3.0) << "one-pass alpha " << alpha << " vs measured " << first;
    if (d["name"] == "same") {
      EXPECT_NEAR(alpha, 1.0, 1e-5);
      EXPECT_EQ(first, 1.0);
    } else {
      EXPECT_TRUE(alpha > 0.05 && alpha < 0.95) << alpha;
    }
  }
  for (const json& d : rep["drafters"])
    if (d["name"] == "prompt-lookup") EXPECT_TRUE(d["points"][0]["mbsu"].is_null()) << "no drafter model, no MBSU";

  const std::string md = testing::read_text(dir / "report.md");
  EXPECT_HAS(md, "## Speculative sampling: one-pass alpha against the real decoder");
  EXPECT_HAS(md, "n/a (no drafter model)");
  EXPECT_HAS(md, "## Exact greedy block efficiency tau (one pass)");
  EXPECT_HAS(md, "| drafter | g=1 | g=2 | g=3 | g=4 |");
  EXPECT_HAS(md, "### By turn (g = 4)");
  EXPECT_HAS(md, "### By category (g = 4;");
  EXPECT_HAS(md, "### Paired differences in tau (g = 4)");
  EXPECT_HAS(md, "| drafter | g=1 | g=3 |");
}

// An evaluation stopped part-way resumes from sweep.jsonl: the points already there are not run again (their wall times
// come back unchanged), the rest are, and the report equals the uninterrupted one's counters. A damaged record is one
// error naming the file and line; a log made from other inputs is started over.
TEST(Evaluate, InterruptedRunResumesFromTheSweepLog) {
  World w;
  const std::string cmd =
      w.evaluate(str_cat("evaluate.repeats=1 evaluate.prompt_lookup=false evaluate.hybrid=false evaluate.drafters=[",
                         (w.d / "drafter" / "final").string(), "] evaluate.python=off"));  // plots: ReportNumbers
  const fsys::path dir = w.d / "report", log = dir / "sweep.jsonl";
  auto r = run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json full = json::parse(testing::read_text(dir / "report.json"));
  std::vector<std::string> lines;
  {
    std::istringstream in(testing::read_text(log));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 1u + 4);  // header, 1 drafter x 2 temperatures x 2 gammas

  // Stopped after the first two points.
  testing::write_text(log, lines[0] + "\n" + lines[1] + "\n" + lines[2] + "\n");
  fsys::remove(dir / "report.json");
  r = run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "resuming: 2 sweep points already done");
  const json resumed = json::parse(testing::read_text(dir / "report.json"));
  const json& a = full["drafters"][0]["points"];
  const json& b = resumed["drafters"][0]["points"];
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(b[i]["seconds"], a[i]["seconds"]) << "not run again";
    EXPECT_EQ(b[i]["baseline_seconds"], a[i]["baseline_seconds"]) << "not run again";
  }
  EXPECT_EQ(resumed["exact_greedy"], full["exact_greedy"]) << "the one-pass part is deterministic";
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(b[i]["counters"], a[i]["counters"]) << i;
  EXPECT_NE(b[3]["seconds"], a[3]["seconds"]) << "timed again";
  EXPECT_EQ(jsonl(log).size(), lines.size());


  // A damaged record.
  testing::write_text(log, lines[0] + "\n" + lines[1] + "\n{\"who\": \"drafter\"}\n");
  r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_HAS(r.output, "sweep.jsonl:3: not a sweep record");
  EXPECT_EQ(json::parse(testing::read_text(dir / "report.json")), resumed) << "the report survives";

  // Other inputs: the old log is not used.
  r = run_command(cmd + " evaluate.max_new_tokens=12");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, "made from other inputs; the sweep starts over");
  EXPECT_EQ(jsonl(log).size(), lines.size());

  // SIGTERM once the first point is logged: the run stops before its next point and exits 75, the finished points
  // kept in the log; the same command resumes from them to the same counters.
  fsys::remove(log);
  const fsys::path sig_log = w.d / "signal.log";
  const std::string rc = run_command(str_cat("timeout 300 bash -c '", cmd, " > ", sig_log.string(), " 2>&1 & pid=$!; ",
                                             "while [ \"$(cat ", log.string(), " 2>/dev/null | wc -l)\" -lt 2 ]; do ",
                                             "sleep 0.01; done; kill -TERM $pid; wait $pid; echo rc=$?'"))
                             .output;
  ASSERT_HAS(rc, "rc=75");
  EXPECT_HAS(testing::read_text(sig_log), "stopped (SIGTERM): ");
  const size_t kept = jsonl(log).size();
  ASSERT_GE(kept, 2u);
  ASSERT_LT(kept, lines.size()) << "stopped before the last point";
  r = run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, str_cat("resuming: ", kept - 1, " sweep points already done"));
  const json after_signal = json::parse(testing::read_text(dir / "report.json"));
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(after_signal["drafters"][0]["points"][i]["counters"], a[i]["counters"]) << i;
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
  expect_error("evaluate.contrasts=['drafter vs nobody']",
               "evaluate.contrasts[0]: 'nobody' is not a row of this report; its rows are: prompt-lookup, drafter");
  testing::write_text(w.d / "empty.jsonl", "\n");
  expect_error(str_cat("evaluate.prompts=[", (w.d / "empty.jsonl").string(), "]"), "hold no prompt");
}

}  // namespace
}  // namespace draftalign::eval
