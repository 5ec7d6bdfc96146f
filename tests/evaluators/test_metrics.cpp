// The evaluation counters and what is derived from them, on hand-computed cases; the report's JSON numbers follow
// from the counters and wall times; the Markdown has its tables; the plots are drawn by the embedded script.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "evaluators/acceptance.h"
#include "evaluators/report.h"
#include "evaluators/stats.h"
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
  // Colliding names take more of their paths until they differ.
  EXPECT_EQ(drafter_names({"a/pretrain/final", "b/pretrain/final"}), (std::vector<std::string>{"a/pretrain", "b/pretrain"}));
  EXPECT_EQ(drafter_names({"x/a/pretrain/final", "y/a/pretrain/final", "runs/kd/final"}),
            (std::vector<std::string>{"x/a/pretrain", "y/a/pretrain", "kd"}));
  // Training seeds: the method's name with /seed-n; drafter_groups gives the method (the combined row).
  const std::vector<std::string> seeded = {"r/distill/tvdpp-token-q/seed-1/final", "r/distill/tvdpp-token-q/seed-2/final",
                                           "r/abl/tvdpp-token-q/seed-1/final", "r/pretrain/final"};
  EXPECT_EQ(drafter_names(seeded), (std::vector<std::string>{"distill/tvdpp-token-q/seed-1", "distill/tvdpp-token-q/seed-2",
                                                             "abl/tvdpp-token-q/seed-1", "pretrain"}));
  EXPECT_EQ(drafter_groups(seeded),
            (std::vector<std::string>{"distill/tvdpp-token-q", "distill/tvdpp-token-q", "abl/tvdpp-token-q", ""}));
  EXPECT_EQ(seed_of_dir("r/distill/fkl/seed-12/final"), 12);
  EXPECT_EQ(seed_of_dir("r/distill/fkl/seed-x/final"), -1);
  EXPECT_EQ(seed_of_dir("r/distill/fkl/final"), -1);
}

TEST(Report, ContrastsNameRowsOnce) {
  const std::vector<std::string> dirs = {"r/pretrain/final", "r/tvdpp/seed-1/final", "r/tvdpp/seed-2/final"};
  const std::vector<std::string> rows = report_row_names(dirs, true, true);
  EXPECT_EQ(rows, (std::vector<std::string>{"prompt-lookup", "pretrain", "pretrain+lookup", "tvdpp", "tvdpp/seed-1",
                                            "tvdpp+lookup", "tvdpp/seed-1+lookup", "tvdpp/seed-2",
                                            "tvdpp/seed-2+lookup"}));
  const auto c = parse_contrasts({"tvdpp vs pretrain", " tvdpp+lookup  vs prompt-lookup "});
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].drafter, "tvdpp+lookup");
  EXPECT_EQ(c[1].versus, "prompt-lookup");
  check_contrasts(c, rows);
  EXPECT_HAS(testing::error_of([&] { check_contrasts(parse_contrasts({"fkl vs pretrain"}), rows); }),
             "evaluate.contrasts[0]: 'fkl' is not a row of this report; its rows are: prompt-lookup, pretrain");
  EXPECT_HAS(testing::error_of([&] { parse_contrasts({"tvdpp pretrain"}); }), "is not 'A vs B'");
  EXPECT_HAS(testing::error_of([&] { check_contrasts(parse_contrasts({"tvdpp vs tvdpp"}), rows); }),
             "compared with itself");
  EXPECT_HAS(testing::error_of([&] { check_contrasts(parse_contrasts({"tvdpp vs pretrain", "pretrain vs tvdpp"}), rows); }),
             "declared twice");
}

// Counters of one turn: `emitted` tokens in `calls` target calls, drafts of gamma 2 with these accepted counts.
SpecCounters turn_counters(int64_t emitted, int64_t calls, std::vector<int64_t> accepted) {
  SpecCounters c;
  for (int64_t a : accepted) c.record_draft(2, a);
  c.num_emitted_tokens = emitted, c.num_target_calls = calls, c.num_drafter_calls = 2 * calls;
  return c;
}

