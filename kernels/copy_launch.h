// copy_launch.h: launcher of the vectorised device-to-device copy kernel (copy.cu), in raw-pointer terms so the .cu
// file needs no ATen header. `stream` is a cudaStream_t; the return value a cudaError_t (0 = success).
#pragma once

#include <cstddef>

namespace draftalign::kernels {

int launch_copy(const void* src, void* dst, size_t bytes, void* stream);

}  // namespace draftalign::kernels
