#include "train/trainer_state.h"

#include "common/checksum.h"
#include "common/error.h"
#include "common/fs.h"

namespace draftalign::train {

TrainerStateFile read_trainer_state(const std::filesystem::path& path, const std::vector<std::string>& files) {
  using json = nlohmann::json;
  const std::string file = path.string();
  const json j = json::parse(fs::read_file(path), nullptr, /*allow_exceptions=*/false);
  DA_CHECK(!j.is_discarded(), file, ": not valid JSON");
  DA_CHECK(j.is_object() && j.contains("format") && j["format"] == "draftalign-checkpoint" && j.contains("version") &&
               j["version"] == 1,
           file, ": not a draftalign checkpoint state (format/version)");
  auto count = [&](const char* key, bool required) -> int64_t {
    if (!j.contains(key)) {
      DA_CHECK(!required, file, ": '", key, "' is missing");
      return 0;
    }
    DA_CHECK(j[key].is_number_integer() && j[key].get<int64_t>() >= 0, file, ": '", key,
             "' is not a non-negative integer");
    return j[key].get<int64_t>();
  };
  TrainerStateFile out;
  out.state.step = count("step", true);
  out.state.consumed = count("consumed", true);
  out.state.tokens = count("tokens", true);
  out.state.skipped = count("skipped", true);
  out.state.empty_micro_batches = count("empty_micro_batches", false);
  out.world_size = count("world_size", false);
  out.state.extra = j.contains("extra") ? j["extra"] : json();
  DA_CHECK(out.state.extra.is_object() || out.state.extra.is_null(), file, ": 'extra' is not an object");

  // States written before XXH3 name no algorithm: their checksums are the legacy ones.
  out.checksum_algorithm = kLegacyChecksumAlgorithm;
  if (j.contains("checksum")) {
    const json& a = j["checksum"];
    DA_CHECK(a == kChecksumAlgorithm || a == kLegacyChecksumAlgorithm, file, ": 'checksum' names no algorithm this "
             "build knows (", kChecksumAlgorithm, ", ", kLegacyChecksumAlgorithm, ")");
    out.checksum_algorithm = a.get<std::string>();
  }
  DA_CHECK(j.contains("checksums") && j["checksums"].is_object(), file, ": 'checksums' is not an object");
  for (const std::string& f : files) {
    const json& c = j["checksums"];
    DA_CHECK(c.contains(f) && c[f].is_string(), file, ": no checksum of ", f, " in 'checksums'");
    out.checksums[f] = c[f].get<std::string>();
  }
  return out;
}

}  // namespace draftalign::train
