// report.h: the evaluation report of `draftalign evaluate`, one directory per run:
//   report.json    everything, machine-readable: the environment, the setup; the exact greedy tau of every drafter
//                  (prompt lookup included) for every g, with 95% bootstrap intervals over clusters of prompts (an
//                  MT-bench question and both its turns are one cluster; stats.h), per turn and per category; rows that
//                  combine a method's training seeds (two-level bootstrap); paired differences over a declared family
//                  of contrasts (or every pair of rows), with bootstrap p-values, Holm's correction and Bonferroni-level
//                  intervals; the timed runs per drafter and (temperature, gamma): counters with vLLM's names, derived
//                  metrics (metrics.h), tau of the timed turns, the speed-up over plain decoding (per-turn medians of
//                  alternated runs, interval over clusters) checked against what the counters and the measured step
//                  costs allow; the speculative sampling check (one-pass alpha and the i.i.d. tau estimate from it,
//                  beside the real decoder's measured acceptance and tau)
//   report.md      the same as Markdown tables
//   exact.jsonl    one record per drafter, gamma and evaluated turn: the one-pass counters and tau
//   prompts.jsonl  one record per timed drafter, setting and prompt: its counters, tau and wall times
//   sweep.jsonl    the finished sweep points as they are done (evaluate.cpp), so a stopped evaluation resumes
//   plot_report.py + acceptance_by_position.png, tau_vs_gamma.png, speedup_vs_gamma.png, and for drafters that come
//                  from a training run training_loss.png and heldout_alpha.png (matplotlib); the script is written
//                  into the directory so the plots can be remade from report.json alone
// Every file is written atomically. Torch-free: the numbers come in as plain structs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "common/device.h"
#include "model/finish.h"
#include "evaluators/metrics.h"
#include "evaluators/stats.h"

namespace draftalign::eval {

// The report directory's files, as the header lists them.
inline constexpr char kReportJson[] = "report.json";
inline constexpr char kReportMarkdown[] = "report.md";
inline constexpr char kExactJsonl[] = "exact.jsonl";
inline constexpr char kPromptsJsonl[] = "prompts.jsonl";
inline constexpr char kSweepLog[] = "sweep.jsonl";

// One evaluated turn: a prompt's first user turn, or a later one asked after the target's own greedy answers.
struct EvalItem {
  std::string id;  // the prompt's id, with "#2", "#3" for later turns
  std::string category;
  std::string cluster;  // what is resampled together: the prompt's (every turn of a question), or its "cluster" key
  int64_t turn = 1;
  int64_t prompt_tokens = 0, answer_tokens = 0;
  int64_t context_tokens = 0;  // the full greedy answer the next turn follows (0: no next turn)
};

// The exact greedy counters of one drafter at one gamma, one per evaluated turn (aligned with Report::items).
struct ExactPoint {
  int64_t gamma = 0;
  std::vector<SpecCounters> per_item;
};

struct ExactDrafter {
  std::string name, dir;  // dir is "" for prompt lookup
  int64_t params = 0;     // 0 for prompt lookup
  std::string kind = "model";  // model, prompt-lookup, hybrid (prompt lookup, then the model at dir), eagle3 (a head)
  std::vector<ExactPoint> points;
  // One training seed of a method (a drafter directory <method>/seed-<n>/final): the report adds a row named `group`
  // that combines every seed of it. "" and -1 for a drafter trained once.
  std::string group;
  int64_t seed = -1;
  // A draft vocabulary (an EAGLE-3 head's, or an independent drafter's model.draft_vocab_size): its size, and the share
  // of the evaluated answers' tokens in it (a token outside is one the drafter cannot propose). 0 and -1 without one.
  int64_t draft_vocab = 0;
  double answer_coverage = -1;
};

// One timed turn of one setting: the drafter's counters (first repeat) and, per repeat, the wall time of its decode
// and of the plain decode of the same turn just before it.
struct PromptRun {
  std::string prompt_id;
  int64_t prompt_tokens = 0;
  model::Finish finish = model::Finish::kLength;
  SpecCounters counters;
  std::vector<double> seconds, baseline_seconds;  // per repeat
  int64_t baseline_tokens = 0;
};

// Where a timed setting's decode time went, summed over its repeats and turns: the target's calls and the time
// inside them by the draft length each verified (a block of k + 1 tokens), and the drafting time and calls. The
// speed-up bound prices the counters with these, pooled over the whole sweep (report.cpp, step_costs).
struct StepTimes {
  std::vector<double> target_seconds;  // [draft length]
  std::vector<int64_t> target_calls;   // [draft length]
  double drafter_seconds = 0;          // drafting: the model's steps (and a hybrid's n-gram search)
  int64_t drafter_calls = 0;

