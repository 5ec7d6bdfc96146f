// metrics.h: one JSON object per line (JSONL), appended and flushed as it goes, so a killed run keeps every line it
// logged and `jq`/pandas read the file while training runs. Only rank 0 opens the file.
#pragma once

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

namespace draftalign {

class MetricsLog {
 public:
  MetricsLog() = default;  // disabled: write() does nothing
  explicit MetricsLog(const std::filesystem::path& path);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Appends `record` as one line, with a "time" field (seconds since the Unix epoch) unless it has one.
  void write(nlohmann::json record);
  bool enabled() const { return file_ != nullptr; }

 private:
  std::FILE* file_ = nullptr;
};

}  // namespace draftalign
