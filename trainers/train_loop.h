// train_loop.h: the optimizer-step loop every training recipe (pretrain.cpp, distill.cpp) runs, and the held-out
// pass both validate with. The machinery it uses lives in src/train: runtime (device, threads, process group,
// autocast), optim (AdamW, the learning-rate schedule), checkpoint (the format, exact resume), sampler (which
// sequences a rank sees).
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "model/llama.h"
#include "train/checkpoint.h"
#include "train/runtime.h"

namespace draftalign::train {

namespace stdfs = std::filesystem;

// --- The optimizer-step loop every recipe runs ------------------------------------------------------------------

// One micro-batch's contribution.
struct MicroBatch {
  torch::Tensor loss;  // scalar to minimise: this micro-batch's mean
  int64_t tokens = 0;  // tokens it trained on (throughput and the token counter)
  std::vector<std::pair<std::string, torch::Tensor>> parts;  // detached scalars, logged as the step's mean (kd, ce)
  // A micro-batch with no position to learn from (e.g. distillation records whose prompts fill the window): the loop
  // counts it and gives every parameter a zero gradient (so data-parallel ranks stay in step); `loss` is unused and
  // `parts` must name the same scalars as a real micro-batch's (zeros), since every rank all-reduces them together.
  bool skipped = false;
  static MicroBatch empty(const std::vector<std::string>& part_names) {
    MicroBatch mb;
    mb.skipped = true;
    for (const auto& n : part_names) mb.parts.emplace_back(n, torch::zeros({}));
    return mb;
  }
};

// What a recipe (pretrain.cpp, distill.cpp) plugs into run_training.
struct Recipe {
  std::string name;  // "pretrain", "distill": the log prefix and the config section named in messages
  // This rank's next micro-batch: the global ids of its micro_batch_size sequences (train/sampler.h, rank_sequences).
  std::function<MicroBatch(const std::vector<int64_t>& sequences)> micro_batch;
  // Validation metrics for the record of `step` (every rank calls it; rank 0's result is logged), or null.
  std::function<nlohmann::json(int64_t step)> validate;
  bool validate_at_start = false;  // also before the first step of a fresh run (the starting point of distillation)
};

// Runs `t.steps` optimizer steps of `model` on `rt`: AdamW with the warm-up + cosine schedule, gradient accumulation
// with bucketed data-parallel all-reduce, clipping, the non-finite policy, metrics (<out>/metrics.jsonl and the
// trackers of cfg.run.report_to, common/trackers.h), validation, checkpoints with keep-last-k, and resume (t.resume),
// writing <out>/final as an HF directory at the end.
void run_training(const config::Config& cfg, const config::TrainSection& t, const stdfs::path& out,
                  const stdfs::path& tokenizer_dir, Runtime& rt, model::Llama& model, const Recipe& recipe);
// The same loop for any module whose checkpoints `io` writes and reads (an EAGLE-3 head); io.save also writes
// <out>/final.
void run_training(const config::Config& cfg, const config::TrainSection& t, const stdfs::path& out, Runtime& rt,
                  torch::nn::Module& model, const ModelIO& io, const Recipe& recipe);

// Whether the training run in `out` is complete: its final drafter (<out>/final, a Llama or an EAGLE-3 head) and the
// checkpoint of its last step `steps` both exist (a changed train.steps makes it incomplete again: the run resumes
// from its newest checkpoint). pretrain's and distill's Stage::is_complete.
bool training_complete(const stdfs::path& out, int64_t steps);

// The held-out pass of a recipe's validate: with `model` in eval mode and no gradient, `add` is called on this rank's
// share of n held-out items (rank_share) in groups of at most `batch`, in order, adding into `sums` (`width` float64
// values on the runtime's device); returns the sums over all ranks, on the CPU.
torch::Tensor held_out_sums(torch::nn::Module& model, Runtime& rt, int64_t n, int64_t batch, int64_t width,
                            const std::function<void(const std::vector<int64_t>& items, torch::Tensor& sums)>& add);

}  // namespace draftalign::train
