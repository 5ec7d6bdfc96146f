// bench_pretrain: training throughput of our LibTorch drafter, one optimizer step = forward, cross-entropy, backward,
// gradient clipping and AdamW, on random tokens (plain causal attention). bench/pretrain_vs_eager.py runs it next to
// the same model trained in PyTorch eager Python and prints both; run it through that script.
// Usage: bench_pretrain [--config FILE.yaml] [--batch B] [--seq T] [--steps N] [--warmup W] [--device cpu|cuda]
//                       [--out result.json]
// The model shape is pretrain.model of the config (the embedded demo drafter without one). Writes JSON: the HF config
// of the model, its parameter count, the median step time and tokens/s, and the peak memory.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_args.h"
#include "train/runtime.h"
#include "common/fs.h"
#include "config/loader.h"
#include "io/hf_config.h"
#include "model/llama.h"
#include "train/optim.h"
#include "trainers/train_loop.h"
#if DRAFTALIGN_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>
#endif

using namespace draftalign;

int main(int argc, char** argv) {
  std::string config_file, device_name = "cpu", out;
  int64_t batch = 4, seq = 256, steps = 5, warmup = 2;
  if (!bench::parse_options(argc, argv, {{"--config", &config_file}, {"--batch", &batch}, {"--seq", &seq},
                                          {"--steps", &steps}, {"--warmup", &warmup}, {"--device", &device_name},
                                          {"--out", &out}}))
    return 2;
  try {
    const config::Config cfg = config::load_config(config_file, {}).cfg;
    const torch::Device device = train::compute_device(device_name);
    const bool cuda = device.is_cuda();
    io::LlamaConfig c = cfg.pretrain.model.hf_config();
    torch::manual_seed(0);
    model::Llama model(c, torch::TensorOptions().device(device));
    model.train();
    const std::vector<torch::Tensor> params = model.parameters();
    train::AdamW opt(params, cfg.pretrain.train.optim);
    auto sync = [&] {
#if DRAFTALIGN_WITH_CUDA
      if (cuda) torch::cuda::synchronize();
#endif
    };
    using clock = std::chrono::steady_clock;
    auto since = [](clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); };
    std::vector<double> times, fwd, bwd, upd;
    for (int64_t s = 0; s < warmup + steps; ++s) {
      const torch::Tensor tokens =
          torch::randint(c.vocab_size, {batch, seq + 1}, torch::TensorOptions().dtype(torch::kInt64)).to(device);
      sync();
      const auto t0 = clock::now();
      torch::Tensor loss;
      {
        train::AutocastGuard autocast(cuda);
        const torch::Tensor logits = model.forward(tokens.narrow(1, 0, seq));
        loss = torch::nn::functional::cross_entropy(logits.reshape({-1, c.vocab_size}).to(torch::kFloat32),
                                                    tokens.narrow(1, 1, seq).reshape({-1}));
      }
      sync();
      const auto t1 = clock::now();
      loss.backward();
      sync();
      const auto t2 = clock::now();
      torch::nn::utils::clip_grad_norm_(params, 1.0);
      opt.step();
      opt.zero_grad();
      sync();
      if (s >= warmup) {
        times.push_back(since(t0));
        fwd.push_back(std::chrono::duration<double>(t1 - t0).count());
        bwd.push_back(std::chrono::duration<double>(t2 - t1).count());
        upd.push_back(since(t2));
      }
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double step_s = median(times);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    int64_t peak = static_cast<int64_t>(ru.ru_maxrss) * 1024;
#if DRAFTALIGN_WITH_CUDA
    if (cuda) peak = c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak;
#endif
    nlohmann::json j = {{"impl", "draftalign (LibTorch C++)"},
                        {"device", device.str()},
                        {"dtype", cuda ? "bf16 autocast" : "fp32"},
                        {"threads", torch::get_num_threads()},
                        {"params", model.num_params()},
                        {"batch", batch},
                        {"seq", seq},
                        {"step_s", step_s},
                        {"forward_s", median(fwd)},
                        {"backward_s", median(bwd)},
                        {"optimizer_s", median(upd)},
                        {"tokens_per_s", static_cast<double>(batch * seq) / step_s},
                        {"peak_bytes", peak},
                        {"peak_kind", cuda ? "CUDA allocated" : "process max RSS"},
                        {"hf_config", io::to_hf_json(c)}};
    bench::write_result(j, out);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
