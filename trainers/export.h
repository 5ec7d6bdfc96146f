// export.h: `draftalign export`: a checkpoint directory (a training checkpoint or a final drafter) -> a Hugging Face
// directory in export.dtype with the tokenizer files (the checkpoint's own, else the target's), reopened and checked
// after writing; transformers' AutoModelForCausalLM and vLLM load it.
#pragma once

#include "cli/stage.h"
#include "config/config.h"

namespace draftalign::train {

int export_drafter(const config::Config& cfg);
// `draftalign export`: always writes (no completeness check).
cli::Stage export_stage();

}  // namespace draftalign::train
