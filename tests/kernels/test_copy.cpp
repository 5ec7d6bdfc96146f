// kernels/copy: the CUDA kernel against the plain-LibTorch reference on fresh random inputs (Gpu*), and the CPU path.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/error.h"
#include "kernels/copy.h"

namespace draftalign::kernels {
namespace {

TEST(Copy, CpuPathIsTheReference) {
  torch::manual_seed(0);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kInt64}) {
    torch::Tensor x = torch::randn({7, 33}).to(dtype);
    torch::Tensor y = copy(x);
    EXPECT_TRUE(torch::equal(x, y));
    EXPECT_NE(x.data_ptr(), y.data_ptr()) << "a copy, not a view";
  }
  torch::Tensor t = torch::randn({16, 9}).t();  // not contiguous
  torch::Tensor y = copy(t);
  EXPECT_TRUE(y.is_contiguous());
  EXPECT_TRUE(torch::equal(t, y));
}

TEST(Copy, BandwidthNeedsCuda) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a CUDA device is visible";
  EXPECT_THROW(measure_copy_bandwidth(1 << 20, 3), Error);
}

TEST(GpuCopy, MatchesReferenceOnOddSizesAndOffsets) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(1);
  auto opts = torch::TensorOptions().dtype(torch::kUInt8).device(torch::kCUDA);
  for (int64_t n : {1, 15, 16, 17, 4096 + 3, (1 << 22) + 5}) {
    for (int64_t offset : {0, 1, 8}) {
      torch::Tensor base = torch::randint(0, 255, {n + offset}, opts);
      torch::Tensor src = base.narrow(0, offset, n);  // misaligned when offset % 16 != 0
      torch::Tensor out = copy(src);
      torch::cuda::synchronize();
      EXPECT_TRUE(torch::equal(out, copy_reference(src))) << "n=" << n << " offset=" << offset;
    }
  }
  torch::Tensor f = torch::randn({333, 1027}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16));
  EXPECT_TRUE(torch::equal(copy(f), f));
}

TEST(GpuCopy, BandwidthIsMeasured) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const Bandwidth bw = measure_copy_bandwidth(64 << 20, 5);
  EXPECT_GT(bw.kernel_gbps, 0);
  EXPECT_GT(bw.torch_gbps, 0);
}

}  // namespace
}  // namespace draftalign::kernels
