// runtime.h: where a stage computes. The one place that picks a device (cuda:LOCAL_RANK under a launcher), the CPU
// threads (run.threads, or the cores shared among the local ranks) and the target's dtype, and the one way a stage
// loads the frozen target and the ids that end its answers. Every stage (pretrain, generate, magpie, distill,
// evaluate) and every benchmark calls these.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/llama.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "train/dist.h"
#include "train/launch_env.h"

namespace draftalign::train {

// The device for run.device = auto / cpu / cuda of the process with `local_rank` on a machine with `cuda_devices`
// visible GPUs: cuda:local_rank (auto: when there is one), else the CPU. A cuda request without a GPU, or with fewer
// GPUs than local ranks, is an Error naming both numbers. Pure: the tests give the device count.
torch::Device pick_device(config::Device requested, int local_rank, int cuda_devices);

// run.threads when > 0, else `omp_threads` (OMP_NUM_THREADS, as torch and torchrun use it) when > 0, else the cores
// divided among the local ranks (at least one).
int pick_threads(int64_t requested, int cores, int local_world, int omp_threads = 0);

// OMP_NUM_THREADS as a positive number, 0 when unset or empty; any other value is an Error naming it.
int omp_threads_from_environment();

// The torch dtype of a dtype option on `device` (auto: bf16 on CUDA, fp32 on the CPU).
torch::ScalarType pick_dtype(config::Dtype requested, torch::Device device);

// Where this process computes, from run.* and the launcher environment.
struct Compute {
  DistEnv env;
  torch::Device device = torch::kCPU;
  int threads = 1;
};
// Reads the launcher environment, picks device and threads, sets torch's CPU threads and, on the CPU, the host memory
// (use_cpu_compute_memory).
Compute make_compute(const config::RunSection& run);
// make_compute's device for a tool with only a --device option (the benchmarks): auto, cpu or cuda, else an Error.
torch::Device compute_device(const std::string& requested);

// The target of cfg.target.dir on `device` in target.dtype: eval mode, no parameter wants a gradient.
std::shared_ptr<model::Llama> load_frozen_target(const config::Config& cfg, torch::Device device);

// The ids that end an answer: the tokenizer's EOS token, the model config's eos_token_ids, then `extra` (a stage's
// own stop ids, each checked against the vocabulary, named by `extra_key` in the error), each once.
std::vector<int64_t> stop_ids_for(const tok::Tokenizer& tokenizer, const io::LlamaConfig& config,
                                  const std::vector<int64_t>& extra = {}, const std::string& extra_key = "");

// The target as every stage that talks to it sees it (generate, magpie, data import, evaluate), loaded in one place so
// that they agree: target.dir's tokenizer, its chat template (target.chat_template), its config.json and the ids that
// end an answer (stop_ids_for). The weights only when a stage needs them (load_model: load_frozen_target), so a stage
// checks its inputs before it spends the time.
struct Target {
  std::unique_ptr<tok::Tokenizer> tokenizer;
  tok::ChatTemplate chat;
  io::LlamaConfig config;               // <target.dir>/config.json
  std::vector<int64_t> stop_ids;        // the tokenizer's EOS, then config.json's eos_token_ids
  std::shared_ptr<model::Llama> model;  // null until load_model

  void load_model(const config::Config& cfg, torch::Device device);
  bool is_stop(int64_t id) const { return std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end(); }
};
Target open_target(const config::Config& cfg);

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

}  // namespace draftalign::train
