// device.h: what LibTorch and CUDA this binary runs with, and the choice of device for `run.device`.
// The only torch-facing piece of src/common; kept out of the torch-free headers so they compile fast.
#pragma once

#include <string>

namespace draftalign {

// "LibTorch 2.11.0, CUDA kernels built: yes (sm_80, sm_90), CUDA devices: 0" and the like, one fact per line.
std::string runtime_summary();

// "cuda" or "cpu" for a `run.device` value of auto / cpu / cuda; cuda without a device is an Error.
std::string resolve_device(const std::string& requested);

}  // namespace draftalign
