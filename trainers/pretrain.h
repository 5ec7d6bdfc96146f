// pretrain.h: `draftalign pretrain`, stage 1: a Llama-architecture drafter trained with next-token cross-entropy on
// the token shards of prepare-data, data parallel over however many ranks the launcher started.
//
// Data: the train split is cut into windows of seq_len + 1 tokens (consecutive windows share one token); each epoch
// visits them in a seeded random order. Global sequence g of the run is window perm_{g / W}[g % W]; optimizer step s
// takes the next micro_batch_size * world * grad_accum of them, rank r's micro-batch m holding rows
// (m * world + r) * micro_batch_size ... + micro_batch_size - 1. The cursor (sequences consumed) is in every
// checkpoint, so a resumed run, or a run with another world size and the same global batch, sees the same sequences.
#pragma once

#include <torch/torch.h>

#include <filesystem>

#include "cli/stage.h"
#include "config/config.h"

namespace draftalign::train {

// Runs the stage; returns the exit code. Throws Error on a bad dataset, checkpoint or config, or on a non-finite loss
// with train.on_nonfinite = stop.
int pretrain(const config::Config& cfg);
// `draftalign pretrain`: complete when its run (pretrain.output_dir, or its seed-<n> for pretrain.seed = n) has its
// final drafter and last checkpoint.
cli::Stage pretrain_stage();

// pretrain.embedding_init = target-svd: the target's input embedding E [V, H] (model.embed_tokens.weight of the HF
// directory `target_dir`) projected on its top `hidden` right singular vectors, E V_d [V, hidden] fp32: the rank-d
// coordinates of the target's token geometry, at the target's scale. Errors name the directory.
torch::Tensor target_svd_embedding(const std::filesystem::path& target_dir, int64_t vocab, int64_t hidden);

}  // namespace draftalign::train
