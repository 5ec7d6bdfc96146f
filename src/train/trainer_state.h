// trainer_state.h: trainer_state.json, the counters and checksums of a checkpoint (train/checkpoint.h), read and
// checked without torch (the fuzzed part of resume).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace draftalign::train {

struct TrainerState {
  int64_t step = 0;          // optimizer steps done
  int64_t consumed = 0;      // training sequences consumed (the data cursor, independent of the world size)
  int64_t tokens = 0;        // training tokens consumed
  int64_t skipped = 0;       // steps skipped for a non-finite loss (train.on_nonfinite = skip)
  int64_t empty_micro_batches = 0;  // micro-batches with nothing to learn from (MicroBatch::skipped)
  nlohmann::json extra;      // recipe-specific fields
};

struct TrainerStateFile {
  TrainerState state;
  int64_t world_size = 0;                      // ranks that wrote the checkpoint
  std::string checksum_algorithm;              // common/checksum.h's name; the legacy one when the file names none
  std::map<std::string, std::string> checksums;  // file name -> hex checksum, one for each of `files`
};

// Reads `path`: the format and version, a checksum for each of `files`, non-negative integer counters. Anything
// else is one Error naming the file and the key.
TrainerStateFile read_trainer_state(const std::filesystem::path& path, const std::vector<std::string>& files);

}  // namespace draftalign::train
