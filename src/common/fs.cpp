#include "common/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>

#include "common/error.h"
#include "common/preempt.h"

namespace draftalign::fs {

namespace {
uintmax_t removed_count = 0;  // nftw's callback has no user pointer; remove_tree is not called concurrently
int remove_entry(const char* p, const struct stat*, int, struct FTW*) {
  if (std::remove(p) == 0) ++removed_count;
  return 0;  // carry on past an entry that could not be removed
}

// DRAFTALIGN_FAULT (fs.h), parsed on first use.
struct Fault {
  enum Action { kNone, kTrace, kFail, kStall } action = kNone;
  int error = 0;
  std::string match;
  int64_t nth = 1, seen = 0;
};

Fault parse_fault() {
  Fault f;
  const char* v = std::getenv("DRAFTALIGN_FAULT");
  if (v == nullptr || *v == '\0') return f;
  const std::string spec = v;
  if (spec == "trace") {
    f.action = Fault::kTrace;
    return f;
  }
  const size_t at = spec.find('@'), hash = spec.rfind('#');
  DA_CHECK(at != std::string::npos, "DRAFTALIGN_FAULT='", spec, "': expected <ENOSPC|EIO|stall>@<text>[#<n>] or trace");
  const std::string action = spec.substr(0, at);
  f.match = spec.substr(at + 1, hash == std::string::npos || hash < at ? std::string::npos : hash - at - 1);
  if (hash != std::string::npos && hash > at) f.nth = std::stoll(spec.substr(hash + 1));
  if (action == "ENOSPC")
    f.action = Fault::kFail, f.error = ENOSPC;
  else if (action == "EIO")
    f.action = Fault::kFail, f.error = EIO;
  else if (action == "stall")
    f.action = Fault::kStall;
  else
    throw Error(str_cat("DRAFTALIGN_FAULT='", spec, "': unknown action '", action, "'"));
  return f;
}

Fault& fault() {
  static Fault f = parse_fault();
  return f;
}

// At a write point of `path`: the errno to fail with, or 0.
int fault_at(const stdfs::path& path, const char* point) {
  Fault& f = fault();
  if (f.action == Fault::kNone) return 0;
  if (f.action == Fault::kTrace) {
    std::fprintf(stderr, "write point: %s %s\n", path.c_str(), point);
    return 0;
  }
  if (path.string().find(f.match) == std::string::npos || ++f.seen != f.nth) return 0;
  if (f.action == Fault::kStall) {
    std::fprintf(stderr, "DRAFTALIGN_FAULT: stalling at %s %s\n", path.c_str(), point);
    for (int i = 0; i < 600; ++i) ::usleep(100 * 1000);
    return 0;
  }
  return f.error;
}

std::string errno_text(int err) { return str_cat(std::strerror(err), ", errno ", err); }

}  // namespace

void reset_fault_injection_for_test() { fault() = parse_fault(); }

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
  slot_ = preempt::register_temp_file(tmp_);
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!renamed_) ::unlink(tmp_.c_str());
  preempt::unregister_temp_file(slot_);
}

void AtomicWriter::write(const void* data, size_t bytes) {
  DA_CHECK(fd_ >= 0, path_.string(), ": write after sync");
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  if (const int err = fault_at(path_, "write"))
    throw Error(str_cat(tmp_, ": write failed (", errno_text(err), "); ", path_.string(), " is unchanged"));
  while (done < bytes) {
    ssize_t n = ::write(fd_, p + done, bytes - done);
    if (n < 0 && errno == EINTR) continue;
    DA_CHECK(n > 0, tmp_, ": write failed (", errno_text(n == 0 ? EIO : errno), "); ", path_.string(), " is unchanged");
    done += static_cast<size_t>(n);
  }
}

void AtomicWriter::sync() {
  if (fd_ < 0) return;
  int err = fault_at(path_, "sync");
  if (err == 0 && ::fsync(fd_) != 0) err = errno;
  if (::close(fd_) != 0 && err == 0) err = errno;  // NFS reports a failed write at close
  fd_ = -1;
  if (err != 0)
    throw Error(str_cat(tmp_, ": cannot finish writing (", errno_text(err), "); ", path_.string(), " is unchanged"));
}

void AtomicWriter::commit() {
  DA_CHECK(!renamed_, path_.string(), ": committed twice");
  sync();
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw Error(str_cat(tmp_, ": cannot rename to ", path_.string(), " (", errno_text(errno),
                        "); the previous file is unchanged"));
  renamed_ = true;
}

void write_file_atomic(const stdfs::path& path, std::string_view data) {
  AtomicWriter w(path);
  w.write(data.data(), data.size());
  w.commit();
}

void write_files_atomic(const std::vector<std::pair<stdfs::path, std::string>>& files) {
  std::vector<std::unique_ptr<AtomicWriter>> writers;
  for (const auto& [path, data] : files) {
    writers.push_back(std::make_unique<AtomicWriter>(path));
    writers.back()->write(data.data(), data.size());
  }
  for (auto& w : writers) w->sync();  // every file is on disk before the first replaces its old version
  for (auto& w : writers) w->commit();
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
