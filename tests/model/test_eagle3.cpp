// The EAGLE-3 head: the training-time test (unroll: every position's k-step chain at once) is, position for position,
// the chain the speculative decoder drafts through the head's KV cache (append the accepted prefix, step on its own
// outputs, roll back); bad shapes are one clear error.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "evaluators/onepass.h"
#include "model/eagle3.h"
#include "model/llama.h"
#include "test_util.h"

namespace draftalign {
namespace {

using model::Eagle3Head;
using torch::Tensor;

// max |a - b| over max |b|: float rounding grows with the activations, a wrong attention set does not stay small.
double relative_diff(const Tensor& a, const Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

model::Eagle3Config tiny_head_config(int64_t target_vocab) {
  model::Eagle3Config c;
  c.layer = testing::tiny_smol_config(1);
  c.layer.vocab_size = target_vocab;
  c.target_hidden = c.layer.hidden_size;
  c.taps = {1, 2, 3};
  std::vector<int64_t> counts(static_cast<size_t>(target_vocab));
  for (int64_t t = 0; t < target_vocab; ++t) counts[static_cast<size_t>(t)] = (t * 7919) % 13;
  c.vocab = data::select_draft_vocab(counts, target_vocab / 2);
  return c;
}

std::shared_ptr<Eagle3Head> tiny_head(int64_t target_vocab) {
  torch::manual_seed(3);
  const model::Eagle3Config c = tiny_head_config(target_vocab);
  auto head = std::make_shared<Eagle3Head>(c, torch::randn({target_vocab, c.target_hidden}));
  torch::NoGradGuard no_grad;
  for (auto& p : head->parameters())  // larger than the 0.02 init, so attention and every step matter
    if (p.dim() == 2) p.normal_(0, 0.3);
  return head;
}

TEST(Eagle3Head, TrainingTimeTestEqualsTheCachedChainAtEveryPosition) {
  const int64_t V = 64, T = 12, k = 4;
  auto head = tiny_head(V);
  torch::NoGradGuard no_grad;
  const int64_t H = head->config().target_hidden;
  const Tensor g = head->project({torch::randn({1, T, H}), torch::randn({1, T, H}), torch::randn({1, T, H})});
  const Tensor text = torch::randint(0, V, {1, T + k});  // step i at t embeds text[t + 1 + i]
  std::vector<Tensor> inputs;
  for (int64_t i = 0; i < k; ++i) inputs.push_back(text.narrow(1, 1 + i, T));
  const std::vector<Tensor> unrolled = head->unroll(g, inputs);
  ASSERT_EQ(static_cast<int64_t>(unrolled.size()), k);

  Eagle3Head::Cache cache = head->new_cache(T + k);
  for (int64_t t = 0; t < T; ++t) {
    // The accepted prefix grows by one position; the chain drafted after the previous one is rolled back first.
    cache.length = t;
    Tensor h = head->append(cache, g.narrow(1, t, 1), text.narrow(1, t + 1, 1));
    for (int64_t i = 0;; ++i) {
      EXPECT_LT(relative_diff(h, unrolled[i].narrow(1, t, 1)), 1e-5) << "position " << t << " step " << i;
      if (i + 1 == k) break;
      h = head->step(cache, h, text.narrow(1, t + 2 + i, 1));
    }
  }
  // A step's output depends on the earlier steps' keys: dropping them (every chain step at the prefix's end instead
  // of after its predecessors) changes the chain.
  cache.length = T - 1;
  Tensor h = head->append(cache, g.narrow(1, T - 1, 1), text.narrow(1, T, 1));
  h = head->step(cache, h, text.narrow(1, T + 1, 1));
  cache.length = T;
  h = head->step(cache, h, text.narrow(1, T + 2, 1));
  EXPECT_GT(relative_diff(h, unrolled[2].narrow(1, T - 1, 1)), 1e-3);

  // Draft ids map back to target ids through d2t.
  const Tensor ids = torch::arange(head->config().vocab.size());
  EXPECT_TRUE(torch::equal(head->to_target(ids), torch::tensor(head->config().vocab.ids)));
  EXPECT_EQ(head->logits(unrolled[0]).size(-1), V / 2);
}

// The layout the engines load, as tools/engine_layouts.py reads it from vLLM's sdist and SGLang's wheel (their
// llama_eagle3.py and llama.py, the loader's renames and the constructors' sizes) for one head configuration: this
// test builds a head of that configuration, exports it as `export` does (bf16) and compares every tensor's name,
// shape and dtype with each engine's list, and the config keys the engines read.
TEST(Eagle3Head, ExportHasTheLayoutVllmAndSglangLoad) {
  const nlohmann::json layouts = io::read_json_file(testing::golden_path("engines") / "layouts.json");
  const nlohmann::json& g = layouts["config"];
  model::Eagle3Config c;
  c.layer = testing::tiny_smol_config(1);
  c.layer.vocab_size = g["vocab_size"], c.layer.hidden_size = g["hidden_size"];
  c.layer.num_attention_heads = g["num_attention_heads"], c.layer.num_key_value_heads = g["num_key_value_heads"];
  c.layer.head_dim = g["head_dim"], c.layer.intermediate_size = g["intermediate_size"];
  c.layer.max_position_embeddings = g["max_position_embeddings"], c.layer.rope_theta = g["rope_theta"];
  c.target_hidden = g["target_hidden_size"];
  c.taps = g["eagle_config"]["eagle_aux_hidden_state_layer_ids"].get<std::vector<int64_t>>();
  std::vector<int64_t> counts(static_cast<size_t>(c.layer.vocab_size));
  for (size_t t = 0; t < counts.size(); ++t) counts[t] = static_cast<int64_t>((t * 7919) % 13);
  c.vocab = data::select_draft_vocab(counts, g["draft_vocab_size"]);
  Eagle3Head head(c, torch::randn({c.layer.vocab_size, c.target_hidden}));
  testing::ScratchDir d;
  model::save_eagle3(head, d / "head", torch::kBFloat16);
  const auto f = io::SafetensorsFile::open(d / "head" / "model.safetensors");
  std::map<std::string, std::pair<std::string, std::vector<int64_t>>> got;
  for (const auto& e : f.entries()) got[e.name] = {e.dtype, e.shape};
  const nlohmann::json j = io::read_json_file(d / "head" / "config.json");
  const std::map<std::string, std::string> dtypes = {{"float", "BF16"}, {"int64", "I64"}, {"bool", "BOOL"}};
  // The engines size the head from config.json: every key of the configuration the layouts were read at.
  for (const auto& [k, v] : g.items())
    if (v.is_number_float()) EXPECT_NEAR(j.value(k, -1.0), v.get<double>(), 1e-9) << k;
    else EXPECT_EQ(j.value(k, nlohmann::json()), v) << k;
  ASSERT_EQ(layouts["engines"].size(), 2u);
  for (const auto& [engine, layout] : layouts["engines"].items()) {
    SCOPED_TRACE(layout["package"].get<std::string>());
    std::map<std::string, std::pair<std::string, std::vector<int64_t>>> want;
    for (const auto& [name, t] : layout["tensors"].items())
      want[name] = {dtypes.at(t["dtype"]), t["shape"].get<std::vector<int64_t>>()};
    EXPECT_EQ(got, want);
    // The keys the loader reads beyond the configuration (their values are checked above), and the class it picks.
    for (const auto& key : layout["config_reads"]) {
      const std::string k = key;
      const size_t dot = k.find('.');
      const nlohmann::json& outer = j.value(k.substr(0, dot), nlohmann::json());
      EXPECT_TRUE(dot == std::string::npos ? !outer.is_null() : outer.contains(k.substr(dot + 1))) << k;
    }
    EXPECT_EQ(j["architectures"], nlohmann::json::array({layout["architecture"]}));
  }
}

// The head loads back from its export; a head for another target, or without its maps, is one error naming the file.
TEST(Eagle3Head, ExportLoadsBack) {
  auto head = tiny_head(64);
  testing::ScratchDir d;
  model::save_eagle3(*head, d / "head");
  const model::Eagle3Config& c = head->config();
  torch::manual_seed(3);
  const Tensor embed = torch::randn({64, c.target_hidden});  // the target's embedding tiny_head used
  auto back = model::load_eagle3(d / "head", embed);
  EXPECT_EQ(back->config().vocab.ids, c.vocab.ids);
  EXPECT_EQ(back->config().taps, c.taps);
  for (const auto& p : head->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), back->named_parameters()[p.key()])) << p.key();

