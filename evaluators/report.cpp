// report.cpp: report.json from the counters (report_json), the names and groups of drafters, the stratified samples,
// the contrasts, and writing the report directory. The Markdown is report_markdown.cpp's, sweep.jsonl sweep_log.cpp's.
#include "evaluators/report.h"

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "common/error.h"
#include "common/fs.h"
#include "evaluators/plot_script.h"  // generated from tools/plot_report.py
#include "train/layout.h"

namespace draftalign::eval {

using nlohmann::json;
namespace stdfs = std::filesystem;

const char* plot_script() { return kPlotScript; }

namespace {

// A drafter directory without a trailing slash, "final" or "seed-<n>": what names it.
std::vector<std::string> path_parts(const std::string& dir) {
  std::vector<std::string> parts;
  for (const auto& p : stdfs::path(dir).lexically_normal())
    if (!p.empty() && p != ".") parts.push_back(p.string());
  return parts;
}

bool is_seed_part(const std::string& s) {
  return s.size() > 5 && s.rfind("seed-", 0) == 0 &&
         std::all_of(s.begin() + 5, s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Unique short names for paths (as component lists): the last `start` components of each, more where two collide.
std::vector<std::string> unique_suffixes(const std::vector<std::vector<std::string>>& paths,
                                         const std::vector<size_t>& start) {
  std::vector<size_t> k = start;
  auto name = [&](size_t i) {
    const auto& p = paths[i];
    const size_t n = std::min(std::max<size_t>(k[i], 1), p.size());
    std::string s;
    for (size_t j = p.size() - n; j < p.size(); ++j) s += (s.empty() ? "" : "/") + p[j];
    return s;
  };
  for (bool changed = true; changed;) {
    changed = false;
    std::map<std::string, std::vector<size_t>> by_name;
    for (size_t i = 0; i < paths.size(); ++i) by_name[name(i)].push_back(i);
    for (const auto& [n, who] : by_name) {
      if (who.size() < 2) continue;
      // Distinct paths with the same name take one more component (identical paths keep theirs).
      std::set<std::vector<std::string>> distinct;
      for (size_t i : who) distinct.insert(paths[i]);
      if (distinct.size() < 2) continue;
      for (size_t i : who)
        if (k[i] < paths[i].size()) ++k[i], changed = true;
    }
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < paths.size(); ++i) out.push_back(name(i));
  return out;
}

// What a drafter directory names: its path without "final" and, for a training seed, without "seed-<n>" (the method).
struct DirName {
  std::vector<std::string> unit;  // the method's path, or the drafter's
  int64_t seed = -1;
};

DirName dir_name(const std::string& dir) {
  DirName d;
  d.unit = path_parts(dir);
  if (d.unit.size() > 1 && d.unit.back() == train::kFinalDir) d.unit.pop_back();
  if (d.unit.size() > 1 && is_seed_part(d.unit.back())) {
    d.seed = std::atoll(d.unit.back().c_str() + 5);
    d.unit.pop_back();
  }
  return d;
}

}  // namespace

int64_t seed_of_dir(const std::string& dir) { return dir_name(dir).seed; }

std::vector<std::string> drafter_names(const std::vector<std::string>& dirs) {
  std::vector<std::vector<std::string>> units;
  std::vector<size_t> start;
  std::vector<int64_t> seeds;
  for (const auto& dir : dirs) {
    DirName d = dir_name(dir);
    if (d.unit.empty()) d.unit = {dir};
    // A checkpoint keeps the folder it sits in: "checkpoints/step-00100".
    start.push_back(d.unit.back().rfind("step-", 0) == 0 ? 2 : 1);
    units.push_back(std::move(d.unit));
    seeds.push_back(d.seed);
  }
  std::vector<std::string> names = unique_suffixes(units, start);
  for (size_t i = 0; i < names.size(); ++i)
    if (seeds[i] >= 0) names[i] += str_cat("/seed-", seeds[i]);
  // The same method's seeds share their method's name; a name can still repeat only for the same directory twice.
  for (size_t i = 0; i < names.size(); ++i)
    if (std::count(names.begin(), names.end(), names[i]) > 1) names[i] = dirs[i];
  return names;
}

std::vector<std::string> drafter_groups(const std::vector<std::string>& dirs) {
  const std::vector<std::string> names = drafter_names(dirs);
  std::vector<std::string> out;
  for (size_t i = 0; i < dirs.size(); ++i) {
    const int64_t seed = seed_of_dir(dirs[i]);
    const std::string suffix = str_cat("/seed-", seed);
    const std::string& n = names[i];
    out.push_back(seed >= 0 && n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0
                      ? n.substr(0, n.size() - suffix.size())
                      : "");
  }
  return out;
}

std::vector<int64_t> stratified_sample(const std::vector<EvalItem>& items, int64_t n, uint64_t seed) {
  std::vector<std::string> categories;
  std::vector<std::vector<int64_t>> members;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto it = std::find(categories.begin(), categories.end(), items[i].category);
    if (it == categories.end()) {
      categories.push_back(items[i].category);
      members.push_back({static_cast<int64_t>(i)});
    } else {
      members[static_cast<size_t>(it - categories.begin())].push_back(static_cast<int64_t>(i));
    }
  }
  std::mt19937_64 rng(seed);
  auto shuffle = [&](auto& v) {  // Fisher-Yates with the engine's raw numbers: the same on every standard library
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
  };
  for (auto& m : members) shuffle(m);
  std::vector<size_t> order(members.size());
  std::iota(order.begin(), order.end(), size_t{0});
  shuffle(order);
  std::vector<int64_t> out;
  for (size_t round = 0; static_cast<int64_t>(out.size()) < n; ++round) {
    bool any = false;
    for (size_t c : order)
      if (round < members[c].size() && static_cast<int64_t>(out.size()) < n) out.push_back(members[c][round]), any = true;
    if (!any) break;
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<ContrastSpec> parse_contrasts(const std::vector<std::string>& specs) {
  std::vector<ContrastSpec> out;
  auto trim = [](std::string s) {
    const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t at = specs[i].find(" vs ");
    const bool one = at != std::string::npos && specs[i].find(" vs ", at + 1) == std::string::npos;
    ContrastSpec c;
    if (one) c = {trim(specs[i].substr(0, at)), trim(specs[i].substr(at + 4))};
    DA_CHECK(one && !c.drafter.empty() && !c.versus.empty(), "evaluate.contrasts[", i, "]: '", specs[i],
             "' is not 'A vs B' (two report rows, e.g. 'tvdpp-token-q vs pretrain')");
    out.push_back(c);
  }
  return out;
}

std::vector<std::string> report_row_names(const std::vector<std::string>& drafter_dirs, bool prompt_lookup,
                                          bool hybrid) {
  std::vector<std::string> rows;
  if (prompt_lookup) rows.push_back("prompt-lookup");
  const std::vector<std::string> names = drafter_names(drafter_dirs), groups = drafter_groups(drafter_dirs);
  for (size_t i = 0; i < names.size(); ++i) {
    for (const std::string& suffix : hybrid ? std::vector<std::string>{"", "+lookup"} : std::vector<std::string>{""}) {
      if (!groups[i].empty() && std::find(rows.begin(), rows.end(), groups[i] + suffix) == rows.end())
        rows.push_back(groups[i] + suffix);
      rows.push_back(names[i] + suffix);
    }
  }
  return rows;
}

namespace {
std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}
}  // namespace

void check_contrasts(const std::vector<ContrastSpec>& contrasts, const std::vector<std::string>& rows) {
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < contrasts.size(); ++i) {
    const ContrastSpec& c = contrasts[i];
    for (const std::string* side : {&c.drafter, &c.versus})
      DA_CHECK(std::find(rows.begin(), rows.end(), *side) != rows.end(), "evaluate.contrasts[", i, "]: '", *side,
               "' is not a row of this report; its rows are: ", joined(rows));
    DA_CHECK(c.drafter != c.versus, "evaluate.contrasts[", i, "]: '", c.drafter, "' is compared with itself");
    DA_CHECK(seen.insert({c.drafter, c.versus}).second && !seen.count({c.versus, c.drafter}), "evaluate.contrasts[",
             i, "]: '", c.drafter, " vs ", c.versus, "' is declared twice");
  }
}

namespace {

json metrics_json(const SpecMetrics& m) {
  return {{"block_efficiency", m.block_efficiency},
          {"mean_acceptance_length", m.mean_acceptance_length},
          {"draft_acceptance_rate", m.draft_acceptance_rate},
          {"acceptance_rate_per_pos", m.acceptance_rate_per_pos},
          {"conditional_acceptance_per_pos", m.conditional_acceptance_per_pos},
          {"acceptance_histogram", m.acceptance_histogram}};
}

json interval_json(const Interval& i) { return json::array({i.lo, i.hi}); }

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

// {value, interval} of a pooled ratio.
json ratio_json(const SeedCounts& s, int64_t resamples, uint64_t seed) {
  if (s.clusters() == 0) return json::array({0.0, json::array({0.0, 0.0})});
  return json::array({s.ratio(), interval_json(percentile_interval(bootstrap_draws(s, nullptr, resamples, seed)))});
}

// An exact greedy row: a drafter trained once, one seed of a method, or a method's seeds combined.
struct Row {
  std::string name, dir, kind, group;
  int64_t params = 0, seed = -1;
  bool combined = false;
  std::vector<const ExactDrafter*> members;  // the drafter itself, or every seed of the method
};

std::vector<Row> exact_rows(const std::vector<ExactDrafter>& exact) {
  std::vector<Row> rows;
  std::set<std::string> groups_done;
  for (const auto& d : exact) {
    if (!d.group.empty() && groups_done.insert(d.group).second) {
      Row c;
      c.name = d.group, c.kind = d.kind, c.params = d.params, c.combined = true;
      for (const auto& m : exact)
        if (m.group == d.group) c.members.push_back(&m);
      rows.push_back(std::move(c));
    }
    Row r;
    r.name = d.name, r.dir = d.dir, r.kind = d.kind, r.group = d.group, r.params = d.params, r.seed = d.seed;
    r.members = {&d};
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

json exact_point_json(const Report& r, const Row& row, int64_t g, const std::vector<std::string>& categories,
                      const std::vector<int64_t>& turns) {
  const auto per_seed = at_gamma(row, g);
  const std::vector<int64_t> every = all_indices(r.items.size());
  const Selection all = select_items(r.items, every, [](const EvalItem&) { return true; });
  SpecCounters total;
  for (const auto* per_item : per_seed)
    for (const auto& c : *per_item) total.add(c);
  const std::string key = str_cat(row.name, "/", g);
  const json tau = ratio_json(seed_counts(per_seed, all, emitted, calls), r.resamples, stat_seed(r.seed, key));
  const json a1 = ratio_json(seed_counts(per_seed, all, first, drafts), r.resamples, stat_seed(r.seed, key + "/a1"));
  const json rate = ratio_json(seed_counts(per_seed, all, drafts, calls), r.resamples, stat_seed(r.seed, key + "/pr"));
  const json per_call =
      ratio_json(seed_counts(per_seed, all, accepted, calls), r.resamples, stat_seed(r.seed, key + "/apc"));
  json point = {{"gamma", g},
                {"counters", counters_json(total)},
                {"metrics", metrics_json(derive_metrics(total))},
                {"tau", tau[0]},
                {"tau_ci", tau[1]},
                {"first_position_acceptance", a1[0]},  // given a draft: accepted at position 1 / drafts
                {"first_position_acceptance_ci", a1[1]},
                {"proposal_rate", rate[0]},  // drafts / target calls: 1 for a model drafter
                {"proposal_rate_ci", rate[1]},
                {"accepted_per_call", per_call[0]},  // accepted draft tokens / target calls
                {"accepted_per_call_ci", per_call[1]}};
  auto subset = [&](auto keep, const std::string& what) {
    const Selection sel = select_items(r.items, every, keep);
    const json t = ratio_json(seed_counts(per_seed, sel, emitted, calls), r.resamples, stat_seed(r.seed, key + what));
    return json{{"items", sel.items}, {"clusters", sel.clusters}, {"tau", t[0]}, {"tau_ci", t[1]}};
  };
  json by_turn = json::array(), by_category = json::array();
  for (int64_t t : turns) {
    json x = subset([t](const EvalItem& it) { return it.turn == t; }, str_cat("/turn", t));
    x["turn"] = t;
    by_turn.push_back(x);
  }
  for (const auto& cat : categories) {
    json x = subset([&cat](const EvalItem& it) { return it.category == cat; }, "/" + cat);
    x["category"] = cat;
    by_category.push_back(x);
  }
  point["by_turn"] = by_turn;
  point["by_category"] = by_category;
  return point;
}

// The family of paired comparisons at gamma g: the declared contrasts, or every pair of rows that are not single seeds
// of a combined method. Each: the difference in tau, its 95% interval and the one at the Bonferroni level, the
// bootstrap p-value and Holm's adjustment of it.
json differences_json(const Report& r, const std::vector<Row>& rows, int64_t g) {
  std::vector<std::pair<size_t, size_t>> family;
  auto row_of = [&](const std::string& name) {
    for (size_t i = 0; i < rows.size(); ++i)
      if (rows[i].name == name) return i;
    throw Error(str_cat("evaluate.contrasts: '", name, "' is not a row of this report"));
  };
  if (!r.contrasts.empty()) {
    for (const auto& c : r.contrasts) family.push_back({row_of(c.drafter), row_of(c.versus)});
  } else {
    for (size_t a = 0; a < rows.size(); ++a)
      for (size_t b = a + 1; b < rows.size(); ++b)
        if (rows[a].seed < 0 && rows[b].seed < 0) family.push_back({a, b});
  }
  std::vector<std::pair<size_t, size_t>> tested;
  for (const auto& [a, b] : family)
    if (!at_gamma(rows[a], g).empty() && !at_gamma(rows[b], g).empty()) tested.push_back({a, b});
  const double m = static_cast<double>(tested.size());
  const Selection all = select_items(r.items, all_indices(r.items.size()), [](const EvalItem&) { return true; });
  json out = json::array();
  std::vector<double> p;
  for (const auto& [a, b] : tested) {
    const SeedCounts x = seed_counts(at_gamma(rows[a], g), all, emitted, calls);
    const SeedCounts y = seed_counts(at_gamma(rows[b], g), all, emitted, calls);
    const std::vector<double> draws =
        bootstrap_draws(x, &y, r.resamples, stat_seed(r.seed, str_cat(rows[a].name, "-", rows[b].name, "/", g)));
    p.push_back(bootstrap_p_value(draws));
    out.push_back({{"drafter", rows[a].name},
                   {"versus", rows[b].name},
                   {"gamma", g},
                   {"difference", x.ratio() - y.ratio()},
                   {"difference_ci", interval_json(percentile_interval(draws, 0.95))},
                   {"corrected_ci", interval_json(percentile_interval(draws, 1 - 0.05 / m))},
                   {"p", p.back()}});
  }
  const std::vector<double> holm = holm_adjust(p);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i]["p_holm"] = holm[i];
    out[i]["significant"] = holm[i] < 0.05;
  }
  return {{"gamma", g},
          {"contrasts", r.contrasts.empty() ? "every pair of rows (single seeds of a combined method left out)"
                                            : "declared (evaluate.contrasts)"},
          {"size", tested.size()},
          {"correction",
           "Holm's step-down correction of two-sided bootstrap p-values (significant: adjusted p < 0.05); "
           "corrected intervals at the Bonferroni level 1 - 0.05 / size"},
          {"differences", out}};
}

json exact_json(const Report& r) {
  std::vector<std::string> categories;
  std::vector<int64_t> turns;
  std::set<std::string> clusters;
  for (const auto& it : r.items) {
    if (!it.category.empty() && std::find(categories.begin(), categories.end(), it.category) == categories.end())
      categories.push_back(it.category);
    if (std::find(turns.begin(), turns.end(), it.turn) == turns.end()) turns.push_back(it.turn);
    clusters.insert(it.cluster);
  }
  std::sort(turns.begin(), turns.end());
  const std::vector<Row> rows = exact_rows(r.exact);
  json drafters = json::array();
  for (const Row& row : rows) {
    json points = json::array();
    for (int64_t g : row_gammas(row)) points.push_back(exact_point_json(r, row, g, categories, turns));
    json d = {{"name", row.name}, {"dir", row.dir}, {"params", row.params}, {"kind", row.kind}, {"points", points}};
    if (row.members.front()->draft_vocab > 0) {  // a seed group's members share the shape; coverage is their mean
      double coverage = 0;
      for (const ExactDrafter* m : row.members) coverage += m->answer_coverage / static_cast<double>(row.members.size());
      d["draft_vocab_size"] = row.members.front()->draft_vocab, d["answer_coverage"] = coverage;
    }
    if (row.combined) {
      json seeds = json::array(), members = json::array();
      for (const ExactDrafter* m : row.members) seeds.push_back(m->seed), members.push_back(m->name);
      d["combined"] = true, d["seeds"] = seeds, d["members"] = members;
    } else if (row.seed >= 0) {
      d["group"] = row.group, d["seed"] = row.seed;
    }
    drafters.push_back(d);
  }
  json out = {{"items", r.items.size()},
              {"clusters", clusters.size()},
              {"turns", turns},
              {"categories", categories},
              {"drafters", drafters}};
  const json family = differences_json(r, rows, headline_gamma(r.exact));
  out["differences"] = family["differences"];
  out["family"] = family;
  out["family"].erase("differences");
  return out;
}

// a += b elementwise, a grown to b's length (settings of different draft lengths pool into one list).
template <typename T>
void add_into(std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() < b.size()) a.resize(b.size(), T{});
  for (size_t k = 0; k < b.size(); ++k) a[k] += b[k];
}

}  // namespace

void StepTimes::add(const SpecCounters& c, const std::vector<double>& target_seconds_by_draft_length,
                    double drafter_s) {
  DA_CHECK(c.calls_by_draft_length.size() == target_seconds_by_draft_length.size(),
           "StepTimes::add: target calls of ", c.calls_by_draft_length.size(), " draft lengths, times of ",
           target_seconds_by_draft_length.size());
  add(StepTimes{target_seconds_by_draft_length, c.calls_by_draft_length, drafter_s, c.num_drafter_calls});
}

void StepTimes::add(const StepTimes& o) {
  add_into(target_seconds, o.target_seconds);
  add_into(target_calls, o.target_calls);
  drafter_seconds += o.drafter_seconds, drafter_calls += o.drafter_calls;
}

namespace {

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

// One timed point of drafter d; drafter_s is d's mean drafting time per call (drafter_step).
json timed_point_json(const Report& r, const StepCosts& costs, const DrafterResult& d, double drafter_s,
                      const SweepPoint& p, double c, double c_latency) {
  DA_CHECK(p.prompts.size() == r.timed_items.size(), "report: ", d.name, " has ", p.prompts.size(),
           " timed turns, the report ", r.timed_items.size());
  const Selection sel = select_items(r.items, r.timed_items, [](const EvalItem&) { return true; });
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
  const std::string key = str_cat(d.name, "/T", p.temperature, "/g", p.gamma);
  const double tps = spec.ratio(), base_tps = plain.ratio();
  const double speedup = base_tps > 0 ? tps / base_tps : 0.0;
  const Interval speedup_ci = percentile_interval(
      bootstrap_draws(spec, &plain, r.resamples, stat_seed(r.seed, key + "/s"), Contrast::kRatio));
  const std::vector<const std::vector<SpecCounters>*> one = {&per_turn};
  const json tau = ratio_json(seed_counts(one, sel, emitted, calls), r.resamples, stat_seed(r.seed, key));
  const json a1 = ratio_json(seed_counts(one, sel, first, drafts), r.resamples, stat_seed(r.seed, key + "/a1"));
  const SpecMetrics m = derive_metrics(p.counters);
  const double bound = speedup_bound(p.counters, costs.verify, costs.plain, drafter_s);
  return {{"temperature", p.temperature},
          {"gamma", p.gamma},
          {"counters", counters_json(p.counters)},
          {"metrics", metrics_json(m)},
          {"tau", tau[0]},
          {"tau_ci", tau[1]},
          {"first_position_acceptance", a1[0]},
          {"first_position_acceptance_ci", a1[1]},
          {"mbsu", c > 0 ? json(mbsu(m.block_efficiency, p.gamma, c)) : json(nullptr)},  // null: no drafter model
          {"mbsu_latency", c_latency > 0 ? json(mbsu(m.block_efficiency, p.gamma, c_latency)) : json(nullptr)},
          {"seconds", p.seconds},
          {"baseline_seconds", p.baseline_seconds},
          {"baseline_tokens", p.baseline_counters.num_emitted_tokens},
          {"tokens_per_s", tps},
          {"baseline_tokens_per_s", base_tps},
          {"speedup", speedup},
          {"speedup_ci", interval_json(speedup_ci)},
          {"speedup_bound", bound},
          {"exceeds_bound", bound > 0 && speedup > 1.1 * bound}};
}

json timed_json(const Report& r, const StepCosts& costs) {
  json drafters = json::array();
  for (const auto& d : r.drafters) {
    const double c = d.params > 0 ? static_cast<double>(r.target_params) / d.params : 0.0;
    const double c_latency = d.step_seconds > 0 ? r.target_step_seconds / d.step_seconds : 0.0;
    const double drafter_s = drafter_step(d);
    json points = json::array();
    for (const auto& p : d.points) points.push_back(timed_point_json(r, costs, d, drafter_s, p, c, c_latency));
    drafters.push_back({{"name", d.name},
                        {"dir", d.dir},
                        {"params", d.params},
                        {"param_ratio", c},
                        {"step_seconds", d.step_seconds},
                        {"timed_drafting_seconds_per_call", drafter_s},
                        {"latency_ratio", c_latency},
                        {"points", points}});
  }
  return drafters;
}

// The speculative sampling check: the one-pass alpha (and the i.i.d. tau estimate from it) beside the real decoder's
// measured first-position acceptance and tau on the same turns. The two agree when |z| is small, z being their
// difference over the combined standard error (each read off its bootstrap interval).
json sampling_json(const Report& r) {
  const Selection sel = select_items(r.items, r.sampling_items, [](const EvalItem&) { return true; });
  json sampling = json::array();
  for (const auto& d : r.sampling) {
    json points = json::array();
    for (const auto& p : d.points) {
      DA_CHECK(p.measured.size() == r.sampling_items.size(), "report: the sampling check of ", d.name, " has ",
               p.measured.size(), " turns, the report ", r.sampling_items.size());
      const std::string key = str_cat(d.name, "/sampling/T", p.temperature);
      const SeedCounts alpha_counts = SeedCounts::one(cluster_sums(p.alpha_sum, sel.cluster_of, sel.clusters),
                                                      cluster_sums(p.positions, sel.cluster_of, sel.clusters));
      const double alpha = alpha_counts.ratio();
      const Interval alpha_ci =
          percentile_interval(bootstrap_draws(alpha_counts, nullptr, r.resamples, stat_seed(r.seed, key)));
      const std::vector<const std::vector<SpecCounters>*> one = {&p.measured};
      const json a1 = ratio_json(seed_counts(one, sel, first, drafts), r.resamples, stat_seed(r.seed, key + "/a1"));
      const json tau = ratio_json(seed_counts(one, sel, emitted, calls), r.resamples, stat_seed(r.seed, key + "/t"));
      const double measured = a1[0].get<double>();
      // Floored at 1e-4, the precision of an fp32 sum over the vocabulary: a drafter equal to the target has intervals
      // of width 0 and alpha 1 up to rounding.
      const double se = std::max(1e-4, std::hypot(alpha_ci.hi - alpha_ci.lo,
                                                  a1[1][1].get<double>() - a1[1][0].get<double>()) / (2 * 1.959964));
      json estimate = json::array();
      for (int64_t g = 1; g <= std::max<int64_t>(8, p.gamma); ++g) estimate.push_back(iid_tokens_per_call(alpha, g));
      SpecCounters total;
      for (const auto& c : p.measured) total.add(c);
      points.push_back({{"temperature", p.temperature},
                        {"turns", p.positions.size()},
                        {"clusters", sel.clusters},
                        {"positions", std::accumulate(p.positions.begin(), p.positions.end(), 0.0)},
                        {"alpha", alpha},
                        {"alpha_ci", interval_json(alpha_ci)},
                        {"tau_iid_estimate", estimate},
                        {"gamma", p.gamma},
                        {"measured_first_position_acceptance", measured},
                        {"measured_first_position_acceptance_ci", a1[1]},
                        {"measured_drafts", total.num_drafts},
                        {"measured_tau", tau[0]},
                        {"measured_tau_ci", tau[1]},
                        {"agreement_z", (measured - alpha) / se}});
    }
    sampling.push_back({{"name", d.name}, {"points", points}});
  }
  json ids = json::array();
  for (int64_t i : r.sampling_items) ids.push_back(r.items[static_cast<size_t>(i)].id);
  return {{"turns", r.sampling_items.size()},
          {"turn_ids", ids},
          {"sample", "a fixed-seed sample of the evaluated turns, stratified by category"},
          {"max_new_tokens", r.sampling_max_new_tokens},
          {"drafters", sampling}};
}

}  // namespace

json report_json(const Report& r) {
  const RuntimeEnvironment& env = r.environment;
  const StepCosts costs = step_costs(r);
  std::set<std::string> clusters;
  for (const auto& it : r.items) clusters.insert(it.cluster);
  json out = {{"format", "draftalign-evaluate"},
              {"version", 4},
              {"fingerprint", r.fingerprint},
              {"environment",
               {{"device", r.device},
                {"device_name", env.device_name},
                {"libtorch", env.libtorch},
                {"cuda", env.cuda},
                {"git_commit", env.git_commit},
                {"threads", env.threads}}},
              {"target",
               {{"dir", r.target_dir},
                {"params", r.target_params},
                {"step_seconds", r.target_step_seconds},
                {"verify_seconds_by_block", r.verify_seconds},
                {"timed_verify_seconds_by_block", costs.verify}}},
              {"device", r.device},
              {"dtype", r.dtype},
              {"prompt_files", r.prompt_files},
              {"prompts", r.prompts},
              {"turns", r.turns},
              {"max_new_tokens", r.max_new_tokens},
              {"context_max_new_tokens", r.context_max_new_tokens},
              {"skipped_turns", r.skipped_turns},
              {"bootstrap",
               {{"resamples", r.resamples},
                {"level", 0.95},
                {"clusters", clusters.size()},
                {"over",
                 "clusters of evaluated turns: every turn of a prompt (an MT-bench question) is one cluster, unless "
                 "the prompt file names a 'cluster' key; rows that combine training seeds also resample the seeds "
                 "(two-level)"}}}};
  out["exact_greedy"] = exact_json(r);
  json ids = json::array();
  for (int64_t i : r.timed_items) ids.push_back(r.items[static_cast<size_t>(i)].id);
  out["timed"] = {{"prompts", r.timed_items.size()},
                  {"turn_ids", ids},
                  {"sample", "a fixed-seed sample of the evaluated turns, stratified by category"},
                  {"max_new_tokens", r.timed_max_new_tokens},
                  {"top_p", r.top_p},
                  {"top_k", r.top_k},
                  {"repeats", r.repeats}};
  out["drafters"] = timed_json(r, costs);
  out["sampling"] = sampling_json(r);
  out["training_curves"] = r.training_curves;
  return out;
}

namespace {

std::string run_python(const std::string& python, const stdfs::path& script, const stdfs::path& report) {
  auto quote = [](const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  const std::string cmd = str_cat(quote(python), " ", quote(script.string()), " ", quote(report.string()), " 2>&1");
  std::FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return "could not start " + python;
  std::string output;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  if (output.size() > 600) output = "..." + output.substr(output.size() - 600);
  return str_cat(python, " ", script.string(), " failed (", output, "); the plots need matplotlib: ",
                 "`pip install matplotlib`, or point evaluate.python at an interpreter that has it");
}

}  // namespace

std::string write_report(const stdfs::path& dir, const Report& r, const std::string& python) {
  fs::ensure_dir(dir);
  const json j = report_json(r);
  std::string exact;
  for (const auto& d : r.exact)
    for (const auto& p : d.points)
      for (size_t i = 0; i < p.per_item.size() && i < r.items.size(); ++i) {
        const EvalItem& it = r.items[i];
        exact += json({{"drafter", d.name},
                       {"gamma", p.gamma},
                       {"prompt_id", it.id},
                       {"turn", it.turn},
                       {"category", it.category},
                       {"cluster", it.cluster},
                       {"prompt_tokens", it.prompt_tokens},
                       {"answer_tokens", it.answer_tokens},
                       {"context_tokens", it.context_tokens},
                       {"counters", counters_json(p.per_item[i])},
                       {"block_efficiency", derive_metrics(p.per_item[i]).block_efficiency}})
                     .dump() +
                 "\n";
      }
  std::string lines;
  for (const auto& d : r.drafters)
    for (const auto& p : d.points)
      for (const auto& pr : p.prompts) {
        const SpecMetrics m = derive_metrics(pr.counters);
        lines += json({{"drafter", d.name},
                       {"temperature", p.temperature},
                       {"gamma", p.gamma},
                       {"prompt_id", pr.prompt_id},
                       {"prompt_tokens", pr.prompt_tokens},
                       {"finish", model::finish_name(pr.finish)},
                       {"counters", counters_json(pr.counters)},
                       {"block_efficiency", m.block_efficiency},
                       {"seconds", pr.seconds},
                       {"baseline_seconds", pr.baseline_seconds},
                       {"baseline_tokens", pr.baseline_tokens}})
                     .dump() +
                 "\n";
      }
  // As one: a failed write (a full disk) leaves the previous report's files all as they were.
  fs::write_files_atomic({{dir / kExactJsonl, exact},
                          {dir / kPromptsJsonl, lines},
                          {dir / kReportMarkdown, report_markdown(j)},
                          {dir / "plot_report.py", plot_script()},
                          {dir / kReportJson, j.dump(2) + "\n"}});
  if (python.empty()) return "plots not made (evaluate.python = off)";
  return run_python(python, dir / "plot_report.py", dir / kReportJson);
}

}  // namespace draftalign::eval
