// The CPU's host memory set-up (common/device.h): choosing the CPU installs the huge-page allocator for LibTorch. And
// train/runtime.h, the one place that picks a device: cuda:LOCAL_RANK under a launcher, the CPU threads shared among
// the local ranks, the target's dtype.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

#include "common/device.h"
#include "test_util.h"
#include "train/runtime.h"

namespace draftalign {
namespace {

TEST(HostMemory, ChoosingTheCpuBacksLargeTensorsWithHugePageAlignedBlocks) {
  ASSERT_TRUE(train::compute_device("cpu").is_cpu());
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  // glibc's own blocks are 16-byte aligned: eight 2 MB-aligned in a row are not chance.
  std::vector<torch::Tensor> large;
  for (int i = 0; i < 8; ++i) {
    large.push_back(torch::empty({(3 << 20) / 4 + i}, torch::kFloat32));  // 3 MB and a little more
    EXPECT_EQ(reinterpret_cast<uintptr_t>(large.back().data_ptr()) % kHuge, 0u) << "tensor " << i;
  }
  // A block freed and asked for again is served (the heap keeps it) and tensors still work.
  large.clear();
  torch::Tensor t = torch::arange(1 << 20, torch::kFloat32);
  EXPECT_EQ(t.sum().item<double>(), (double(1 << 20) - 1) * (1 << 20) / 2);
}

TEST(Runtime, EachLocalRankGetsItsOwnGpu) {
  using testing::error_of;
  using train::pick_device;
  EXPECT_EQ(pick_device(config::Device::kAuto, 3, 8),
            torch::Device(torch::kCUDA, 3));  // torchrun --nproc-per-node=8, LOCAL_RANK=3
  EXPECT_EQ(pick_device(config::Device::kCuda, 0, 1), torch::Device(torch::kCUDA, 0));
  EXPECT_EQ(pick_device(config::Device::kCpu, 3, 8), torch::Device(torch::kCPU));
  EXPECT_EQ(pick_device(config::Device::kAuto, 3, 0), torch::Device(torch::kCPU));
  EXPECT_HAS(error_of([] { pick_device(config::Device::kCuda, 0, 0); }),
             "run.device is cuda, but no CUDA device is visible");
  EXPECT_HAS(error_of([] { pick_device(config::Device::kAuto, 8, 8); }),
             "this process has LOCAL_RANK 8 but 8 CUDA device(s) are visible");
  EXPECT_HAS(error_of([] { train::compute_device("gpu"); }), "--device: expected one of: auto, cpu, cuda, got 'gpu'");

  EXPECT_EQ(train::pick_threads(0, 16, 8), 2);
  EXPECT_EQ(train::pick_threads(0, 2, 8), 1);
  EXPECT_EQ(train::pick_threads(3, 16, 8), 3);
  EXPECT_EQ(train::pick_threads(0, 16, 8, 1), 1);  // OMP_NUM_THREADS, as torchrun sets it
  EXPECT_EQ(train::pick_threads(3, 16, 8, 1), 3);  // run.threads wins
  EXPECT_EQ(train::pick_dtype(config::Dtype::kAuto, torch::Device(torch::kCUDA, 1)), torch::kBFloat16);
  EXPECT_EQ(train::pick_dtype(config::Dtype::kAuto, torch::kCPU), torch::kFloat32);
  EXPECT_EQ(train::pick_dtype(config::Dtype::kFp32, torch::Device(torch::kCUDA, 0)), torch::kFloat32);
  EXPECT_EQ(train::pick_dtype(config::Dtype::kBf16, torch::kCPU), torch::kBFloat16);
}

// Under a launcher's environment: the rank and the thread share come from it (the device is the CPU here).
TEST(Runtime, MakeComputeReadsTheLauncher) {
  const int threads_before = torch::get_num_threads();
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const std::string omp_before = omp ? omp : "";
  unsetenv("OMP_NUM_THREADS");
  setenv("RANK", "1", 1), setenv("WORLD_SIZE", "2", 1), setenv("LOCAL_RANK", "1", 1), setenv("LOCAL_WORLD_SIZE", "2", 1);
  config::RunSection run;
  run.device = config::Device::kCpu;
  const train::Compute c = train::make_compute(run);
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}) unsetenv(v);
  EXPECT_EQ(c.env.local_rank, 1);
  EXPECT_TRUE(c.device.is_cpu());
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(c.threads, std::max(1, cores / 2));
  EXPECT_EQ(torch::get_num_threads(), c.threads);
  setenv("OMP_NUM_THREADS", "3", 1);
  EXPECT_EQ(train::make_compute(run).threads, 3);
  run.threads = 2;
  EXPECT_EQ(train::make_compute(run).threads, 2);
  run.threads = 0;
  setenv("OMP_NUM_THREADS", "two", 1);
  EXPECT_HAS(testing::error_of([&] { train::make_compute(run); }), "OMP_NUM_THREADS='two' is not a positive number");
  if (omp_before.empty())
    unsetenv("OMP_NUM_THREADS");
  else
    setenv("OMP_NUM_THREADS", omp_before.c_str(), 1);
  torch::set_num_threads(threads_before);
}

}  // namespace
}  // namespace draftalign
