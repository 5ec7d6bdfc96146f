#include "evaluators/report.h"

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <sstream>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "evaluators/acceptance.h"
#include "evaluators/plot_script.h"  // generated from tools/plot_report.py

namespace draftalign::eval {

using nlohmann::json;
namespace stdfs = std::filesystem;

const char* plot_script() { return kPlotScript; }

std::vector<std::string> drafter_names(const std::vector<std::string>& dirs) {
  std::vector<std::string> names;
  for (const auto& d : dirs) {
    stdfs::path p = stdfs::path(d).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();  // a trailing slash
    const std::string base = p.filename().string(), parent = p.parent_path().filename().string();
    if (base == "final" && !parent.empty())
      names.push_back(parent);
    else if (base.rfind("step-", 0) == 0 && !parent.empty())
      names.push_back(parent + "/" + base);
    else
      names.push_back(base.empty() ? d : base);
  }
  std::vector<std::string> out = names;
  for (size_t i = 0; i < names.size(); ++i)
    if (std::count(names.begin(), names.end(), names[i]) > 1) out[i] = dirs[i];
  return out;
}

json training_curves(const std::vector<std::string>& dirs, const std::vector<std::string>& names) {
  json out = json::array();
  for (size_t i = 0; i < dirs.size(); ++i) {
    stdfs::path dir = stdfs::path(dirs[i]).lexically_normal();
    if (dir.filename().empty()) dir = dir.parent_path();
    json checkpoint_step = nullptr;
    stdfs::path run = dir;
    const std::string base = dir.filename().string();
    if (base == "final") {
      run = dir.parent_path();
    } else if (base.rfind("step-", 0) == 0 && dir.parent_path().filename() == "checkpoints") {
      run = dir.parent_path().parent_path();
      checkpoint_step = std::atoll(base.c_str() + 5);
    }
    const stdfs::path file = run / "metrics.jsonl";
    if (!stdfs::exists(file)) continue;
    json train = {{"step", json::array()}, {"loss", json::array()}}, val = {{"step", json::array()}};
    std::vector<json> val_records;  // the val_* fields of each validation record
    int64_t skipped = 0;
    std::istringstream in(fs::read_file(file));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      const json r = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!r.is_object() || !r.contains("step") || !r["step"].is_number_integer()) {
        ++skipped;
        continue;
      }
      if (r.contains("loss") && r["loss"].is_number()) {
        train["step"].push_back(r["step"]);
        train["loss"].push_back(r["loss"]);
      }
      json v = json::object();
      for (const auto& [k, x] : r.items())
        if (k.rfind("val_", 0) == 0 && x.is_number()) v[k] = x;
      if (!v.empty()) val["step"].push_back(r["step"]), val_records.push_back(std::move(v));
    }
    for (const json& v : val_records)  // one series per field; null where a record lacks it
      for (const auto& [k, x] : v.items())
        if (!val.contains(k)) {
          val[k] = json::array();
          for (const json& w : val_records) val[k].push_back(w.contains(k) ? w[k] : json(nullptr));
        }
    out.push_back({{"name", names[i]},
                   {"metrics", file.string()},
                   {"checkpoint_step", checkpoint_step},
                   {"train", train},
                   {"validation", val},
                   {"skipped_lines", skipped}});
  }
  return out;
}

namespace {

json counters_json(const SpecCounters& c) {
  return {{"num_drafts", c.num_drafts},
          {"num_draft_tokens", c.num_draft_tokens},
          {"num_accepted_tokens", c.num_accepted_tokens},
          {"num_accepted_tokens_per_pos", c.num_accepted_tokens_per_pos},
          {"acceptance_counts", c.acceptance_counts},
          {"num_emitted_tokens", c.num_emitted_tokens},
          {"num_target_calls", c.num_target_calls},
          {"num_drafter_calls", c.num_drafter_calls}};
}

// A non-negative integer j[key], else an Error naming the key: nlohmann's get<int64_t> would cast any number.
int64_t count_at(const json& j, const char* key) {
  const json& v = j.at(key);
  DA_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, "'", key, "' is not a non-negative integer");
  return v.get<int64_t>();
}

std::vector<int64_t> counts_at(const json& j, const char* key) {
  const json& v = j.at(key);
  DA_CHECK(v.is_array(), "'", key, "' is not a list");
  std::vector<int64_t> out;
  for (const json& x : v) {
    DA_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0, "'", key,
             "' holds a value that is not a non-negative "
             "integer");
    out.push_back(x.get<int64_t>());
  }
  return out;
}

