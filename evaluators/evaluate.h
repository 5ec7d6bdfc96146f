// evaluate.h: `draftalign evaluate`, stage 4: is the drafter worth deploying? Lossless speculative decoding
// (speculative.h) of the target with each drafter on a prompt set (MT-bench by default), swept over the draft length
// gamma and the sampling temperature, one sequence at a time, against the target decoding alone through the same code
// (gamma = 0). Writes a report directory (report.h): JSON, Markdown, per-prompt JSONL and plots.
//
// Every input is checked before any weights are loaded: each drafter against the target (vocabulary size in
// config.json first and, when the drafter directory has a tokenizer, its tokens), every checkpoint's files
// (config.json, the safetensors headers, tensor names and shapes), the prompt files (a malformed line names
// file:line, an empty set is an error), gamma >= 1 (the config's bounds).
#pragma once

#include <string>

#include "cli/stage.h"
#include "config/config.h"

namespace draftalign::eval {

int evaluate(const config::Config& cfg);

// What a report depends on, as a checksum built from the schema (config/fingerprint.h): the run seed and device, the
// target (by content), every evaluate option that changes a number, the prompt files and each drafter directory by
// content. report.json and sweep.jsonl record it.
std::string evaluate_fingerprint(const config::Config& cfg);
// Whether evaluate.report_dir holds a report made from these inputs (the pipeline skips the stage then).
bool evaluation_complete(const config::Config& cfg);
// `draftalign evaluate`.
cli::Stage evaluate_stage();

}  // namespace draftalign::eval
