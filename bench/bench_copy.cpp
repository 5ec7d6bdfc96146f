// bench_copy: device-to-device copy bandwidth of kernels/copy.cu next to Tensor::copy_ on the same buffers.
// This is the "measured copy bandwidth" that the memory-bound kernel benchmarks report their GB/s against.
// Usage: bench_copy [--mib 1024] [--iters 20] [--out result.json]
#include <cstdio>

#include "bench/bench_args.h"
#include "kernels/copy.h"
#include "train/runtime.h"

int main(int argc, char** argv) {
  using namespace draftalign;
  int64_t mib = 1024, iters = 20;
  std::string out;
  if (!bench::parse_options(argc, argv, {{"--mib", &mib}, {"--iters", &iters}, {"--out", &out}})) return 2;
  if (!train::compute_device("auto").is_cuda()) {
    std::printf("bench_copy: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  const auto bw = kernels::measure_copy_bandwidth(mib << 20, static_cast<int>(iters));
  std::printf("| copy of %lld MiB (read + write) | GB/s |\n|---|---|\n", static_cast<long long>(mib));
  std::printf("| kernels/copy.cu | %.1f |\n| Tensor::copy_ | %.1f |\n| ratio ours / torch | %.3f |\n", bw.kernel_gbps,
              bw.torch_gbps, bw.kernel_gbps / bw.torch_gbps);
  bench::write_result({{"mib", mib}, {"iters", iters}, {"kernel_gbps", bw.kernel_gbps}, {"torch_gbps", bw.torch_gbps}},
                      out);
  return 0;
}