  // A head for another target, a head without its maps: one error naming the file.
  EXPECT_HAS(testing::error_of([&] { model::load_eagle3(d / "head", torch::randn({65, c.target_hidden})); }),
             "config.json: the head is for a target of vocabulary 64 and hidden size 32");
  EXPECT_HAS(testing::error_of([&] { model::load_eagle3(d / "none", embed); }), "none/config.json: no such file");
  std::vector<std::pair<std::string, Tensor>> without;
  for (const auto& p : head->named_parameters()) without.emplace_back(p.key(), p.value());
  io::save_safetensors(d / "head" / "model.safetensors", without);
  EXPECT_HAS(testing::error_of([&] { model::load_eagle3(d / "head", embed); }), "model.safetensors: no tensor 'd2t'");
}

// What the speculative decoder does with a head after the prefix s[0..n): the target reads s[0..n-1) with taps, the
// head's cache takes every position (next token s[t+1]), and the chain drafts gamma tokens on its own outputs.
std::vector<int64_t> chain_drafts(model::Llama& target, Eagle3Head& head, const std::vector<int64_t>& s, int64_t gamma) {
  const int64_t n = static_cast<int64_t>(s.size());
  model::KVCache tc = target.new_cache(1, n);
  model::Taps taps;
  taps.at = head.config().taps;
  target.forward(torch::tensor(std::vector<int64_t>(s.begin(), s.end() - 1)).view({1, n - 1}), tc, {}, &taps);
  Eagle3Head::Cache hc = head.new_cache(n + gamma);
  Tensor h = head.append(hc, head.project(taps.out),
                         torch::tensor(std::vector<int64_t>(s.begin() + 1, s.end())).view({1, n - 1}))
                 .narrow(1, n - 2, 1);
  std::vector<int64_t> d;
  for (int64_t j = 0; j < gamma; ++j) {
    if (j > 0) h = head.step(hc, h, torch::tensor({d.back()}).view({1, 1}));
    d.push_back(head.to_target(head.logits(h).argmax(-1)).item<int64_t>());
  }
  return d;
}

TEST(Eagle3Head, OnePassDraftsEqualTheCachedChainOnItsOwnPath) {
  const int64_t V = 64, gamma = 4;
  torch::manual_seed(11);
  io::LlamaConfig tc = testing::tiny_smol_config(4);
  tc.vocab_size = V;
  model::Llama target(tc);
  torch::NoGradGuard no_grad;
  for (auto& p : target.parameters())
    if (p.dim() == 2) p.normal_(0, 0.3);
  model::Eagle3Config c = tiny_head_config(V);
  Eagle3Head head(c, target.named_parameters()["model.embed_tokens.weight"]);
  for (auto& p : head.parameters())
    if (p.dim() == 2) p.normal_(0, 0.3);

  const std::vector<int64_t> prompt = {5, 9, 13, 2, 40, 7};
  // A continuation the head partly drafts itself (so whole chains are compared), then text it does not.
  std::vector<int64_t> cont = chain_drafts(target, head, prompt, gamma);
  std::vector<int64_t> s = prompt;
  s.insert(s.end(), cont.begin(), cont.end());
  for (int64_t t : chain_drafts(target, head, s, gamma)) cont.push_back(t);
  for (int64_t t : {3, 31, 17, 60, 22, 8}) cont.push_back(t);
  const auto pass = eval::teacher_forced_head_drafts(target, head, prompt, cont, gamma);
  ASSERT_EQ(pass.tokens.size(), cont.size());
  ASSERT_EQ(pass.top_prob.size(), cont.size());
  int64_t off_path = 0;  // chain steps after a mismatch: the head's own path, where the answer's would differ
  for (size_t pos = 0; pos < cont.size(); ++pos) {
    std::vector<int64_t> prefix = prompt;
    prefix.insert(prefix.end(), cont.begin(), cont.begin() + static_cast<std::ptrdiff_t>(pos));
    const std::vector<int64_t> real = chain_drafts(target, head, prefix, gamma);
    EXPECT_EQ(pass.tokens[pos], real) << "position " << pos;
    for (int64_t j = 1; j < gamma; ++j)
      if (pos + j >= cont.size() || real[j - 1] != cont[pos + j - 1]) ++off_path;
    for (float p : pass.top_prob[pos]) EXPECT_TRUE(p > 0 && p <= 1) << "position " << pos;
  }
  EXPECT_GT(off_path, 0);
}

TEST(Eagle3Head, BadShapesAreOneClearError) {
  model::Eagle3Config c = tiny_head_config(64);
  EXPECT_HAS(testing::error_of([&] { Eagle3Head(c, torch::randn({63, c.target_hidden})); }),
             "the target's embedding is [63, 32], expected [64, 32]");
  c.taps = {1, 2};
  EXPECT_HAS(testing::error_of([&] { Eagle3Head(c, torch::randn({64, c.target_hidden})); }), "reads 3 target hidden");
}

}  // namespace
}  // namespace draftalign
