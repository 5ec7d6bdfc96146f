#include "io/hf_config.h"

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

}  // namespace

json read_json_file(const std::filesystem::path& file) {
  const std::string text = fs::read_file(file);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(str_cat(file.string(), ": not valid JSON at byte ", e.byte));
  }
}

LlamaConfig read_hf_config(const std::filesystem::path& path) {
  const std::string file = path.string();
  const json j = read_json_file(path);
  if (!j.is_object()) throw Error(file + ": not a JSON object");
  Reader r(file, j);
  LlamaConfig c;

  const std::string model_type = r.string("model_type", "");
  if (model_type != "llama")
    r.fail("model_type", str_cat("'", model_type, "' is not a Llama-architecture model (draftalign runs model_type "
                                                  "'llama': Llama 2/3, SmolLM2, TinyLlama, ...)"));
  if (r.string("hidden_act", "silu") != "silu") r.fail("hidden_act", "only 'silu' (SwiGLU) is supported");
  if (r.boolean("attention_bias", false)) r.fail("attention_bias", "attention biases are not supported");
  if (r.boolean("mlp_bias", false)) r.fail("mlp_bias", "MLP biases are not supported");

  c.vocab_size = r.integer("vocab_size", 1);
  c.hidden_size = r.integer("hidden_size", 1);
  c.intermediate_size = r.integer("intermediate_size", 1);
  c.num_hidden_layers = r.integer("num_hidden_layers", 1);
  c.num_attention_heads = r.integer("num_attention_heads", 1);
  c.num_key_value_heads = r.integer("num_key_value_heads", 1, nullptr, &c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    r.fail("num_key_value_heads", str_cat(c.num_key_value_heads, " does not divide num_attention_heads (",
                                          c.num_attention_heads, ")"));
  const int64_t derived_head_dim = c.hidden_size / c.num_attention_heads;
  c.head_dim = r.integer("head_dim", 2, nullptr, &derived_head_dim);
  if (c.head_dim % 2 != 0) r.fail("head_dim", str_cat("RoPE needs an even head dim, got ", c.head_dim));
  if (!r.find(j, "head_dim") && c.hidden_size % c.num_attention_heads != 0)
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
  json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
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
      {"attention_bias", false},
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
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  return j;
}

}  // namespace draftalign::io
