#include "common/device.h"

#include <sys/mman.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "common/error.h"

#if DRAFTALIGN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace draftalign {

std::string runtime_summary() {
  const bool built = DRAFTALIGN_WITH_CUDA != 0;
  return str_cat("LibTorch ", TORCH_VERSION, "\n", "draftalign CUDA kernels built: ", built ? "yes (sm_80, sm_90)" : "no",
                 "\n", "CUDA available: ", torch::cuda::is_available() ? "yes" : "no", ", devices visible: ",
                 static_cast<int>(torch::cuda::device_count()), "\n", "CPU threads: ", at::get_num_threads(), "\n");
}

namespace {

// The first line a shell command prints, or "".
std::string first_line_of(const char* command) {
  std::FILE* pipe = ::popen(command, "r");
  if (pipe == nullptr) return "";
  char buf[512] = {0};
  const bool got = std::fgets(buf, sizeof buf, pipe) != nullptr;
  ::pclose(pipe);
  std::string line = got ? buf : "";
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

}  // namespace

RuntimeEnvironment runtime_environment(const std::string& device) {
  RuntimeEnvironment e;
  e.libtorch = TORCH_VERSION;
  e.cuda = "none";
  e.threads = at::get_num_threads();
#if DRAFTALIGN_WITH_CUDA
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess)
    e.cuda = str_cat(runtime / 1000, ".", (runtime % 1000) / 10);
  if (device == "cuda") {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) e.device_name = prop.name;
  }
#endif
  if (e.device_name.empty()) {
    const std::string cpu = first_line_of("grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//'");
    e.device_name = str_cat(device == "cuda" ? "cuda" : "cpu", cpu.empty() ? "" : ": " + cpu);
  }
  e.git_commit = first_line_of("git rev-parse --short HEAD 2>/dev/null");
  if (e.git_commit.empty()) {
    e.git_commit = "unknown";
  } else if (!first_line_of("git status --porcelain --untracked-files=no 2>/dev/null").empty()) {
    e.git_commit += "-dirty";
  }
  return e;
}

namespace {

// LibTorch's CPU allocator, but a block of 2 MB or more is 2 MB-aligned and advised to use huge pages (what
// THP_MEM_ALLOC_ENABLE=1 does in c10, which reads that variable once, before we could set it).
struct HugePageCpuAllocator final : c10::Allocator {
  static constexpr size_t kHuge = size_t{2} << 20;
  c10::DataPtr allocate(size_t n) override {
    void* p = nullptr;
    if (n < kHuge) {
      p = c10::alloc_cpu(n);
    } else {
      DA_CHECK(posix_memalign(&p, kHuge, n) == 0, "out of host memory: ", n, " bytes");
      madvise(p, (n + kHuge - 1) / kHuge * kHuge, MADV_HUGEPAGE);  // advice: a failure only means small pages
    }
    return {p, p, &c10::free_cpu, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &c10::free_cpu; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
};

}  // namespace

void use_cpu_compute_memory() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (const char* v = std::getenv("DRAFTALIGN_HOST_MEMORY"); v != nullptr && std::string(v) == "plain") return;
#if defined(__GLIBC__)
    mallopt(M_MMAP_MAX, 0);              // large blocks come from the heap (glibc still maps if the heap cannot grow)
    mallopt(M_TRIM_THRESHOLD, INT_MAX);  // and stay there once freed
#endif
    static HugePageCpuAllocator allocator;
    c10::SetCPUAllocator(&allocator, /*priority=*/1);
  });
}

}  // namespace draftalign
