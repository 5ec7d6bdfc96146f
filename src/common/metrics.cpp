#include "common/metrics.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"

namespace draftalign {

MetricsLog::MetricsLog(const std::filesystem::path& path) {
  if (log::rank() != 0) return;
  fs::ensure_dir(path.parent_path());
  file_ = std::fopen(path.c_str(), "a");
  DA_CHECK(file_ != nullptr, path.string(), ": cannot open metrics log (", std::strerror(errno), ")");
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(nlohmann::json record) {
  if (!file_) return;
  if (!record.contains("time")) {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    record["time"] = std::chrono::duration<double>(now).count();
  }
  const std::string line = record.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace draftalign
