// hf_config.h: the `config.json` of a Hugging Face checkpoint of the Llama family as a typed struct: model_type
// llama (Llama 2/3.x, SmolLM2, TinyLlama), mistral (sliding-window attention), qwen2 (Qwen2/2.5: q/k/v biases) and
// qwen3 (per-head q/k RMSNorm). Reads both layouts in the wild: transformers 5 (`rope_parameters`, `dtype`) and the
// classic one of Llama-2-7b-chat-hf / Llama-3 (`rope_theta`, `rope_scaling`, `torch_dtype`). Anything draftalign's
// model cannot run exactly (another architecture, MLP biases, another activation, an unknown RoPE type) is an Error
// naming the file and key, never a silently different model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace draftalign::io {

struct RopeScaling {
  std::string type = "default";  // "default" (none) or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct LlamaConfig {
  std::string model_type = "llama";  // llama, mistral, qwen2 or qwen3: the config.json and architecture written back
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless the file says otherwise
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool qkv_bias = false;  // biases on q_proj, k_proj, v_proj (qwen2 always; llama / qwen3 with attention_bias)
  bool o_bias = false;    // a bias on o_proj (llama / qwen3 with attention_bias)
  bool qk_norm = false;   // qwen3: an RMSNorm over head_dim on every query and key head, before RoPE
  // > 0: the layers marked in sliding_layers attend to the last sliding_window positions only (themselves included).
  int64_t sliding_window = 0;
  std::vector<bool> sliding_layers;  // per layer; empty when sliding_window is 0
  int64_t max_window_layers = 0;     // qwen2 / qwen3: written back with use_sliding_window
  bool tie_word_embeddings = false;
  std::string dtype = "float32";  // the stored weights' dtype as the file names it
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be one id or a list
  int64_t pad_token_id = -1;
  // A drafter's draft vocabulary (model.draft_vocab_size): the target ids its output head covers, most frequent first;
  // empty: the whole vocabulary. Written as "draft_token_ids" in the config.json of draftalign's own checkpoints;
  // transformers and vLLM ignore the key, and `export` writes a head over the whole vocabulary instead.
  std::vector<int64_t> draft_token_ids;
};

// Reads and parses a JSON file; an Error names the file and the byte where parsing failed.
nlohmann::json read_json_file(const std::filesystem::path& file);

// Whether `dir` holds an EAGLE-3 draft head (model/eagle3.h): its config.json names LlamaForCausalLMEagle3 or has a
// draft_vocab_size. False when there is no readable config.json (the caller's own checks say why).
bool is_eagle3_dir(const std::filesystem::path& dir);

// Parses and validates `file` (a config.json); parse_hf_config does it for its JSON, already read (errors name `file`).
LlamaConfig read_hf_config(const std::filesystem::path& file);
LlamaConfig parse_hf_config(const nlohmann::json& j, const std::string& file);

// The config.json of an exported checkpoint, in the classic layout (rope_theta, rope_scaling, torch_dtype) that
// transformers 4 and 5 and vLLM all read. read_hf_config(to_hf_json(c)) == c.
nlohmann::json to_hf_json(const LlamaConfig& c);

}  // namespace draftalign::io
