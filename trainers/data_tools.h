// data_tools.h: `draftalign data stats | show | import`, the commands around generate's output directory
// (trainers/generate_output.h).
#pragma once

#include "cli/stage.h"
#include "config/config.h"

namespace draftalign::train {

// `data stats`: counts, finish reasons, prompt and response length histograms of a generate output directory
// (data.dir, default generate.output_dir; complete or not). `data show`: records [data.first, + data.samples) decoded
// with the target's tokenizer. Both read the shards through the checked safetensors reader; errors name the file.
int data_stats(const config::Config& cfg);
int data_show(const config::Config& cfg);
// `data import`: chat JSONL (data.inputs: "messages" or ShareGPT "conversations") -> a distillation data directory
// (data.dir, default generate.output_dir) in generate's format, so distill's online teacher trains on it. Each
// assistant turn is one record: prompt = the conversation before it rendered with the target's chat template
// (generation prompt included), response = the turn as the template renders it (loss mask on it alone). Bad lines name
// file:line and stop the import, or are skipped and counted (data.on_bad_record = skip).
int data_import(const config::Config& cfg);

// The three commands (read-only tools for stats and show: no outputs, no recorded config).
cli::Stage data_stats_stage();
cli::Stage data_show_stage();
cli::Stage data_import_stage();

}  // namespace draftalign::train
