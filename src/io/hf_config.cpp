#include "io/hf_config.h"

#include <fstream>

#include "common/error.h"
#include "common/fs.h"

namespace draftalign::io {
namespace {

using nlohmann::json;

class Reader {
 public:
  Reader(std::string file, const json& j) : file_(std::move(file)), j_(j) {}

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw Error(str_cat(file_, ": key '", key, "': ", problem));
  }

  const json* find(const json& obj, const std::string& key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }

  int64_t integer(const std::string& key, int64_t min, const json* obj = nullptr, const int64_t* fallback = nullptr) {
    const json* v = find(obj ? *obj : j_, key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      fail(key, "missing; a Llama config.json must set it");
    }
    if (!v->is_number_integer()) fail(key, str_cat("expected an integer, got ", v->dump()));
    const int64_t x = v->get<int64_t>();
    if (x < min) fail(key, str_cat("expected an integer >= ", min, ", got ", x));
    return x;
  }

  double number(const std::string& key, double fallback, bool positive, const json* obj = nullptr) {
    const json* v = find(obj ? *obj : j_, key);
    if (v == nullptr) return fallback;
    if (!v->is_number()) fail(key, str_cat("expected a number, got ", v->dump()));
    const double x = v->get<double>();
    if (positive && !(x > 0)) fail(key, str_cat("expected a positive number, got ", v->dump()));
    return x;
  }

  bool boolean(const std::string& key, bool fallback) {
    const json* v = find(j_, key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(key, str_cat("expected true or false, got ", v->dump()));
    return v->get<bool>();
  }

  std::string string(const std::string& key, const std::string& fallback) {
    const json* v = find(j_, key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) fail(key, str_cat("expected a string, got ", v->dump()));
    return v->get<std::string>();
  }

  const json& root() const { return j_; }

 private:
  std::string file_;
  const json& j_;
};

// Which layers attend to a window, as transformers decides it. Mistral: every layer when sliding_window is set (4096
// when the key is absent, none when null). Qwen2 / Qwen3: only with use_sliding_window, the layers from
// max_window_layers on, or as layer_types lists them.
void read_sliding_window(Reader& r, LlamaConfig& c) {
  const json& j = r.root();
  const bool window_key = j.contains("sliding_window");
  if (c.model_type == "mistral") {
    if (!window_key)
      c.sliding_window = 4096;
    else if (!j["sliding_window"].is_null())
      c.sliding_window = r.integer("sliding_window", 1);
    c.sliding_layers.assign(static_cast<size_t>(c.sliding_window > 0 ? c.num_hidden_layers : 0), true);
    return;
  }
  const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3";
  if (!qwen) {
    if (window_key && !j["sliding_window"].is_null())
      r.fail("sliding_window", str_cat("a sliding window is not part of model_type '", c.model_type, "'"));
    return;
  }
  const int64_t all = c.num_hidden_layers, default_window = 4096;
  c.max_window_layers = r.integer("max_window_layers", 0, nullptr, &all);
  if (!r.boolean("use_sliding_window", false)) return;
  c.sliding_window = r.integer("sliding_window", 1, nullptr, &default_window);
  if (const json* types = r.find(j, "layer_types")) {
    if (!types->is_array() || static_cast<int64_t>(types->size()) != c.num_hidden_layers)
      r.fail("layer_types", str_cat("expected a list of ", c.num_hidden_layers, " layer types"));
    for (const json& t : *types) {
      if (t != "full_attention" && t != "sliding_attention")
        r.fail("layer_types", str_cat("expected 'full_attention' or 'sliding_attention', got ", t.dump()));
      c.sliding_layers.push_back(t == "sliding_attention");
    }
  } else {
    for (int64_t l = 0; l < all; ++l) c.sliding_layers.push_back(l >= c.max_window_layers);
  }
}

}  // namespace

json read_json_file(const std::filesystem::path& file) {
  const std::string text = fs::read_file(file);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(str_cat(file.string(), ": not valid JSON at byte ", e.byte));
  } catch (const json::exception& e) {  // out_of_range: a number too large for any type ("1E999")
    throw Error(str_cat(file.string(), ": not valid JSON (", e.what(), ")"));
  }
}

