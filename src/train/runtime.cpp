#include "train/runtime.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <thread>

#include "common/device.h"
#include "common/error.h"
#include "common/log.h"
#include "io/hf_config.h"

namespace draftalign::train {

torch::Device pick_device(config::Device requested, int local_rank, int cuda_devices) {
  DA_CHECK(requested != config::Device::kCuda || cuda_devices > 0,
           "run.device is cuda, but no CUDA device is visible (CUDA devices: ", cuda_devices,
           "); use run.device=cpu or auto");
  if (requested == config::Device::kCpu || cuda_devices == 0) return torch::kCPU;
  DA_CHECK(local_rank >= 0 && local_rank < cuda_devices, "this process has LOCAL_RANK ", local_rank, " but ",
           cuda_devices, " CUDA device(s) are visible: launch at most one process per GPU (--nproc-per-node=",
           cuda_devices, ")");
  return {torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank)};
}

int pick_threads(int64_t requested, int cores, int local_world, int omp_threads) {
  if (requested > 0) return static_cast<int>(requested);
  if (omp_threads > 0) return omp_threads;
  return std::max(1, cores / std::max(1, local_world));
}

int omp_threads_from_environment() {
  const char* v = std::getenv("OMP_NUM_THREADS");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v, &end, 10);
  DA_CHECK(*end == '\0' && errno == 0 && n > 0 && n <= 1 << 16, "OMP_NUM_THREADS='", v,
           "' is not a positive number of threads; unset it or set run.threads");
  return static_cast<int>(n);
}

torch::ScalarType pick_dtype(config::Dtype requested, torch::Device device) {
  switch (requested) {
    case config::Dtype::kAuto:
      return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
    case config::Dtype::kFp32:
      return torch::kFloat32;
    case config::Dtype::kBf16:
      return torch::kBFloat16;
    case config::Dtype::kFp16:
      return torch::kFloat16;
  }
  return torch::kFloat32;
}

Compute make_compute(const config::RunSection& run) {
  Compute c;
  c.env = dist_env_from_environment();
  const int gpus = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  c.device = pick_device(run.device, c.env.local_rank, gpus);
  c.threads = pick_threads(run.threads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())),
                           c.env.local_world, run.threads > 0 ? 0 : omp_threads_from_environment());
  torch::set_num_threads(c.threads);
  if (c.device.is_cpu()) use_cpu_compute_memory();
  return c;
}

torch::Device compute_device(const std::string& requested) {
  config::RunSection run;
  run.device = config::enum_from<config::Device>(requested, "--device");
  return make_compute(run).device;
}

std::shared_ptr<model::Llama> load_frozen_target(const config::Config& cfg, torch::Device device) {
  auto target = model::load_llama(cfg.target.dir, device, pick_dtype(cfg.target.dtype, device));
  target->eval();
  for (auto& p : target->parameters()) p.set_requires_grad(false);
  return target;
}

std::vector<int64_t> stop_ids_for(const tok::Tokenizer& tokenizer, const io::LlamaConfig& config,
                                  const std::vector<int64_t>& extra, const std::string& extra_key) {
  std::vector<int64_t> ids;
  auto add = [&](int64_t id) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  if (tokenizer.special().eos >= 0) add(tokenizer.special().eos);
  for (int64_t id : config.eos_token_ids) add(id);
  for (int64_t id : extra) {
    DA_CHECK(id >= 0 && id < config.vocab_size, extra_key, ": ", id, " is outside the target's vocabulary (",
             config.vocab_size, ")");
    add(id);
  }
  return ids;
}

Target open_target(const config::Config& cfg) {
  auto tokenizer = tok::load_tokenizer(cfg.target.dir);
  auto chat = tok::ChatTemplate::from_dir(cfg.target.dir, cfg.target.chat_template);
  io::LlamaConfig config = io::read_hf_config(std::filesystem::path(cfg.target.dir) / "config.json");
  std::vector<int64_t> stops = stop_ids_for(*tokenizer, config);
  return Target{std::move(tokenizer), std::move(chat), std::move(config), std::move(stops), nullptr};
}

void Target::load_model(const config::Config& cfg, torch::Device device) { model = load_frozen_target(cfg, device); }

Runtime make_runtime(const config::RunSection& run, const config::TrainSection& train) {
  const Compute compute = make_compute(run);
  const DistEnv& env = compute.env;
  log::set_rank(env.rank, env.world);
  Runtime rt;
  rt.device = compute.device;
  const int threads = compute.threads;
  rt.bf16_autocast = rt.device.is_cuda() && train.dtype != config::Dtype::kFp32;
  DA_CHECK(!(train.dtype == config::Dtype::kBf16 && !rt.device.is_cuda()),
           "train.dtype = bf16 needs a CUDA device (bf16 autocast); use auto or fp32 on CPU");
  rt.dist = std::make_unique<Dist>(env, rt.device, std::chrono::milliseconds(
                                                       static_cast<int64_t>(run.dist_timeout_s * 1000)));
  log::info("runtime: ", rt.device.str(), ", ", threads, " CPU threads per rank, ",
            rt.bf16_autocast ? "bf16 autocast" : "fp32", ", world size ", env.world);
  return rt;
}

AutocastGuard::AutocastGuard(bool on) : on_(on) {
  if (!on_) return;
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
}

AutocastGuard::~AutocastGuard() {
  if (!on_) return;
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  at::autocast::clear_cache();
}

}  // namespace draftalign::train
