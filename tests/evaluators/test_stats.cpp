// The statistics of a report (evaluators/stats.h, report.h), each rule checked so that breaking it fails a test:
//   - clusters: when both turns of every question are identical, the report's interval equals the one-turn report's
//     (resampling turns instead would make it narrower; mutation checked: select_items giving each turn its own cluster
//     makes ClusterIntervalOfTwinTurnsIsTheOneTurnInterval fail);
//   - two-level bootstrap: on a synthetic method with known seed and question variances, the interval's width follows
//     both (mutation checked: drawing no seeds, `draw(ma, rng)` made a no-op, fails the seed-variance check);
//   - Holm's step-down on hand-computed p-values (mutation checked: the factor m - i + 1 replaced by m, i.e. Bonferroni,
//     fails), and the p-value's edge cases;
//   - the counter-based speed-up bound: a prompt-lookup run with many empty drafts, timed by a cost model that charges
//     each call its own block, never exceeds the bound (mutation checked: charging every call a gamma + 1 block, the
//     old rule, flags it);
//   - the stratified samples of the timed and sampling-check turns.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "evaluators/acceptance.h"
#include "evaluators/drafter.h"
#include "evaluators/report.h"
#include "evaluators/speculative.h"
#include "evaluators/stats.h"
#include "evaluators/summary.h"
#include "test_util.h"