SpecCounters counters_from_json(const json& j) {
  SpecCounters c;
  c.num_drafts = count_at(j, "num_drafts"), c.num_draft_tokens = count_at(j, "num_draft_tokens");
  c.num_accepted_tokens = count_at(j, "num_accepted_tokens");
  c.num_accepted_tokens_per_pos = counts_at(j, "num_accepted_tokens_per_pos");
  c.acceptance_counts = counts_at(j, "acceptance_counts");
  c.num_emitted_tokens = count_at(j, "num_emitted_tokens"), c.num_target_calls = count_at(j, "num_target_calls");
  c.num_drafter_calls = count_at(j, "num_drafter_calls");
  return c;
}

json metrics_json(const SpecMetrics& m) {
  return {{"block_efficiency", m.block_efficiency},
          {"mean_acceptance_length", m.mean_acceptance_length},
          {"draft_acceptance_rate", m.draft_acceptance_rate},
          {"acceptance_rate_per_pos", m.acceptance_rate_per_pos},
          {"conditional_acceptance_per_pos", m.conditional_acceptance_per_pos},
          {"acceptance_histogram", m.acceptance_histogram}};
}

std::string fixed(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

std::string temperature_name(double t) { return t == 0 ? "greedy (T = 0)" : "T = " + fixed(t, 2); }

json interval_json(const Interval& i) { return json::array({i.lo, i.hi}); }

// "1.234 [1.200, 1.268]"
std::string with_interval(const json& value, const json& ci, int digits = 3) {
  return str_cat(fixed(value.get<double>(), digits), " [", fixed(ci[0].get<double>(), digits), ", ",
                 fixed(ci[1].get<double>(), digits), "]");
}

// Per-item numerators and denominators of tau (emitted / target calls) and of the first-position acceptance
// (accepted at position 1 / drafts), over the items `keep` selects.
struct Ratios {
  std::vector<double> emitted, calls, first, drafts;
};
template <class Keep>
Ratios ratios(const std::vector<SpecCounters>& per_item, Keep keep) {
  Ratios r;
  for (size_t i = 0; i < per_item.size(); ++i) {
    if (!keep(i)) continue;
    const SpecCounters& c = per_item[i];
    r.emitted.push_back(static_cast<double>(c.num_emitted_tokens));
    r.calls.push_back(static_cast<double>(c.num_target_calls));
    r.first.push_back(c.num_accepted_tokens_per_pos.empty() ? 0.0
                                                            : static_cast<double>(c.num_accepted_tokens_per_pos[0]));
    r.drafts.push_back(static_cast<double>(c.num_drafts));
  }
  return r;
}

double total_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  double x = 0, y = 0;
  for (size_t i = 0; i < a.size(); ++i) x += a[i], y += b[i];
  return y > 0 ? x / y : 0.0;
}

// A bootstrap seed per statistic: the report's seed mixed with what the statistic is of.
uint64_t stat_seed(uint64_t seed, const std::string& what) {
  uint64_t h = seed ^ 0x9E3779B97F4A7C15ULL;
  for (unsigned char ch : what) h = (h ^ ch) * 0x100000001B3ULL;
  return h;
}

// tau with its interval over the items `keep` selects: {"items", "tau", "tau_ci"}.
template <class Keep>
json tau_json(const std::vector<SpecCounters>& per_item, Keep keep, int64_t resamples, uint64_t seed) {
  const Ratios r = ratios(per_item, keep);
  if (r.emitted.empty()) return {{"items", 0}};
  return {{"items", r.emitted.size()},
          {"tau", total_ratio(r.emitted, r.calls)},
          {"tau_ci", interval_json(bootstrap_ratio(r.emitted, r.calls, resamples, seed))}};
}

// Speed-ups of the repeats of a timed point: tokens/s with the drafter over tokens/s of the plain run just before it.
std::vector<double> repeat_speedups(const SweepPoint& p) {
  std::vector<double> out;
  for (size_t i = 0; i < p.seconds.size() && i < p.baseline_seconds.size(); ++i) {
    const double d = p.seconds[i] > 0 ? p.counters.num_emitted_tokens / p.seconds[i] : 0.0;
    const double b = p.baseline_seconds[i] > 0 ? p.baseline_counters.num_emitted_tokens / p.baseline_seconds[i] : 0.0;
    if (b > 0) out.push_back(d / b);
  }
  return out;
}

double tokens_per_s(const SpecCounters& c, const std::vector<double>& seconds) {
  const double s = median(seconds);
  return s > 0 ? static_cast<double>(c.num_emitted_tokens) / s : 0.0;
}

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

