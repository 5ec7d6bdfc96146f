// device.h: what LibTorch and CUDA this binary runs with, and the host memory of CPU compute (the choice of device
// is train/runtime.h's).
// The only torch-facing piece of src/common; kept out of the torch-free headers so they compile fast.
#pragma once

#include <cstdint>
#include <string>

namespace draftalign {

// "LibTorch 2.11.0, CUDA kernels built: yes (sm_80, sm_90), CUDA devices: 0" and the like, one fact per line.
std::string runtime_summary();

// What a report records about where it was measured.
struct RuntimeEnvironment {
  std::string device_name;  // the GPU's name, or the CPU's model name
  std::string libtorch;     // LibTorch version
  std::string cuda;         // CUDA runtime version, or "none"
  std::string git_commit;   // `git rev-parse --short HEAD` in the working directory (+ "-dirty"), or "unknown"
  int64_t threads = 0;      // intra-op CPU threads
};
RuntimeEnvironment runtime_environment(const std::string& device);

// Host memory set up for computing on the CPU (once per process; later calls do nothing). glibc maps every block over
// 32 MB afresh and unmaps it on free, so each training step faulted in and zeroed its large tensors again (the demo
// drafter's logits alone are [8 x 256, 49152] fp32, 400 MB). From here on freed memory stays in the heap for reuse, and
// tensors of 2 MB or more are backed by transparent huge pages: the demo's training step is 1.4x faster
// (bench/host_memory.sh), for 1.4x the peak RSS (2.9 GB instead of 2.0). A CUDA run's host memory is left as it is,
// and so is every run's with DRAFTALIGN_HOST_MEMORY=plain in the environment.
void use_cpu_compute_memory();

}  // namespace draftalign
