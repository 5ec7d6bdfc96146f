// io/hf_checkpoint: the Llama tensor layout against the one transformers wrote for SmolLM2 (fixture made by
// tools/extract_safetensors_header.py), single-file and sharded directories, and every inconsistency named.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/hf_checkpoint.h"
#include "test_util.h"

namespace draftalign::io {
namespace {

using testing::ScratchDir;

TEST(LlamaLayout, MatchesTransformersOnSmolLM2) {
  const std::string fixtures = DRAFTALIGN_SOURCE_DIR "/data/fixtures/smollm2-135m-instruct/";
  const auto want = llama_tensor_shapes(read_hf_config(fixtures + "config.json"));
  const auto header = nlohmann::json::parse(testing::read_text(fixtures + "model.safetensors.header.json"));
  ASSERT_EQ(want.size(), header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    ASSERT_TRUE(want.count(it.key())) << it.key();
    EXPECT_EQ(want.at(it.key()), it.value()["shape"].get<std::vector<int64_t>>()) << it.key();
  }
}

const char* kTinyConfig = R"({"model_type": "llama", "vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": false})";

// A tiny random Llama checkpoint in `dir`, in one file or split over two shards with an index.
std::map<std::string, torch::Tensor> write_tiny(const std::filesystem::path& dir, bool sharded) {
  testing::write_text(dir / "config.json", kTinyConfig);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, shape] : llama_tensor_shapes(read_hf_config(dir / "config.json")))
    tensors[name] = torch::randn(shape);
  std::vector<std::pair<std::string, torch::Tensor>> a, b;
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, t] : tensors) {
    const bool second = sharded && name.find("layers.1.") != std::string::npos;
    (second ? b : a).emplace_back(name, t);
    index["weight_map"][name] = second ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  if (!sharded) {
    save_safetensors(dir / "model.safetensors", a);
  } else {
    save_safetensors(dir / "model-00001-of-00002.safetensors", a);
    save_safetensors(dir / "model-00002-of-00002.safetensors", b);
    testing::write_text(dir / "model.safetensors.index.json", index.dump(1));
  }
  return tensors;
}

TEST(HfCheckpoint, SingleFileAndShardedOpenTheSame) {
  for (bool sharded : {false, true}) {
    ScratchDir dir;
    torch::manual_seed(sharded);
    const auto tensors = write_tiny(dir.path(), sharded);
    const HfCheckpoint ck = HfCheckpoint::open(dir.path());
    EXPECT_NO_THROW(ck.check_llama());
    EXPECT_EQ(ck.tensor_names().size(), tensors.size());
    for (const auto& [name, t] : tensors) EXPECT_TRUE(torch::equal(ck.get(name), t)) << name;
    EXPECT_EQ(ck.config().head_dim, 4);
  }
}

std::string open_error(const std::filesystem::path& dir) {
  return testing::error_of([&] { HfCheckpoint::open(dir).check_llama(); });
}

TEST(HfCheckpointErrors, MissingPieces) {
  ScratchDir dir;
  EXPECT_HAS(open_error(dir / "nope"), "nope: not a directory");
  EXPECT_HAS(open_error(dir.path()), "config.json: missing");
  testing::write_text(dir / "config.json", kTinyConfig);
  EXPECT_HAS(open_error(dir.path()), "neither model.safetensors nor model.safetensors.index.json");
}

TEST(HfCheckpointErrors, IndexAndShardsDisagree) {
  ScratchDir dir;
  write_tiny(dir.path(), true);
  const auto index_path = dir / "model.safetensors.index.json";
  const auto index = nlohmann::json::parse(testing::read_text(index_path));

  auto edited = index;
  edited["weight_map"]["model.norm.weight"] = "model-00003-of-00002.safetensors";
  testing::write_text(index_path, edited.dump());
  EXPECT_HAS(open_error(dir.path()), "tensor 'model.norm.weight' is in shard 'model-00003-of-00002.safetensors', "
                                     "which is missing");

  edited = index;
  edited["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors";
  testing::write_text(index_path, edited.dump());
  EXPECT_HAS(open_error(dir.path()), "tensor 'model.norm.weight' is listed in 'model-00002-of-00002.safetensors' "
                                     "but that shard does not hold it");

  edited = index;
  edited["weight_map"].erase("model.norm.weight");
  testing::write_text(index_path, edited.dump());
  EXPECT_HAS(open_error(dir.path()), "model-00001-of-00002.safetensors: tensor 'model.norm.weight' is not listed");

  edited = index;
  edited["weight_map"]["x"] = "../model.safetensors";
  testing::write_text(index_path, edited.dump());
  EXPECT_HAS(open_error(dir.path()), "names '../model.safetensors', not a file in this directory");

  testing::write_text(index_path, "{\"weight_map\": ");
  EXPECT_HAS(open_error(dir.path()), "model.safetensors.index.json: not valid JSON");
}

TEST(HfCheckpointErrors, NamesAndShapesMustBeTheModels) {
  ScratchDir dir;
  auto tensors = write_tiny(dir.path(), false);
  tensors.erase("model.layers.1.mlp.up_proj.weight");
  tensors["model.layers.1.mlp.upp_proj.weight"] = torch::zeros({24, 16});
  save_safetensors(dir / "model.safetensors", {tensors.begin(), tensors.end()});
  EXPECT_HAS(open_error(dir.path()), "missing: model.layers.1.mlp.up_proj.weight; unexpected: "
                                     "model.layers.1.mlp.upp_proj.weight");

  tensors = write_tiny(dir.path(), false);
  tensors["model.norm.weight"] = torch::ones({17});
  save_safetensors(dir / "model.safetensors", {tensors.begin(), tensors.end()});
  EXPECT_HAS(open_error(dir.path()), "model.safetensors: tensor 'model.norm.weight' has shape [17] but config.json "
                                     "implies [16]");
}

}  // namespace
}  // namespace draftalign::io