json report_json(const Report& r) {
  const RuntimeEnvironment& env = r.environment;
  json out = {{"format", "draftalign-evaluate"},
              {"version", 2},
              {"fingerprint", r.fingerprint},
              {"environment",
               {{"device", r.device},
                {"device_name", env.device_name},
                {"libtorch", env.libtorch},
                {"cuda", env.cuda},
                {"git_commit", env.git_commit},
                {"threads", env.threads}}},
              {"target", {{"dir", r.target_dir}, {"params", r.target_params}, {"step_seconds", r.target_step_seconds}}},
              {"device", r.device},
              {"dtype", r.dtype},
              {"prompt_files", r.prompt_files},
              {"prompts", r.prompts},
              {"turns", r.turns},
              {"max_new_tokens", r.max_new_tokens},
              {"bootstrap", {{"resamples", r.resamples}, {"level", 0.95}, {"over", "evaluated turns (prompts)"}}}};
  json verify = json::object();
  for (const auto& [g, sec] : r.verify_seconds) verify[std::to_string(g)] = sec;
  out["target"]["verify_seconds"] = verify;

  // Exact greedy tau from one pass.
  std::vector<std::string> categories;
  std::vector<int64_t> turns;
  for (const auto& it : r.items) {
    if (!it.category.empty() && std::find(categories.begin(), categories.end(), it.category) == categories.end())
      categories.push_back(it.category);
    if (std::find(turns.begin(), turns.end(), it.turn) == turns.end()) turns.push_back(it.turn);
  }
  std::sort(turns.begin(), turns.end());
  json exact = json::array();
  for (const auto& d : r.exact) {
    json points = json::array();
    for (const auto& p : d.points) {
      SpecCounters total;
      for (const auto& c : p.per_item) total.add(c);
      const std::string key = str_cat(d.name, "/", p.gamma);
      const Ratios all = ratios(p.per_item, [](size_t) { return true; });
      json point = {
          {"gamma", p.gamma},
          {"counters", counters_json(total)},
          {"metrics", metrics_json(derive_metrics(total))},
          {"tau", total_ratio(all.emitted, all.calls)},
          {"tau_ci", interval_json(bootstrap_ratio(all.emitted, all.calls, r.resamples, stat_seed(r.seed, key)))},
          {"first_position_acceptance", total_ratio(all.first, all.drafts)},
          {"first_position_acceptance_ci",
           interval_json(bootstrap_ratio(all.first, all.drafts, r.resamples, stat_seed(r.seed, key + "/a1")))}};
      json by_turn = json::array(), by_category = json::array();
      for (int64_t t : turns) {
        json x = tau_json(
            p.per_item, [&](size_t i) { return r.items[i].turn == t; }, r.resamples,
            stat_seed(r.seed, str_cat(key, "/turn", t)));
        x["turn"] = t;
        by_turn.push_back(x);
      }
      for (const auto& cat : categories) {
        json x = tau_json(
            p.per_item, [&](size_t i) { return r.items[i].category == cat; }, r.resamples,
            stat_seed(r.seed, key + "/" + cat));
        x["category"] = cat;
        by_category.push_back(x);
      }
      point["by_turn"] = by_turn;
      point["by_category"] = by_category;
      points.push_back(point);
    }
    exact.push_back({{"name", d.name},
                     {"dir", d.dir},
                     {"params", d.params},
                     {"kind", d.kind},
                     {"points", points}});
  }
  // Paired differences: every pair of drafters at every gamma, on the same bootstrap resamples of the prompts.
  json differences = json::array();
  for (size_t a = 0; a < r.exact.size(); ++a)
    for (size_t b = a + 1; b < r.exact.size(); ++b)
      for (const auto& pa : r.exact[a].points)
        for (const auto& pb : r.exact[b].points) {
          if (pa.gamma != pb.gamma) continue;
          const Ratios x = ratios(pa.per_item, [](size_t) { return true; });
          const Ratios y = ratios(pb.per_item, [](size_t) { return true; });
          const Interval ci = bootstrap_ratio_difference(
              x.emitted, x.calls, y.emitted, y.calls, r.resamples,
              stat_seed(r.seed, str_cat(r.exact[a].name, "-", r.exact[b].name, "/", pa.gamma)));
          differences.push_back({{"drafter", r.exact[a].name},
                                 {"versus", r.exact[b].name},
                                 {"gamma", pa.gamma},
                                 {"difference", total_ratio(x.emitted, x.calls) - total_ratio(y.emitted, y.calls)},
                                 {"difference_ci", interval_json(ci)},
                                 {"significant", ci.lo > 0 || ci.hi < 0}});
        }
  out["exact_greedy"] = {{"items", r.items.size()},
                         {"turns", turns},
                         {"categories", categories},
                         {"drafters", exact},
                         {"differences", differences}};

  // Timed speculative decoding.
  out["timed"] = {{"prompts", r.timed_prompts},
                  {"max_new_tokens", r.timed_max_new_tokens},
                  {"top_p", r.top_p},
                  {"top_k", r.top_k},
                  {"repeats", r.repeats}};
  json drafters = json::array();
  for (const auto& d : r.drafters) {
    const double c = d.params > 0 ? static_cast<double>(r.target_params) / d.params : 0.0;
    const double c_latency = d.step_seconds > 0 ? r.target_step_seconds / d.step_seconds : 0.0;
    json points = json::array();
    for (const auto& p : d.points) {
      const SpecMetrics m = derive_metrics(p.counters);
      std::vector<SpecCounters> per_prompt;
      for (const auto& pr : p.prompts) per_prompt.push_back(pr.counters);
      const std::string key = str_cat(d.name, "/T", p.temperature, "/g", p.gamma);
      const Ratios rt = ratios(per_prompt, [](size_t) { return true; });
      const std::vector<double> speedups = repeat_speedups(p);
      // What tau and the measured step costs allow: a plain step per token against, per target call, one
      // verification of gamma + 1 tokens and gamma drafter steps.
      double verify = 0;
      for (const auto& [g, sec] : r.verify_seconds)
        if (g == p.gamma) verify = sec;
      const double step = verify + static_cast<double>(p.gamma) * d.step_seconds;
      const double bound = step > 0 ? m.block_efficiency * r.target_step_seconds / step : 0.0;
      const double speedup = median(speedups);
      json point = {
          {"temperature", p.temperature},
          {"gamma", p.gamma},
          {"counters", counters_json(p.counters)},
          {"metrics", metrics_json(m)},
          {"tau_ci", rt.emitted.empty()
                         ? json::array({0, 0})
                         : interval_json(bootstrap_ratio(rt.emitted, rt.calls, r.resamples, stat_seed(r.seed, key)))},
          {"first_position_acceptance", total_ratio(rt.first, rt.drafts)},
          {"first_position_acceptance_ci",
           rt.first.empty()
               ? json::array({0, 0})
               : interval_json(bootstrap_ratio(rt.first, rt.drafts, r.resamples, stat_seed(r.seed, key + "/a1")))},
          {"mbsu", c > 0 ? json(mbsu(m.block_efficiency, p.gamma, c)) : json(nullptr)},  // null: no drafter model
          {"mbsu_latency", c_latency > 0 ? json(mbsu(m.block_efficiency, p.gamma, c_latency)) : json(nullptr)},
          {"seconds", p.seconds},
          {"baseline_seconds", p.baseline_seconds},
          {"baseline_tokens", p.baseline_counters.num_emitted_tokens},
          {"tokens_per_s", tokens_per_s(p.counters, p.seconds)},
          {"baseline_tokens_per_s", tokens_per_s(p.baseline_counters, p.baseline_seconds)},
          {"speedups", speedups},
          {"speedup", speedup},
          {"speedup_ci", speedups.empty()
                             ? json::array({0, 0})
                             : interval_json(bootstrap_median(speedups, r.resamples, stat_seed(r.seed, key + "/s")))},
          {"speedup_bound", bound},
          {"exceeds_bound", bound > 0 && speedup > 1.1 * bound}};
      points.push_back(point);
    }
    drafters.push_back({{"name", d.name},
                        {"dir", d.dir},
                        {"params", d.params},
                        {"param_ratio", c},
                        {"step_seconds", d.step_seconds},
                        {"latency_ratio", c_latency},
                        {"points", points}});
  }
  out["drafters"] = drafters;

  // The speculative sampling check: the one-pass alpha (and the i.i.d. tau estimate from it) beside the real decoder's
  // measured first-position acceptance and tau on the same turns. The two agree when |z| is small, z being their
  // difference over the combined standard error (each read off its bootstrap interval).
  json sampling = json::array();
  for (const auto& d : r.sampling) {
    json points = json::array();
    for (const auto& p : d.points) {
      const std::string key = str_cat(d.name, "/sampling/T", p.temperature);
      const double alpha = total_ratio(p.alpha_sum, p.positions);
      const Interval alpha_ci = bootstrap_ratio(p.alpha_sum, p.positions, r.resamples, stat_seed(r.seed, key));
      const Ratios m = ratios(p.measured, [](size_t) { return true; });
      const double first = total_ratio(m.first, m.drafts);
      const Interval first_ci = bootstrap_ratio(m.first, m.drafts, r.resamples, stat_seed(r.seed, key + "/a1"));
      // Floored at 1e-4, the precision of an fp32 sum over the vocabulary: a drafter equal to the target has intervals
      // of width 0 and alpha 1 up to rounding.
      const double se =
          std::max(1e-4, std::hypot(alpha_ci.hi - alpha_ci.lo, first_ci.hi - first_ci.lo) / (2 * 1.959964));
      json estimate = json::array();
      for (int64_t g = 1; g <= std::max<int64_t>(8, p.gamma); ++g) estimate.push_back(iid_tokens_per_call(alpha, g));
      SpecCounters total;
      for (const auto& c : p.measured) total.add(c);
      points.push_back(
          {{"temperature", p.temperature},
           {"turns", p.positions.size()},
           {"positions", std::accumulate(p.positions.begin(), p.positions.end(), 0.0)},
           {"alpha", alpha},
           {"alpha_ci", interval_json(alpha_ci)},
           {"tau_iid_estimate", estimate},
           {"gamma", p.gamma},
           {"measured_first_position_acceptance", first},
           {"measured_first_position_acceptance_ci", interval_json(first_ci)},
           {"measured_drafts", total.num_drafts},
           {"measured_tau", total_ratio(m.emitted, m.calls)},
           {"measured_tau_ci", interval_json(bootstrap_ratio(m.emitted, m.calls, r.resamples, stat_seed(r.seed, key)))},
           {"agreement_z", (first - alpha) / se}});
    }
    sampling.push_back({{"name", d.name}, {"points", points}});
  }
  out["sampling"] = {{"turns", r.sampling_turns}, {"max_new_tokens", r.sampling_max_new_tokens},
                     {"drafters", sampling}};
  out["training_curves"] = r.training_curves;
  return out;
}