namespace draftalign::eval {
namespace {

using nlohmann::json;

double width(const Interval& i) { return i.hi - i.lo; }

TEST(Stats, HolmOnHandComputedPValues) {
  // p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04,
  // raised to the running maximum 0.06. At 0.05: the first and the last are significant, Bonferroni (x 4) would keep
  // only the last (0.02), so does Holm's for 0.01 (0.03 < 0.05) where Bonferroni gives 0.04 too; 0.03 and 0.04 are
  // not (0.06).
  const std::vector<double> adj = holm_adjust({0.01, 0.04, 0.03, 0.005});
  ASSERT_EQ(adj.size(), 4u);
  EXPECT_NEAR(adj[0], 0.03, 1e-15);
  EXPECT_NEAR(adj[1], 0.06, 1e-15);
  EXPECT_NEAR(adj[2], 0.06, 1e-15);
  EXPECT_NEAR(adj[3], 0.02, 1e-15);
  // Capped at 1, ties keep their order, one test is its own p.
  EXPECT_EQ(holm_adjust({0.5, 0.5}), (std::vector<double>{1.0, 1.0}));
  EXPECT_EQ(holm_adjust({0.2}), (std::vector<double>{0.2}));
  EXPECT_TRUE(holm_adjust({}).empty());
}

TEST(Stats, BootstrapPValue) {
  // Every draw above 0: the smallest p a Monte Carlo test of 999 draws can give, 2 x 1 / 1000.
  EXPECT_DOUBLE_EQ(bootstrap_p_value(std::vector<double>(999, 0.3)), 2.0 / 1000);
  // Identical drafters: every draw is 0, p = 1.
  EXPECT_DOUBLE_EQ(bootstrap_p_value(std::vector<double>(500, 0.0)), 1.0);
  // 40 of 999 at or below 0: 2 x 41 / 1000.
  std::vector<double> d(999, 1.0);
  for (int i = 0; i < 40; ++i) d[i] = -1.0;
  EXPECT_DOUBLE_EQ(bootstrap_p_value(d), 2.0 * 41 / 1000);
}

// A report with one model drafter on n questions whose per-turn counters are `turn1` (and, when `twin`, the same
// counters again as turn 2 of each question).
Report twin_report(const std::vector<SpecCounters>& turn1, bool twin) {
  Report r;
  r.resamples = 4000, r.seed = 7;
  ExactDrafter d;
  d.name = "kd", d.kind = "model";
  ExactPoint p{2, {}};
  for (size_t q = 0; q < turn1.size(); ++q) {
    r.items.push_back({str_cat("q", q), "c", str_cat("q", q), 1, 10, 6});
    p.per_item.push_back(turn1[q]);
  }
  if (twin)
    for (size_t q = 0; q < turn1.size(); ++q) {
      r.items.push_back({str_cat("q", q, "#2"), "c", str_cat("q", q), 2, 20, 6});
      p.per_item.push_back(turn1[q]);
    }
  d.points = {p};
  r.exact = {d};
  return r;
}

// evaluate logs its summary from the Summary that report.json is written from: the two carry the same numbers, and a
// drafter that needs fewer target calls on every question is better than one that needs more, with Holm's p < 0.05.
TEST(Stats, TheSummaryIsWhatTheReportSays) {
  std::mt19937_64 rng(5);
  std::vector<SpecCounters> fewer, more;
  for (int q = 0; q < 20; ++q) {
    SpecCounters a, b;
    a.num_emitted_tokens = b.num_emitted_tokens = 20;
    a.num_target_calls = 6 + static_cast<int64_t>(rng() % 5);
    b.num_target_calls = 11 + static_cast<int64_t>(rng() % 5);
    fewer.push_back(a), more.push_back(b);
  }
  Report r = twin_report(fewer, true);
  ExactDrafter other = r.exact[0];
  other.name = "pre";
  for (size_t i = 0; i < other.points[0].per_item.size(); ++i) other.points[0].per_item[i] = more[i % more.size()];
  r.exact.push_back(other);
  const Summary s = summarize(r);
  const json j = report_json(r, s);
  EXPECT_EQ(j, report_json(r)) << "summarize is deterministic";
  const json& rows = j["exact_greedy"]["drafters"];
  ASSERT_EQ(s.exact.rows.size(), 2u);
  ASSERT_EQ(rows.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const ExactPointSummary& p = s.exact.rows[i].points.at(0);
    const json& q = rows[i]["points"][0];
    EXPECT_EQ(rows[i]["name"], s.exact.rows[i].name);
    EXPECT_EQ(q["tau"].get<double>(), p.tau.value);
    EXPECT_EQ(q["tau_ci"][0].get<double>(), p.tau.ci.lo);
    EXPECT_EQ(q["tau_ci"][1].get<double>(), p.tau.ci.hi);
    ASSERT_EQ(p.by_turn.size(), 2u);
    EXPECT_EQ(q["by_turn"][1]["tau"].get<double>(), p.by_turn[1].tau.value);
    EXPECT_EQ(q["by_turn"][1]["turn"], 2);
  }
  ASSERT_EQ(s.exact.differences.size(), 1u);
  const Difference& d = s.exact.differences[0];
  const json& x = j["exact_greedy"]["differences"][0];
  EXPECT_EQ(x["drafter"], "kd");
  EXPECT_EQ(x["versus"], "pre");
  EXPECT_EQ(x["difference"].get<double>(), d.difference);
  EXPECT_EQ(x["corrected_ci"][0].get<double>(), d.corrected_ci.lo);
  EXPECT_EQ(x["p_holm"].get<double>(), d.p_holm);
  EXPECT_GT(d.difference, 0);
  EXPECT_GT(d.corrected_ci.lo, 0);
  EXPECT_TRUE(d.significant);
  EXPECT_EQ(x["significant"], true);
  EXPECT_EQ(j["exact_greedy"]["family"]["size"], 1);
}

TEST(Stats, ClusterIntervalOfTwinTurnsIsTheOneTurnInterval) {
  std::mt19937_64 rng(3);
  std::vector<SpecCounters> turns;
  for (int q = 0; q < 30; ++q) {
    SpecCounters c;
    c.num_emitted_tokens = 20;
    c.num_target_calls = 6 + static_cast<int64_t>(rng() % 10);
    turns.push_back(c);
  }
  const json one = report_json(twin_report(turns, false))["exact_greedy"];
  const json two = report_json(twin_report(turns, true))["exact_greedy"];
  EXPECT_EQ(one["clusters"], 30);
  EXPECT_EQ(two["clusters"], 30);
  EXPECT_EQ(two["items"], 60);
  const json& a = one["drafters"][0]["points"][0];
  const json& b = two["drafters"][0]["points"][0];
  EXPECT_DOUBLE_EQ(a["tau"].get<double>(), b["tau"].get<double>());
  // Clusters resampled: twin turns add no information, the interval is the one-turn interval exactly.
  EXPECT_DOUBLE_EQ(a["tau_ci"][0].get<double>(), b["tau_ci"][0].get<double>());
  EXPECT_DOUBLE_EQ(a["tau_ci"][1].get<double>(), b["tau_ci"][1].get<double>());
  // Resampling the 60 turns as if independent would have given a narrower one (about 1 / sqrt(2) as wide).
  std::vector<double> num, den;
  for (int k = 0; k < 2; ++k)
    for (const auto& c : turns) num.push_back(c.num_emitted_tokens), den.push_back(c.num_target_calls);
  const Interval turn_level = bootstrap_ratio(num, den, 4000, 7);
  const double cluster_width = b["tau_ci"][1].get<double>() - b["tau_ci"][0].get<double>();
  EXPECT_LT(width(turn_level), 0.85 * cluster_width) << "turn-level " << width(turn_level) << " vs " << cluster_width;
  // The per-turn table is per turn: each turn's interval is the one-turn interval's width too.
  const json& t2 = b["by_turn"][1];
  EXPECT_EQ(t2["clusters"], 30);
  EXPECT_NEAR(t2["tau_ci"][1].get<double>() - t2["tau_ci"][0].get<double>(), cluster_width, 0.25 * cluster_width);
}

// A method trained with S seeds on n questions: num[s][c] = mu + seed_sd * a_s + question_sd * b_c (den 1), a and b
// fixed standard-normal draws. The pooled ratio's standard error is sqrt(seed_var / S + question_var / n) (the
// sample variances of a and b stand in for 1).
SeedCounts synthetic(int64_t seeds, int64_t clusters, double seed_sd, double question_sd, double* se) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> z;
  std::vector<double> a(seeds), b(clusters);
  for (double& x : a) x = z(rng);
  for (double& x : b) x = z(rng);
  auto var = [](const std::vector<double>& v) {
    double m = 0, s = 0;
    for (double x : v) m += x;
    m /= v.size();
    for (double x : v) s += (x - m) * (x - m);
    return s / v.size();  // the bootstrap's plug-in variance
  };
  *se = std::sqrt(seed_sd * seed_sd * var(a) / seeds + question_sd * question_sd * var(b) / clusters);
  SeedCounts out;
  for (int64_t s = 0; s < seeds; ++s) {
    std::vector<double> num, den;
    for (int64_t c = 0; c < clusters; ++c) num.push_back(2.0 + seed_sd * a[s] + question_sd * b[c]), den.push_back(1);
    out.num.push_back(num), out.den.push_back(den);
  }
  return out;
}

TEST(Stats, TwoLevelBootstrapCarriesTheSeedVariance) {
  for (const auto& [seed_sd, question_sd] : std::vector<std::pair<double, double>>{{0.2, 0.0}, {0.1, 0.3}}) {
    double se = 0;
    const SeedCounts m = synthetic(40, 80, seed_sd, question_sd, &se);
    const Interval ci = percentile_interval(bootstrap_draws(m, nullptr, 8000, 5));
    EXPECT_NEAR(width(ci), 2 * 1.959964 * se, 0.12 * 2 * 1.959964 * se)
        << "seed sd " << seed_sd << ", question sd " << question_sd;
    EXPECT_LE(ci.lo, m.ratio());
    EXPECT_GE(ci.hi, m.ratio());
  }
  // Questions alone (one level): with no question spread the interval has no width, though the seeds disagree.
  double se = 0;
  const SeedCounts m = synthetic(40, 80, 0.2, 0.0, &se);
  SeedCounts pooled_as_one = SeedCounts::one(std::vector<double>(80, 0.0), std::vector<double>(80, 0.0));
  for (size_t s = 0; s < m.seeds(); ++s)
    for (size_t c = 0; c < 80; ++c) pooled_as_one.num[0][c] += m.num[s][c], pooled_as_one.den[0][c] += m.den[s][c];
  EXPECT_NEAR(width(percentile_interval(bootstrap_draws(pooled_as_one, nullptr, 2000, 5))), 0.0, 1e-12);
  EXPECT_GT(se, 0.02);
}

TEST(Stats, PairedDifferencesDrawTheClustersOnceAndEachSidesSeedsApart) {
  // b = a + 0.1 on every cluster, one seed each: every resampled difference is exactly -0.1.
  std::vector<double> num, den(25, 1.0);
  for (int i = 0; i < 25; ++i) num.push_back(1 + (i * 7) % 5);
  std::vector<double> plus = num;
  for (double& x : plus) x += 0.1;
  const Interval d = bootstrap_ratio_difference(num, den, plus, den, 2000, 5);
  EXPECT_NEAR(d.lo, -0.1, 1e-12);
  EXPECT_NEAR(d.hi, -0.1, 1e-12);
  // Two methods whose seeds spread: the difference's interval widens by both sides' seed spread.
  double se_a = 0, se_b = 0;
  const SeedCounts a = synthetic(30, 60, 0.2, 0.0, &se_a), b = synthetic(30, 60, 0.2, 0.0, &se_b);
  const std::vector<double> draws = bootstrap_draws(a, &b, 6000, 9);
  EXPECT_NEAR(width(percentile_interval(draws)), 2 * 1.959964 * std::hypot(se_a, se_b),
              0.15 * 2 * 1.959964 * std::hypot(se_a, se_b));
  // The ratio contrast (a speed-up): x / y on every draw.
  const SeedCounts half = SeedCounts::one({2, 3}, {1, 1});
  const std::vector<double> r = bootstrap_draws(SeedCounts::one({4, 6}, {1, 1}), &half, 200, 1, Contrast::kRatio);
  EXPECT_NEAR(r.front(), 2.0, 1e-12);
  EXPECT_NEAR(r.back(), 2.0, 1e-12);
}

TEST(Stats, StratifiedSampleTakesEveryCategoryInTurn) {
  std::vector<EvalItem> items;
  for (int i = 0; i < 40; ++i) items.push_back({str_cat("q", i), i < 30 ? "writing" : (i < 35 ? "math" : "code"),
                                                str_cat("q", i), 1, 5, 5});
  const std::vector<int64_t> s = stratified_sample(items, 6, 42);
  ASSERT_EQ(s.size(), 6u);
  std::map<std::string, int> per;
  for (int64_t i : s) ++per[items[i].category];
  EXPECT_EQ(per["writing"], 2);
  EXPECT_EQ(per["math"], 2);
  EXPECT_EQ(per["code"], 2);
  EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
  EXPECT_EQ(stratified_sample(items, 6, 42), s) << "a fixed seed gives a fixed sample";
  EXPECT_NE(stratified_sample(items, 6, 43), s);
  EXPECT_EQ(stratified_sample(items, 100, 1).size(), 40u) << "at most every item";
  EXPECT_TRUE(stratified_sample(items, 0, 1).empty());
}

// Counters and a timing of prompt-lookup drafting at g = 4 over answers that rarely repeat themselves: most target
// calls verify no draft at all. The bound prices each call at the time its block length took inside the timed
// decodes; the step latencies measured before the sweep (Report::verify_seconds) do not enter it.
TEST(Stats, SpeedupBoundHoldsForLookupRunsWithEmptyDrafts) {
  const int64_t gamma = 4;
  std::mt19937_64 rng(1);
  Report r;
  r.resamples = 500, r.target_params = 1000, r.repeats = 1;
  // A target step over a block of k tokens costs 10 ms + 2 ms per token; a plain step is the 1-token block.
  std::vector<double> verify;
  for (int64_t k = 1; k <= gamma + 1; ++k) verify.push_back(0.010 + 0.002 * k);
  // A noisy latency measurement before the sweep, with blocks priced higher than the decodes found them: not used.
  r.target_step_seconds = verify[0];
  for (int64_t k = 1; k <= gamma + 1; ++k) r.verify_seconds.push_back(verify[0] * (1 + 0.5 * (k - 1)));
  DrafterResult d;
  d.name = "prompt-lookup";
  SweepPoint p;
  p.temperature = 0, p.gamma = gamma;
  int64_t empty = 0, calls = 0;
  for (int q = 0; q < 12; ++q) {
    std::vector<int64_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    GreedyAnswer ans;
    for (int i = 0; i < 60; ++i) ans.tokens.push_back(i % 17 == 16 ? 3 + q % 4 : 100 + static_cast<int64_t>(rng() % 900));
    ans.emitted = 40;
    const SpecCounters c = simulate_greedy(prompt, ans, gamma, *lookup_drafter({1, 3}, 1000));
    empty += c.calls_by_draft_length[0], calls += c.num_target_calls;
    // The correct timing: each call its own block's verification (lookup's n-gram search costs nothing here).
    std::vector<double> by_length(c.calls_by_draft_length.size());
    double t = 0;
    for (size_t k = 0; k < by_length.size(); ++k) t += by_length[k] = c.calls_by_draft_length[k] * verify[k];
    SpecCounters plain;
    for (int64_t i = 0; i < ans.emitted; ++i) plain.record_target_call(0, 0);
    PromptRun run{str_cat("q", q), 10, model::Finish::kLength, c};
    run.seconds = {t};
    run.baseline_seconds = {ans.emitted * verify[0]};
    run.baseline_tokens = ans.emitted;
    p.prompts.push_back(run);
    p.counters.add(c);
    p.times.add(c, by_length, 0.0);
    p.baseline_times.add(plain, {ans.emitted * verify[0]}, 0.0);
    r.items.push_back({str_cat("q", q), "c", str_cat("q", q), 1, 10, 40});
    r.timed_items.push_back(q);
  }
  ASSERT_GT(empty, calls / 2) << "most calls verify an empty draft";
  p.baseline_counters.num_emitted_tokens = p.counters.num_emitted_tokens;
  d.points = {p};
  r.drafters = {d};
  const json j = report_json(r);
  const json pt = j["drafters"][0]["points"][0];
  const double speedup = pt["speedup"].get<double>(), bound = pt["speedup_bound"].get<double>();
  // This timing is the bound's own cost model with nothing else spent: the speed-up reaches the bound exactly.
  EXPECT_NEAR(speedup, bound, 1e-9 * bound) << "a correct timing cannot beat the bound";
  EXPECT_FALSE(pt["exceeds_bound"].get<bool>());
  for (int64_t k = 0; k <= gamma; ++k)
    if (p.times.target_calls[static_cast<size_t>(k)] > 0)
      EXPECT_NEAR(j["target"]["timed_verify_seconds_by_block"][k].get<double>(), verify[static_cast<size_t>(k)], 1e-12)
          << "block of " << k + 1;
  // Priced with the latencies measured before the sweep the bound would be lower than this timing (so the equality
  // above fails for a bound that used them).
  double before = 0;
  for (size_t k = 0; k < p.counters.calls_by_draft_length.size(); ++k)
    before += p.counters.calls_by_draft_length[k] * r.verify_seconds[k];
  EXPECT_GT(speedup, 1.01 * p.counters.num_emitted_tokens * r.target_step_seconds / before);
  // The old rule charged every call a gamma + 1 verification: that "bound" is below what this timing measures.
  const double old_bound =
      p.counters.num_emitted_tokens * verify[0] / (p.counters.num_target_calls * verify[static_cast<size_t>(gamma)]);
  EXPECT_GT(speedup, 1.1 * old_bound) << "the old bound would have been exceeded falsely";
}

// A timing that leaves part of the drafter's decode out (its wall time shorter than the time inside its own target
// calls) beats what the counters allow, and the report flags it.
TEST(Stats, SpeedupBoundFlagsATimingThatMissesSteps) {
  Report r;
  r.resamples = 200, r.target_params = 1000, r.repeats = 1;
  DrafterResult d;
  d.name = "kd", d.params = 100;
  SweepPoint p;
  p.temperature = 0, p.gamma = 1;
  for (int q = 0; q < 4; ++q) {
    SpecCounters c;  // 8 tokens in 5 calls of a 1-token draft, 5 drafter steps
    for (int i = 0; i < 5; ++i) c.record_target_call(1, 1), c.record_draft(1, i < 3 ? 1 : 0);
    c.num_emitted_tokens = 8, c.num_drafter_calls = 5;
    SpecCounters plain;
    for (int i = 0; i < 8; ++i) plain.record_target_call(0, 0);
    PromptRun run{str_cat("q", q), 10, model::Finish::kLength, c};
    run.seconds = {5 * 0.010 * 0.5};  // half of its target calls' own time: a broken timing
    run.baseline_seconds = {8 * 0.010};
    run.baseline_tokens = 8;
    p.prompts.push_back(run);
    p.counters.add(c);
    p.times.add(c, {0.0, 5 * 0.010}, 5 * 0.001);
    p.baseline_times.add(plain, {8 * 0.010}, 0.0);
    r.items.push_back({str_cat("q", q), "c", str_cat("q", q), 1, 10, 8});
    r.timed_items.push_back(q);
  }
  p.baseline_counters.num_emitted_tokens = p.counters.num_emitted_tokens;
  d.points = {p};
  r.drafters = {d};
  const json pt = report_json(r)["drafters"][0]["points"][0];
  EXPECT_NEAR(pt["speedup_bound"].get<double>(), 8 * 0.010 / (5 * 0.010 + 5 * 0.001), 1e-12);
  EXPECT_TRUE(pt["exceeds_bound"].get<bool>());
}

}  // namespace
}  // namespace draftalign::eval
