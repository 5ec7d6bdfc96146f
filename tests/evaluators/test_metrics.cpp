// The evaluation counters and what is derived from them, on hand-computed cases; the report's JSON numbers follow
// from the counters and wall times; the Markdown has its tables; the plots are drawn by the embedded script.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "evaluators/report.h"
#include "test_util.h"

namespace draftalign::eval {
namespace {

using nlohmann::json;

SpecCounters four_drafts() {
  SpecCounters c;
  for (int64_t a : {0, 3, 1, 3}) c.record_draft(3, a);
  c.num_emitted_tokens = 10, c.num_target_calls = 4, c.num_drafter_calls = 12;
  return c;
}

TEST(SpecCounters, RecordAndDeriveHandComputedCases) {
  const SpecCounters c = four_drafts();
  EXPECT_EQ(c.num_drafts, 4);
  EXPECT_EQ(c.num_draft_tokens, 12);
  EXPECT_EQ(c.num_accepted_tokens, 7);
  EXPECT_EQ(c.num_accepted_tokens_per_pos, (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(c.acceptance_counts, (std::vector<int64_t>{1, 1, 0, 2}));
  const SpecMetrics m = derive_metrics(c);
  EXPECT_DOUBLE_EQ(m.block_efficiency, 2.5);
  EXPECT_DOUBLE_EQ(m.mean_acceptance_length, 2.75);
  EXPECT_DOUBLE_EQ(m.draft_acceptance_rate, 7.0 / 12);
  EXPECT_EQ(m.acceptance_rate_per_pos, (std::vector<double>{0.75, 0.5, 0.5}));
  EXPECT_EQ(m.conditional_acceptance_per_pos, (std::vector<double>{0.75, 2.0 / 3, 1.0}));
  EXPECT_EQ(m.acceptance_histogram, (std::vector<double>{0.25, 0.25, 0.0, 0.5}));
  EXPECT_DOUBLE_EQ(mbsu(2.5, 3, 9.0), 1.875);
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 2, 3}), 2.5);

  SpecCounters sum = c;
  sum.add(c);
  EXPECT_EQ(sum.num_accepted_tokens_per_pos, (std::vector<int64_t>{6, 4, 4}));
  EXPECT_EQ(sum.num_target_calls, 8);
  EXPECT_DOUBLE_EQ(derive_metrics(sum).block_efficiency, 2.5);
  SpecCounters other;
  other.record_draft(2, 1);
  EXPECT_HAS(testing::error_of([&] { sum.add(other); }), "different draft lengths");
  EXPECT_HAS(testing::error_of([&] { other.record_draft(2, 3); }), "3 of 2 accepted");
}

TEST(Report, DrafterNamesAreShortAndUnique) {
  EXPECT_EQ(drafter_names({"runs/demo/pretrain/final", "runs/demo/distill/tvdpp-token-q/final/",
                           "runs/x/pretrain/checkpoints/step-00100", "models/drafter"}),
            (std::vector<std::string>{"pretrain", "tvdpp-token-q", "checkpoints/step-00100", "drafter"}));
  EXPECT_EQ(drafter_names({"a/pretrain/final", "b/pretrain/final"}),
            (std::vector<std::string>{"a/pretrain/final", "b/pretrain/final"}));
}

Report small_report() {
  Report r;
  r.target_dir = "target", r.device = "cpu", r.dtype = "fp32", r.target_params = 900, r.target_step_seconds = 0.03;
  r.prompt_files = {"p.jsonl"}, r.prompts = 2, r.max_new_tokens = 8, r.repeats = 3;
  SweepPoint base;
  base.temperature = 0, base.counters.num_emitted_tokens = 20, base.counters.num_target_calls = 20;
  base.seconds = {2.0, 1.0, 4.0};  // median 2 s: 10 tokens/s
  r.baselines = {base};
  DrafterResult d;
  d.name = "kd", d.dir = "runs/kd/final", d.params = 100, d.step_seconds = 0.01;
  SweepPoint p;
  p.temperature = 0, p.gamma = 3, p.counters = four_drafts(), p.seconds = {0.5, 0.25, 0.5};  // 10 / 0.5 = 20 tok/s
  PromptRun a{"q1", 5, "eos", {}}, b{"q2", 6, "length", {}};
  a.counters.record_draft(3, 0), a.counters.record_draft(3, 3);
  b.counters.record_draft(3, 1), b.counters.record_draft(3, 3);
  p.prompts = {a, b};
  d.points = {p};
  r.drafters = {d};
  return r;
}

TEST(Report, JsonNumbersFollowFromTheCounters) {
  const json j = report_json(small_report());
  const json& d = j["drafters"][0];
  EXPECT_DOUBLE_EQ(d["param_ratio"].get<double>(), 9.0);
  EXPECT_DOUBLE_EQ(d["latency_ratio"].get<double>(), 3.0);
  const json& p = d["points"][0];
  EXPECT_EQ(p["counters"]["num_accepted_tokens_per_pos"], json({3, 2, 2}));
  EXPECT_DOUBLE_EQ(p["metrics"]["block_efficiency"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(p["mbsu"].get<double>(), 9 * 2.5 / 12);
  EXPECT_DOUBLE_EQ(p["mbsu_latency"].get<double>(), 3 * 2.5 / 6);
  EXPECT_DOUBLE_EQ(p["tokens_per_s"].get<double>(), 20.0);
  EXPECT_DOUBLE_EQ(j["baselines"][0]["tokens_per_s"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(p["speedup"].get<double>(), 2.0);
  const std::string md = report_markdown(j);
  EXPECT_HAS(md, "| kd | 2.500 |");       // tau
  EXPECT_HAS(md, "| kd | 2.00x (20.0) |");  // speed-up
  EXPECT_HAS(md, "| kd | 1.88 (1.25) |");   // MBSU (latency MBSU)
  EXPECT_HAS(md, "| kd | 3 | 0.750, 0.500, 0.500 |");
}

TEST(Report, FilesAndPlots) {
  testing::ScratchDir dir;
  const Report r = small_report();
  EXPECT_HAS(write_report(dir / "off", r, ""), "evaluate.python = off");
  for (const char* f : {"report.json", "report.md", "prompts.jsonl", "plot_report.py"})
    EXPECT_TRUE(std::filesystem::exists(dir / "off" / f)) << f;
  // prompts.jsonl: one line per prompt, its own counters.
  const std::string lines = testing::read_text(dir / "off" / "prompts.jsonl");
  const json first = json::parse(lines.substr(0, lines.find('\n')));
  EXPECT_EQ(first["prompt_id"], "q1");
  EXPECT_EQ(first["counters"]["acceptance_counts"], json({1, 0, 0, 1}));

  EXPECT_EQ(write_report(dir / "plots", r, DRAFTALIGN_TEST_PYTHON), "");
  for (const char* f : {"acceptance_by_position.png", "tau_vs_gamma.png", "speedup_vs_gamma.png"})
    EXPECT_GT(std::filesystem::file_size(dir / "plots" / f), 1000u) << f;
  EXPECT_HAS(write_report(dir / "bad", r, "/nonexistent/python"), "matplotlib");
}

}  // namespace
}  // namespace draftalign::eval