Report small_report() {
  Report r;
  r.target_dir = "target", r.device = "cpu", r.dtype = "fp32", r.target_params = 900, r.target_step_seconds = 0.03;
  r.verify_seconds = {0.03, 0.04, 0.05, 0.06};  // blocks of 1..4 tokens
  r.environment = {"cpu: test", "2.11.0", "none", "abc1234", 2};
  r.prompt_files = {"p.jsonl"}, r.prompts = 2, r.turns = 2, r.max_new_tokens = 8, r.repeats = 3, r.resamples = 500;
  r.timed_max_new_tokens = 8;
  // Exact greedy: four turns of two prompts in two categories; "kd" is accepted far more often than prompt lookup.
  r.items = {{"q1", "writing", "q1", 1, 10, 6}, {"q2", "math", "q2", 1, 12, 6}, {"q1#2", "writing", "q1", 2, 20, 6},
             {"q2#2", "math", "q2", 2, 22, 6}};
  ExactPoint kd{2, {turn_counters(6, 2, {2, 2}), turn_counters(6, 3, {2, 1, 0}), turn_counters(6, 2, {2, 2}),
                    turn_counters(6, 2, {2, 2})}};
  ExactPoint lookup{2, {turn_counters(6, 6, {0, 0}), turn_counters(6, 5, {1, 0}), turn_counters(6, 6, {0}),
                        turn_counters(6, 6, {0})}};
  r.exact = {{"prompt-lookup", "", 0, "prompt-lookup", {lookup}}, {"kd", "runs/kd/final", 100, "model", {kd}}};
  // Timed: each repeat a plain run then the drafter.
  DrafterResult d;
  d.name = "kd", d.dir = "runs/kd/final", d.params = 100, d.step_seconds = 0.01;
  // Two timed turns (items 0 and 2: both turns of q1, one cluster), three repeats each.
  SweepPoint p;
  p.temperature = 0, p.gamma = 3;
  PromptRun a{"q1", 5, model::Finish::kEos, {}}, b{"q1#2", 6, model::Finish::kLength, {}};
  for (PromptRun* x : {&a, &b}) {
    x->counters.record_draft(3, x == &a ? 0 : 1), x->counters.record_draft(3, 3);
    x->counters.record_target_call(3, 3), x->counters.record_target_call(3, 3);
    x->counters.num_emitted_tokens = 5, x->counters.num_drafter_calls = 6;
    x->baseline_tokens = 5;
  }
  // Medians: a 0.25 s with the drafter, 1.0 s plain; b 0.5 s and 1.0 s: 10 tokens in 0.75 s against 2.0 s, 2.667x.
  a.seconds = {0.25, 0.2, 0.3}, a.baseline_seconds = {1.0, 0.9, 1.1};
  b.seconds = {0.5, 0.5, 0.1}, b.baseline_seconds = {1.0, 2.0, 0.5};
  p.prompts = {a, b};
  for (const PromptRun* x : {&a, &b}) p.counters.add(x->counters);
  p.seconds = {0.75, 0.7, 0.4}, p.baseline_seconds = {2.0, 2.9, 1.6};
  p.baseline_counters.num_emitted_tokens = 10, p.baseline_counters.num_target_calls = 10;
  // Inside the models' steps over the three repeats: 4 verifications of 4 tokens at 0.06 s and 12 drafter steps at
  // 0.01 s each repeat; plain decoding 10 steps at 0.03 s.
  p.times = {{0, 0, 0, 3 * 4 * 0.06}, {0, 0, 0, 3 * 4}, 3 * 12 * 0.01, 3 * 12};
  p.baseline_times = {{3 * 10 * 0.03}, {3 * 10}, 0, 0};
  d.points = {p};
  r.drafters = {d};
  r.timed_items = {0, 2};
  return r;
}

