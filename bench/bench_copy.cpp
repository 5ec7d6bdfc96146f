// bench_copy: device-to-device copy bandwidth of kernels/copy.cu next to Tensor::copy_ on the same buffers.
// This is the "measured copy bandwidth" that the memory-bound kernel benchmarks report their GB/s against.
// Usage: bench_copy [MiB=1024] [iters=20]
#include <cstdio>
#include <cstdlib>

#include "train/runtime.h"
#include "kernels/copy.h"

int main(int argc, char** argv) {
  const long mib = argc > 1 ? std::atol(argv[1]) : 1024;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 20;
  if (!draftalign::train::compute_device("auto").is_cuda()) {
    std::printf("bench_copy: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  const auto bw = draftalign::kernels::measure_copy_bandwidth(static_cast<int64_t>(mib) << 20, iters);
  std::printf("| copy of %ld MiB (read + write) | GB/s |\n|---|---|\n", mib);
  std::printf("| kernels/copy.cu | %.1f |\n| Tensor::copy_ | %.1f |\n| ratio ours / torch | %.3f |\n", bw.kernel_gbps,
              bw.torch_gbps, bw.kernel_gbps / bw.torch_gbps);
  return 0;
}