LlamaConfig read_hf_config(const std::filesystem::path& path) {
  return parse_hf_config(read_json_file(path), path.string());
}

LlamaConfig parse_hf_config(const json& j, const std::string& file) {
  if (!j.is_object()) throw Error(file + ": not a JSON object");
  Reader r(file, j);
  LlamaConfig c;

  c.model_type = r.string("model_type", "");
  const std::string& type = c.model_type;
  if (type != "llama" && type != "mistral" && type != "qwen2" && type != "qwen3")
    r.fail("model_type", str_cat("'", type,
                                 "' is not a Llama-architecture model (draftalign runs model_type "
                                 "'llama' (Llama 2/3.x, SmolLM2, TinyLlama), 'mistral', 'qwen2' and 'qwen3')"));
  if (r.string("hidden_act", "silu") != "silu") r.fail("hidden_act", "only 'silu' (SwiGLU) is supported");
  if (r.boolean("mlp_bias", false)) r.fail("mlp_bias", "MLP biases are not supported");
  if (type == "qwen2") {
    if (r.find(j, "attention_bias") && !r.boolean("attention_bias", true))
      r.fail("attention_bias", "Qwen2 always has q/k/v biases; false is not a Qwen2 model");
    c.qkv_bias = true;
  } else if (type != "mistral") {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
  } else if (r.boolean("attention_bias", false)) {
    r.fail("attention_bias", "Mistral has no attention biases");
  }
  c.qk_norm = type == "qwen3";

  c.vocab_size = r.integer("vocab_size", 1);
  c.hidden_size = r.integer("hidden_size", 1);
  c.intermediate_size = r.integer("intermediate_size", 1);
  c.num_hidden_layers = r.integer("num_hidden_layers", 1);
  c.num_attention_heads = r.integer("num_attention_heads", 1);
  c.num_key_value_heads = r.integer("num_key_value_heads", 1, nullptr, &c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    r.fail("num_key_value_heads", str_cat(c.num_key_value_heads, " does not divide num_attention_heads (",
                                          c.num_attention_heads, ")"));
  const int64_t derived_head_dim = type == "qwen3" ? 128 : c.hidden_size / c.num_attention_heads;  // Qwen3Config's
  c.head_dim = r.integer("head_dim", 2, nullptr, &derived_head_dim);
  if (c.head_dim % 2 != 0) r.fail("head_dim", str_cat("RoPE needs an even head dim, got ", c.head_dim));
  if (!r.find(j, "head_dim") && type != "qwen3" && c.hidden_size % c.num_attention_heads != 0)
    r.fail("num_attention_heads", str_cat(c.num_attention_heads, " does not divide hidden_size (", c.hidden_size, ")"));
  const int64_t default_positions = 2048;
  c.max_position_embeddings = r.integer("max_position_embeddings", 1, nullptr, &default_positions);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6, true);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.dtype = r.string("dtype", r.string("torch_dtype", "float32"));
  const int64_t none = -1;
  c.bos_token_id = r.integer("bos_token_id", 0, nullptr, &none);
  c.pad_token_id = r.integer("pad_token_id", 0, nullptr, &none);
  if (const json* eos = r.find(j, "eos_token_id")) {
    for (const json& e : eos->is_array() ? *eos : json::array({*eos})) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0)
        r.fail("eos_token_id", str_cat("expected a token id or a list of them, got ", eos->dump()));
      c.eos_token_ids.push_back(e.get<int64_t>());
    }
  }

  if (const json* ids = r.find(j, "draft_token_ids")) {
    if (!ids->is_array() || ids->empty() || static_cast<int64_t>(ids->size()) > c.vocab_size)
      r.fail("draft_token_ids", str_cat("expected a non-empty list of at most vocab_size (", c.vocab_size,
                                        ") token ids"));
    std::vector<bool> seen(static_cast<size_t>(c.vocab_size), false);
    for (size_t i = 0; i < ids->size(); ++i) {
      const json& e = (*ids)[i];
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= c.vocab_size ||
          seen[static_cast<size_t>(e.get<int64_t>())])
        r.fail("draft_token_ids", str_cat("entry ", i, " (", e.dump(), ") is not a token id below vocab_size (",
                                          c.vocab_size, ") that appears once"));
      seen[static_cast<size_t>(e.get<int64_t>())] = true;
      c.draft_token_ids.push_back(e.get<int64_t>());
    }
  }

  read_sliding_window(r, c);

  // RoPE: transformers 5 keeps theta and scaling together in rope_parameters; older files split them.
  const json* params = r.find(j, "rope_parameters");
  const json* scaling = params ? params : r.find(j, "rope_scaling");
  const std::string scaling_key = params ? "rope_parameters" : "rope_scaling";
  if (params && !params->is_object()) r.fail("rope_parameters", "expected an object");
  c.rope_theta = params ? r.number("rope_theta", 10000.0, true, params) : r.number("rope_theta", 10000.0, true);
  if (scaling) {
    if (!scaling->is_object()) r.fail(scaling_key, "expected an object or null");
    const json* type = r.find(*scaling, "rope_type");
    if (type == nullptr) type = r.find(*scaling, "type");
    const std::string t = type && type->is_string() ? type->get<std::string>() : "default";
    if (t == "llama3") {
      RopeScaling& s = c.rope_scaling;
      s.type = t;
      s.factor = r.number("factor", 0, true, scaling);
      s.low_freq_factor = r.number("low_freq_factor", 1.0, true, scaling);
      s.high_freq_factor = r.number("high_freq_factor", 4.0, true, scaling);
      s.original_max_position_embeddings = r.integer("original_max_position_embeddings", 1, scaling);
      if (!(s.high_freq_factor > s.low_freq_factor))
        r.fail(scaling_key + ".high_freq_factor", "must exceed low_freq_factor");
    } else if (t != "default") {
      r.fail(scaling_key + ".rope_type", str_cat("'", t, "' is not supported (default or llama3)"));
    }
  }
  return c;
}

