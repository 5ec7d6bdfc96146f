// main.cpp: the `draftalign` binary: its commands, one Stage each (cli/stage.h), in the order --help lists them.
// A stage defines itself in its own file in trainers/ or evaluators/ (name, help, config sections, run, outputs,
// is_complete); adding one is that file pair and one line here (and one in `pipeline`'s plan if it belongs there).
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/device.h"
#include "evaluators/evaluate.h"
#include "trainers/data_tools.h"
#include "trainers/distill.h"
#include "trainers/export.h"
#include "trainers/generate.h"
#include "trainers/magpie.h"
#include "trainers/pipeline.h"
#include "trainers/prepare_data.h"
#include "trainers/pretrain.h"

namespace da = draftalign;

int main(int argc, char** argv) {
  da::cli::init_rank_from_env();
  const std::vector<da::cli::Stage> stages = {
      da::train::prepare_data_stage(),  // corpus -> token shards
      da::train::pretrain_stage(),      // stage 1: the drafter on the shards
      da::train::generate_stage(),      // stage 2: the target answers prompts
      da::train::magpie_stage(),        // the target writes prompts
      da::train::data_stats_stage(),    // read generate's output
      da::train::data_show_stage(),
      da::train::data_import_stage(),  // chat JSONL -> distillation data
      da::train::distill_stage(),      // stage 3: TVD++ and the baselines; an EAGLE-3 head
      da::eval::evaluate_stage(),      // stage 4: tau, acceptance, speed-up, the report
      da::train::export_stage(),       // a checkpoint -> a Hugging Face directory
      da::train::pipeline_stage(),     // every stage in order
  };
  return da::cli::run_cli(std::vector<std::string>(argv + 1, argv + argc), stages, da::runtime_summary);
}
