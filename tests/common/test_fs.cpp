#include <gtest/gtest.h>

#include "common/error.h"
#include "common/fs.h"
#include "test_util.h"

namespace draftalign {
namespace {

using testing::ScratchDir;

TEST(AtomicWrite, CreatesParentsAndLeavesNoTempFile) {
  ScratchDir dir;
  const auto target = dir / "a/b/c.txt";
  fs::write_file_atomic(target, "hello\n");
  EXPECT_EQ(fs::read_file(target), "hello\n");
  fs::write_file_atomic(target, "second");
  EXPECT_EQ(fs::read_file(target), "second");
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(target.parent_path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1) << "a temporary file was left behind";
}

TEST(AtomicWrite, FailureKeepsWhatWasThere) {
  ScratchDir dir;
  // The final name is a non-empty directory: the rename must fail and the directory (and its file) survive.
  const auto target = dir / "out";
  testing::write_text(target / "keep.txt", "precious");
  const std::string error = testing::error_of([&] { fs::write_file_atomic(target, "new"); });
  EXPECT_HAS(error, target.string());
  EXPECT_HAS(error, "unchanged");
  EXPECT_EQ(testing::read_text(target / "keep.txt"), "precious");
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1) << "the temporary file was not removed";
}

TEST(AtomicDir, CommitReplacesAbandonLeavesThePrevious) {
  ScratchDir dir;
  const auto out = dir / "ckpt";
  {
    fs::AtomicDir d(out);
    testing::write_text(d.path() / "a.txt", "first");
    EXPECT_FALSE(std::filesystem::exists(out)) << "visible before commit";
    d.commit();
  }
  EXPECT_EQ(testing::read_text(out / "a.txt"), "first");
  {
    fs::AtomicDir d(out);  // abandoned: an exception on the way
    testing::write_text(d.path() / "a.txt", "second");
  }
  EXPECT_EQ(testing::read_text(out / "a.txt"), "first");
  {
    fs::AtomicDir d(out);
    testing::write_text(d.path() / "b.txt", "third");
    d.commit();
  }
  EXPECT_FALSE(std::filesystem::exists(out / "a.txt")) << "the old directory is replaced, not merged";
  EXPECT_EQ(testing::read_text(out / "b.txt"), "third");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()), 1)
      << "temporary or old directories left behind";
}

TEST(ReadFile, MissingFileNamesThePath) {
  ScratchDir dir;
  EXPECT_HAS(testing::error_of([&] { fs::read_file(dir / "nope.bin"); }), "nope.bin");
}

TEST(EnsureDir, RefusesAFileInTheWay) {
  ScratchDir dir;
  testing::write_text(dir / "f", "x");
  EXPECT_THROW(fs::ensure_dir(dir / "f"), Error);
  EXPECT_NO_THROW(fs::ensure_dir(dir / "d/e"));
  EXPECT_TRUE(std::filesystem::is_directory(dir / "d/e"));
}

}  // namespace
}  // namespace draftalign

namespace draftalign {
namespace {

TEST(Fs, RemoveTreeRemovesEverythingUnderAPathAndToleratesAMissingOne) {
  testing::ScratchDir dir;
  std::filesystem::create_directories(dir / "a/b/c");
  testing::write_text(dir / "a/b/c/f.txt", "x");
  testing::write_text(dir / "a/g.txt", "y");
  std::filesystem::create_symlink(dir / "a/g.txt", dir / "a/b/link");
  EXPECT_EQ(fs::remove_tree(dir / "a"), 6u) << "a, b, c, f.txt, g.txt and the link (not its target twice)";
  EXPECT_FALSE(std::filesystem::exists(dir / "a"));
  EXPECT_EQ(fs::remove_tree(dir / "a"), 0u);
}

}  // namespace
}  // namespace draftalign
