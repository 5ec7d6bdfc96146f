// distill.h: `draftalign distill`, stage 3: the pretrained drafter (student) finetuned against the target (teacher)
// on the prompt/response pairs of `draftalign generate`, with the loss only on response tokens:
//   total = kd_weight * KD(p_target, q_drafter) + ce_weight * CE(response tokens)
// KD is distill.loss: tvdpp (src/train/losses.h, the fused kernel on CUDA), tvd, fkl, rkl, or ce (KD = CE).
//
// Teacher: online = the target model runs on the same batch (frozen, no gradient, target.dtype: bf16 on CUDA);
// offline = the top-k log-probabilities generate stored (generate.topk_logprobs = k), the rest of the mass
// (1 - sum of the top k) spread evenly over the other tokens, so every loss stays finite.
//
// Data: records are held out for validation every round(1 / val_fraction)-th by request id; the others are visited in
// a seeded random order per epoch, global sequence g of the run being record perm_{g / n}[g % n] (n training records),
// so a resumed run or one with another world size sees the same sequences. A micro-batch pads its records on the right
// to the longest (at most train.seq_len + 1 tokens; longer records are cut).
//
// Validation (at the start and every train.eval_every steps): on up to eval_batches * micro_batch_size held-out
// records, the mean over response tokens of alpha = sum_x min(p, q) (the expected acceptance of speculative sampling,
// at distill.temperature) and tau(g) = (1 - alpha^(g+1)) / (1 - alpha) for g = 1..8, plus the CE of the responses.
//
// Output: <output_dir>/<run name>/ with checkpoints, metrics.jsonl and final/ (an HF directory); the run name is the
// loss (tvdpp-<scope>-<weighting> for TVD++), so the losses of an ablation sit side by side.
#pragma once

#include <string>

#include "config/config.h"

namespace draftalign::train {

// The sub-directory of distill.output_dir this configuration writes to.
std::string distill_run_name(const config::DistillSection& d);

// Runs the stage; returns the exit code. Throws Error on bad data, checkpoints or config.
int distill(const config::Config& cfg);

}  // namespace draftalign::train
