// evaluate.h: `draftalign evaluate`, stage 4: is the drafter worth deploying? Lossless speculative decoding
// (speculative.h) of the target with each drafter on a prompt set (MT-bench by default), swept over the draft length
// gamma and the sampling temperature, one sequence at a time, against the target decoding alone through the same code
// (gamma = 0). Writes a report directory (report.h): JSON, Markdown, per-prompt JSONL and plots.
//
// Every input is checked before any weights are loaded: each drafter's config.json against the target's (vocabulary
// size) and, when the drafter directory has a tokenizer, its tokens against the target's; the prompt files (a
// malformed line names file:line, an empty set is an error); gamma >= 1 (the config's bounds).
#pragma once

#include "config/config.h"

namespace draftalign::eval {

int evaluate(const config::Config& cfg);

}  // namespace draftalign::eval
