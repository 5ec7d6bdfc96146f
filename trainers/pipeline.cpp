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
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/launch_env.h"
#include "trainers/distill.h"
#include "trainers/generate.h"
#include "trainers/magpie.h"
#include "trainers/prepare_data.h"
#include "trainers/pretrain.h"
#include "trainers/train_loop.h"

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
  return (stdfs::path(config::seed_dir(cfg.pretrain.output_dir, seed)) / "final").string();
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
      add((stdfs::path(distill_run_dir(d)) / "final").string());
    }
  // With seeded pretraining there is no unseeded <pretrain>/final: the seeded drafters stand in for it.
  const bool seeded_pretraining = stage_seeds(cfg, true).front() >= 0;
  const std::string unseeded_pretrain = (stdfs::path(cfg.pretrain.output_dir) / "final").string();
  for (const auto& d : cfg.evaluate.drafters)
    if (!(seeded_pretraining && d == unseeded_pretrain)) add(d);
  return c;
}

namespace {

// A training run is complete when its final drafter and the checkpoint of its last step are both there (a changed
// train.steps makes it incomplete again: the run resumes from its newest checkpoint).
bool training_complete(const stdfs::path& out, int64_t steps) {
  if (!stdfs::exists(checkpoint_dir(out, steps) / "trainer_state.json")) return false;
  try {
    if (io::is_eagle3_dir(out / "final")) {
      // An EAGLE-3 head: its weights file holds the head's tensors and maps (load_eagle3 checks the rest).
      const io::SafetensorsFile f = io::SafetensorsFile::open(out / "final" / "model.safetensors");
      for (const char* name : {"fc.weight", "lm_head.weight", "d2t", "t2d"})
        DA_CHECK(f.contains(name), (out / "final" / "model.safetensors").string(), ": no tensor '", name, "'");
      return true;
    }
    io::HfCheckpoint::open(out / "final").check_llama();
    return true;
  } catch (const Error& e) {
    log::warn("pipeline: ", (out / "final").string(), " is not a complete drafter (", e.what(), "); training again");
    return false;
  }
}

void stage(const std::string& name, int index, int total) {
  // A signal that reached a stage as it finished (pretrain's last step) stops the pipeline here.
  preempt::throw_if_stop_requested(
      str_cat("pipeline stopped before [", index, "/", total, "] ", name, "; run it again to go on"));
  log::info("pipeline: [", index, "/", total, "] ", name);
}

// A stage's config as the pipeline ran it, beside the pipeline's own (<run.output_dir>/pipeline-<name>.config.yaml).
void record(config::Config c, const std::string& name) {
  fs::write_file_atomic(stdfs::path(c.run.output_dir) / ("pipeline-" + name + ".config.yaml"),
                        config::to_yaml(c, "draftalign pipeline: the config its " + name + " stage ran with"));
}

}  // namespace