namespace {

// A Markdown table with a row per drafter (of `drafters`) and a column per gamma; cell(point) fills it, and
// keep(point) chooses the points.
template <class Keep, class Cell>
std::string gamma_table(const json& drafters, Keep keep, Cell cell) {
  std::vector<int64_t> gammas;
  for (const auto& d : drafters)
    for (const auto& p : d["points"])
      if (keep(p) && std::find(gammas.begin(), gammas.end(), p["gamma"].get<int64_t>()) == gammas.end())
        gammas.push_back(p["gamma"].get<int64_t>());
  std::sort(gammas.begin(), gammas.end());
  std::string out = "| drafter", rule = "|---";
  for (int64_t g : gammas) out += str_cat(" | g=", g), rule += "|---:";
  out += " |\n" + rule + "|\n";
  for (const auto& d : drafters) {
    out += "| " + d["name"].get<std::string>();
    for (int64_t g : gammas) {
      std::string text;
      for (const auto& p : d["points"])
        if (keep(p) && p["gamma"].get<int64_t>() == g) text = cell(p);
      out += " | " + text;
    }
    out += " |\n";
  }
  return out + "\n";
}

// The exact-tau gamma the per-category, per-turn and difference tables show: 4 when measured, else the largest below
// it, else the smallest.
int64_t headline_gamma(const json& exact) {
  std::vector<int64_t> gs;
  for (const auto& d : exact["drafters"])
    for (const auto& p : d["points"]) gs.push_back(p["gamma"].get<int64_t>());
  if (gs.empty()) return 0;
  std::sort(gs.begin(), gs.end());
  int64_t best = gs.front();
  for (int64_t g : gs)
    if (g <= 4) best = g;
  return best;
}

const json* point_at(const json& drafter, int64_t gamma) {
  for (const auto& p : drafter["points"])
    if (p["gamma"].get<int64_t>() == gamma) return &p;
  return nullptr;
}

}  // namespace

