// copy.h: device copy in torch::Tensor terms, and the copy-bandwidth measurement the kernel benchmarks divide by.
#pragma once

#include <torch/types.h>

namespace draftalign::kernels {

// A contiguous copy of `src`. CUDA tensors go through the vectorised kernel of copy.cu; CPU tensors (and builds
// without CUDA) through the plain-LibTorch reference, src.contiguous().clone().
torch::Tensor copy(const torch::Tensor& src);

// The plain-LibTorch reference of copy().
torch::Tensor copy_reference(const torch::Tensor& src);

struct Bandwidth {
  double kernel_gbps = 0;  // copy.cu
  double torch_gbps = 0;   // Tensor::copy_ between the same buffers
};

// Device-to-device copy bandwidth on the current CUDA device: bytes read + bytes written per second, median of
// `iters` timed copies of `bytes` bytes after a warm-up. Throws Error without a CUDA device.
Bandwidth measure_copy_bandwidth(int64_t bytes, int iters);

}  // namespace draftalign::kernels
