// magpie.h: `draftalign magpie`: instruction prompts written by the target itself (Magpie, Xu et al. 2024).
//
// The target samples a user turn from the bare chat prefix (tok::ChatTemplate::user_prefix: for ChatML the system
// turn, then `<|im_start|>user\n`) up to the end of the turn. Each sample has its own seed (run.seed and its index),
// and samples are drawn in a fixed order until magpie.count are kept, so a run is the same for a seed whatever the
// batch size. A sample is dropped, and the reason counted, when it
//   - did not end its turn within magpie.max_new_tokens (unfinished),
//   - is shorter than min_chars or longer than max_chars (after trimming),
//   - holds chat-template markup (the model began another turn inside the user turn),
//   - is mostly not text (under half of its non-space characters are letters),
//   - repeats itself (under 40% distinct words, from 12 words on),
//   - nearly duplicates an evaluation prompt (magpie.exclude) or a prompt already kept: one's normalised text holds
//     the other's, or at least max_overlap of the smaller one's word n-grams occur in the other.
// The kept prompts go to magpie.output (written to a temporary file, then renamed) as
//   {"instruction": ..., "id": "target-<k>", "source": "target", "sample": i, "seed": s, "temperature": T,
//    "top_p": p, "target": dir}
// which load_prompts (prompts.h) reads; beside it, <output>.manifest.json holds the settings' fingerprint, the
// sample and drop counts. A run whose manifest matches the settings is not redone.
#pragma once

#include "cli/stage.h"
#include "config/config.h"

namespace draftalign::train {

// The stage: writes magpie.output and its manifest (or keeps them when the manifest matches); returns 0.
int magpie(const config::Config& cfg);
// Whether magpie.output and its manifest exist and the manifest records these settings' fingerprint.
bool magpie_complete(const config::Config& cfg);
// `draftalign magpie`.
cli::Stage magpie_stage();

}  // namespace draftalign::train
