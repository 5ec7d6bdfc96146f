// report.h: the evaluation report of `draftalign evaluate`, one directory per run:
//   report.json    everything, machine-readable: the setup, and per drafter and (temperature, gamma) the counters
//                  with vLLM's names, the derived metrics (metrics.h), wall times and the speed-up over the target alone
//   report.md      the same as Markdown tables: tau by gamma, speed-up, MBSU, acceptance by position
//   prompts.jsonl  one record per drafter, setting and prompt: its counters and tau
//   sweep.jsonl    the finished sweep points as they are done (evaluate.cpp), so a stopped evaluation resumes
//   plot_report.py + acceptance_by_position.png, tau_vs_gamma.png, speedup_vs_gamma.png (matplotlib); the script is
//                  written into the directory so the plots can be remade from report.json alone
// Every file is written atomically. Torch-free: the numbers come in as plain structs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "evaluators/metrics.h"

namespace draftalign::eval {

struct PromptRun {
  std::string prompt_id;
  int64_t prompt_tokens = 0;
  std::string finish;
  SpecCounters counters;
};

// One drafter (or the target alone: gamma 0) at one setting, over every prompt.
struct SweepPoint {
  double temperature = 0;
  int64_t gamma = 0;
  SpecCounters counters;          // summed over the prompts (from the first repeat)
  std::vector<double> seconds;    // wall time of the whole pass, per repeat
  std::vector<PromptRun> prompts;
};

struct DrafterResult {
  std::string name, dir;
  int64_t params = 0;
  double step_seconds = 0;  // median latency of one decode step
  std::vector<SweepPoint> points;
};

struct Report {
  std::string target_dir, device, dtype;
  std::string fingerprint;  // of the inputs (evaluate_fingerprint)
  int64_t target_params = 0;
  double target_step_seconds = 0;
  std::vector<std::string> prompt_files;
  int64_t prompts = 0, max_new_tokens = 0, top_k = 0, repeats = 0;
  double top_p = 1;
  std::vector<SweepPoint> baselines;  // the target alone, one per temperature
  std::vector<DrafterResult> drafters;
};

// The JSON of a report, derived metrics, tokens/s and speed-ups included (per-prompt records left out).
nlohmann::json report_json(const Report& r);
// Markdown tables from report_json's output.
std::string report_markdown(const nlohmann::json& report);
// One finished sweep point as a JSON object (setting, counters, wall times, per-prompt records) and back: the lines of
// sweep.jsonl, from which an interrupted evaluation resumes. sweep_point_from_json throws nlohmann::json's exceptions
// on a record that is not one.
nlohmann::json sweep_point_json(const SweepPoint& p);
SweepPoint sweep_point_from_json(const nlohmann::json& j);

// Writes report.json, report.md and prompts.jsonl into `dir`, then the plots with `python` (skipped when empty).
// Returns "" or why the plots were not made (the report itself is complete either way).
std::string write_report(const std::filesystem::path& dir, const Report& r, const std::string& python);

// Short unique names for drafter directories, for tables and plots: "runs/demo/pretrain/final" -> "pretrain",
// "runs/demo/distill/tvdpp-token-q/final" -> "tvdpp-token-q", ".../step-00100" -> "pretrain/step-00100"; the
// whole path where two names would collide.
std::vector<std::string> drafter_names(const std::vector<std::string>& dirs);

// The plotting script (tools/plot_report.py, embedded at build time).
const char* plot_script();

}  // namespace draftalign::eval
