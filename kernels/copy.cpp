#include "kernels/copy.h"

#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "common/error.h"

#if DRAFTALIGN_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "kernels/copy_launch.h"
#endif

namespace draftalign::kernels {

torch::Tensor copy_reference(const torch::Tensor& src) { return src.contiguous().clone(); }

torch::Tensor copy(const torch::Tensor& src) {
#if DRAFTALIGN_WITH_CUDA
  if (src.is_cuda()) {
    const torch::Tensor in = src.contiguous();
    torch::Tensor out = torch::empty_like(in);
    const size_t bytes = static_cast<size_t>(in.numel()) * in.element_size();
    const int rc = launch_copy(in.data_ptr(), out.data_ptr(), bytes, c10::cuda::getCurrentCUDAStream().stream());
    DA_CHECK(rc == 0, "copy kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(rc)));
    return out;
  }
#endif
  return copy_reference(src);
}

Bandwidth measure_copy_bandwidth(int64_t bytes, int iters) {
  DA_CHECK(torch::cuda::is_available(), "measure_copy_bandwidth needs a CUDA device; none is visible");
  DA_CHECK(bytes > 0 && iters > 0, "measure_copy_bandwidth: bytes and iters must be positive");
#if DRAFTALIGN_WITH_CUDA
  auto opts = torch::TensorOptions().dtype(torch::kUInt8).device(torch::kCUDA);
  torch::Tensor src = torch::randint(0, 255, {bytes}, opts), dst = torch::empty({bytes}, opts);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  auto median_gbps = [&](auto&& body) {
    for (int i = 0; i < 3; ++i) body();  // warm-up
    std::vector<float> ms(iters);
    for (int i = 0; i < iters; ++i) {
      cudaEventRecord(start, stream);
      body();
      cudaEventRecord(stop, stream);
      cudaEventSynchronize(stop);
      cudaEventElapsedTime(&ms[i], start, stop);
    }
    std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
    return 2.0 * static_cast<double>(bytes) / (ms[iters / 2] * 1e-3) / 1e9;
  };
  Bandwidth out;
  out.kernel_gbps = median_gbps([&] {
    const int rc = launch_copy(src.data_ptr(), dst.data_ptr(), static_cast<size_t>(bytes), stream);
    DA_CHECK(rc == 0, "copy kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(rc)));
  });
  out.torch_gbps = median_gbps([&] { dst.copy_(src); });
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return out;
#else
  throw Error("this draftalign was built without CUDA kernels (DRAFTALIGN_CUDA=OFF or no nvcc at configure time)");
#endif
}

}  // namespace draftalign::kernels
