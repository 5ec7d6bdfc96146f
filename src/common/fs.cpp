#include "common/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "common/error.h"

namespace draftalign::fs {

namespace {
uintmax_t removed_count = 0;  // nftw's callback has no user pointer; remove_tree is not called concurrently
int remove_entry(const char* p, const struct stat*, int, struct FTW*) {
  if (std::remove(p) == 0) ++removed_count;
  return 0;  // carry on past an entry that could not be removed
}
}  // namespace

uintmax_t remove_tree(const stdfs::path& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return 0;
  removed_count = 0;
  nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return removed_count;
}

std::string read_file(const stdfs::path& path) {
  std::ifstream in(path, std::ios::binary);
  DA_CHECK(in, path.string(), ": cannot open for reading (", std::strerror(errno), ")");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  DA_CHECK(!in.bad(), path.string(), ": read error");
  return data;
}

void ensure_dir(const stdfs::path& dir) {
  if (dir.empty()) return;
  std::error_code ec;
  stdfs::create_directories(dir, ec);
  DA_CHECK(!ec && stdfs::is_directory(dir), dir.string(), ": cannot create directory (",
           ec ? ec.message() : "exists and is not a directory", ")");
}

AtomicWriter::AtomicWriter(const stdfs::path& path)
    : path_(path), tmp_(path.string() + ".tmp-" + std::to_string(::getpid())) {
  ensure_dir(path.parent_path());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  DA_CHECK(fd_ >= 0, tmp_, ": cannot create (", std::strerror(errno), ")");
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicWriter::write(const void* data, size_t bytes) {
  DA_CHECK(fd_ >= 0, path_.string(), ": write after commit");
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < bytes) {
    ssize_t n = ::write(fd_, p + done, bytes - done);
    if (n < 0 && errno == EINTR) continue;
    DA_CHECK(n > 0, tmp_, ": write failed (", std::strerror(errno), "); ", path_.string(), " is unchanged");
    done += static_cast<size_t>(n);
  }
}

void AtomicWriter::commit() {
  DA_CHECK(fd_ >= 0, path_.string(), ": committed twice");
  const bool synced = ::fsync(fd_) == 0;
  ::close(fd_);
  fd_ = -1;
  if (!synced || ::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error(str_cat(path_.string(), ": cannot finish atomic write (", std::strerror(err),
                        "); the previous file is unchanged"));
  }
}

void write_file_atomic(const stdfs::path& path, std::string_view data) {
  AtomicWriter w(path);
  w.write(data.data(), data.size());
  w.commit();
}

AtomicDir::AtomicDir(const stdfs::path& dir)
    : dir_(dir), tmp_(dir.string() + ".tmp-" + std::to_string(::getpid())) {
  ensure_dir(dir.parent_path());
  remove_tree(tmp_);  // left by a killed run with the same pid
  ensure_dir(tmp_);
}

AtomicDir::~AtomicDir() {
  if (done_) return;
  remove_tree(tmp_);
}

void AtomicDir::commit() {
  DA_CHECK(!done_, dir_.string(), ": committed twice");
  std::error_code ec;
  const stdfs::path old = dir_.string() + ".old-" + std::to_string(::getpid());
  const bool had = stdfs::exists(dir_);
  if (had) stdfs::rename(dir_, old, ec);
  DA_CHECK(!ec, dir_.string(), ": cannot move the previous directory aside (", ec.message(), ")");
  stdfs::rename(tmp_, dir_, ec);
  if (ec) {
    if (had) stdfs::rename(old, dir_);
    throw Error(str_cat(dir_.string(), ": cannot finish writing (", ec.message(), "); the previous one is unchanged"));
  }
  done_ = true;
  if (had) remove_tree(old);
}

}  // namespace draftalign::fs
