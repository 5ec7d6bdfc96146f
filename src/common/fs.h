// fs.h: whole-file reads and atomic writes. A writer never leaves a half-written file under the final name: it writes
// "<path>.tmp-<pid>", fsyncs, then renames over <path>, so what was there before survives any failure.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace draftalign::fs {

namespace stdfs = std::filesystem;

// Reads a whole file; throws Error naming the path when it cannot.
std::string read_file(const stdfs::path& path);

// Removes `path` and everything under it (no error if it is missing); returns how many entries were removed. Use it
// instead of std::filesystem::remove_all: libtorch.so exports its own copy of that function, and where the dynamic
// linker binds to it (seen on a GPU machine's PyTorch) the call crashes. This one is plain POSIX (nftw).
uintmax_t remove_tree(const stdfs::path& path);

// Writes `data` to `path` atomically (temp file + fsync + rename); creates the parent directories.
void write_file_atomic(const stdfs::path& path, std::string_view data);

// Writes several files as one: all are written and synced to temporary files before any is renamed into place, so
// a failed write (a full disk) leaves every previous file as it was. For outputs read together (a report).
void write_files_atomic(const std::vector<std::pair<stdfs::path, std::string>>& files);

// Streams a file to "<path>.tmp-<pid>" and renames it over `path` on commit(); destroyed uncommitted (an exception
// on the way), it removes the temporary file and leaves `path` as it was. For files too large to build in memory.
class AtomicWriter {
 public:
  explicit AtomicWriter(const stdfs::path& path);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(const void* data, size_t bytes);
  void sync();    // fsync + close: the data is on disk (errors name the file and errno; nothing is replaced)
  void commit();  // sync if not yet, then rename over the path

 private:
  stdfs::path path_;
  std::string tmp_;
  int fd_ = -1;
  bool renamed_ = false;
  int slot_ = -1;  // common/preempt.h: a second signal removes the temporary file
};

// A test hook for the failure paths of AtomicWriter (every atomic write goes through it): the environment variable
// DRAFTALIGN_FAULT = "<action>@<text>[#<n>]" acts at the n-th (default first) write point of this process whose
// final path contains <text>. Write points are each write() and the sync (fsync + close) of a writer. <action>:
// ENOSPC or EIO (that call fails with that errno, as on a full disk or a failing device), or stall (it sleeps for a
// minute first, so a test can signal the process mid-write). DRAFTALIGN_FAULT = "trace" prints every write point to
// stderr as "write point: <path> write|sync". Unset (always, outside tests) it costs one branch per call.
void reset_fault_injection_for_test();

// Creates `dir` (and parents); throws Error naming it when it exists as a non-directory or cannot be made.
void ensure_dir(const stdfs::path& dir);

// A directory built beside `dir` and swapped into place: files are written under path(); commit() renames it to
// `dir` (a previous `dir` is replaced only then); destroyed uncommitted, it removes what it wrote. For outputs that
// are several files (checkpoints, exported models) and must be complete or absent.
class AtomicDir {
 public:
  explicit AtomicDir(const stdfs::path& dir);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const stdfs::path& path() const { return tmp_; }
  void commit();

 private:
  stdfs::path dir_, tmp_;
  bool done_ = false;
};

}  // namespace draftalign::fs
