// io/hf_config: the real SmolLM2 config.json that tools/prepare_target.py wrote with transformers 5 (checked in under
// data/fixtures), the classic Llama-2 / Llama-3.1 layouts, and the configs draftalign must refuse.
#include <gtest/gtest.h>

#include "common/error.h"
#include "io/hf_config.h"
#include "test_util.h"

namespace draftalign::io {
namespace {

using testing::ScratchDir;

LlamaConfig parse(const ScratchDir& dir, const std::string& text) {
  testing::write_text(dir / "config.json", text);
  return read_hf_config(dir / "config.json");
}

std::string parse_error(const ScratchDir& dir, const std::string& text) {
  return testing::error_of([&] { parse(dir, text); });
}

TEST(HfConfig, SmolLM2FromTransformers5) {
  const LlamaConfig c = read_hf_config(DRAFTALIGN_SOURCE_DIR "/data/fixtures/smollm2-135m-instruct/config.json");
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_hidden_layers, 30);
  EXPECT_EQ(c.num_attention_heads, 9);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, "float32");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_EQ(c.bos_token_id, 1);
}

TEST(HfConfig, Llama2ClassicLayout) {
  ScratchDir dir;
  const LlamaConfig c = parse(dir, R"({"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008, "max_position_embeddings": 4096,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "tie_word_embeddings": false,
    "torch_dtype": "float16", "vocab_size": 32000})");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, "float16");
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
}

TEST(HfConfig, Llama3RopeScalingAndEosList) {
  ScratchDir dir;
  const std::string common = R"("model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
    "eos_token_id": [5, 7], )";
  LlamaConfig c = parse(dir, "{" + common + R"("rope_theta": 500000.0, "rope_scaling": {"factor": 8.0,
    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    "rope_type": "llama3"}})");
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{5, 7}));
  // The same in the transformers 5 layout.
  c = parse(dir, "{" + common + R"("rope_parameters": {"rope_theta": 500000.0, "factor": 8.0,
    "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
}

TEST(HfConfig, WrittenConfigReadsBackTheSame) {
  ScratchDir dir;
  for (const char* rope : {"default", "llama3"}) {
    LlamaConfig c = read_hf_config(DRAFTALIGN_SOURCE_DIR "/data/fixtures/smollm2-135m-instruct/config.json");
    c.tie_word_embeddings = false;
    c.head_dim = 80;
    c.eos_token_ids = {2, 7};
    if (std::string(rope) == "llama3") c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
    const LlamaConfig back = parse(dir, to_hf_json(c).dump());
    EXPECT_EQ(to_hf_json(back), to_hf_json(c)) << rope;
    EXPECT_EQ(back.head_dim, 80);
    EXPECT_EQ(back.rope_scaling.type, rope);
    EXPECT_EQ(back.eos_token_ids, c.eos_token_ids);
  }
}

// Each family's defaults and differences from Llama, as transformers' config classes set them.
TEST(HfConfig, QwenAndMistralFamilies) {
  ScratchDir dir;
  const std::string base = R"("hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300)";
  const LlamaConfig qwen2 = parse(dir, R"({"model_type": "qwen2", )" + base + "}");
  EXPECT_TRUE(qwen2.qkv_bias);
  EXPECT_FALSE(qwen2.o_bias || qwen2.qk_norm);
  EXPECT_EQ(qwen2.sliding_window, 0) << "use_sliding_window is false by default";
  const LlamaConfig windowed = parse(
      dir, R"({"model_type": "qwen2", "use_sliding_window": true, "sliding_window": 32, "max_window_layers": 3, )" +
               base + "}");
  EXPECT_EQ(windowed.sliding_window, 32);
  EXPECT_EQ(windowed.sliding_layers, (std::vector<bool>{false, false, false, true}));
  const LlamaConfig qwen3 = parse(dir, R"({"model_type": "qwen3", "attention_bias": true, )" + base + "}");
  EXPECT_TRUE(qwen3.qk_norm && qwen3.qkv_bias && qwen3.o_bias);
  EXPECT_EQ(qwen3.head_dim, 128) << "Qwen3Config's head_dim, not hidden_size / heads";
  EXPECT_EQ(parse(dir, R"({"model_type": "mistral", )" + base + "}").sliding_window, 4096) << "MistralConfig's";
  EXPECT_EQ(parse(dir, R"({"model_type": "mistral", "sliding_window": null, )" + base + "}").sliding_window, 0);
  const LlamaConfig mistral = parse(dir, R"({"model_type": "mistral", "sliding_window": 16, )" + base + "}");
  EXPECT_EQ(mistral.sliding_layers, std::vector<bool>(4, true));
  for (const LlamaConfig& c : {qwen2, windowed, qwen3, mistral}) {
    const LlamaConfig back = parse(dir, to_hf_json(c).dump());
    EXPECT_EQ(to_hf_json(back), to_hf_json(c)) << c.model_type;
    EXPECT_EQ(back.sliding_layers, c.sliding_layers) << c.model_type;
    EXPECT_EQ(back.qkv_bias, c.qkv_bias) << c.model_type;
  }
}

TEST(HfConfigErrors, NameTheFileAndTheKey) {
  ScratchDir dir;
  const std::string file = (dir / "config.json").string();
  const std::string base = R"("hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "vocab_size": 300)";
  EXPECT_HAS(parse_error(dir, R"({"model_type": "gpt2", )" + base + "}"),
             file + ": key 'model_type': 'gpt2' is not a Llama-architecture model");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "llama", "hidden_size": 64})"),
             file + ": key 'vocab_size': missing; a Llama config.json must set it");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "llama", )" + base + R"(, "num_hidden_layers": "2"})"),
             "key 'num_hidden_layers': expected an integer, got \"2\"");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "llama", )" + base + R"(, "num_key_value_heads": 3})"),
             "key 'num_key_value_heads': 3 does not divide num_attention_heads (4)");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "llama", )" + base + R"(, "rope_scaling": {"rope_type": "yarn"}})"),
             "key 'rope_scaling.rope_type': 'yarn' is not supported");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "llama", )" + base + R"(, "mlp_bias": true})"),
             "key 'mlp_bias': MLP biases are not supported");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "qwen2", )" + base + R"(, "attention_bias": false})"),
             "key 'attention_bias': Qwen2 always has q/k/v biases");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "llama", )" + base + R"(, "sliding_window": 8})"),
             "key 'sliding_window': a sliding window is not part of model_type 'llama'");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "qwen3", )" + base +
                                  R"(, "use_sliding_window": true, "layer_types": ["full_attention"]})"),
             "key 'layer_types': expected a list of 2 layer types");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "llama", )" + base + R"(, "rms_norm_eps": -1})"),
             "key 'rms_norm_eps': expected a positive number");
  EXPECT_HAS(parse_error(dir, R"({"model_type": "llama", )"), file + ": not valid JSON at byte");
  EXPECT_HAS(testing::error_of([&] { read_hf_config(dir / "absent/config.json"); }),
             "absent/config.json: cannot open");
}

}  // namespace
}  // namespace draftalign::io
