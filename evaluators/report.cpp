// report.cpp: report.json from the counters and their summary (report_json; the statistics are summary.cpp's), the
// names and groups of drafters, the stratified samples, the contrasts, and writing the report directory. The Markdown
// is report_markdown.cpp's, sweep.jsonl sweep_log.cpp's.
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
#include "evaluators/summary.h"
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

// An estimate as two keys: "<name>" and "<name>_ci".
void put(json& j, const std::string& name, const Estimate& e) {
  j[name] = e.value;
  j[name + "_ci"] = interval_json(e.ci);
}

json subset_json(const SubsetTau& s, const char* key, const json& value) {
  json x = {{"items", s.items}, {"clusters", s.clusters}, {key, value}};
  put(x, "tau", s.tau);
  return x;
}

json exact_point_json(const ExactPointSummary& p) {
  json point = {{"gamma", p.gamma}, {"counters", counters_json(p.counters)}, {"metrics", metrics_json(p.metrics)}};
  put(point, "tau", p.tau);
  put(point, "first_position_acceptance", p.first_position_acceptance);
  put(point, "proposal_rate", p.proposal_rate);
  put(point, "accepted_per_call", p.accepted_per_call);
  json by_turn = json::array(), by_category = json::array();
  for (const auto& s : p.by_turn) by_turn.push_back(subset_json(s, "turn", s.turn));
  for (const auto& s : p.by_category) by_category.push_back(subset_json(s, "category", s.category));
  point["by_turn"] = by_turn;
  point["by_category"] = by_category;
  return point;
}