  // One decode: its counters and the target's seconds by draft length (Decoded::target_seconds_by_draft_length).
  void add(const SpecCounters& c, const std::vector<double>& target_seconds_by_draft_length, double drafter_s);
  void add(const StepTimes& other);
};

// One drafter at one timed setting, over every timed prompt. Each repeat runs plain decoding (the target alone),
// then the drafter, so the two are measured side by side under the same machine load.
struct SweepPoint {
  double temperature = 0;
  int64_t gamma = 0;
  SpecCounters counters;        // summed over the prompts (from the first repeat)
  std::vector<double> seconds;  // wall time of the whole pass, per repeat
  std::vector<PromptRun> prompts;  // aligned with Report::timed_items
  SpecCounters baseline_counters;        // plain decoding of the same prompts (first repeat)
  std::vector<double> baseline_seconds;  // its wall time, per repeat, each measured just before the drafter's
  StepTimes times, baseline_times;       // inside the models' steps, every repeat (the drafter's, then plain's)
};

struct DrafterResult {
  std::string name, dir;
  int64_t params = 0;
  double step_seconds = 0;  // median latency of one drafter decode step (0 for prompt lookup)
  std::vector<SweepPoint> points;
};

// The speculative sampling check of one drafter at one temperature, per turn of the check (Report::sampling_items):
// the target's sampled answer scored in one teacher-forced pass (the sum over its
// positions of alpha = sum_x min(p, q), and the number of positions), and the real decoder's counters on the same turn
// at `gamma`.
struct SamplingPoint {
  double temperature = 0;
  int64_t gamma = 0;
  std::vector<double> alpha_sum, positions;
  std::vector<SpecCounters> measured;
};

struct SamplingDrafter {
  std::string name;
  std::vector<SamplingPoint> points;
};

// A paired comparison the report tests: row `drafter` minus row `versus` (names of exact greedy rows).
struct ContrastSpec {
  std::string drafter, versus;
};

struct Report {
  std::string target_dir, device, dtype;
  RuntimeEnvironment environment;
  std::string fingerprint;  // of the inputs (evaluate_fingerprint)
  int64_t target_params = 0;
  // Step latencies measured before the sweep (decode_step_seconds, median of a few steps on one context): the
  // latency ratio c of the MBSU. The speed-up bound uses the steps of the timed decodes instead (SweepPoint::times).
  double target_step_seconds = 0;     // one plain decode step
  std::vector<double> verify_seconds;  // [block length - 1]: one target step over 1, 2, ... tokens (a block of k
                                       // draft tokens and the token before them is k + 1 long)
  std::vector<std::string> prompt_files;
  int64_t prompts = 0, turns = 0, max_new_tokens = 0, context_max_new_tokens = 0, top_k = 0, repeats = 0;
  int64_t timed_max_new_tokens = 0;
  int64_t skipped_turns = 0;  // turns too long for the models' positions
  int64_t resamples = 10000;
  uint64_t seed = 0;  // of the bootstrap and of the stratified samples
  double top_p = 1;
  std::vector<EvalItem> items;          // every evaluated turn
  std::vector<ExactDrafter> exact;      // exact greedy tau from one pass
  std::vector<ContrastSpec> contrasts;  // the family of paired comparisons; empty = every pair of rows that are not
                                        // single seeds of a combined method
  std::vector<int64_t> timed_items;     // indices into items: the timed turns (stratified sample)
  std::vector<DrafterResult> drafters;  // timed speculative decoding
  std::vector<int64_t> sampling_items;  // indices into items: the turns of the sampling check (stratified sample)
  int64_t sampling_max_new_tokens = 0;
  std::vector<SamplingDrafter> sampling;  // the speculative sampling check
  nlohmann::json training_curves = nlohmann::json::array();  // training_curves()
};

// A fixed-seed sample of n of the items, stratified by category: the categories in order of first appearance take
// turns, each giving its next item from its own seeded shuffle, until n are taken (all items when n >= their count).
// Returned in item order.
std::vector<int64_t> stratified_sample(const std::vector<EvalItem>& items, int64_t n, uint64_t seed);

// Parses evaluate.contrasts entries, "A vs B"; an Error naming the entry when one is not of that form.
std::vector<ContrastSpec> parse_contrasts(const std::vector<std::string>& specs);
// The names of the exact greedy rows a report will have for these drafter directories (prompt lookup first when on,
// each drafter and its hybrid, then each method's combined row), for checking contrasts before anything runs.
std::vector<std::string> report_row_names(const std::vector<std::string>& drafter_dirs, bool prompt_lookup, bool hybrid);
// An Error naming the entry and the rows there are, for a contrast that names no row or a row twice.
void check_contrasts(const std::vector<ContrastSpec>& contrasts, const std::vector<std::string>& rows);

// The training seed of a drafter directory <method>/seed-<n>/final (or <method>/seed-<n>): n, or -1.
int64_t seed_of_dir(const std::string& dir);

// A counter set as JSON, with vLLM's names (report.json, exact.jsonl, prompts.jsonl, sweep.jsonl).
nlohmann::json counters_json(const SpecCounters& c);

// The report's derived numbers: intervals, differences, speed-ups (summary.h).
struct Summary;

// The JSON of a report with its summary: the counters and settings, the derived metrics, tokens/s and speed-ups
// (per-prompt records left out). The one-argument form summarizes first.
nlohmann::json report_json(const Report& r, const Summary& s);
nlohmann::json report_json(const Report& r);
// Markdown tables from report_json's output.
std::string report_markdown(const nlohmann::json& report);
// One finished sweep point as a JSON object (setting, counters, wall times, per-prompt records) and back: the lines of
// sweep.jsonl, from which an interrupted evaluation resumes. sweep_point_from_json throws nlohmann::json's exceptions
// on a record that is not one.
nlohmann::json sweep_point_json(const SweepPoint& p);
SweepPoint sweep_point_from_json(const nlohmann::json& j);

// sweep.jsonl in the report directory: the evaluation's progress. A header line with the fingerprint of the inputs,
// then one line per finished sweep point (who: "target-only" or the drafter's name, then sweep_point_json). The file
// is rewritten atomically after each point, so an interrupted evaluation resumes at the first unfinished point with
// the earlier points' counters and wall times as they were measured; a file made from other inputs is started over,
// and a damaged one is an Error naming file:line.
class SweepLog {
 public:
  SweepLog(std::filesystem::path file, const std::string& fingerprint);

