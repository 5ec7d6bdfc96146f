#include "trainers/pipeline.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/preempt.h"
#include "config/loader.h"
#include "config/schema.h"
#include "evaluators/evaluate.h"
#include "evaluators/report.h"
#include "train/dist.h"
#include "train/launch_env.h"
#include "trainers/distill.h"
#include "trainers/generate.h"
#include "trainers/magpie.h"
#include "trainers/prepare_data.h"
#include "trainers/pretrain.h"

namespace draftalign::train {

namespace stdfs = std::filesystem;

namespace {

// The seeds a stage trains with: pipeline.seeds, or one run with run.seed (-1).
std::vector<int64_t> stage_seeds(const config::Config& cfg, bool pretraining) {
  if (cfg.pipeline.seeds.empty() || (pretraining && !cfg.pipeline.seed_pretraining)) return {-1};
  return cfg.pipeline.seeds;
}

// The pretrained drafter a distillation of `seed` starts from.
std::string student_of(const config::Config& cfg, int64_t seed) {
  if (seed < 0 || !cfg.pipeline.seed_pretraining) return cfg.distill.student;
  return (stdfs::path(config::seed_dir(cfg.pretrain.output_dir, seed)) / kFinalDir).string();
}

}  // namespace

config::Config pipeline_stage_config(const config::Config& cfg, const std::string& loss, int64_t seed) {
  config::Config c = cfg;
  c.distill = config::with_run(c.distill, loss.empty() ? c.pipeline.losses.at(0) : loss);
  c.distill.seed = seed;
  c.distill.student = student_of(cfg, seed);
  std::vector<std::string>& drafters = c.evaluate.drafters;
  drafters.clear();
  auto add = [&](const std::string& dir) {
    if (std::find(drafters.begin(), drafters.end(), dir) == drafters.end()) drafters.push_back(dir);
  };
  for (int64_t s : stage_seeds(cfg, true)) add(student_of(cfg, s));
  for (const auto& run : c.pipeline.losses)
    for (int64_t s : stage_seeds(cfg, false)) {
      config::DistillSection d = config::with_run(c.distill, run);
      d.seed = s;
      add((stdfs::path(config::distill_run_dir(d)) / kFinalDir).string());
    }
  // With seeded pretraining there is no unseeded <pretrain>/final: the seeded drafters stand in for it.
  const bool seeded_pretraining = stage_seeds(cfg, true).front() >= 0;
  const std::string unseeded_pretrain = (stdfs::path(cfg.pretrain.output_dir) / kFinalDir).string();
  for (const auto& d : cfg.evaluate.drafters)
    if (!(seeded_pretraining && d == unseeded_pretrain)) add(d);
  return c;
}

namespace {

// One step of the pipeline: a stage and the config it runs with.
struct Step {
  cli::Stage stage;
  config::Config cfg;
  std::string label;      // what the log calls it: "pretrain", "distill fkl seed 2"
  std::string record_as;  // its config is recorded as <run.output_dir>/pipeline-<record_as>.config.yaml ("": not)
  std::string note;       // what the pipeline set in cfg itself, logged before it runs ("": nothing)
};

// A stage's config as the pipeline ran it, beside the pipeline's own (<run.output_dir>/pipeline-<name>.config.yaml).
void record(config::Config c, const std::string& name) {
  fs::write_file_atomic(stdfs::path(c.run.output_dir) / ("pipeline-" + name + ".config.yaml"),
                        config::to_yaml(c, "draftalign pipeline: the config its " + name + " stage ran with"));
}

// What a distill run of pipeline.losses sets in the distill section, when it differs from the config's own.
std::string loss_note(const config::DistillSection& mine, const config::DistillSection& theirs,
                      const std::string& run) {
  if (mine.loss == theirs.loss && mine.tvdpp_scope == theirs.tvdpp_scope &&
      mine.tvdpp_weighting == theirs.tvdpp_weighting && mine.tvdpp_stats == theirs.tvdpp_stats)
    return "";
  return str_cat("pipeline: distill.loss = ", mine.loss,
                 mine.loss == config::Loss::kTvdpp
                     ? str_cat(", tvdpp_scope = ", mine.tvdpp_scope, ", tvdpp_weighting = ", mine.tvdpp_weighting,
                               ", tvdpp_stats = ", mine.tvdpp_stats)
                     : std::string(),
                 " for this run (from pipeline.losses: ", run, "; the config's own are not used)");
}

// Every step in order: prepare-data, pretrain (per pretraining seed), [magpie], generate, distill (per loss and
// seed), evaluate.
// `c` is pipeline_stage_config(cfg).
std::vector<Step> plan(const config::Config& cfg, const config::Config& c) {
  std::vector<Step> steps;
  steps.push_back({prepare_data_stage(), c, "prepare-data", "", ""});
  for (int64_t seed : stage_seeds(cfg, true)) {
    config::Config p = c;
    p.pretrain.seed = seed;
    steps.push_back({pretrain_stage(), p, seed >= 0 ? str_cat("pretrain seed ", seed) : "pretrain",
                     seed >= 0 ? str_cat("pretrain-seed-", seed) : "", ""});
  }
  if (c.pipeline.target_prompts) steps.push_back({magpie_stage(), c, "magpie", "", ""});
  steps.push_back({generate_stage(), c, "generate", "", ""});
  for (const auto& run : c.pipeline.losses)
    for (int64_t seed : stage_seeds(cfg, false)) {
      const config::Config d = pipeline_stage_config(cfg, run, seed);
      const std::string seeded = seed >= 0 ? str_cat(" seed ", seed) : std::string();
      steps.push_back(
          {distill_stage(), d, str_cat("distill ", run, seeded),
           str_cat("distill-", config::distill_run_name(d.distill), seed >= 0 ? str_cat("-seed-", seed) : ""),
           loss_note(d.distill, cfg.distill, run)});
    }
  steps.push_back({eval::evaluate_stage(), c, "evaluate", "evaluate",
                   c.evaluate.drafters != cfg.evaluate.drafters
                       ? str_cat("pipeline: evaluate.drafters = ", config::join(c.evaluate.drafters),
                                 " (the pretrained drafter(s) and each distilled drafter, then the config's own list)")
                       : ""});
  return steps;
}

// The checks that need no stage to run: a mistake here fails now, not after hours of training. `c` is
// pipeline_stage_config(cfg).
void check(const config::Config& cfg, const config::Config& c) {
  // The stages hand over through files: with several processes a rank would read what another has not yet written.
  const int world = dist_env_from_environment().world;
  DA_CHECK(world == 1, "pipeline: runs its stages in one process, but the launcher started ", world,
           "; launch the stages one by one instead (prepare-data and evaluate as one process; pretrain, generate and "
           "distill under torchrun or srun), as the header of configs/llama2-7b-chat-gpu.yaml shows");
  DA_CHECK(!c.pipeline.target_prompts || std::find(c.generate.prompts.begin(), c.generate.prompts.end(),
                                                   c.magpie.output) != c.generate.prompts.end(),
           "pipeline.target_prompts: magpie.output (", c.magpie.output, ") is not among generate.prompts, so the ",
           "prompts the target writes would not be answered; add it there");
  // The evaluation's contrasts name report rows.
  eval::check_contrasts(eval::parse_contrasts(c.evaluate.contrasts),
                        eval::report_row_names(c.evaluate.drafters, c.evaluate.prompt_lookup, c.evaluate.hybrid));
}

}  // namespace

int pipeline(const config::Config& cfg) {
  DA_CHECK(!cfg.pipeline.losses.empty(), "pipeline.losses: must not be empty");
  const config::Config c = pipeline_stage_config(cfg);
  check(cfg, c);
  const std::vector<Step> steps = plan(cfg, c);
  for (size_t k = 0; k < steps.size(); ++k) {
    const Step& s = steps[k];
    const std::string outputs = config::join(s.stage.outputs(s.cfg));
    // A signal that reached a stage as it finished (pretrain's last step) stops the pipeline here.
    preempt::throw_if_stop_requested(
        str_cat("pipeline stopped before [", k + 1, "/", steps.size(), "] ", s.label, "; run it again to go on"));
    log::info("pipeline: [", k + 1, "/", steps.size(), "] ", s.label, ": ", outputs);
    if (!s.note.empty()) log::info(s.note);
    if (!s.record_as.empty()) record(s.cfg, s.record_as);
    if (s.stage.is_complete(s.cfg)) {
      log::info("pipeline: ", s.label, " is complete (", outputs, "), skipped");
      continue;
    }
    s.stage.run(s.cfg);
    DA_CHECK(
        !s.stage.runs_in_parts || s.stage.is_complete(s.cfg), "pipeline: ", s.label, " ran, but ", outputs,
        " is not complete (a stage run ",
        "in parts, such as generate with generate.shard, needs every part: run the others, then the pipeline again)");
  }
  log::info("pipeline: done; the report is ",
            (stdfs::path(steps.back().cfg.evaluate.report_dir) / eval::kReportMarkdown).string());
  return 0;
}

cli::Stage pipeline_stage() {
  return {
      .name = "pipeline",
      .summary = "all stages in order, skipping finished ones",
      .description =
          "prepare-data -> pretrain -> [magpie, with pipeline.target_prompts] -> generate -> distill (each loss in "
          "pipeline.losses) -> evaluate, skipping\n"
          "stages whose outputs are complete and resuming an interrupted one. The stages chain through the config's\n"
          "${...} references; the report compares the pretrained-only drafter with each distilled one.",
      .sections = {"run", "target", "prepare", "pretrain", "generate", "magpie", "distill", "evaluate", "pipeline"},
      .run = pipeline,
      .outputs = [](const config::Config& c) { return eval::evaluate_stage().outputs(pipeline_stage_config(c)); }};
}

}  // namespace draftalign::train