int pipeline(const config::Config& cfg) {
  // The stages hand over through files: with several processes a rank would read what another has not yet written.
  const int world = dist_env_from_environment().world;
  DA_CHECK(world == 1, "pipeline: runs its stages in one process, but the launcher started ", world,
           "; launch the stages one by one instead (prepare-data and evaluate as one process; pretrain, generate and "
           "distill under torchrun or srun), as the header of configs/llama2-7b-chat-gpu.yaml shows");
  DA_CHECK(!cfg.pipeline.losses.empty(), "pipeline.losses: must not be empty");
  const config::Config c = pipeline_stage_config(cfg);
  DA_CHECK(!c.pipeline.target_prompts || std::find(c.generate.prompts.begin(), c.generate.prompts.end(),
                                                   c.magpie.output) != c.generate.prompts.end(),
           "pipeline.target_prompts: magpie.output (", c.magpie.output, ") is not among generate.prompts, so the ",
           "prompts the target writes would not be answered; add it there");
  // The evaluation's contrasts name report rows: a wrong one fails now, not after hours of training.
  eval::check_contrasts(eval::parse_contrasts(c.evaluate.contrasts),
                        eval::report_row_names(c.evaluate.drafters, c.evaluate.prompt_lookup, c.evaluate.hybrid));
  const std::vector<int64_t> pretrain_seeds = stage_seeds(cfg, true), distill_seeds = stage_seeds(cfg, false);
  const int total = 3 + static_cast<int>(pretrain_seeds.size()) +
                    static_cast<int>(c.pipeline.losses.size() * distill_seeds.size()) + (c.pipeline.target_prompts ? 1 : 0);
  int k = 0;

  stage("prepare-data: " + c.prepare.output_dir, ++k, total);
  prepare_data(c);

  for (int64_t seed : pretrain_seeds) {
    config::Config p = c;
    p.pretrain.seed = seed;
    const std::string out = config::seed_dir(p.pretrain.output_dir, seed);
    stage("pretrain: " + out, ++k, total);
    if (seed >= 0) record(p, str_cat("pretrain-seed-", seed));
    if (training_complete(out, p.pretrain.train.steps))
      log::info("pipeline: pretrain is complete (", out, "/final), skipped");
    else
      pretrain(p);
  }

  if (c.pipeline.target_prompts) {
    stage("magpie: " + c.magpie.output, ++k, total);
    magpie(c);
  }

  stage("generate: " + c.generate.output_dir, ++k, total);
  generate(c);
  DA_CHECK(stdfs::exists(stdfs::path(c.generate.output_dir) / "manifest.json"),
           "pipeline: generate did not finish every shard (", c.generate.output_dir,
           "); with generate.shard set, run the other processes, then the pipeline again");

  for (const auto& run : c.pipeline.losses)
    for (int64_t seed : distill_seeds) {
      const config::Config d = pipeline_stage_config(cfg, run, seed);
      const stdfs::path out = distill_run_dir(d.distill);
      stage(str_cat("distill ", run, seed >= 0 ? str_cat(" seed ", seed) : std::string(), ": ", out.string()), ++k,
            total);
      const config::DistillSection& mine = d.distill;
      const config::DistillSection& theirs = cfg.distill;
      if (mine.loss != theirs.loss || mine.tvdpp_scope != theirs.tvdpp_scope ||
          mine.tvdpp_weighting != theirs.tvdpp_weighting || mine.tvdpp_stats != theirs.tvdpp_stats)
        log::info("pipeline: distill.loss = ", mine.loss,
                  mine.loss == config::Loss::kTvdpp ? str_cat(", tvdpp_scope = ", mine.tvdpp_scope, ", tvdpp_weighting = ",
                                                              mine.tvdpp_weighting, ", tvdpp_stats = ", mine.tvdpp_stats)
                                                    : std::string(),
                  " for this run (from pipeline.losses: ", run, "; the config's own are not used)");
      record(d, str_cat("distill-", distill_run_name(d.distill), seed >= 0 ? str_cat("-seed-", seed) : std::string()));
      if (training_complete(out, config::distill_train(d.distill).steps))
        log::info("pipeline: distill ", run, " is complete (", (out / "final").string(), "), skipped");
      else
        distill(d);
    }

  stage("evaluate: " + c.evaluate.report_dir, ++k, total);
  if (c.evaluate.drafters != cfg.evaluate.drafters)
    log::info("pipeline: evaluate.drafters = ", config::join(c.evaluate.drafters), " (the pretrained drafter(s) and ",
              "each distilled drafter, then the config's own list)");
  record(c, "evaluate");
  if (eval::evaluation_complete(c))
    log::info("pipeline: ", (stdfs::path(c.evaluate.report_dir) / "report.json").string(),
              " was made from these drafters and settings, skipped");
  else
    eval::evaluate(c);
  log::info("pipeline: done; the report is ", (stdfs::path(c.evaluate.report_dir) / "report.md").string());
  return 0;
}

}  // namespace draftalign::train