json exact_json(const ExactSummary& s) {
  json drafters = json::array();
  for (const ExactRowSummary& row : s.rows) {
    json points = json::array();
    for (const auto& p : row.points) points.push_back(exact_point_json(p));
    json d = {{"name", row.name}, {"dir", row.dir}, {"params", row.params}, {"kind", row.kind}, {"points", points}};
    if (row.draft_vocab > 0) d["draft_vocab_size"] = row.draft_vocab, d["answer_coverage"] = row.answer_coverage;
    if (row.combined)
      d["combined"] = true, d["seeds"] = row.seeds, d["members"] = row.members;
    else if (row.seed >= 0)
      d["group"] = row.group, d["seed"] = row.seed;
    drafters.push_back(d);
  }
  json differences = json::array();
  for (const Difference& x : s.differences)
    differences.push_back({{"drafter", x.drafter},
                           {"versus", x.versus},
                           {"gamma", x.gamma},
                           {"difference", x.difference},
                           {"difference_ci", interval_json(x.ci)},
                           {"corrected_ci", interval_json(x.corrected_ci)},
                           {"p", x.p},
                           {"p_holm", x.p_holm},
                           {"significant", x.significant}});
  return {{"items", s.items},
          {"clusters", s.clusters},
          {"turns", s.turns},
          {"categories", s.categories},
          {"drafters", drafters},
          {"differences", differences},
          {"family",
           {{"gamma", s.family_gamma},
            {"contrasts", s.declared ? "declared (evaluate.contrasts)"
                                     : "every pair of rows (single seeds of a combined method left out)"},
            {"size", s.differences.size()},
            {"correction",
             "Holm's step-down correction of two-sided bootstrap p-values (significant: adjusted p < 0.05); "
             "corrected intervals at the Bonferroni level 1 - 0.05 / size"}}}};
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

json timed_point_json(const SweepPoint& p, const TimedPointSummary& t) {
  auto optional = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
  json j = {{"temperature", p.temperature},
            {"gamma", p.gamma},
            {"counters", counters_json(p.counters)},
            {"metrics", metrics_json(t.metrics)},
            {"mbsu", optional(t.mbsu)},  // null: no drafter model
            {"mbsu_latency", optional(t.mbsu_latency)},
            {"seconds", p.seconds},
            {"baseline_seconds", p.baseline_seconds},
            {"baseline_tokens", p.baseline_counters.num_emitted_tokens},
            {"tokens_per_s", t.tokens_per_s},
            {"baseline_tokens_per_s", t.baseline_tokens_per_s},
            {"speedup", t.speedup},
            {"speedup_ci", interval_json(t.speedup_ci)},
            {"speedup_bound", t.speedup_bound},
            {"exceeds_bound", t.exceeds_bound}};
  put(j, "tau", t.tau);
  put(j, "first_position_acceptance", t.first_position_acceptance);
  return j;
}

json timed_json(const Report& r, const std::vector<TimedSummary>& timed) {
  json drafters = json::array();
  for (size_t i = 0; i < timed.size(); ++i) {
    const TimedSummary& d = timed[i];
    json points = json::array();
    for (size_t k = 0; k < d.points.size(); ++k)
      points.push_back(timed_point_json(r.drafters[i].points[k], d.points[k]));
    drafters.push_back({{"name", d.name},
                        {"dir", d.dir},
                        {"params", d.params},
                        {"param_ratio", d.param_ratio},
                        {"step_seconds", d.step_seconds},
                        {"timed_drafting_seconds_per_call", d.drafting_seconds_per_call},
                        {"latency_ratio", d.latency_ratio},
                        {"points", points}});
  }
  return drafters;
}

json sampling_json(const Report& r, const std::vector<SamplingSummary>& sampling) {
  json drafters = json::array();
  for (const auto& d : sampling) {
    json points = json::array();
    for (const auto& s : d.points) {
      json p = {{"temperature", s.temperature},
                {"turns", s.turns},
                {"clusters", s.clusters},
                {"positions", s.positions},
                {"tau_iid_estimate", s.tau_iid_estimate},
                {"gamma", s.gamma},
                {"measured_drafts", s.measured_drafts},
                {"agreement_z", s.agreement_z}};
      put(p, "alpha", s.alpha);
      put(p, "measured_first_position_acceptance", s.measured_first_position_acceptance);
      put(p, "measured_tau", s.measured_tau);
      points.push_back(p);
    }
    drafters.push_back({{"name", d.name}, {"points", points}});
  }
  json ids = json::array();
  for (int64_t i : r.sampling_items) ids.push_back(r.items[static_cast<size_t>(i)].id);
  return {{"turns", r.sampling_items.size()},
          {"turn_ids", ids},
          {"sample", "a fixed-seed sample of the evaluated turns, stratified by category"},
          {"max_new_tokens", r.sampling_max_new_tokens},
          {"drafters", drafters}};
}

}  // namespace

json report_json(const Report& r) { return report_json(r, summarize(r)); }

json report_json(const Report& r, const Summary& s) {
  const RuntimeEnvironment& env = r.environment;
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
                {"timed_verify_seconds_by_block", s.timed_verify_seconds}}},
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
                {"clusters", s.clusters},
                {"over",
                 "clusters of evaluated turns: every turn of a prompt (an MT-bench question) is one cluster, unless "
                 "the prompt file names a 'cluster' key; rows that combine training seeds also resample the seeds "
                 "(two-level)"}}}};
  out["exact_greedy"] = exact_json(s.exact);
  json ids = json::array();
  for (int64_t i : r.timed_items) ids.push_back(r.items[static_cast<size_t>(i)].id);
  out["timed"] = {{"prompts", r.timed_items.size()},
                  {"turn_ids", ids},
                  {"sample", "a fixed-seed sample of the evaluated turns, stratified by category"},
                  {"max_new_tokens", r.timed_max_new_tokens},
                  {"top_p", r.top_p},
                  {"top_k", r.top_k},
                  {"repeats", r.repeats}};
  out["drafters"] = timed_json(r, s.timed);
  out["sampling"] = sampling_json(r, s.sampling);
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
  return write_report(dir, r, summarize(r), python);
}

std::string write_report(const stdfs::path& dir, const Report& r, const Summary& s, const std::string& python) {
  fs::ensure_dir(dir);
  const json j = report_json(r, s);
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
