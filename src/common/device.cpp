#include "common/device.h"

#include <torch/torch.h>
#include <torch/version.h>

#include "common/error.h"

namespace draftalign {

std::string runtime_summary() {
  const bool built = DRAFTALIGN_WITH_CUDA != 0;
  return str_cat("LibTorch ", TORCH_VERSION, "\n", "draftalign CUDA kernels built: ", built ? "yes (sm_80, sm_90)" : "no",
                 "\n", "CUDA available: ", torch::cuda::is_available() ? "yes" : "no", ", devices visible: ",
                 static_cast<int>(torch::cuda::device_count()), "\n", "CPU threads: ", at::get_num_threads(), "\n");
}

std::string resolve_device(const std::string& requested) {
  const bool cuda = torch::cuda::is_available();
  if (requested == "cpu") return "cpu";
  if (requested == "cuda") {
    DA_CHECK(cuda, "run.device is cuda, but no CUDA device is visible (CUDA devices: ", torch::cuda::device_count(),
             "); use run.device=cpu or auto");
    return "cuda";
  }
  return cuda ? "cuda" : "cpu";
}

}  // namespace draftalign