TEST(Report, JsonNumbersFollowFromTheCounters) {
  const json j = report_json(small_report());
  EXPECT_EQ(j["environment"]["git_commit"], "abc1234");
  EXPECT_EQ(j["environment"]["device_name"], "cpu: test");
  EXPECT_EQ(j["bootstrap"]["clusters"], 2);
  const json& d = j["drafters"][0];
  EXPECT_DOUBLE_EQ(d["param_ratio"].get<double>(), 9.0);
  EXPECT_DOUBLE_EQ(d["latency_ratio"].get<double>(), 3.0);
  const json& p = d["points"][0];
  EXPECT_EQ(p["counters"]["num_accepted_tokens_per_pos"], json({3, 2, 2}));
  EXPECT_EQ(p["counters"]["calls_by_draft_length"], json({0, 0, 0, 4}));
  EXPECT_DOUBLE_EQ(p["metrics"]["block_efficiency"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(p["tau"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(p["mbsu"].get<double>(), 9 * 2.5 / 12);
  EXPECT_DOUBLE_EQ(p["mbsu_latency"].get<double>(), 3 * 2.5 / 6);
  // Tokens/s from the per-turn medians: 10 / (0.25 + 0.5) with the drafter, 10 / (1.0 + 1.0) plain.
  EXPECT_DOUBLE_EQ(p["tokens_per_s"].get<double>(), 10 / 0.75);
  EXPECT_DOUBLE_EQ(p["baseline_tokens_per_s"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(p["speedup"].get<double>(), 2.0 / 0.75);
  // One cluster (both turns of q1): every resample draws it, the interval is the estimate.
  EXPECT_NEAR(p["speedup_ci"][0].get<double>(), 2.0 / 0.75, 1e-12);
  EXPECT_NEAR(p["speedup_ci"][1].get<double>(), 2.0 / 0.75, 1e-12);
  // Allowed, at the step costs of the timed decodes: 10 tokens x 0.03 s / (4 verifications of 4 tokens x 0.06 s +
  // 12 drafter steps x 0.01 s) = 0.833; 2.667 exceeds it.
  EXPECT_NEAR(p["speedup_bound"].get<double>(), 10 * 0.03 / (4 * 0.06 + 12 * 0.01), 1e-12);
  EXPECT_TRUE(p["exceeds_bound"].get<bool>());
  EXPECT_DOUBLE_EQ(p["first_position_acceptance"].get<double>(), 3.0 / 4);

  // Exact greedy: tau is a ratio of totals; the interval holds it; per turn and category split the items.
  const json& ex = j["exact_greedy"];
  EXPECT_EQ(ex["items"], 4);
  EXPECT_EQ(ex["clusters"], 2);
  EXPECT_EQ(ex["categories"], json({"writing", "math"}));
  const json& kd = ex["drafters"][1]["points"][0];
  EXPECT_EQ(ex["drafters"][1]["kind"], "model");
  EXPECT_EQ(ex["drafters"][0]["kind"], "prompt-lookup");
  EXPECT_DOUBLE_EQ(kd["tau"].get<double>(), 24.0 / 9);
  EXPECT_LE(kd["tau_ci"][0].get<double>(), 24.0 / 9);
  EXPECT_GE(kd["tau_ci"][1].get<double>(), 24.0 / 9);
  EXPECT_DOUBLE_EQ(kd["by_turn"][1]["tau"].get<double>(), 12.0 / 4);
  EXPECT_EQ(kd["by_turn"][1]["items"], 2);
  EXPECT_DOUBLE_EQ(kd["by_category"][1]["tau"].get<double>(), 12.0 / 5);  // math: q2 and q2#2
  EXPECT_EQ(kd["by_category"][1]["clusters"], 1);
  EXPECT_DOUBLE_EQ(kd["first_position_acceptance"].get<double>(), 8.0 / 9);
  EXPECT_DOUBLE_EQ(kd["proposal_rate"].get<double>(), 9.0 / 9);
  EXPECT_DOUBLE_EQ(kd["accepted_per_call"].get<double>(), 15.0 / 9);
  // Prompt lookup proposed in 5 of its 23 calls: its acceptance is given a draft, its per-call rate is over all.
  const json& lk = ex["drafters"][0]["points"][0];
  EXPECT_DOUBLE_EQ(lk["proposal_rate"].get<double>(), 6.0 / 23);
  EXPECT_DOUBLE_EQ(lk["first_position_acceptance"].get<double>(), 1.0 / 6);
  EXPECT_DOUBLE_EQ(lk["accepted_per_call"].get<double>(), 1.0 / 23);
  ASSERT_EQ(ex["differences"].size(), 1u);
  EXPECT_EQ(ex["family"]["size"], 1);
  const json& diff = ex["differences"][0];
  EXPECT_EQ(diff["drafter"], "prompt-lookup");
  EXPECT_EQ(diff["versus"], "kd");
  EXPECT_DOUBLE_EQ(diff["difference"].get<double>(), 24.0 / 23 - 24.0 / 9);
  EXPECT_TRUE(diff["significant"].get<bool>()) << diff.dump();  // every resample has kd ahead
  EXPECT_DOUBLE_EQ(diff["p"].get<double>(), 2.0 / 501);
  EXPECT_DOUBLE_EQ(diff["p_holm"].get<double>(), 2.0 / 501);  // a family of one

  const std::string md = report_markdown(j);
  EXPECT_HAS(md, "| kd | 2.500 [");  // timed tau with its interval
  EXPECT_HAS(md, "| kd | 2.67 [");   // speed-up with its interval
  EXPECT_HAS(md, "**exceeds the bound**; tau 2.500)");
  EXPECT_HAS(md, "| kd | 1.88 (1.25) |");  // MBSU (latency MBSU)
  EXPECT_HAS(md, "| kd | 2.667 [");       // exact tau
  EXPECT_HAS(md, "### By category (g = 2");
  EXPECT_HAS(md, "| prompt-lookup | kd | -1.623 [");
  EXPECT_HAS(md, "| **yes** |");
  EXPECT_HAS(md, "over 2 clusters of turns");
  EXPECT_HAS(md, "| prompt-lookup | 0.261 [");  // proposal rate
  EXPECT_HAS(md, "commit abc1234");
}

TEST(Report, FilesAndPlots) {
  testing::ScratchDir dir;
  const Report r = small_report();
  EXPECT_HAS(write_report(dir / "off", r, ""), "evaluate.python = off");
  for (const char* f : {"report.json", "report.md", "prompts.jsonl", "exact.jsonl", "plot_report.py"})
    EXPECT_TRUE(std::filesystem::exists(dir / "off" / f)) << f;
  // prompts.jsonl: one line per timed prompt, its own counters.
  const std::string lines = testing::read_text(dir / "off" / "prompts.jsonl");
  const json first = json::parse(lines.substr(0, lines.find('\n')));
  EXPECT_EQ(first["prompt_id"], "q1");
  EXPECT_EQ(first["counters"]["acceptance_counts"], json({1, 0, 0, 1}));
  // exact.jsonl: one line per drafter, gamma and turn.
  const std::string exact = testing::read_text(dir / "off" / "exact.jsonl");
  EXPECT_EQ(std::count(exact.begin(), exact.end(), '\n'), 8);
  const json e = json::parse(exact.substr(0, exact.find('\n')));
  EXPECT_EQ(e["drafter"], "prompt-lookup");
  EXPECT_EQ(e["turn"], 1);
  EXPECT_DOUBLE_EQ(e["block_efficiency"].get<double>(), 1.0);

  EXPECT_EQ(write_report(dir / "plots", r, DRAFTALIGN_TEST_PYTHON), "");
  for (const char* f : {"acceptance_by_position.png", "tau_vs_gamma.png", "speedup_vs_gamma.png"})
    EXPECT_GT(std::filesystem::file_size(dir / "plots" / f), 1000u) << f;
  EXPECT_HAS(write_report(dir / "bad", r, "/nonexistent/python"), "matplotlib");
}

// A failed write (ENOSPC/EIO injected at each file's write and its sync) leaves the previous report's five files as
// they were, names the file and errno, and leaves no temporary file; written again, the new report replaces them all.
TEST(Report, AFailedWriteLeavesThePreviousReportWhole) {
  testing::ScratchDir dir;
  const std::filesystem::path out = dir / "report";
  Report r = small_report();
  write_report(out, r, "");
  const char* files[] = {"report.json", "report.md", "prompts.jsonl", "exact.jsonl", "plot_report.py"};
  std::map<std::string, std::string> before;
  for (const char* f : files) before[f] = testing::read_text(out / f);
  r.prompts += 1;  // a different report
  for (const char* f : files)
    for (int point : {1, 2}) {  // the file's one write, then its sync
      SCOPED_TRACE(str_cat(f, " #", point));
      const bool nospace = point == 1;
      setenv("DRAFTALIGN_FAULT", str_cat(nospace ? "ENOSPC@" : "EIO@", (out / f).string(), "#", point).c_str(), 1);
      fs::reset_fault_injection_for_test();
      const std::string err = testing::error_of([&] { write_report(out, r, ""); });
      EXPECT_HAS(err, std::string(f) + ".tmp-");
      EXPECT_HAS(err, nospace ? "No space left on device, errno 28" : "Input/output error, errno 5");
      for (const char* g : files) EXPECT_TRUE(testing::read_text(out / g) == before[g]) << g << " was replaced";
      EXPECT_EQ(testing::temp_files_under(out), std::vector<std::string>());
    }
  unsetenv("DRAFTALIGN_FAULT");
  fs::reset_fault_injection_for_test();
  write_report(out, r, "");
  EXPECT_NE(testing::read_text(out / "report.json"), before["report.json"]);
  for (const char* f : files) EXPECT_TRUE(std::filesystem::exists(out / f)) << f;
}

TEST(OnePass, PromptLookupProposesWhatFollowedTheLatestOccurrence) {
  // The trailing 3-gram 1 2 3 occurred at the start: propose what followed it.
  EXPECT_EQ(prompt_lookup({1, 2, 3, 9, 8, 1, 2, 3}, 2, 1, 3), (std::vector<int64_t>{9, 8}));
  // The latest occurrence wins: 1 2 at 0 (then 5) and at 3 (then 6).
  EXPECT_EQ(prompt_lookup({1, 2, 5, 1, 2, 6, 1, 2}, 1, 1, 3), (std::vector<int64_t>{6}));
  // The longest n first: the 2-gram 4 1 recurs (then 7), although the 1-gram 1 recurs later (then 2).
  EXPECT_EQ(prompt_lookup({4, 1, 7, 1, 2, 4, 1}, 1, 1, 3), (std::vector<int64_t>{7}));
  // Fewer than k tokens follow: propose what there is; an overlapping occurrence counts (a run repeats itself).
  EXPECT_EQ(prompt_lookup({3, 3, 3}, 4, 1, 2), (std::vector<int64_t>{3}));
  EXPECT_EQ(prompt_lookup({1, 2, 3, 4}, 3, 1, 3), (std::vector<int64_t>{}));
  EXPECT_EQ(prompt_lookup({1, 2, 1}, 3, 2, 3), (std::vector<int64_t>{}));  // only a 1-gram recurs, n_min is 2
  // A shorter draft is counted as what it is.
  SpecCounters c;
  c.record_draft(4, 1, 2);
  EXPECT_EQ(c.num_draft_tokens, 2);
  EXPECT_EQ(c.acceptance_counts, (std::vector<int64_t>{0, 1, 0, 0, 0}));
  EXPECT_THROW(c.record_draft(4, 3, 2), Error);
}

TEST(Bootstrap, IntervalsHoldTheEstimateAndPairedDifferencesSeparate) {
  // A constant per-item ratio has no spread.
  const Interval flat = bootstrap_ratio({2, 4, 6}, {1, 2, 3}, 500, 1);
  EXPECT_DOUBLE_EQ(flat.lo, 2.0);
  EXPECT_DOUBLE_EQ(flat.hi, 2.0);
  // Spread items: the interval holds the estimate, narrows with more items, and repeats with the seed.
  std::vector<double> num, den;
  for (int i = 0; i < 40; ++i) num.push_back(1 + (i * 7) % 5), den.push_back(1);
  const Interval wide = bootstrap_ratio(std::vector<double>(num.begin(), num.begin() + 10),
                                        std::vector<double>(den.begin(), den.begin() + 10), 2000, 3);
  const Interval narrow = bootstrap_ratio(num, den, 2000, 3);
  const double mean = 3.0;
  EXPECT_LT(narrow.lo, mean);
  EXPECT_GT(narrow.hi, mean);
  EXPECT_LT(narrow.hi - narrow.lo, wide.hi - wide.lo);
  EXPECT_EQ(bootstrap_ratio(num, den, 2000, 3).lo, narrow.lo);
  // Paired: b is a + 0.1 on every item, so the difference is exactly -0.1 on every resample, although the unpaired
  // intervals of a and b overlap.
  std::vector<double> b = num;
  for (double& x : b) x += 0.1;
  const Interval d = bootstrap_ratio_difference(num, den, b, den, 2000, 5);
  EXPECT_NEAR(d.lo, -0.1, 1e-12);
  EXPECT_NEAR(d.hi, -0.1, 1e-12);
  EXPECT_LT(bootstrap_ratio(b, den, 2000, 5).lo, narrow.hi);
}

}  // namespace
}  // namespace draftalign::eval
