#include "common/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/error.h"

namespace draftalign::fs {

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

void write_file_atomic(const stdfs::path& path, std::string_view data) {
  ensure_dir(path.parent_path());
  const std::string tmp = path.string() + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  DA_CHECK(fd >= 0, tmp, ": cannot create (", std::strerror(errno), ")");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(str_cat(tmp, ": write failed (", std::strerror(err), "); ", path.string(), " is unchanged"));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw Error(str_cat(path.string(), ": cannot finish atomic write (", std::strerror(synced ? errno : err),
                        "); the previous file is unchanged"));
  }
}

}  // namespace draftalign::fs
