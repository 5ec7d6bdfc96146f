// copy.cu: a grid-stride, 16-byte vectorised device-to-device copy.
// It is the bandwidth yardstick for the memory-bound kernels (the fused TVD++ loss reads two [N, V] logit tensors
// and writes one): their achieved GB/s is reported as a fraction of what this copy reaches on the same device.
// Reads and writes each byte once; the tail that is not a multiple of 16 bytes is copied byte by byte.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/copy_launch.h"

namespace draftalign::kernels {
namespace {

__global__ void copy_vec16(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n_vec) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_vec; i += stride) dst[i] = src[i];
}

__global__ void copy_bytes(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, size_t n) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i];
}

}  // namespace

int launch_copy(const void* src, void* dst, size_t bytes, void* stream) {
  if (bytes == 0) return cudaSuccess;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool aligned = reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  const size_t n_vec = aligned ? bytes / 16 : 0;
  constexpr int kThreads = 256;
  if (n_vec > 0) {
    int device = 0, sms = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    // Enough blocks to fill every SM several times over; the grid-stride loop covers the rest.
    const size_t want = (n_vec + kThreads - 1) / kThreads;
    const unsigned blocks = static_cast<unsigned>(want < size_t(sms) * 8 ? want : size_t(sms) * 8);
    copy_vec16<<<blocks, kThreads, 0, s>>>(static_cast<const uint4*>(src), static_cast<uint4*>(dst), n_vec);
  }
  const size_t done = n_vec * 16, tail = bytes - done;
  if (tail > 0) {
    const unsigned blocks = static_cast<unsigned>((tail + kThreads - 1) / kThreads);
    copy_bytes<<<blocks, kThreads, 0, s>>>(static_cast<const uint8_t*>(src) + done, static_cast<uint8_t*>(dst) + done,
                                           tail);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace draftalign::kernels
