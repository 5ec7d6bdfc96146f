#include "common/trackers.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>

#include "common/coprocess.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/wandb_sidecar_script.h"  // generated from tools/wandb_sidecar.py

namespace draftalign {
namespace {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

// --- CRC-32C and the protobuf wire format of tensorboard's Event ------------------------------------------------

std::array<uint32_t, 256> crc32c_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli, reflected
    t[i] = c;
  }
  return t;
}

// CRC-32C (Castagnoli), as TFRecord frames use it.
uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

// TFRecord stores CRCs masked (a CRC of data that holds CRCs is weak otherwise).
uint32_t masked_crc(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

template <class T>
void put_le(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) out.push_back(static_cast<char>((v & 0x7f) | 0x80)), v >>= 7;
  out.push_back(static_cast<char>(v));
}

// Field keys: (field number << 3) | wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
void put_key(std::string& out, int field, int wire) { put_varint(out, static_cast<uint64_t>(field << 3 | wire)); }

void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event { double wall_time = 1; int64 step = 2; oneof { string file_version = 3; Summary summary = 5; } }
std::string event_header(double wall_time, int64_t step) {
  std::string e;
  uint64_t bits;
  std::memcpy(&bits, &wall_time, sizeof bits);
  put_key(e, 1, 1);
  put_le(e, bits);
  put_key(e, 2, 0);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

// Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
std::string summary(const std::vector<std::pair<std::string, float>>& values) {
  std::string s;
  for (const auto& [tag, v] : values) {
    std::string value;
    put_bytes(value, 1, tag);
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    put_key(value, 2, 5);
    put_le(value, bits);
    put_bytes(s, 1, value);
  }
  return s;
}

std::string hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// A new W&B run id: 8 characters of [a-z0-9], as wandb's own.
std::string new_run_id() {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::string id;
  for (int i = 0; i < 8; ++i) id.push_back(alphabet[rd() % 36]);
  return id;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

// --- TensorBoardWriter ------------------------------------------------------------------------------------------

TensorBoardWriter::TensorBoardWriter(const stdfs::path& dir) {
  fs::ensure_dir(dir);
  const double now = now_seconds();
  path_ = dir / str_cat("events.out.tfevents.", static_cast<int64_t>(now), ".", hostname(), ".", getpid());
  file_ = std::fopen(path_.c_str(), "wb");
  DA_CHECK(file_ != nullptr, path_.string(), ": cannot create the TensorBoard event file (", std::strerror(errno), ")");
  std::string first = event_header(now, 0);
  put_bytes(first, 3, "brain.Event:2");  // the version line every event file starts with
  write_record(first);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::add_scalars(int64_t step, double wall_time,
                                    const std::vector<std::pair<std::string, float>>& values) {
  if (values.empty()) return;
  std::string event = event_header(wall_time, step);
  put_bytes(event, 5, summary(values));
  write_record(event);
}

// A TFRecord: uint64 length, masked CRC of the length, the bytes, masked CRC of the bytes (all little-endian).
void TensorBoardWriter::write_record(const std::string& event) {
  std::string frame;
  put_le(frame, static_cast<uint64_t>(event.size()));
  put_le(frame, masked_crc(frame.data(), 8));
  frame += event;
  put_le(frame, masked_crc(event.data(), event.size()));
  const bool ok = std::fwrite(frame.data(), 1, frame.size(), file_) == frame.size() && std::fflush(file_) == 0;
  DA_CHECK(ok, path_.string(), ": writing the TensorBoard event file failed (", std::strerror(errno), ")");
}

// --- Trackers ---------------------------------------------------------------------------------------------------

Trackers::Trackers(const stdfs::path& out, const TrackerSettings& s, bool resumed) {
  if (log::rank() != 0) return;
  const stdfs::path metrics = out / "metrics.jsonl";
  jsonl_ = std::make_unique<MetricsLog>(metrics);
  auto wants = [&](const char* name) {
    return std::find(s.report_to.begin(), s.report_to.end(), name) != s.report_to.end();
  };
  if (wants("tensorboard")) {
    fs::remove_tree(out / "tensorboard");
    tensorboard_ = std::make_unique<TensorBoardWriter>(out / "tensorboard");
    std::ifstream in(metrics);
    std::string line;
    while (std::getline(in, line)) {
      const json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (record.is_object()) to_tensorboard(record);
    }
    log::info("TensorBoard: ", tensorboard_->path().string(), " (tensorboard --logdir ", out.string(), ")");
  }
  if (wants("wandb")) {
    const stdfs::path id_file = out / "wandb" / "run-id";
    std::string id;
    if (resumed && stdfs::exists(id_file)) id = fs::read_file(id_file);
    if (id.empty()) {
      id = new_run_id();
      fs::write_file_atomic(id_file, id);
    }
    std::error_code ec;
    const auto offset = stdfs::exists(metrics) ? stdfs::file_size(metrics, ec) : 0;
    wandb_ = std::make_unique<Coprocess>(out.string(), "the W&B sidecar", kWandbSidecarScript,
                                         "set DRAFTALIGN_PYTHON to a Python with wandb, or leave wandb out of "
                                         "run.report_to");
    const json ready = wandb_->call({{"metrics", stdfs::absolute(metrics).string()},
                                     {"offset", ec ? 0 : offset},
                                     {"dir", stdfs::absolute(out).string()},
                                     {"project", s.wandb_project},
                                     {"name", s.run_name},
                                     {"id", id},
                                     {"config_yaml", s.config_yaml}},
                                    "run.report_to: ");
    log::info("W&B: run ", id, " (", ready.value("mode", std::string("?")), ") in ",
              ready.value("run_dir", std::string("?")));
  }
}

Trackers::Trackers() = default;
Trackers::~Trackers() = default;

void Trackers::write(json record) {
  if (!jsonl_) return;
  record["time"] = now_seconds();
  if (tensorboard_) to_tensorboard(record);
  jsonl_->write(std::move(record));  // last: the W&B sidecar reads the record from this file
}

void Trackers::to_tensorboard(const json& record) {
  if (!record.contains("step") || !record["step"].is_number_integer()) return;
  std::vector<std::pair<std::string, float>> values;
  for (const auto& [key, v] : record.items())
    if (key != "step" && key != "time" && v.is_number()) values.emplace_back(key, v.get<float>());
  tensorboard_->add_scalars(record["step"].get<int64_t>(), record.value("time", now_seconds()), values);
}

}  // namespace draftalign
