// generate_output.h: the directory `generate` writes, which `data import` writes the same way (trainers/data_tools.cpp)
// and distill, `data stats` and `data show` read: plan.json (what the records depend on), shard-NNNNN.safetensors each
// with its .preview.jsonl, then manifest.json and preview.jsonl once every shard is there (the shard format:
// src/data/shards.h). Defined in trainers/generate.cpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "model/generation.h"
#include "tokenizer/tokenizer.h"

namespace draftalign::train {

struct GenerateSummary {
  int64_t shards = 0, records = 0, skipped_prompts = 0, response_tokens = 0;
  bool complete = false;  // every shard exists and manifest.json is written
};

struct Planned {
  model::Request request;
  int64_t prompt_index = 0;
  std::string prompt_id, prompt_text;
};

// plan.json: the fingerprint of the plan the directory's records follow, and the request and shard counts it was made
// for (-1 where the file lacks one).
inline constexpr char kPlanFile[] = "plan.json";
struct PlanFile {
  std::string plan;
  int64_t requests = -1, shards = -1;
};
// The plan.json of `dir`; nullopt when there is none or it is not a JSON object.
std::optional<PlanFile> read_plan_file(const std::filesystem::path& dir);

// Makes `out` the directory of `plan`: writes plan.json, or checks the one there. A directory made for another plan
// is refused (its shards would mix with the new ones): `what` says what it holds, `key` which setting to change.
void claim_output_dir(const std::filesystem::path& out, const std::string& plan, int64_t requests, int64_t shards,
                      const char* what, const char* key);
// Whether a shard file is there, readable and of `plan` (a damaged one is logged and redone).
bool shard_is_complete(const std::filesystem::path& file, const std::string& plan);
// Writes shard k (its preview first: a shard file that exists always has its preview).
void write_shard(const std::filesystem::path& dir, int64_t k, const std::string& plan,
                 const std::vector<Planned>& planned, const std::vector<model::Completion>& out,
                 const tok::Tokenizer& tokenizer, int64_t topk);
// Writes manifest.json and preview.jsonl when every shard is there; returns whether it did.
bool finalize(const std::filesystem::path& dir, const std::string& plan, int64_t shards, int64_t skipped,
              GenerateSummary& sum);

}  // namespace draftalign::train
