// The CPU's host memory set-up (common/device.h): choosing the CPU installs the huge-page allocator for LibTorch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>

#include "common/device.h"

namespace draftalign {
namespace {

TEST(HostMemory, ChoosingTheCpuBacksLargeTensorsWithHugePageAlignedBlocks) {
  ASSERT_EQ(resolve_device("cpu"), "cpu");
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

}  // namespace
}  // namespace draftalign