std::string report_markdown(const json& r) {
  std::string md = "# Speculative decoding report\n\n";
  const json& env = r["environment"];
  md += str_cat("- target: `", r["target"]["dir"].get<std::string>(), "` (", r["target"]["params"].get<int64_t>(),
                " parameters), ", r["dtype"].get<std::string>(), "\n");
  md += str_cat("- environment: ", env["device_name"].get<std::string>(), "; LibTorch ",
                env["libtorch"].get<std::string>(), ", CUDA ", env["cuda"].get<std::string>(), ", ",
                env["threads"].get<int64_t>(), " threads; commit ", env["git_commit"].get<std::string>(), "\n");
  std::string files;
  for (const auto& f : r["prompt_files"]) files += (files.empty() ? "`" : ", `") + f.get<std::string>() + "`";
  const json& ex = r["exact_greedy"];
  md += str_cat("- prompts: ", r["prompts"].get<int64_t>(), " from ", files, ", up to ", r["turns"].get<int64_t>(),
                " turns each (a later turn follows the target's own greedy answer): ", ex["items"].get<int64_t>(),
                " evaluated turns, up to ", r["max_new_tokens"].get<int64_t>(), " new tokens each\n");
  md += str_cat("- intervals: 95% percentile bootstrap over the evaluated turns, ",
                r["bootstrap"]["resamples"].get<int64_t>(),
                " resamples; differences are paired (the same resamples "
                "for both drafters)\n\n");

  md +=
      "## Exact greedy block efficiency tau (one pass)\n\n"
      "The target's greedy answer is decoded once; each drafter reads prompt + answer in one teacher-forced pass, "
      "and greedy speculative decoding's counters follow exactly for every draft length g (tokens per target "
      "call, with 95% intervals). `prompt-lookup` drafts by n-gram lookup in the context and needs no model.\n\n";
  md += "| drafter | kind | parameters |\n|---|---|---:|\n";
  for (const auto& d : ex["drafters"])
    md += str_cat("| ", d["name"].get<std::string>(), " | ", d["kind"].get<std::string>(), " | ",
                  d["params"].get<int64_t>(), " |\n");
  md += "\n";
  md += gamma_table(
      ex["drafters"], [](const json&) { return true; },
      [](const json& p) { return with_interval(p["tau"], p["tau_ci"]); });
  md += "First-position acceptance (the greedy agreement with the target after its own prefix, from g = 1):\n\n";
  md += "| drafter | acceptance |\n|---|---:|\n";
  for (const auto& d : ex["drafters"])
    if (!d["points"].empty())
      md += str_cat(
          "| ", d["name"].get<std::string>(), " | ",
          with_interval(d["points"][0]["first_position_acceptance"], d["points"][0]["first_position_acceptance_ci"]),
          " |\n");
  md += "\n";

  const int64_t g = headline_gamma(ex);
  if (ex["turns"].size() > 1) {
    md += str_cat("### By turn (g = ", g, ")\n\n| drafter");
    std::string rule = "|---";
    for (const auto& t : ex["turns"]) md += str_cat(" | turn ", t.get<int64_t>()), rule += "|---:";
    md += " |\n" + rule + "|\n";
    for (const auto& d : ex["drafters"]) {
      const json* p = point_at(d, g);
      if (p == nullptr) continue;
      md += "| " + d["name"].get<std::string>();
      for (const auto& x : (*p)["by_turn"]) md += " | " + with_interval(x["tau"], x["tau_ci"]);
      md += " |\n";
    }
    md += "\n";
  }
  if (!ex["categories"].empty()) {
    md += str_cat("### By category (g = ", g, ")\n\n| category | turns");
    std::string rule = "|---|---:";
    for (const auto& d : ex["drafters"]) md += " | " + d["name"].get<std::string>(), rule += "|---:";
    md += " |\n" + rule + "|\n";
    for (size_t c = 0; c < ex["categories"].size(); ++c) {
      std::string row, items;
      for (const auto& d : ex["drafters"]) {
        const json* p = point_at(d, g);
        if (p == nullptr) continue;
        const json& x = (*p)["by_category"][c];
        items = std::to_string(x["items"].get<int64_t>());
        row += " | " + with_interval(x["tau"], x["tau_ci"]);
      }
      md += str_cat("| ", ex["categories"][c].get<std::string>(), " | ", items, row, " |\n");
    }
    md += "\n";
  }
  if (!ex["differences"].empty()) {
    md += str_cat(
        "### Paired differences in tau (g = ", g,
        ")\n\nA difference is called significant only where "
        "its 95% interval excludes 0.\n\n| drafter | versus | difference | significant |\n|---|---|---:|---|\n");
    for (const auto& x : ex["differences"])
      if (x["gamma"].get<int64_t>() == g)
        md += str_cat("| ", x["drafter"].get<std::string>(), " | ", x["versus"].get<std::string>(), " | ",
                      with_interval(x["difference"], x["difference_ci"]), " | ",
                      x["significant"].get<bool>() ? "**yes**" : "no", " |\n");
    md += "\n";
  }

  const json& timed = r["timed"];
  if (!r["drafters"].empty()) {
    md += str_cat("## Timed speculative decoding\n\nThe real draft-then-verify decoder on the first ",
                  timed["prompts"].get<int64_t>(), " evaluated turns, up to ", timed["max_new_tokens"].get<int64_t>(),
                  " tokens each, one sequence at a time; top_p ", timed["top_p"].get<double>(), ", top_k ",
                  timed["top_k"].get<int64_t>(), ". Each of ", timed["repeats"].get<int64_t>(),
                  " repeats runs plain decoding (the target alone) and then the drafter; the speed-up is the median "
                  "of the per-repeat ratios of tokens/s, with a bootstrap interval over the repeats. `bound` is what "
                  "tau and the measured step costs allow: tau x plain step / (verification of g + 1 tokens + g "
                  "drafter steps); a speed-up more than 10% above it is flagged.\n\n");
    md += "| drafter | parameters | c (params) | c (latency) |\n|---|---:|---:|---:|\n";
    for (const auto& d : r["drafters"])
      md +=
          str_cat("| ", d["name"].get<std::string>(), " | ", d["params"].get<int64_t>(), " | ",
                  fixed(d["param_ratio"].get<double>(), 2), " | ", fixed(d["latency_ratio"].get<double>(), 2), " |\n");
    md += "\n";
    std::vector<double> temps;
    for (const auto& d : r["drafters"])
      for (const auto& p : d["points"])
        if (std::find(temps.begin(), temps.end(), p["temperature"].get<double>()) == temps.end())
          temps.push_back(p["temperature"].get<double>());
    std::sort(temps.begin(), temps.end());
    for (double t : temps) {
      auto at_t = [t](const json& p) { return p["temperature"].get<double>() == t; };
      md += "### " + temperature_name(t) + "\n\nBlock efficiency tau:\n\n";
      md += gamma_table(r["drafters"], at_t,
                        [](const json& p) { return with_interval(p["metrics"]["block_efficiency"], p["tau_ci"]); });
      md += "Measured first-position acceptance:\n\n";
      md += gamma_table(r["drafters"], at_t, [](const json& p) {
        return with_interval(p["first_position_acceptance"], p["first_position_acceptance_ci"]);
      });
      md += "Wall-clock speed-up over plain decoding (bound):\n\n";
      md += gamma_table(r["drafters"], at_t, [](const json& p) {
        return str_cat(with_interval(p["speedup"], p["speedup_ci"], 2), " (",
                       fixed(p["speedup_bound"].get<double>(), 2),
                       p["exceeds_bound"].get<bool>() ? ", **exceeds the bound**" : "", ")");
      });
      md += "MBSU (measured-latency MBSU):\n\n";
      md += gamma_table(r["drafters"], at_t, [](const json& p) {
        if (p["mbsu"].is_null()) return std::string("n/a (no drafter model)");
        return str_cat(fixed(p["mbsu"].get<double>(), 2), " (", fixed(p["mbsu_latency"].get<double>(), 2), ")");
      });
    }
  }
  const json& sc = r["sampling"];
  if (!sc["drafters"].empty()) {
    md += str_cat(
        "## Speculative sampling: one-pass alpha against the real decoder\n\nThe target samples an answer to each of "
        "the first ", sc["turns"].get<int64_t>(), " evaluated turns (up to ", sc["max_new_tokens"].get<int64_t>(),
        " tokens); one teacher-forced pass of target and drafter over it gives the per-position acceptance alpha = "
        "sum_x min(p, q). `tau (i.i.d. estimate)` is (1 - alpha^(g+1)) / (1 - alpha), which assumes independent "
        "acceptances: an estimate, not a measurement. Beside them, the real speculative sampling decoder on the same "
        "turns and temperature: its measured first-position acceptance should equal alpha within sampling error "
        "(z = difference / combined standard error), and its measured tau is the number to trust.\n\n"
        "| drafter | T | alpha (one pass) | measured first-position acceptance | z | g | tau (i.i.d. estimate) | "
        "tau (measured) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& d : sc["drafters"])
      for (const auto& p : d["points"]) {
        const int64_t g = p["gamma"].get<int64_t>();
        md += str_cat("| ", d["name"].get<std::string>(), " | ", fixed(p["temperature"].get<double>(), 2), " | ",
                      with_interval(p["alpha"], p["alpha_ci"]), " | ",
                      with_interval(p["measured_first_position_acceptance"],
                                    p["measured_first_position_acceptance_ci"]),
                      " | ", fixed(p["agreement_z"].get<double>(), 2), " | ", g, " | ",
                      fixed(p["tau_iid_estimate"][g - 1].get<double>(), 3), " | ",
                      with_interval(p["measured_tau"], p["measured_tau_ci"]), " |\n");
      }
    md += "\n";
  }
  const json& curves = r.value("training_curves", json::array());
  bool any_alpha = false;
  if (!curves.empty()) {
    md +=
        "## Training curves\n\nFrom each drafter's training run (its metrics.jsonl): the training loss, and the "
        "held-out numbers logged while it trained. For distillation, held-out alpha is the token-averaged "
        "sum_x min(p, q) against the target's distributions on held-out distillation records (one pass; no "
        "interval); for pretraining, the held-out next-token loss.\n\n"
        "| drafter | steps | loss, first -> last | held-out | first -> last |\n|---|---:|---:|---|---:|\n";
    auto first_last = [](const json& xs) {
      const json *a = nullptr, *b = nullptr;
      for (const json& x : xs) {
        if (!x.is_number()) continue;
        if (a == nullptr) a = &x;
        b = &x;
      }
      return a ? str_cat(fixed(a->get<double>(), 4), " -> ", fixed(b->get<double>(), 4)) : std::string("-");
    };
    for (const json& c : curves) {
      const json& v = c["validation"];
      const char* key = v.contains("val_alpha") ? "val_alpha" : v.contains("val_loss") ? "val_loss" : nullptr;
      any_alpha = any_alpha || v.contains("val_alpha");
      const json& steps = c["train"]["step"];
      md += str_cat("| ", c["name"].get<std::string>(), " | ", steps.empty() ? int64_t{0} : steps.back().get<int64_t>(),
                    " | ", first_last(c["train"]["loss"]), " | ", key ? key : "-", " | ",
                    key ? first_last(v[key]) : std::string("-"), " |\n");
    }
    md += "\n";
  }
  md +=
      "## Plots\n\n![tau vs gamma](tau_vs_gamma.png)\n![acceptance by position](acceptance_by_position.png)\n"
      "![speed-up vs gamma](speedup_vs_gamma.png)\n";
  if (!curves.empty()) md += "![training loss](training_loss.png)\n";
  if (any_alpha) md += "![held-out alpha](heldout_alpha.png)\n";
  return md;
}

json sweep_point_json(const SweepPoint& p) {
  json prompts = json::array();
  for (const auto& pr : p.prompts)
    prompts.push_back({{"prompt_id", pr.prompt_id},
                       {"prompt_tokens", pr.prompt_tokens},
                       {"finish", pr.finish},
                       {"counters", counters_json(pr.counters)}});
  return {{"temperature", p.temperature},
          {"gamma", p.gamma},
          {"counters", counters_json(p.counters)},
          {"seconds", p.seconds},
          {"prompts", prompts},
          {"baseline_counters", counters_json(p.baseline_counters)},
          {"baseline_seconds", p.baseline_seconds}};
}

SweepPoint sweep_point_from_json(const json& j) {
  SweepPoint p;
  DA_CHECK(j.at("temperature").is_number(), "'temperature' is not a number");
  p.temperature = j.at("temperature"), p.gamma = count_at(j, "gamma");
  p.counters = counters_from_json(j.at("counters"));
  p.seconds = j.at("seconds").get<std::vector<double>>();
  p.baseline_counters = counters_from_json(j.at("baseline_counters"));
  p.baseline_seconds = j.at("baseline_seconds").get<std::vector<double>>();
  for (const auto& pr : j.at("prompts"))
    p.prompts.push_back(
        {pr.at("prompt_id"), count_at(pr, "prompt_tokens"), pr.at("finish"), counters_from_json(pr.at("counters"))});
  return p;
}

SweepLog::SweepLog(stdfs::path file, const std::string& fingerprint) : file_(std::move(file)) {
  text_ = json({{"fingerprint", fingerprint}}).dump() + "\n";
  if (!stdfs::exists(file_)) return;
  std::istringstream in(fs::read_file(file_));
  std::string line;
  std::getline(in, line);
  const json head = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!head.is_object() || !head.contains("fingerprint") || head["fingerprint"] != fingerprint) {
    log::info("evaluate: ", file_.string(), " was made from other inputs; the sweep starts over");
    return;
  }
  for (int64_t n = 2; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      return Error(str_cat(file_.string(), ":", n, ": not a sweep record (", why,
                           "); delete the file to run the whole evaluation again"));
    };
    try {
      const json j = json::parse(line);
      DA_CHECK(j.is_object() && j.contains("who") && j["who"].is_string(), "no 'who'");
      SweepPoint p = sweep_point_from_json(j);
      done_[{j["who"].get<std::string>(), p.temperature, p.gamma}] = std::move(p);
    } catch (const json::exception& ex) {
      throw bad(ex.what());
    } catch (const Error& ex) {
      throw bad(ex.what());
    }
    text_ += line + "\n";
  }
  if (!done_.empty()) log::info("evaluate: resuming: ", done_.size(), " sweep points already done in ", file_.string());
}

