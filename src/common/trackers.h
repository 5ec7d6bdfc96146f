// trackers.h: where a training run's metrics go (run.report_to). Every record is one line of <out>/metrics.jsonl
// (always: resume and the evaluation report read it back) and, when asked for,
//   tensorboard  a TensorBoard event file in <out>/tensorboard/ (TFRecord framing, Event/Summary protos encoded
//                here; no TensorFlow or protobuf library), one scalar per numeric field, tagged with the field's name
//   wandb        a Weights & Biases run fed by a Python sidecar (tools/wandb_sidecar.py, embedded) that follows
//                metrics.jsonl; it starts with the run and stops with it, and runs offline when no API key is set
// Only rank 0 has trackers.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/metrics.h"

namespace draftalign {

class Coprocess;

// Scalars in a TensorBoard event file, appended and flushed as they come (TensorBoard reads the file while it grows).
class TensorBoardWriter {
 public:
  // Creates `dir` and a new events.out.tfevents.<time>.<host>.<pid> file in it.
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalars(int64_t step, double wall_time, const std::vector<std::pair<std::string, float>>& values);
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_record(const std::string& event);
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

struct TrackerSettings {
  std::vector<std::string> report_to = {"jsonl"};  // jsonl (always written), tensorboard, wandb
  std::string wandb_project = "draftalign";
  std::string run_name;     // the W&B run's display name
  std::string config_yaml;  // the resolved configuration, the W&B run's config
};

class Trackers {
 public:
  Trackers();  // disabled: write() does nothing (ranks other than 0)
  // <out>/metrics.jsonl is appended to as it stands (a resumed run has truncated it to its checkpoint first). The
  // TensorBoard file is rewritten from the records already there, so a resumed run shows one curve without the steps
  // it redid. The W&B sidecar logs the records written from now on into the run whose id <out>/wandb/run-id keeps
  // (a fresh run gets a new id; a resumed run continues the same W&B run).
  Trackers(const std::filesystem::path& out, const TrackerSettings& settings, bool resumed);
  ~Trackers();  // the W&B sidecar reads the last records and finishes its run before this returns
  Trackers(const Trackers&) = delete;
  Trackers& operator=(const Trackers&) = delete;

  // Adds a "time" field (seconds since the Unix epoch) and writes `record` to every tracker.
  void write(nlohmann::json record);

 private:
  void to_tensorboard(const nlohmann::json& record);

  std::unique_ptr<MetricsLog> jsonl_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  std::unique_ptr<Coprocess> wandb_;
};

}  // namespace draftalign
