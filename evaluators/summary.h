// summary.h: the numbers an evaluation report derives from its counters (summarize): tau and the acceptance rates with
// 95% bootstrap intervals over clusters of prompts, per turn and per category, the paired differences with Holm's
// correction, the timed speed-ups and their bound, the speculative sampling check. report.json is this struct written
// out (report.cpp), report.md is made from report.json, and evaluate logs its summary from it. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "evaluators/metrics.h"
#include "evaluators/report.h"
#include "evaluators/stats.h"

namespace draftalign::eval {

// A pooled ratio and its 95% bootstrap interval ({0, [0, 0]} over no cluster).
struct Estimate {
  double value = 0;
  Interval ci;
};

// Tau over the turns of one turn number, or of one category.
struct SubsetTau {
  int64_t turn = 0;      // by_turn
  std::string category;  // by_category
  int64_t items = 0, clusters = 0;
  Estimate tau;
};

// One exact greedy row at one gamma, over every evaluated turn.
struct ExactPointSummary {
  int64_t gamma = 0;
  SpecCounters counters;  // summed over the turns (and the seeds of a combined row)
  SpecMetrics metrics;
  Estimate tau;
  Estimate first_position_acceptance;  // given a draft: accepted at position 1 / drafts
  Estimate proposal_rate;              // drafts / target calls: 1 for a model drafter
  Estimate accepted_per_call;          // accepted draft tokens / target calls
  std::vector<SubsetTau> by_turn, by_category;
};

// An exact greedy row: a drafter trained once, one seed of a method, or a method's seeds combined.
struct ExactRowSummary {
  std::string name, dir, kind;
  int64_t params = 0;
  int64_t draft_vocab = 0;     // 0: no draft vocabulary
  double answer_coverage = 0;  // the mean over a combined row's seeds
  bool combined = false;
  std::vector<int64_t> seeds;        // combined: the seeds of its members
  std::vector<std::string> members;  // combined: their names
  std::string group;                 // one seed of a method: the combined row's name ("" otherwise)
  int64_t seed = -1;
  std::vector<ExactPointSummary> points;
};

// Row `drafter` minus row `versus` in tau: its 95% interval, the one at the Bonferroni level, the two-sided bootstrap
// p-value and Holm's adjustment of it over the family.
struct Difference {
  std::string drafter, versus;
  int64_t gamma = 0;
  double difference = 0;
  Interval ci, corrected_ci;
  double p = 1, p_holm = 1;
  bool significant = false;  // p_holm < 0.05
};

struct ExactSummary {
  int64_t items = 0, clusters = 0;
  std::vector<int64_t> turns;
  std::vector<std::string> categories;
  std::vector<ExactRowSummary> rows;
  // The family of paired comparisons at the headline gamma: the declared contrasts, or every pair of rows that are not
  // single seeds of a combined method.
  int64_t family_gamma = 0;
  bool declared = false;
  std::vector<Difference> differences;
};

// One timed setting of one drafter.
struct TimedPointSummary {
  double temperature = 0;
  int64_t gamma = 0;
  SpecMetrics metrics;
  Estimate tau, first_position_acceptance;
  std::optional<double> mbsu, mbsu_latency;  // none without a drafter model (prompt lookup)
  double tokens_per_s = 0, baseline_tokens_per_s = 0;
  double speedup = 0;  // per-turn medians of the alternated runs, pooled over clusters
  Interval speedup_ci;
  double speedup_bound = 0;    // what the counters and the measured step costs allow (0: a block length not timed)
  bool exceeds_bound = false;  // speedup > 1.1 x the bound
};

struct TimedSummary {
  std::string name, dir;
  int64_t params = 0;
  double param_ratio = 0, step_seconds = 0, drafting_seconds_per_call = 0, latency_ratio = 0;
  std::vector<TimedPointSummary> points;
};

// The speculative sampling check at one temperature: the one-pass alpha (and the i.i.d. tau estimate from it) beside
// the real decoder's measured first-position acceptance and tau on the same turns; |agreement_z| small when they agree.
struct SamplingPointSummary {
  double temperature = 0;
  int64_t turns = 0, clusters = 0;
  double positions = 0;
  Estimate alpha;
  std::vector<double> tau_iid_estimate;  // [gamma - 1], gamma = 1 .. max(8, gamma)
  int64_t gamma = 0;
  Estimate measured_first_position_acceptance;
  int64_t measured_drafts = 0;
  Estimate measured_tau;
  double agreement_z = 0;
};

struct SamplingSummary {
  std::string name;
  std::vector<SamplingPointSummary> points;
};

struct Summary {
  int64_t clusters = 0;                      // of every evaluated turn
  std::vector<double> timed_verify_seconds;  // the step costs the bounds use: a target call by the draft length
  ExactSummary exact;
  std::vector<TimedSummary> timed;
  std::vector<SamplingSummary> sampling;
};

// Every derived number of the report. Deterministic for r.seed (each statistic its own bootstrap seed).
Summary summarize(const Report& r);

}  // namespace draftalign::eval