const SweepPoint* SweepLog::find(const std::string& who, double temperature, int64_t gamma) const {
  const auto it = done_.find({who, temperature, gamma});
  return it == done_.end() ? nullptr : &it->second;
}

void SweepLog::add(const std::string& who, const SweepPoint& p) {
  json j = sweep_point_json(p);
  j["who"] = who;
  text_ += j.dump() + "\n";
  fs::write_file_atomic(file_, text_);
  ++added_;
}

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
                       {"prompt_tokens", it.prompt_tokens},
                       {"answer_tokens", it.answer_tokens},
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
                       {"finish", pr.finish},
                       {"counters", counters_json(pr.counters)},
                       {"block_efficiency", m.block_efficiency}})
                     .dump() +
                 "\n";
      }
  // As one: a failed write (a full disk) leaves the previous report's files all as they were.
  fs::write_files_atomic({{dir / "exact.jsonl", exact},
                          {dir / "prompts.jsonl", lines},
                          {dir / "report.md", report_markdown(j)},
                          {dir / "plot_report.py", plot_script()},
                          {dir / "report.json", j.dump(2) + "\n"}});
  if (python.empty()) return "plots not made (evaluate.python = off)";
  return run_python(python, dir / "plot_report.py", dir / "report.json");
}

}  // namespace draftalign::eval
