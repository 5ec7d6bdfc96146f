#include "evaluators/report.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>

#include "common/error.h"
#include "common/fs.h"
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

SpecCounters counters_from_json(const json& j) {
  SpecCounters c;
  c.num_drafts = j.at("num_drafts"), c.num_draft_tokens = j.at("num_draft_tokens");
  c.num_accepted_tokens = j.at("num_accepted_tokens");
  c.num_accepted_tokens_per_pos = j.at("num_accepted_tokens_per_pos").get<std::vector<int64_t>>();
  c.acceptance_counts = j.at("acceptance_counts").get<std::vector<int64_t>>();
  c.num_emitted_tokens = j.at("num_emitted_tokens"), c.num_target_calls = j.at("num_target_calls");
  c.num_drafter_calls = j.at("num_drafter_calls");
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

double tokens_per_s(const SweepPoint& p) {
  const double s = median(p.seconds);
  return s > 0 ? static_cast<double>(p.counters.num_emitted_tokens) / s : 0.0;
}

std::string fixed(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

std::string temperature_name(double t) { return t == 0 ? "greedy (T = 0)" : "T = " + fixed(t, 2); }

// A Markdown table with a row per drafter and a column per gamma at one temperature; cell(point) fills it.
template <class Cell>
std::string gamma_table(const json& r, double temperature, Cell cell) {
  std::vector<int64_t> gammas;
  for (const auto& d : r["drafters"])
    for (const auto& p : d["points"])
      if (p["temperature"].get<double>() == temperature &&
          std::find(gammas.begin(), gammas.end(), p["gamma"].get<int64_t>()) == gammas.end())
        gammas.push_back(p["gamma"].get<int64_t>());
  std::sort(gammas.begin(), gammas.end());
  std::string out = "| drafter", rule = "|---";
  for (int64_t g : gammas) out += str_cat(" | g=", g), rule += "|---:";
  out += " |\n" + rule + "|\n";
  for (const auto& d : r["drafters"]) {
    out += "| " + d["name"].get<std::string>();
    for (int64_t g : gammas) {
      std::string text;
      for (const auto& p : d["points"])
        if (p["temperature"].get<double>() == temperature && p["gamma"].get<int64_t>() == g) text = cell(p);
      out += " | " + text;
    }
    out += " |\n";
  }
  return out + "\n";
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
  json out = {{"format", "draftalign-evaluate"},
              {"version", 1},
              {"fingerprint", r.fingerprint},
              {"target", {{"dir", r.target_dir}, {"params", r.target_params},
                          {"step_seconds", r.target_step_seconds}}},
              {"device", r.device},
              {"dtype", r.dtype},
              {"prompt_files", r.prompt_files},
              {"prompts", r.prompts},
              {"max_new_tokens", r.max_new_tokens},
              {"top_p", r.top_p},
              {"top_k", r.top_k},
              {"repeats", r.repeats}};
  json baselines = json::array();
  for (const auto& b : r.baselines)
    baselines.push_back({{"temperature", b.temperature}, {"num_emitted_tokens", b.counters.num_emitted_tokens},
                         {"num_target_calls", b.counters.num_target_calls}, {"seconds", b.seconds},
                         {"tokens_per_s", tokens_per_s(b)}});
  out["baselines"] = baselines;
  json drafters = json::array();
  for (const auto& d : r.drafters) {
    const double c = d.params > 0 ? static_cast<double>(r.target_params) / d.params : 0.0;
    const double c_latency = d.step_seconds > 0 ? r.target_step_seconds / d.step_seconds : 0.0;
    json points = json::array();
    for (const auto& p : d.points) {
      const SpecMetrics m = derive_metrics(p.counters);
      double speedup = 0;
      for (const auto& b : r.baselines)
        if (b.temperature == p.temperature && tokens_per_s(b) > 0) speedup = tokens_per_s(p) / tokens_per_s(b);
      points.push_back({{"temperature", p.temperature},
                        {"gamma", p.gamma},
                        {"counters", counters_json(p.counters)},
                        {"metrics", metrics_json(m)},
                        {"mbsu", c > 0 ? mbsu(m.block_efficiency, p.gamma, c) : 0.0},
                        {"mbsu_latency", c_latency > 0 ? mbsu(m.block_efficiency, p.gamma, c_latency) : 0.0},
                        {"seconds", p.seconds},
                        {"tokens_per_s", tokens_per_s(p)},
                        {"speedup", speedup}});
    }
    drafters.push_back({{"name", d.name}, {"dir", d.dir}, {"params", d.params}, {"param_ratio", c},
                        {"step_seconds", d.step_seconds}, {"latency_ratio", c_latency}, {"points", points}});
  }
  out["drafters"] = drafters;
  return out;
}

std::string report_markdown(const json& r) {
  std::vector<double> temps;
  for (const auto& b : r["baselines"]) temps.push_back(b["temperature"].get<double>());
  std::string md = "# Speculative decoding report\n\n";
  md += str_cat("- target: `", r["target"]["dir"].get<std::string>(), "` (", r["target"]["params"].get<int64_t>(),
                " parameters), ", r["device"].get<std::string>(), ", ", r["dtype"].get<std::string>(), "\n");
  std::string files;
  for (const auto& f : r["prompt_files"]) files += (files.empty() ? "`" : ", `") + f.get<std::string>() + "`";
  md += str_cat("- prompts: ", r["prompts"].get<int64_t>(), " from ", files, "; up to ",
                r["max_new_tokens"].get<int64_t>(), " new tokens each; top_p ", r["top_p"].get<double>(), ", top_k ",
                r["top_k"].get<int64_t>(), "\n");
  md += str_cat("- wall clock: median of ", r["repeats"].get<int64_t>(),
                " runs per setting, one sequence at a time; the target alone:");
  for (const auto& b : r["baselines"])
    md += str_cat(" ", fixed(b["tokens_per_s"].get<double>(), 1), " tokens/s at ",
                  temperature_name(b["temperature"].get<double>()), ";");
  md += "\n\n";
  md += "Block efficiency tau = emitted tokens / target calls. MBSU = c tau / (c + gamma) with c = target / drafter "
        "parameters (and, in brackets, with c = the measured latency ratio of one decode step). Speed-up = tokens/s "
        "with the drafter / tokens/s of the target alone.\n\n";
  md += "| drafter | parameters | c (params) | c (latency) |\n|---|---:|---:|---:|\n";
  for (const auto& d : r["drafters"])
    md += str_cat("| ", d["name"].get<std::string>(), " | ", d["params"].get<int64_t>(), " | ",
                  fixed(d["param_ratio"].get<double>(), 2), " | ", fixed(d["latency_ratio"].get<double>(), 2), " |\n");
  md += "\n";
  for (double t : temps) {
    md += "## " + temperature_name(t) + "\n\n### Block efficiency tau\n\n";
    md += gamma_table(r, t, [](const json& p) {
      return fixed(p["metrics"]["block_efficiency"].get<double>(), 3);
    });
    md += "### Wall-clock speed-up over the target alone (tokens/s)\n\n";
    md += gamma_table(r, t, [](const json& p) {
      return str_cat(fixed(p["speedup"].get<double>(), 2), "x (", fixed(p["tokens_per_s"].get<double>(), 1),
                                   ")");
    });
    md += "### MBSU (measured-latency MBSU)\n\n";
    md += gamma_table(r, t, [](const json& p) {
      return str_cat(fixed(p["mbsu"].get<double>(), 2), " (", fixed(p["mbsu_latency"].get<double>(), 2),
                                   ")");
    });
    md += "### Mean acceptance length / draft acceptance rate\n\n";
    md += gamma_table(r, t, [](const json& p) {
      return str_cat(fixed(p["metrics"]["mean_acceptance_length"].get<double>(), 2), " / ",
                                   fixed(p["metrics"]["draft_acceptance_rate"].get<double>(), 3));
    });
    md += "### Acceptance rate by draft position (longest draft; accepted at i / drafts)\n\n";
    md += "| drafter | gamma | per position |\n|---|---:|---|\n";
    for (const auto& d : r["drafters"]) {
      json last;
      for (const auto& p : d["points"])
        if (p["temperature"].get<double>() == t && (last.is_null() || p["gamma"] > last["gamma"])) last = p;
      if (last.is_null()) continue;
      std::string rates;
      for (const auto& x : last["metrics"]["acceptance_rate_per_pos"])
        rates += (rates.empty() ? "" : ", ") + fixed(x.get<double>(), 3);
      md += str_cat("| ", d["name"].get<std::string>(), " | ", last["gamma"].get<int64_t>(), " | ", rates, " |\n");
    }
    md += "\n";
  }
  md += "## Plots\n\n![acceptance by position](acceptance_by_position.png)\n![tau vs gamma](tau_vs_gamma.png)\n"
        "![speed-up vs gamma](speedup_vs_gamma.png)\n";
  return md;
}

json sweep_point_json(const SweepPoint& p) {
  json prompts = json::array();
  for (const auto& pr : p.prompts)
    prompts.push_back({{"prompt_id", pr.prompt_id}, {"prompt_tokens", pr.prompt_tokens}, {"finish", pr.finish},
                       {"counters", counters_json(pr.counters)}});
  return {{"temperature", p.temperature}, {"gamma", p.gamma}, {"counters", counters_json(p.counters)},
          {"seconds", p.seconds}, {"prompts", prompts}};
}

SweepPoint sweep_point_from_json(const json& j) {
  SweepPoint p;
  p.temperature = j.at("temperature"), p.gamma = j.at("gamma");
  p.counters = counters_from_json(j.at("counters"));
  p.seconds = j.at("seconds").get<std::vector<double>>();
  for (const auto& pr : j.at("prompts"))
    p.prompts.push_back({pr.at("prompt_id"), pr.at("prompt_tokens"), pr.at("finish"),
                         counters_from_json(pr.at("counters"))});
  return p;
}

std::string write_report(const stdfs::path& dir, const Report& r, const std::string& python) {
  fs::ensure_dir(dir);
  const json j = report_json(r);
  std::string lines;
  auto add = [&](const std::string& drafter, const SweepPoint& p) {
    for (const auto& pr : p.prompts) {
      const SpecMetrics m = derive_metrics(pr.counters);
      lines += json({{"drafter", drafter}, {"temperature", p.temperature}, {"gamma", p.gamma},
                     {"prompt_id", pr.prompt_id}, {"prompt_tokens", pr.prompt_tokens}, {"finish", pr.finish},
                     {"counters", counters_json(pr.counters)}, {"block_efficiency", m.block_efficiency}})
                   .dump() + "\n";
    }
  };
  for (const auto& b : r.baselines) add("target-only", b);
  for (const auto& d : r.drafters)
    for (const auto& p : d.points) add(d.name, p);
  fs::write_file_atomic(dir / "prompts.jsonl", lines);
  fs::write_file_atomic(dir / "report.json", j.dump(2) + "\n");
  fs::write_file_atomic(dir / "report.md", report_markdown(j));
  fs::write_file_atomic(dir / "plot_report.py", plot_script());
  if (python.empty()) return "plots not made (evaluate.python = off)";
  return run_python(python, dir / "plot_report.py", dir / "report.json");
}

}  // namespace draftalign::eval
