// train_loop.h: the pieces every training recipe (pretrain.cpp, distill.cpp) shares, as free functions:
// the runtime (device, threads, process group, autocast), AdamW with decay / no-decay groups, the warm-up + cosine
// learning rate, and checkpoints.
//
// A checkpoint is a directory <output_dir>/checkpoints/step-NNNNNNN/:
//   config.json, model.safetensors (fp32 master weights), tokenizer files   a Hugging Face directory
//   optimizer.pt                                                             AdamW state (tensors, torch::save)
//   rng.pt                                                                   every rank's generator state
//   trainer_state.json                                                       step, data cursor, counters, checksums
// It is built beside its final name and renamed into place, so a directory with that name is complete; resume checks
// each file against the checksums in trainer_state.json and names the file that does not match.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "model/llama.h"
#include "train/dist.h"

namespace draftalign::train {

namespace stdfs = std::filesystem;

// Device, threads, process group and mixed precision of one training process.
struct Runtime {
  torch::Device device = torch::kCPU;
  bool bf16_autocast = false;  // CUDA + train.dtype auto/bf16: bf16 autocast over fp32 master weights
  std::unique_ptr<Dist> dist;

  bool is_main() const { return dist->rank() == 0; }
};

// Reads the launcher environment, picks the device (cuda:LOCAL_RANK under torchrun), sets the CPU threads (run.threads,
// or the cores divided among the local ranks) and joins the process group.
Runtime make_runtime(const config::RunSection& run, const config::TrainSection& train);

// Autocast to bf16 on CUDA for the forward pass when `on`; a no-op otherwise.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool on);
  ~AutocastGuard();

 private:
  bool on_;
};

// AdamW (decoupled weight decay, as torch.optim.AdamW) over a model's parameters, stepped by ATen's fused multi-tensor
// kernel (_fused_adamw_: one pass over each parameter, CPU and CUDA) instead of a dozen element-wise ops per parameter.
// Weight decay on matrices, none on norm weights (1-D). Its state is plain tensors in parameter order, saved and loaded
// as such: a resumed run continues bit for bit.
class AdamW {
 public:
  AdamW(const std::vector<torch::Tensor>& params, const config::OptimSection& o);

  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  // One update of every parameter that has a gradient.
  void step();
  void zero_grad();  // gradients set to undefined (freed)

  void save(const stdfs::path& file) const;
  // Errors name the file when it is unreadable or does not fit these parameters.
  void load(const stdfs::path& file);

 private:
  struct Group {
    double weight_decay = 0;
    std::vector<torch::Tensor> params, exp_avg, exp_avg_sq, steps;  // steps: fp32 scalars, as the kernel wants
  };
  Group groups_[2];  // [0] with weight decay, [1] without
  double lr_, beta1_, beta2_, eps_;
};

// The visiting order of n items over epochs: global sequence g is item perm_{g / n}[g % n], each epoch's permutation a
// Fisher-Yates shuffle with mt19937_64 seeded from (seed, epoch): the same on every platform and rank.
class EpochOrder {
 public:
  EpochOrder(int64_t n, uint64_t seed) : n_(n), seed_(seed) {}
  int64_t size() const { return n_; }
  int64_t at(int64_t g);

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> perm_;
};

// Linear warm-up to optim.lr over warmup_steps, then cosine decay to optim.min_lr at `steps`.
double lr_at(int64_t step, const config::TrainSection& t);

struct TrainerState {
  int64_t step = 0;          // optimizer steps done
  int64_t consumed = 0;      // training sequences consumed (the data cursor, independent of the world size)
  int64_t tokens = 0;        // training tokens consumed
  int64_t skipped = 0;       // steps skipped for a non-finite loss (train.on_nonfinite = skip)
  int64_t empty_micro_batches = 0;  // micro-batches with nothing to learn from (MicroBatch::skipped)
  nlohmann::json extra;      // recipe-specific fields
};

stdfs::path checkpoint_dir(const stdfs::path& output_dir, int64_t step);
// The step of a checkpoint directory named as checkpoint_dir names them ("step-0000500" -> 500), or -1.
int64_t checkpoint_step(const stdfs::path& dir);
// The newest complete checkpoint under <output_dir>/checkpoints, if any.
std::optional<stdfs::path> latest_checkpoint(const stdfs::path& output_dir);
// The checkpoint train.resume asks for: auto = latest_checkpoint, none = nothing, else that path (which must exist).
std::optional<stdfs::path> resume_checkpoint(const stdfs::path& output_dir, const std::string& resume);

// Writes a checkpoint (rank 0 writes; every rank must call it: the generator states are gathered) and deletes all
// but the newest `keep_last`.
void save_checkpoint(const stdfs::path& output_dir, const model::Llama& model, const AdamW& opt,
                     const TrainerState& state, Dist& dist, const stdfs::path& tokenizer_dir, int64_t keep_last);

// Loads a checkpoint into `model` (whose config must match the checkpoint's) and `opt`, restores this rank's
// generator and returns the trainer state. Errors name the file.
TrainerState load_checkpoint(const stdfs::path& dir, model::Llama& model, AdamW& opt, Dist& dist);

// Keeps the records of a metrics JSONL file whose "step" is at most `step` (a resumed run redoes the later ones).
void truncate_metrics(const stdfs::path& file, int64_t step);

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
  // Micro-batch m (0 .. grad_accum - 1) of the step whose first global sequence is `first`; this rank's sequences are
  // first + (m * world + rank) * micro_batch_size + [0, micro_batch_size).
  std::function<MicroBatch(int64_t first, int64_t m)> micro_batch;
  // Validation metrics for the record of `step` (every rank calls it; rank 0's result is logged), or null.
  std::function<nlohmann::json(int64_t step)> validate;
  bool validate_at_start = false;  // also before the first step of a fresh run (the starting point of distillation)
};

// Runs `t.steps` optimizer steps of `model` on `rt`: AdamW with the warm-up + cosine schedule, gradient accumulation
// with bucketed data-parallel all-reduce, clipping, the non-finite policy, metrics (<out>/metrics.jsonl),
// validation, checkpoints with keep-last-k, and resume (t.resume), writing <out>/final as an HF directory at the end.
void run_training(const config::RunSection& run, const config::TrainSection& t, const stdfs::path& out,
                  const stdfs::path& tokenizer_dir, Runtime& rt, model::Llama& model, const Recipe& recipe);

}  // namespace draftalign::train
