// Linked with libtorch: std::filesystem calls must reach libstdc++, not the copies libtorch.so exports (some of which
// crash when called from here). CMakeLists.txt puts libstdc++ first in every torch-linked executable for this.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace draftalign {
namespace {

TEST(TorchLink, StdFilesystemWorksInATorchLinkedBinary) {
  testing::ScratchDir dir;
  const auto deep = dir / "a/b/c";
  std::filesystem::create_directories(deep);
  testing::write_text(deep / "f.txt", "x");
  EXPECT_TRUE(std::filesystem::equivalent(deep / "f.txt", dir / "a/b/../b/c/f.txt"));
  EXPECT_EQ(std::filesystem::remove_all(dir / "a"), 4u);
  EXPECT_FALSE(std::filesystem::exists(dir / "a"));
}

}  // namespace
}  // namespace draftalign