  // How many points are finished (stored or added).
  size_t size() const { return done_.size() + added_; }
  // The stored point of `who` at (temperature, gamma), or nullptr.
  const SweepPoint* find(const std::string& who, double temperature, int64_t gamma) const;
  // Whether every (temperature, gamma) point of `who` is stored.
  bool all_found(const std::string& who, const std::vector<double>& temperatures,
                 const std::vector<int64_t>& gammas) const;
  // Records a finished point and rewrites the file.
  void add(const std::string& who, const SweepPoint& p);

 private:
  using Key = std::tuple<std::string, double, int64_t>;
  std::filesystem::path file_;
  std::string text_;                // the file's contents: the header and every finished point
  std::map<Key, SweepPoint> done_;  // read from the file
  size_t added_ = 0;                // finished by this run
};

// Writes report.json, report.md, exact.jsonl and prompts.jsonl into `dir`, then the plots with `python` (skipped when
// empty). Returns "" or why the plots were not made (the report itself is complete either way). Without `s`, the
// summary is made first.
std::string write_report(const std::filesystem::path& dir, const Report& r, const Summary& s,
                         const std::string& python);
std::string write_report(const std::filesystem::path& dir, const Report& r, const std::string& python);

// Short unique names for drafter directories, for tables and plots: "runs/demo/pretrain/final" -> "pretrain",
// "runs/demo/distill/tvdpp-token-q/final" -> "tvdpp-token-q", ".../pretrain/checkpoints/step-00100" ->
// "checkpoints/step-00100", ".../tvdpp-token-q/seed-2/final" -> "tvdpp-token-q/seed-2". Where two names would
// collide, each takes more of its path ("a/pretrain" and "b/pretrain"), up to the whole path.
std::vector<std::string> drafter_names(const std::vector<std::string>& dirs);
// The combined row's name of each drafter that is one training seed (seed_of_dir >= 0) of a method: its name without
// "/seed-<n>" ("tvdpp-token-q"); "" for the others.
std::vector<std::string> drafter_groups(const std::vector<std::string>& dirs);

// The training curves of the drafters that come from a training run (<run>/final, <run>/checkpoints/step-N, or a
// directory holding metrics.jsonl): one object per such drafter, {"name", "metrics" (the file), "checkpoint_step"
// (null for final), "train": {"step": [...], "loss": [...]}, "validation": {"step": [...], "val_alpha": [...], ...}},
// every numeric val_* field of the validation records; drafters without a metrics.jsonl are left out. Lines that are
// not JSON objects (a run killed mid-line) are skipped and counted in "skipped_lines".
nlohmann::json training_curves(const std::vector<std::string>& dirs, const std::vector<std::string>& names);

// The plotting script (tools/plot_report.py, embedded at build time).
const char* plot_script();

}  // namespace draftalign::eval
