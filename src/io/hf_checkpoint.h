// hf_checkpoint.h: a Hugging Face checkpoint directory: config.json plus either model.safetensors or
// model.safetensors.index.json with its shards (model-00001-of-00002.safetensors, ...: the Llama-2-7b-chat-hf layout).
// Opening checks everything a later load relies on: every shard maps and validates, the index agrees with the shards,
// and (check_llama) the tensor names and shapes are exactly those of the Llama model config.json describes.
#pragma once

#include <torch/types.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "io/safetensors.h"

namespace draftalign::io {

class HfCheckpoint {
 public:
  static HfCheckpoint open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const LlamaConfig& config() const { return config_; }
  std::vector<std::string> tensor_names() const;
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  // The tensor from whichever shard holds it (a CPU view of the mapping where aligned).
  torch::Tensor get(const std::string& name) const;
  const SafetensorsFile& shard_of(const std::string& name) const;

  // Error naming the file and tensor unless the names and shapes are exactly those of llama_tensor_shapes(config()).
  void check_llama() const;

 private:
  std::filesystem::path dir_;
  LlamaConfig config_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, size_t> where_;  // tensor name -> index into shards_
};

// Every tensor of a Llama model in the Hugging Face naming, with its shape.
std::map<std::string, std::vector<int64_t>> llama_tensor_shapes(const LlamaConfig& c);

}  // namespace draftalign::io
