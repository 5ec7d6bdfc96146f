#include "io/hf_checkpoint.h"

#include <set>

#include "common/error.h"

namespace draftalign::io {
namespace {

const char* kLayout =
    "a Hugging Face checkpoint directory holds config.json and model.safetensors, or model.safetensors.index.json "
    "with its shards";

}  // namespace

HfCheckpoint HfCheckpoint::open(const std::filesystem::path& dir) {
  namespace stdfs = std::filesystem;
  HfCheckpoint ck;
  ck.dir_ = dir;
  DA_CHECK(stdfs::is_directory(dir), dir.string(), ": not a directory (", kLayout, ")");
  DA_CHECK(stdfs::is_regular_file(dir / "config.json"), (dir / "config.json").string(), ": missing (", kLayout, ")");
  ck.config_ = read_hf_config(dir / "config.json");

  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  if (stdfs::is_regular_file(index)) {
    const std::string file = index.string();
    nlohmann::json j = read_json_file(index);
    DA_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), file,
             ": no \"weight_map\" object");
    std::map<std::string, size_t> shard_index;
    std::map<std::string, std::string> listed;  // tensor -> shard file name
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      DA_CHECK(it.value().is_string(), file, ": weight_map entry '", it.key(), "' is not a file name");
      const std::string shard = it.value().get<std::string>();
      DA_CHECK(shard.find('/') == std::string::npos && shard != ".." && !shard.empty(), file, ": weight_map entry '",
               it.key(), "' names '", shard, "', not a file in this directory");
      if (!shard_index.count(shard)) {
        DA_CHECK(stdfs::is_regular_file(dir / shard), file, ": tensor '", it.key(), "' is in shard '", shard,
                 "', which is missing");
        shard_index[shard] = ck.shards_.size();
        ck.shards_.push_back(SafetensorsFile::open(dir / shard));
      }
      listed[it.key()] = shard;
    }
    for (const auto& [name, shard] : listed) {
      const size_t s = shard_index[shard];
      DA_CHECK(ck.shards_[s].contains(name), file, ": tensor '", name, "' is listed in '", shard,
               "' but that shard does not hold it");
      ck.where_[name] = s;
    }
    for (const auto& shard : ck.shards_)
      for (const auto& e : shard.entries())
        DA_CHECK(listed.count(e.name) && listed[e.name] == shard.path().filename().string(), shard.path().string(),
                 ": tensor '", e.name, "' is not listed for this shard in ", file);
  } else {
    DA_CHECK(stdfs::is_regular_file(single), dir.string(), ": neither model.safetensors nor ",
             "model.safetensors.index.json (", kLayout, ")");
    ck.shards_.push_back(SafetensorsFile::open(single));
    for (const auto& e : ck.shards_[0].entries()) ck.where_[e.name] = 0;
  }
  return ck;
}

std::vector<std::string> HfCheckpoint::tensor_names() const {
  std::vector<std::string> out;
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

const SafetensorsFile& HfCheckpoint::shard_of(const std::string& name) const {
  auto it = where_.find(name);
  DA_CHECK(it != where_.end(), dir_.string(), ": no tensor named '", name, "'");
  return shards_[it->second];
}

torch::Tensor HfCheckpoint::get(const std::string& name) const { return shard_of(name).get(name); }

void HfCheckpoint::check_llama() const {
  const auto want = llama_tensor_shapes(config_);
  std::set<std::string> present, expected;
  for (const auto& kv : where_) present.insert(kv.first);
  for (const auto& kv : want) expected.insert(kv.first);
  check_tensor_names(dir_.string(), present, expected);
  for (const auto& [name, shape] : want) {
    const TensorEntry& e = shard_of(name).entry(name);
    DA_CHECK(e.shape == shape, shard_of(name).path().string(), ": tensor '", name, "' has shape ",
             shape_text(e.shape), " but config.json implies ", shape_text(shape));
  }
}

std::map<std::string, std::vector<int64_t>> llama_tensor_shapes(const LlamaConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  std::map<std::string, std::vector<int64_t>> out = {
      {"model.embed_tokens.weight", {c.vocab_size, h}},
      {"model.norm.weight", {h}},
  };
  if (!c.tie_word_embeddings) out["lm_head.weight"] = {c.vocab_size, h};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = str_cat("model.layers.", l, ".");
    out[p + "input_layernorm.weight"] = {h};
    out[p + "post_attention_layernorm.weight"] = {h};
    out[p + "self_attn.q_proj.weight"] = {q, h};
    out[p + "self_attn.k_proj.weight"] = {kv, h};
    out[p + "self_attn.v_proj.weight"] = {kv, h};
    out[p + "self_attn.o_proj.weight"] = {h, q};
    if (c.qkv_bias) {
      out[p + "self_attn.q_proj.bias"] = {q};
      out[p + "self_attn.k_proj.bias"] = {kv};
      out[p + "self_attn.v_proj.bias"] = {kv};
    }
    if (c.o_bias) out[p + "self_attn.o_proj.bias"] = {h};
    if (c.qk_norm) {
      out[p + "self_attn.q_norm.weight"] = {c.head_dim};
      out[p + "self_attn.k_norm.weight"] = {c.head_dim};
    }
    out[p + "mlp.gate_proj.weight"] = {c.intermediate_size, h};
    out[p + "mlp.up_proj.weight"] = {c.intermediate_size, h};
    out[p + "mlp.down_proj.weight"] = {h, c.intermediate_size};
  }
  return out;
}

}  // namespace draftalign::io