json to_hf_json(const LlamaConfig& c) {
  const std::string arch = c.model_type == "qwen2"     ? "Qwen2ForCausalLM"
                           : c.model_type == "qwen3"   ? "Qwen3ForCausalLM"
                           : c.model_type == "mistral" ? "MistralForCausalLM"
                                                       : "LlamaForCausalLM";
  json j = {
      {"architectures", {arch}},
      {"model_type", c.model_type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"hidden_act", "silu"},
      {"attention_bias", c.model_type == "qwen2" ? c.qkv_bias : c.o_bias},
      {"mlp_bias", false},
      {"attention_dropout", 0.0},
      {"initializer_range", 0.02},
      {"pretraining_tp", 1},
      {"use_cache", true},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"torch_dtype", c.dtype},
  };
  if (c.rope_scaling.type == "llama3")
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  else
    j["rope_scaling"] = nullptr;
  if (c.model_type == "mistral" || c.model_type == "qwen2" || c.model_type == "qwen3")
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  if (c.model_type == "qwen2" || c.model_type == "qwen3") {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["max_window_layers"] = c.max_window_layers;
    if (c.sliding_window > 0) {
      json types = json::array();
      for (bool s : c.sliding_layers) types.push_back(s ? "sliding_attention" : "full_attention");
      j["layer_types"] = types;
    }
  }
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  if (!c.draft_token_ids.empty()) j["draft_token_ids"] = c.draft_token_ids;
  return j;
}

bool is_eagle3_dir(const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / "config.json";
  if (!std::filesystem::is_regular_file(file)) return false;
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(file), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  if (j.contains("draft_vocab_size")) return true;
  if (j.contains("architectures") && j["architectures"].is_array())
    for (const auto& a : j["architectures"])
      if (a.is_string() && a.get<std::string>() == "LlamaForCausalLMEagle3") return true;
  return false;
}

}  // namespace draftalign::io
