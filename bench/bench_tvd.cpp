// bench_tvd: the fused TVD / TVD++ kernel (kernels/tvd.cu through kd_loss_forward_backward) next to the composite
// LibTorch loss (kd_loss forward + autograd backward) on the same random logits, one process, side by side.
// Per shape, dtype and loss: median time of each, the kernel's achieved GB/s (the fewest bytes: both logit tensors read
// once, the gradient written once) as a fraction of the device's copy bandwidth measured in the same run, and peak
// device memory above the inputs (composite, kernel, kernel writing the gradient in place over the student logits).
// Usage: bench_tvd [--iters 20] [--out result.json]. Exits 0, printing so, when no CUDA device is visible.
#include <cstdio>

#if !DRAFTALIGN_WITH_CUDA
int main() {
  std::printf("bench_tvd: built without CUDA kernels; nothing to measure\n");
  return 0;
}
#else
#include <algorithm>
#include <string>
#include <vector>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "bench/bench_args.h"
#include "kernels/copy.h"
#include "kernels/tvd_launch.h"
#include "train/losses.h"
#include "train/runtime.h"

using namespace draftalign;
using torch::Tensor;

namespace {

struct Shape {
  int64_t rows, vocab;
  torch::ScalarType dtype;
};

// Median milliseconds of `iters` runs of body() after 3 warm-ups, timed with CUDA events. Each run gets the next of
// `sets` input sets, so that no two consecutive runs read the same memory (the inputs are far larger than L2 anyway).
template <typename F>
double median_ms(int iters, F&& body) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < 3; ++i) body(i);
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(start, stream);
    body(i);
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    cudaEventElapsedTime(&ms[i], start, stop);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
  return ms[iters / 2];
}

// Peak bytes allocated while body() runs, above what was allocated before it.
template <typename F>
double peak_mib(F&& body) {
  torch::cuda::synchronize();
  using c10::cuda::CUDACachingAllocator::getDeviceStats;
  const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const int64_t before = getDeviceStats(0).allocated_bytes[agg].current;
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  body();
  torch::cuda::synchronize();
  return static_cast<double>(getDeviceStats(0).allocated_bytes[agg].peak - before) / (1 << 20);
}

// What the launcher needs to decide whether a row of this shape is cached in shared memory.
kernels::TvdArgs kernel_args(const Shape& sh) {
  kernels::TvdArgs a;
  a.rows = sh.rows, a.vocab = sh.vocab;
  a.student_dtype = a.teacher_dtype =
      sh.dtype == torch::kBFloat16 ? kernels::TvdDtype::kBFloat16 : kernels::TvdDtype::kFloat32;
  return a;
}

const char* dtype_name(torch::ScalarType t) { return t == torch::kBFloat16 ? "bf16" : "fp32"; }

}  // namespace

int main(int argc, char** argv) {
  int64_t iters = 20;
  std::string out;
  if (!bench::parse_options(argc, argv, {{"--iters", &iters}, {"--out", &out}})) return 2;
  if (!train::compute_device("auto").is_cuda()) {
    std::printf("bench_tvd: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  try {
    const auto copy = kernels::measure_copy_bandwidth(int64_t(2) << 30, 20);
    const double copy_gbps = std::max(copy.kernel_gbps, copy.torch_gbps);
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    std::printf("device %s, %d SMs; copy bandwidth (read + write) %.0f GB/s\n", prop.name, prop.multiProcessorCount,
                copy_gbps);
    std::printf("| rows x vocab | dtype | loss | composite ms | kernel ms (auto) | kernel ms (stream) | speed-up | "
                "kernel GB/s | of copy | peak MiB composite / kernel / in place |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    const std::vector<Shape> shapes = {{8192, 16384, torch::kBFloat16},
                                       {4096, 49152, torch::kBFloat16},
                                       {4096, 49152, torch::kFloat32},
                                       {4096, 32000, torch::kBFloat16},
                                       {1024, 256000, torch::kBFloat16}};
    struct Loss {
      const char* name;
      train::KdOptions o;
    };
    std::vector<Loss> losses(3);
    losses[0] = {"tvd", {}};
    losses[0].o.loss = config::Loss::kTvd;
    losses[1] = {"tvdpp q token", {}};
    losses[2] = {"tvdpp uniform batch", {}};
    losses[2].o.tvdpp_weighting = config::TvdppWeighting::kUniform,
    losses[2].o.tvdpp_scope = config::TvdppScope::kBatch;
    nlohmann::json rows = nlohmann::json::array();
    constexpr int kSets = 2;
    for (const Shape& sh : shapes) {
      const auto opts = torch::TensorOptions().dtype(sh.dtype).device(torch::kCUDA);
      std::vector<Tensor> student, teacher;
      for (int i = 0; i < kSets; ++i) {
        student.push_back(torch::randn({sh.rows, sh.vocab}, opts) * 3);
        teacher.push_back(torch::randn({sh.rows, sh.vocab}, opts) * 3);
      }
      const double bytes = static_cast<double>(sh.rows * sh.vocab) * 3 * torch::elementSize(sh.dtype);
      for (const Loss& l : losses) {
        auto composite = [&](int i) {
          Tensor s = student[i % kSets].detach().requires_grad_(true);
          train::kd_loss(s, teacher[i % kSets], l.o).backward();
        };
        auto fused = [&](int i, bool cache) {
          train::kd_loss_forward_backward(student[i % kSets], teacher[i % kSets], l.o, {}, cache);
        };
        const double t_comp = median_ms(static_cast<int>(iters), composite);
        const double t_cache = median_ms(static_cast<int>(iters), [&](int i) { fused(i, true); });
        const double t_stream = median_ms(static_cast<int>(iters), [&](int i) { fused(i, false); });
        const double t_best = std::min(t_cache, t_stream);
        const double m_comp = peak_mib([&] { composite(0); });
        const double m_fused = peak_mib([&] { fused(0, true); });
        Tensor scratch = student[0].clone();
        const double m_inplace = peak_mib([&] { train::kd_loss_forward_backward(scratch, teacher[0], l.o, scratch); });
        const bool cached = kernels::tvd_uses_cache(kernel_args(sh));
        const double gbps = bytes / (t_best * 1e-3) / 1e9;
        std::printf("| %ld x %ld | %s | %s%s | %.3f | %.3f | %.3f | %.1fx | %.0f | %.0f%% | %.0f / %.0f / %.1f |\n",
                    static_cast<long>(sh.rows), static_cast<long>(sh.vocab), dtype_name(sh.dtype), l.name, cached ? " (row cached)" : "", t_comp,
                    t_cache, t_stream, t_comp / t_best, gbps, 100 * gbps / copy_gbps, m_comp, m_fused, m_inplace);
        std::fflush(stdout);
        rows.push_back({{"rows", sh.rows}, {"vocab", sh.vocab}, {"dtype", dtype_name(sh.dtype)}, {"loss", l.name}, {"row_cached", cached},
                        {"composite_ms", t_comp}, {"kernel_auto_ms", t_cache}, {"kernel_stream_ms", t_stream},
                        {"kernel_gbps", gbps}, {"copy_gbps", copy_gbps}, {"peak_mib_composite", m_comp},
                        {"peak_mib_kernel", m_fused}, {"peak_mib_in_place", m_inplace}});
      }
    }
    bench::write_result({{"device", prop.name}, {"copy_gbps", copy_gbps}, {"rows", rows}}, out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tvd: %s\n", e.what());
    return 1;
  }
  return 0;
}
#endif  // DRAFTALIGN_WITH_CUDA
