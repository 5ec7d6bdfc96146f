// summary.cpp: the report's derived numbers (summarize): the exact greedy rows and their differences, the timed
// settings, the sampling check. Every statistic has its own bootstrap seed, from the report's and what it is of.
#include "evaluators/summary.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "common/error.h"

namespace draftalign::eval {

namespace {

// A bootstrap seed per statistic: the report's seed mixed with what the statistic is of.
uint64_t stat_seed(uint64_t seed, const std::string& what) {
  uint64_t h = seed ^ 0x9E3779B97F4A7C15ULL;
  for (unsigned char ch : what) h = (h ^ ch) * 0x100000001B3ULL;
  return h;
}

// The parts of a counter that ratios are made of.
using Part = double (*)(const SpecCounters&);
double emitted(const SpecCounters& c) { return static_cast<double>(c.num_emitted_tokens); }
double calls(const SpecCounters& c) { return static_cast<double>(c.num_target_calls); }
double drafts(const SpecCounters& c) { return static_cast<double>(c.num_drafts); }
double accepted(const SpecCounters& c) { return static_cast<double>(c.num_accepted_tokens); }
double first(const SpecCounters& c) {
  return c.num_accepted_tokens_per_pos.empty() ? 0.0 : static_cast<double>(c.num_accepted_tokens_per_pos[0]);
}

// The items a statistic covers, in their clusters: cluster_of[i] is item i's cluster among the selected ones, -1 when
// item i is left out. Only clusters with a selected item count (a question without a second turn is no draw of the
// turn-2 table).
struct Selection {
  std::vector<int64_t> cluster_of;
  int64_t clusters = 0, items = 0;
};

template <class Keep>
Selection select_items(const std::vector<EvalItem>& items, const std::vector<int64_t>& which, Keep keep) {
  Selection s;
  std::map<std::string, int64_t> index;
  for (int64_t i : which) {
    const EvalItem& it = items[static_cast<size_t>(i)];
    if (!keep(it)) {
      s.cluster_of.push_back(-1);
      continue;
    }
    const auto [at, fresh] = index.emplace(it.cluster, s.clusters);
    if (fresh) ++s.clusters;
    s.cluster_of.push_back(at->second);
    ++s.items;
  }
  return s;
}

Selection select_all(const std::vector<EvalItem>& items, const std::vector<int64_t>& which) {
  return select_items(items, which, [](const EvalItem&) { return true; });
}

std::vector<int64_t> all_indices(size_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

// Cluster totals of num and den, one row per seed (per_seed[s][k]: seed s's counters of the selection's k-th item).
SeedCounts seed_counts(const std::vector<const std::vector<SpecCounters>*>& per_seed, const Selection& sel, Part num,
                       Part den) {
  SeedCounts out;
  for (const auto* per_item : per_seed) {
    std::vector<double> a(static_cast<size_t>(sel.clusters), 0.0), b(a);
    for (size_t k = 0; k < sel.cluster_of.size(); ++k) {
      const int64_t c = sel.cluster_of[k];
      if (c < 0) continue;
      a[static_cast<size_t>(c)] += num((*per_item)[k]);
      b[static_cast<size_t>(c)] += den((*per_item)[k]);
    }
    out.num.push_back(std::move(a));
    out.den.push_back(std::move(b));
  }
  return out;
}

// The pooled ratio and its interval.
Estimate estimate(const SeedCounts& s, int64_t resamples, uint64_t seed) {
  if (s.clusters() == 0) return {};
  return {s.ratio(), percentile_interval(bootstrap_draws(s, nullptr, resamples, seed))};
}

// The ratio num / den of the selected items of one or more seeds, with its interval.
Estimate ratio_of(const Report& r, const std::vector<const std::vector<SpecCounters>*>& per_seed, const Selection& sel,
                  Part num, Part den, const std::string& key) {
  return estimate(seed_counts(per_seed, sel, num, den), r.resamples, stat_seed(r.seed, key));
}

// An exact greedy row, with the drafters whose counters it pools: the drafter itself, or every seed of the method.
struct Row {
  ExactRowSummary info;
  std::vector<const ExactDrafter*> members;
};

std::vector<Row> exact_rows(const std::vector<ExactDrafter>& exact) {
  std::vector<Row> rows;
  std::set<std::string> groups_done;
  auto vocab = [](Row& row) {  // a seed group's members share the shape; coverage is their mean
    const ExactDrafter& front = *row.members.front();
    if (front.draft_vocab <= 0) return;
    row.info.draft_vocab = front.draft_vocab;
    for (const ExactDrafter* m : row.members)
      row.info.answer_coverage += m->answer_coverage / static_cast<double>(row.members.size());
  };
  for (const auto& d : exact) {
    if (!d.group.empty() && groups_done.insert(d.group).second) {
      Row c;
      c.info.name = d.group, c.info.kind = d.kind, c.info.params = d.params, c.info.combined = true;
      for (const auto& m : exact)
        if (m.group == d.group) {
          c.members.push_back(&m);
          c.info.seeds.push_back(m.seed), c.info.members.push_back(m.name);
        }
      vocab(c);
      rows.push_back(std::move(c));
    }
    Row r;
    r.info.name = d.name, r.info.dir = d.dir, r.info.kind = d.kind, r.info.params = d.params;
    r.info.group = d.group, r.info.seed = d.seed;
    r.members = {&d};
    vocab(r);
    rows.push_back(std::move(r));
  }
  return rows;
}

// Each member's per-item counters at gamma g; empty when a member lacks g.
std::vector<const std::vector<SpecCounters>*> at_gamma(const Row& row, int64_t g) {
  std::vector<const std::vector<SpecCounters>*> out;
  for (const ExactDrafter* m : row.members) {
    const auto it = std::find_if(m->points.begin(), m->points.end(), [&](const ExactPoint& p) { return p.gamma == g; });
    if (it == m->points.end()) return {};
    out.push_back(&it->per_item);
  }
  return out;
}

std::vector<int64_t> row_gammas(const Row& row) {
  std::vector<int64_t> gs;
  for (const auto& p : row.members[0]->points)
    if (!at_gamma(row, p.gamma).empty()) gs.push_back(p.gamma);
  return gs;
}

// The gamma of the per-turn, per-category and difference tables: 4 when measured, else the largest below it, else the
// smallest.
int64_t headline_gamma(const std::vector<ExactDrafter>& exact) {
  std::vector<int64_t> gs;
  for (const auto& d : exact)
    for (const auto& p : d.points) gs.push_back(p.gamma);
  if (gs.empty()) return 0;
  std::sort(gs.begin(), gs.end());
  int64_t best = gs.front();
  for (int64_t g : gs)
    if (g <= 4) best = g;
  return best;
}

ExactPointSummary exact_point(const Report& r, const Row& row, int64_t g, const ExactSummary& shape) {
  const auto per_seed = at_gamma(row, g);
  const std::vector<int64_t> every = all_indices(r.items.size());
  const Selection all = select_all(r.items, every);
  ExactPointSummary p;
  p.gamma = g;
  for (const auto* per_item : per_seed)
    for (const auto& c : *per_item) p.counters.add(c);
  p.metrics = derive_metrics(p.counters);
  const std::string key = str_cat(row.info.name, "/", g);
  p.tau = ratio_of(r, per_seed, all, emitted, calls, key);
  p.first_position_acceptance = ratio_of(r, per_seed, all, first, drafts, key + "/a1");
  p.proposal_rate = ratio_of(r, per_seed, all, drafts, calls, key + "/pr");
  p.accepted_per_call = ratio_of(r, per_seed, all, accepted, calls, key + "/apc");
  auto subset = [&](auto keep, const std::string& what) {
    const Selection sel = select_items(r.items, every, keep);
    return SubsetTau{
        .items = sel.items, .clusters = sel.clusters, .tau = ratio_of(r, per_seed, sel, emitted, calls, key + what)};
  };
  for (int64_t t : shape.turns) {
    SubsetTau x = subset([t](const EvalItem& it) { return it.turn == t; }, str_cat("/turn", t));
    x.turn = t;
    p.by_turn.push_back(x);
  }
  for (const auto& cat : shape.categories) {
    SubsetTau x = subset([&cat](const EvalItem& it) { return it.category == cat; }, "/" + cat);
    x.category = cat;
    p.by_category.push_back(x);
  }
  return p;
}

// The family of paired comparisons at gamma g (ExactSummary::differences), with Holm's adjustment over it.
std::vector<Difference> differences(const Report& r, const std::vector<Row>& rows, int64_t g) {
  std::vector<std::pair<size_t, size_t>> family;
  auto row_of = [&](const std::string& name) {
    for (size_t i = 0; i < rows.size(); ++i)
      if (rows[i].info.name == name) return i;
    throw Error(str_cat("evaluate.contrasts: '", name, "' is not a row of this report"));
  };
  if (!r.contrasts.empty()) {
    for (const auto& c : r.contrasts) family.push_back({row_of(c.drafter), row_of(c.versus)});
  } else {
    for (size_t a = 0; a < rows.size(); ++a)
      for (size_t b = a + 1; b < rows.size(); ++b)
        if (rows[a].info.seed < 0 && rows[b].info.seed < 0) family.push_back({a, b});
  }
  std::vector<std::pair<size_t, size_t>> tested;
  for (const auto& [a, b] : family)
    if (!at_gamma(rows[a], g).empty() && !at_gamma(rows[b], g).empty()) tested.push_back({a, b});
  const double m = static_cast<double>(tested.size());
  const Selection all = select_all(r.items, all_indices(r.items.size()));
  std::vector<Difference> out;
  std::vector<double> p;
  for (const auto& [a, b] : tested) {
    const SeedCounts x = seed_counts(at_gamma(rows[a], g), all, emitted, calls);
    const SeedCounts y = seed_counts(at_gamma(rows[b], g), all, emitted, calls);
    const std::string key = str_cat(rows[a].info.name, "-", rows[b].info.name, "/", g);
    const std::vector<double> draws = bootstrap_draws(x, &y, r.resamples, stat_seed(r.seed, key));
    p.push_back(bootstrap_p_value(draws));
    out.push_back({.drafter = rows[a].info.name,
                   .versus = rows[b].info.name,
                   .gamma = g,
                   .difference = x.ratio() - y.ratio(),
                   .ci = percentile_interval(draws, 0.95),
                   .corrected_ci = percentile_interval(draws, 1 - 0.05 / m),
                   .p = p.back()});
  }
  const std::vector<double> holm = holm_adjust(p);
  for (size_t i = 0; i < out.size(); ++i) out[i].p_holm = holm[i], out[i].significant = holm[i] < 0.05;
  return out;
}

ExactSummary exact_summary(const Report& r) {
  ExactSummary s;
  std::set<std::string> clusters;
  for (const auto& it : r.items) {
    if (!it.category.empty() && std::find(s.categories.begin(), s.categories.end(), it.category) == s.categories.end())
      s.categories.push_back(it.category);
    if (std::find(s.turns.begin(), s.turns.end(), it.turn) == s.turns.end()) s.turns.push_back(it.turn);
    clusters.insert(it.cluster);
  }
  std::sort(s.turns.begin(), s.turns.end());
  s.items = static_cast<int64_t>(r.items.size()), s.clusters = static_cast<int64_t>(clusters.size());
  const std::vector<Row> rows = exact_rows(r.exact);
  for (const Row& row : rows) {
    ExactRowSummary info = row.info;
    for (int64_t g : row_gammas(row)) info.points.push_back(exact_point(r, row, g, s));
    s.rows.push_back(std::move(info));
  }
  s.family_gamma = headline_gamma(r.exact);
  s.declared = !r.contrasts.empty();
  s.differences = differences(r, rows, s.family_gamma);
  return s;
}

// What the bound charges a step: the time of a target call by the draft length it verified and of a drafter step,
// each the mean over the timed decodes themselves (every repeat of every turn). A target call is priced the same
// whatever decoder made it (plain decoding's steps are calls that verified nothing), pooled over every setting of every
// drafter, so one decoder's timing is checked against prices the others measured too; a drafter step is its row's own.
struct StepCosts {
  std::vector<double> verify;  // [draft length]; 0 where no call of that length was timed
  double plain = 0;            // a target call without a draft (verify[0])
};

StepCosts step_costs(const Report& r) {
  StepTimes all;
  for (const auto& d : r.drafters)
    for (const auto& p : d.points) all.add(p.times), all.add(p.baseline_times);
  StepCosts c;
  for (size_t k = 0; k < all.target_calls.size(); ++k)
    c.verify.push_back(all.target_calls[k] > 0 ? all.target_seconds[k] / static_cast<double>(all.target_calls[k]) : 0);
  c.plain = c.verify.empty() ? 0.0 : c.verify[0];
  return c;
}

// A drafter row's mean drafting time per drafter call over its timed decodes (0 without a call: prompt lookup).
double drafter_step(const DrafterResult& d) {
  StepTimes t;
  for (const auto& p : d.points) t.add(p.times);
  return t.drafter_calls > 0 ? t.drafter_seconds / static_cast<double>(t.drafter_calls) : 0.0;
}

// The speed-up bound from the counters: emitted tokens x one plain step over what the decoder's calls cost at least,
// each target call its own block's verification time and each drafter call one drafter step (prompt lookup's search
// is not charged, which only raises the bound). 0 when a block length was not timed.
double speedup_bound(const SpecCounters& c, const std::vector<double>& verify, double plain_step, double drafter_step) {
  double cost = static_cast<double>(c.num_drafter_calls) * drafter_step;
  for (size_t k = 0; k < c.calls_by_draft_length.size(); ++k) {
    if (c.calls_by_draft_length[k] == 0) continue;
    if (k >= verify.size() || verify[k] <= 0) return 0.0;
    cost += static_cast<double>(c.calls_by_draft_length[k]) * verify[k];
  }
  return cost > 0 ? static_cast<double>(c.num_emitted_tokens) * plain_step / cost : 0.0;
}

// One timed point of drafter d (its row's ratios and drafting time in `row`).
TimedPointSummary timed_point(const Report& r, const StepCosts& costs, const TimedSummary& row, const SweepPoint& p) {
  DA_CHECK(p.prompts.size() == r.timed_items.size(), "report: ", row.name, " has ", p.prompts.size(),
           " timed turns, the report ", r.timed_items.size());
  const Selection sel = select_all(r.items, r.timed_items);
  const size_t n = static_cast<size_t>(sel.clusters);
  // Per cluster: tokens and the per-turn median seconds over the repeats, with the drafter and plain.
  std::vector<double> tokens(n), secs(n), base_tokens(n), base_secs(n);
  std::vector<SpecCounters> per_turn;
  for (size_t k = 0; k < p.prompts.size(); ++k) {
    const PromptRun& pr = p.prompts[k];
    const size_t at = static_cast<size_t>(sel.cluster_of[k]);
    tokens[at] += static_cast<double>(pr.counters.num_emitted_tokens);
    secs[at] += median(pr.seconds);
    base_tokens[at] += static_cast<double>(pr.baseline_tokens);
    base_secs[at] += median(pr.baseline_seconds);
    per_turn.push_back(pr.counters);
  }
  const SeedCounts spec = SeedCounts::one(tokens, secs), plain = SeedCounts::one(base_tokens, base_secs);
  const std::string key = str_cat(row.name, "/T", p.temperature, "/g", p.gamma);
  const std::vector<const std::vector<SpecCounters>*> one = {&per_turn};
  TimedPointSummary t;
  t.temperature = p.temperature, t.gamma = p.gamma;
  t.metrics = derive_metrics(p.counters);
  t.tau = ratio_of(r, one, sel, emitted, calls, key);
  t.first_position_acceptance = ratio_of(r, one, sel, first, drafts, key + "/a1");
  if (row.param_ratio > 0) t.mbsu = mbsu(t.metrics.block_efficiency, p.gamma, row.param_ratio);
  if (row.latency_ratio > 0) t.mbsu_latency = mbsu(t.metrics.block_efficiency, p.gamma, row.latency_ratio);
  t.tokens_per_s = spec.ratio(), t.baseline_tokens_per_s = plain.ratio();
  t.speedup = t.baseline_tokens_per_s > 0 ? t.tokens_per_s / t.baseline_tokens_per_s : 0.0;
  t.speedup_ci =
      percentile_interval(bootstrap_draws(spec, &plain, r.resamples, stat_seed(r.seed, key + "/s"), Contrast::kRatio));
  t.speedup_bound = speedup_bound(p.counters, costs.verify, costs.plain, row.drafting_seconds_per_call);
  t.exceeds_bound = t.speedup_bound > 0 && t.speedup > 1.1 * t.speedup_bound;
  return t;
}

std::vector<TimedSummary> timed_summary(const Report& r, const StepCosts& costs) {
  std::vector<TimedSummary> out;
  for (const auto& d : r.drafters) {
    TimedSummary row{.name = d.name, .dir = d.dir, .params = d.params};
    row.param_ratio = d.params > 0 ? static_cast<double>(r.target_params) / d.params : 0.0;
    row.step_seconds = d.step_seconds;
    row.latency_ratio = d.step_seconds > 0 ? r.target_step_seconds / d.step_seconds : 0.0;
    row.drafting_seconds_per_call = drafter_step(d);
    for (const auto& p : d.points) row.points.push_back(timed_point(r, costs, row, p));
    out.push_back(std::move(row));
  }
  return out;
}

// The sampling check of one drafter at one temperature. The two sides agree when |z| is small, z being their
// difference over the combined standard error (each read off its bootstrap interval).
SamplingPointSummary sampling_point(const Report& r, const Selection& sel, const SamplingDrafter& d,
                                    const SamplingPoint& p) {
  DA_CHECK(p.measured.size() == r.sampling_items.size(), "report: the sampling check of ", d.name, " has ",
           p.measured.size(), " turns, the report ", r.sampling_items.size());
  const std::string key = str_cat(d.name, "/sampling/T", p.temperature);
  const SeedCounts alpha_counts = SeedCounts::one(cluster_sums(p.alpha_sum, sel.cluster_of, sel.clusters),
                                                  cluster_sums(p.positions, sel.cluster_of, sel.clusters));
  SamplingPointSummary s;
  s.temperature = p.temperature, s.gamma = p.gamma;
  s.turns = static_cast<int64_t>(p.positions.size()), s.clusters = sel.clusters;
  s.positions = std::accumulate(p.positions.begin(), p.positions.end(), 0.0);
  s.alpha = {alpha_counts.ratio(),
             percentile_interval(bootstrap_draws(alpha_counts, nullptr, r.resamples, stat_seed(r.seed, key)))};
  const std::vector<const std::vector<SpecCounters>*> one = {&p.measured};
  s.measured_first_position_acceptance = ratio_of(r, one, sel, first, drafts, key + "/a1");
  s.measured_tau = ratio_of(r, one, sel, emitted, calls, key + "/t");
  const Estimate& a1 = s.measured_first_position_acceptance;
  // Floored at 1e-4, the precision of an fp32 sum over the vocabulary: a drafter equal to the target has intervals of
  // width 0 and alpha 1 up to rounding.
  const double se = std::max(1e-4, std::hypot(s.alpha.ci.hi - s.alpha.ci.lo, a1.ci.hi - a1.ci.lo) / (2 * 1.959964));
  s.agreement_z = (a1.value - s.alpha.value) / se;
  for (int64_t g = 1; g <= std::max<int64_t>(8, p.gamma); ++g)
    s.tau_iid_estimate.push_back(iid_tokens_per_call(s.alpha.value, g));
  for (const auto& c : p.measured) s.measured_drafts += c.num_drafts;
  return s;
}

}  // namespace

Summary summarize(const Report& r) {
  Summary s;
  std::set<std::string> clusters;
  for (const auto& it : r.items) clusters.insert(it.cluster);
  s.clusters = static_cast<int64_t>(clusters.size());
  const StepCosts costs = step_costs(r);
  s.timed_verify_seconds = costs.verify;
  s.exact = exact_summary(r);
  s.timed = timed_summary(r, costs);
  const Selection sel = select_all(r.items, r.sampling_items);
  for (const auto& d : r.sampling) {
    SamplingSummary x{.name = d.name};
    for (const auto& p : d.points) x.points.push_back(sampling_point(r, sel, d, p));
    s.sampling.push_back(std::move(x));
  }
  return s;
}

}  // namespace draftalign::eval
