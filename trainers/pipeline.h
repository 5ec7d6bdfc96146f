// pipeline.h: `draftalign pipeline`: every stage in order, the README's main command.
//
// pipeline: prepare-data -> pretrain -> [magpie: the target writes prompts, with pipeline.target_prompts] -> generate
// -> distill (one run per entry of pipeline.losses: a loss, or a TVD++ variant by its run name) -> evaluate (the
// pretrained-only drafter against each distilled one). The stages chain through the config's ${...} references
// (pretrain reads ${prepare.output_dir}, distill starts from ${pretrain.output_dir}/final and reads
// ${generate.output_dir}); what the pipeline sets itself, it logs and records
// (<run.output_dir>/pipeline-<stage>.config.yaml): the distill loss options of each pipeline.losses run in turn
// (config::with_run), and evaluate.drafters, distill.student and every distilled drafter ahead of the config's own
// list. Each step is a stage (cli/stage.h) and the config it runs with; the loop is
//   for (step : plan) if (!step.stage.is_complete(step.cfg)) step.stage.run(step.cfg);
// (prepare-data and generate: their directory records this config's fingerprint; magpie: its manifest does; a
// training run: its final drafter and the checkpoint of its last step exist; evaluate: report.json was made from the
// same inputs). An interrupted stage resumes (training from its newest checkpoint, generate from its missing shards,
// evaluate from its unfinished sweep points); a stage that ran and is still not complete stops the pipeline.
#pragma once

#include "cli/stage.h"
#include "config/config.h"

namespace draftalign::train {

int pipeline(const config::Config& cfg);
// `draftalign pipeline`: every stage's Stage in turn, `if (!stage.is_complete(c)) stage.run(c)`.
cli::Stage pipeline_stage();

// The config each stage of the pipeline runs with: `cfg` with the loss options of the run named `loss` (empty: the
// first of pipeline.losses; config::with_run) and evaluate.drafters = distill.student, each pipeline.losses run's final drafter, then
// cfg.evaluate.drafters, each once. Nothing else is changed.
// With pipeline.seeds, distill.seed = `seed` (and, with pipeline.seed_pretraining, distill.student = that seed's
// pretrained drafter), and evaluate.drafters lists every seed's drafters.
config::Config pipeline_stage_config(const config::Config& cfg, const std::string& loss = "", int64_t seed = -1);

}  // namespace draftalign::train
