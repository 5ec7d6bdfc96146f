// The Llama model against transformers: golden logits and greedy tokens from tools/make_goldens.py, the KV cache
// against the full forward on ragged batches, packed sequences, and the export round trip through transformers; the
// same parity for a tiny model of every other supported family (Llama 3.x, Qwen2, Qwen3, Mistral).
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "config/loader.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "model/generation.h"
#include "model/llama.h"
#include "test_util.h"

namespace draftalign {
namespace {

using model::Llama;
using torch::Tensor;
namespace fsys = std::filesystem;

double max_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

struct Tiny {
  std::shared_ptr<Llama> model;
  io::SafetensorsFile golden;
};

Tiny load_tiny(torch::ScalarType dtype = torch::kFloat32) {
  const fsys::path dir = testing::golden_path("tiny");
  return {model::load_llama(dir / "model", torch::kCPU, dtype), io::SafetensorsFile::open(dir / "golden.safetensors")};
}

TEST(Llama, TinyLogitsEqualTransformers) {
  Tiny t = load_tiny();
  // The tiny model exercises what SmolLM2 does not: untied lm_head, explicit head_dim, GQA 4:2, Llama-3 rope scaling.
  EXPECT_FALSE(t.model->config().tie_word_embeddings);
  EXPECT_EQ(t.model->config().rope_scaling.type, "llama3");
  torch::NoGradGuard no_grad;
  Tensor logits = t.model->forward(t.golden.get("tokens"));
  EXPECT_LT(max_diff(logits, t.golden.get("logits")), 1e-4);
}

TEST(Llama, FewTokensWithoutGradientsEqualTransformers) {
  // 1..8 rows without gradients take the CPU's W x^T path instead of torch::linear (a plain step padded to two rows,
  // a verification block): every prefix length on both sides of that range gives transformers' logits, with the
  // single row padded or not.
  Tiny t = load_tiny();
  torch::NoGradGuard no_grad;
  const Tensor tokens = t.golden.get("tokens").narrow(0, 0, 1), golden = t.golden.get("logits").narrow(0, 0, 1);
  for (int64_t T = 1; T <= 10; ++T)
    EXPECT_LT(max_diff(t.model->forward(tokens.narrow(1, 0, T)), golden.narrow(1, 0, T)), 1e-4) << T << " tokens";
  model::set_cpu_pad_single_row(false);
  EXPECT_LT(max_diff(t.model->forward(tokens.narrow(1, 0, 1)), golden.narrow(1, 0, 1)), 1e-4) << "one row, GEMV";
  model::set_cpu_pad_single_row(true);
}

TEST(Llama, PackedDocumentsDoNotSeeEachOther) {
  Tiny t = load_tiny();
  torch::NoGradGuard no_grad;
  Tensor logits = t.model->forward(t.golden.get("packed.tokens"), t.golden.get("packed.segments"));
  EXPECT_LT(max_diff(logits, t.golden.get("packed.logits")), 1e-4);
  // Without the segments the later documents see the earlier ones: the same row gives other logits.
  EXPECT_GT(max_diff(t.model->forward(t.golden.get("packed.tokens")), t.golden.get("packed.logits")), 1e-2);
}

TEST(Llama, KVCacheOnARaggedBatchEqualsFullForward) {
  Tiny t = load_tiny();
  torch::NoGradGuard no_grad;
  const Tensor tokens = t.golden.get("tokens");  // [2, 24]
  const Tensor full = t.model->forward(tokens);
  // Row 0 is fed 5 + 1 + 1 + 17 tokens, row 1 3 + 7 + 1 + 13: different lengths in every call, padding in between.
  model::KVCache cache = t.model->new_cache(2, 40);
  const std::vector<std::pair<int64_t, int64_t>> chunks = {{5, 3}, {1, 7}, {1, 1}, {17, 13}};
  std::vector<int64_t> done = {0, 0};
  std::vector<Tensor> got0, got1;
  for (auto [n0, n1] : chunks) {
    const int64_t T = std::max(n0, n1);
    Tensor step = torch::zeros({2, T}, torch::kInt64);
    step[0].narrow(0, 0, n0).copy_(tokens[0].narrow(0, done[0], n0));
    step[1].narrow(0, 0, n1).copy_(tokens[1].narrow(0, done[1], n1));
    Tensor logits = t.model->forward(step, cache, torch::tensor({n0, n1}));
    got0.push_back(logits[0].narrow(0, 0, n0));
    got1.push_back(logits[1].narrow(0, 0, n1));
    done[0] += n0;
    done[1] += n1;
  }
  EXPECT_EQ(cache.lengths[0].item<int64_t>(), 24);
  EXPECT_EQ(cache.lengths[1].item<int64_t>(), 24);
  EXPECT_LT(max_diff(torch::cat(got0), full[0]), 1e-4);
  EXPECT_LT(max_diff(torch::cat(got1), full[1]), 1e-4);

  // Rolling back (as after a rejected draft) and feeding other tokens gives the full forward of the new sequence.
  cache.lengths.fill_(20);
  Tensor other = torch::tensor({{5, 6, 7}, {8, 9, 10}});
  Tensor rolled = t.model->forward(other, cache);
  Tensor expect = t.model->forward(torch::cat({tokens.narrow(1, 0, 20), other}, 1)).narrow(1, 20, 3);
  EXPECT_LT(max_diff(rolled, expect), 1e-4);
}

// EAGLE-3 reads the target's hidden states: taps at transformers' output_hidden_states indices, the same through the
// KV cache as through the full forward, and the last layer's output (index L) is what the final norm turns into
// hidden().
TEST(Llama, HiddenStateTapsEqualTransformers) {
  Tiny t = load_tiny();
  torch::NoGradGuard no_grad;
  const Tensor tokens = t.golden.get("tokens");  // [2, 24]
  const int64_t L = t.model->config().num_hidden_layers;
  model::Taps taps;
  for (int64_t i = 0; i <= L; ++i) taps.at.push_back(i);
  const Tensor h = t.model->hidden(tokens, {}, &taps);
  ASSERT_EQ(static_cast<int64_t>(taps.out.size()), L + 1);
  for (int64_t i = 0; i < L; ++i)
    EXPECT_LT(max_diff(taps.out[i], t.golden.get("hidden." + std::to_string(i))), 1e-4) << "index " << i;
  // Index L through the final norm is hidden(): the norm's weight times the fp32-normalised residual.
  const Tensor w = t.model->named_parameters()["model.norm.weight"];
  const Tensor x = taps.out[L];
  EXPECT_LT(max_diff(w * (x * torch::rsqrt(x.pow(2).mean(-1, true) + t.model->config().rms_norm_eps)), h), 1e-5);

  // Through the cache, in two appends: the taps of each append are those positions' rows of the full forward.
  model::Taps some;
  some.at = {1, L};
  model::KVCache cache = t.model->new_cache(2, 32);
  t.model->forward(tokens.narrow(1, 0, 10), cache, {}, &some);
  const std::vector<Tensor> first = some.out;
  t.model->forward(tokens.narrow(1, 10, 14), cache, {}, &some);
  EXPECT_LT(max_diff(torch::cat({first[0], some.out[0]}, 1), taps.out[1]), 1e-4);
  EXPECT_LT(max_diff(torch::cat({first[1], some.out[1]}, 1), taps.out[L]), 1e-4);

  model::Taps bad;
  bad.at = {2, 1};
  EXPECT_HAS(testing::error_of([&] { t.model->hidden(tokens, {}, &bad); }), "taps must be ascending indices");
}

TEST(Llama, CacheOverflowIsAnError) {
  Tiny t = load_tiny();
  torch::NoGradGuard no_grad;
  model::KVCache cache = t.model->new_cache(1, 4);
  EXPECT_HAS(testing::error_of([&] { t.model->forward(torch::zeros({1, 5}, torch::kInt64), cache); }),
             "the KV cache holds 4 positions, 5 are needed");
}

TEST(Llama, Bf16RunsCloseToFp32) {
  Tiny f32 = load_tiny(), b16 = load_tiny(torch::kBFloat16);
  torch::NoGradGuard no_grad;
  const Tensor tokens = f32.golden.get("tokens");
  Tensor a = f32.model->forward(tokens), b = b16.model->forward(tokens);
  EXPECT_EQ(b.scalar_type(), torch::kBFloat16);
  // bf16 keeps 8 bits of mantissa: expect agreement to a few percent of the logits' spread, and the same argmax
  // almost everywhere.
  EXPECT_LT(max_diff(a, b), 0.05 * a.abs().max().item<double>());
  EXPECT_GT((a.argmax(-1) == b.argmax(-1)).to(torch::kFloat32).mean().item<float>(), 0.9f);
}

// --- The real target --------------------------------------------------------------------------------------------

struct SmolGolden {
  nlohmann::json prompts;
  io::SafetensorsFile logits;
};

SmolGolden smol_golden() {
  const fsys::path dir = testing::golden_path("smollm2");
  return {nlohmann::json::parse(fs::read_file(dir / "prompts.json"))["prompts"],
          io::SafetensorsFile::open(dir / "logits.safetensors")};
}

std::shared_ptr<Llama> smollm2() {
  return model::load_llama(fsys::path(DRAFTALIGN_SOURCE_DIR) / ".cache/models/SmolLM2-135M-Instruct");
}

TEST(Llama, SmolLM2LogitsEqualTransformers) {
  SmolGolden g = smol_golden();
  auto m = smollm2();
  torch::NoGradGuard no_grad;
  ASSERT_EQ(g.prompts.size(), 3u);
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    const std::vector<int64_t> ids = g.prompts[i]["ids"];
    Tensor logits = m->forward(torch::tensor(ids).unsqueeze(0))[0];
    const double d = max_diff(logits, g.logits.get(str_cat("logits.", i)));
    EXPECT_LE(d, 1e-3) << "prompt " << g.prompts[i]["name"];
    std::cout << "[parity] " << g.prompts[i]["name"].get<std::string>() << ": " << ids.size()
              << " tokens, max |ours - transformers| = " << d << "\n";
  }
}

TEST(Llama, SmolLM2GreedyTokensEqualTransformers) {
  SmolGolden g = smol_golden();
  auto m = smollm2();
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& p : g.prompts) prompts.push_back(p["ids"].get<std::vector<int64_t>>());
  // All three prompts (13, 37 and 68 tokens) in one ragged batch through the KV cache.
  const auto got = model::greedy_decode(*m, prompts, 64);
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(got[i], g.prompts[i]["greedy"].get<std::vector<int64_t>>()) << "prompt " << g.prompts[i]["name"];
}

// --- Export ---------------------------------------------------------------------------------------------------------

// Runs tools/check_hf_logits.py: transformers loads `dir` and compares its logits on `golden`'s tokens.
testing::CommandResult transformers_check(const fsys::path& dir, const fsys::path& golden) {
  return testing::run_command(str_cat(DRAFTALIGN_TEST_PYTHON, " ", DRAFTALIGN_SOURCE_DIR,
                                      "/tools/check_hf_logits.py ", dir, " ", golden));
}

TEST(Llama, ExportRoundTripsThroughTransformers) {
  testing::ScratchDir tmp;
  Tiny t = load_tiny();
  model::save_llama(*t.model, tmp / "export");
  // Ours reads it back bit for bit...
  auto back = model::load_llama(tmp / "export");
  for (const auto& p : t.model->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), back->named_parameters()[p.key()])) << p.key();
  // ...and transformers gives the golden logits from it.
  auto r = transformers_check(tmp / "export", testing::golden_path("tiny") / "golden.safetensors");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// A tiny drafter-like config: tied embeddings, 64 tokens.
io::LlamaConfig tied_drafter_config() {
  io::LlamaConfig c;
  c.vocab_size = 64, c.hidden_size = 32, c.intermediate_size = 48, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 1, c.head_dim = 8, c.max_position_embeddings = 32;
  c.rms_norm_eps = 1e-5, c.rope_theta = 100000, c.tie_word_embeddings = true;
  c.bos_token_id = 1, c.eos_token_ids = {2}, c.pad_token_id = 2;
  return c;
}

TEST(Llama, ExportOfATiedBf16DrafterOpensInTransformers) {
  testing::ScratchDir tmp;
  io::LlamaConfig c = tied_drafter_config();
  torch::manual_seed(3);
  Llama m(c);
  model::save_llama(m, tmp / "drafter", torch::kBFloat16);
  EXPECT_EQ(io::read_hf_config(tmp / "drafter" / "config.json").dtype, "bfloat16");
  EXPECT_FALSE(io::SafetensorsFile::open(tmp / "drafter" / "model.safetensors").contains("lm_head.weight"));
  // Our logits from the stored (bf16-rounded) weights, in fp32, are what transformers must reproduce.
  auto stored = model::load_llama(tmp / "drafter", torch::kCPU, torch::kFloat32);
  torch::NoGradGuard no_grad;
  Tensor tokens = torch::randint(0, 64, {2, 10});
  io::save_safetensors(tmp / "golden.safetensors", {{"tokens", tokens}, {"logits", stored->forward(tokens)}});
  auto r = transformers_check(tmp / "drafter", tmp / "golden.safetensors");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// A draft vocabulary (model.draft_vocab_size): the head is the full head's rows at its ids, every other id gets
// -inf (the drafter's argmax and samples stay inside it), the ids survive a save and load, and the export is a plain
// Llama whose lm_head has those rows and zeros elsewhere, which transformers reproduces.
TEST(Llama, ADraftVocabularyHeadIsTheFullHeadsRowsAndExportsToTransformers) {
  testing::ScratchDir tmp;
  io::LlamaConfig c = tied_drafter_config();
  torch::manual_seed(3);
  Llama full(c);
  c.draft_token_ids = {2, 40, 7, 13, 60, 0, 21, 33, 8, 50, 19, 27};  // most wanted first: not sorted
  Llama m(c, {}, false);
  {
    torch::NoGradGuard no_grad;
    auto dst = m.named_parameters();
    for (const auto& p : full.named_parameters()) dst[p.key()].copy_(p.value());
  }
  const Tensor ids = torch::tensor(c.draft_token_ids, torch::kInt64);
  EXPECT_EQ(m.head_rows(), 12);
  EXPECT_EQ(m.head_weight().sizes(), (std::vector<int64_t>{12, 32}));
  EXPECT_TRUE(torch::equal(m.head_row_of(torch::tensor({40, 41, 2})), torch::tensor({1, -1, 0})));
  torch::NoGradGuard no_grad;
  const Tensor tokens = torch::randint(0, 64, {2, 10});
  const Tensor want = full.forward(tokens), got = m.forward(tokens);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LT(max_diff(got.index_select(-1, ids), want.index_select(-1, ids)), 1e-5);
  const Tensor outside = torch::ones({64}, torch::kBool).index_fill_(0, ids, false);
  EXPECT_TRUE(got.index({"...", outside}).isneginf().all().item<bool>());
  const Tensor argmax = got.argmax(-1);
  EXPECT_TRUE(torch::isin(argmax, ids).all().item<bool>());
  EXPECT_FALSE(torch::equal(argmax, want.argmax(-1))) << "the full head's argmax never left the draft vocabulary";

  // Saved and read back: the ids are in config.json, the logits the same.
  model::save_llama(m, tmp / "drafter");
  auto back = model::load_llama(tmp / "drafter");
  EXPECT_EQ(back->config().draft_token_ids, c.draft_token_ids);
  EXPECT_TRUE(torch::equal(back->forward(tokens), got));

  // Without autograd the gathered rows are cached, and they follow every change of the weight: in place (an
  // optimiser step), a new draft vocabulary, a cast.
  {
    const Tensor emb = back->named_parameters()["model.embed_tokens.weight"];
    ASSERT_TRUE(torch::equal(back->head_weight(), emb.index_select(0, ids)));
    emb.add_(1.0);
    EXPECT_TRUE(torch::equal(back->head_weight(), emb.index_select(0, ids)));
    back->set_draft_vocab({5, 6});
    EXPECT_TRUE(torch::equal(back->head_weight(), emb.index_select(0, torch::tensor({5, 6}))));
    back->to(torch::kFloat64);
    const Tensor emb64 = back->named_parameters()["model.embed_tokens.weight"];
    EXPECT_TRUE(torch::equal(back->head_weight(), emb64.index_select(0, torch::tensor({5, 6}))));
  }

  // The export: an untied lm_head over all 64 tokens, the draft rows and zeros; transformers gives its logits.
  auto plain = model::with_full_head(m);
  EXPECT_FALSE(plain->has_draft_vocab());
  EXPECT_FALSE(plain->config().tie_word_embeddings);
  const Tensor exported = plain->forward(tokens);
  EXPECT_LT(max_diff(exported.index_select(-1, ids), want.index_select(-1, ids)), 1e-5);
  EXPECT_TRUE(exported.index({"...", outside}).eq(0).all().item<bool>());
  const Tensor positive = got.amax(-1).gt(0);  // where the drafter's top logit is positive its argmax is the export's
  EXPECT_TRUE(positive.any().item<bool>());
  EXPECT_TRUE(torch::equal(exported.argmax(-1).index({positive}), argmax.index({positive})));
  model::save_llama(*plain, tmp / "export");
  EXPECT_TRUE(io::SafetensorsFile::open(tmp / "export" / "model.safetensors").contains("lm_head.weight"));
  EXPECT_EQ(testing::read_text(tmp / "export" / "config.json").find("draft_token_ids"), std::string::npos);
  io::save_safetensors(tmp / "golden.safetensors", {{"tokens", tokens}, {"logits", exported}});
  auto r = transformers_check(tmp / "export", tmp / "golden.safetensors");
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // A config.json whose draft_token_ids repeat an id is named.
  std::string text = testing::read_text(tmp / "drafter" / "config.json");
  const size_t at = text.find("\"draft_token_ids\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(text.find("40", at), 2, "13");
  testing::write_text(tmp / "drafter" / "config.json", text);
  const std::string e = testing::error_of([&] { model::load_llama(tmp / "drafter"); });
  EXPECT_HAS(e, (tmp / "drafter" / "config.json").string());
  EXPECT_HAS(e, "draft_token_ids");
  EXPECT_HAS(testing::error_of([&] { m.set_draft_vocab(std::vector<int64_t>(65, 0)); }), "larger than the vocabulary of 64");
}

TEST(Llama, ExportLeavesThePreviousDirectoryOnFailure) {
  testing::ScratchDir tmp;
  Tiny t = load_tiny();
  model::save_llama(*t.model, tmp / "export");
  const std::string before = testing::read_text(tmp / "export" / "config.json");
  EXPECT_HAS(testing::error_of([&] { model::save_llama(*t.model, tmp / "export", torch::kInt32); }),
             "cannot be stored as Int");
  EXPECT_EQ(testing::read_text(tmp / "export" / "config.json"), before);
  EXPECT_EQ(std::distance(fsys::directory_iterator(tmp.path()), fsys::directory_iterator()), 1);
}

TEST(Llama, LoadsAShardedCheckpoint) {
  // The Llama-2-7b-chat-hf layout: model-0000i-of-00002.safetensors and model.safetensors.index.json.
  testing::ScratchDir tmp;
  Tiny t = load_tiny();
  std::vector<std::pair<std::string, Tensor>> a, b;
  nlohmann::json weight_map = nlohmann::json::object();
  for (const auto& p : t.model->named_parameters()) {
    const bool first = p.key().find("layers.2.") == std::string::npos && p.key() != "lm_head.weight";
    (first ? a : b).emplace_back(p.key(), p.value().to(torch::kBFloat16));
    weight_map[p.key()] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  io::save_safetensors(tmp / "model-00001-of-00002.safetensors", a);
  io::save_safetensors(tmp / "model-00002-of-00002.safetensors", b);
  testing::write_text(tmp / "model.safetensors.index.json", nlohmann::json({{"weight_map", weight_map}}).dump());
  fsys::copy_file(testing::golden_path("tiny") / "model" / "config.json", tmp / "config.json");
  auto sharded = model::load_llama(tmp.path());
  for (const auto& p : t.model->named_parameters())
    EXPECT_TRUE(torch::equal(p.value().to(torch::kBFloat16).to(torch::kFloat32), sharded->named_parameters()[p.key()]))
        << p.key();
}

TEST(Llama, LoadNamesTheBadCheckpoint) {
  testing::ScratchDir tmp;
  EXPECT_HAS(testing::error_of([&] { model::load_llama(tmp / "nowhere"); }), "nowhere");
}

// --- Drafter shapes (configs/drafter-*.yaml) ----------------------------------------------------------------------

int64_t params_of(const io::LlamaConfig& c) {
  return Llama(c, torch::TensorOptions().device(torch::kMeta), /*initialise=*/false).num_params();
}

TEST(DrafterShapes, ShippedConfigsHaveThePaperAndSmolLM2Sizes) {
  auto shape = [](const std::string& file) {
    return config::load_config(str_cat(DRAFTALIGN_SOURCE_DIR, "/configs/", file), {}).cfg.pretrain.model.hf_config();
  };
  // The paper's drafter: 4 x 1024, MLP 2816, 8 heads, 32000 tokens, untied: "115M".
  const io::LlamaConfig paper = shape("drafter-llama2-115m.yaml");
  EXPECT_FALSE(paper.tie_word_embeddings);
  EXPECT_EQ(paper.vocab_size, 32000);
  const int64_t n = params_of(paper);
  EXPECT_GT(n, 110'000'000);
  EXPECT_LT(n, 120'000'000);

  const io::LlamaConfig target =
      io::read_hf_config(DRAFTALIGN_SOURCE_DIR "/data/fixtures/smollm2-135m-instruct/config.json");
  const int64_t target_params = params_of(target);
  const auto golden = nlohmann::json::parse(fs::read_file(testing::golden_path("smollm2") / "prompts.json"));
  EXPECT_EQ(target_params, golden["num_params"].get<int64_t>()) << "transformers counts otherwise";
  for (const char* f : {"drafter-smollm2-7m.yaml", "drafter-smollm2-13m.yaml"}) {
    const io::LlamaConfig d = shape(f);
    EXPECT_EQ(d.vocab_size, target.vocab_size) << f;
    const double ratio = static_cast<double>(params_of(d)) / static_cast<double>(target_params);
    EXPECT_GT(ratio, 0.02) << f;
    EXPECT_LE(ratio, 0.10) << f;
    std::cout << "[shapes] " << f << ": " << params_of(d) << " parameters, " << 100 * ratio << "% of SmolLM2-135M\n";
  }
  std::cout << "[shapes] drafter-llama2-115m.yaml: " << n << " parameters\n";
}

// --- Other families: Llama 3.x, Qwen2 / Qwen2.5, Qwen3, Mistral ----------------------------------------------------

struct FamilyCase {
  const char* name;          // .cache/golden/families/<name> (tools/make_goldens.py, FAMILIES)
  const char* architecture;  // the class transformers must load the export as
  bool windowed;             // some layers attend to a sliding window
};

void PrintTo(const FamilyCase& f, std::ostream* os) { *os << f.name; }  // ctest's test names, not a byte dump

class Family : public ::testing::TestWithParam<FamilyCase> {};

// A tiny random model of each family, built by transformers: our logits equal transformers' over a full forward and
// through the KV cache in chunks, greedy decoding gives its tokens, and the export opens in transformers as the same
// architecture with the same logits.
TEST_P(Family, LogitsGreedyTokensAndExportEqualTransformers) {
  const FamilyCase f = GetParam();
  const fsys::path dir = testing::golden_path("families") / f.name;
  auto m = model::load_llama(dir / "model");
  const auto golden = io::SafetensorsFile::open(dir / "golden.safetensors");
  const Tensor tokens = golden.get("tokens"), logits = golden.get("logits");
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_diff(m->forward(tokens), logits), 1e-4);

  model::KVCache cache = m->new_cache(tokens.size(0), tokens.size(1));
  std::vector<Tensor> chunks;
  for (auto [start, n] : {std::pair<int64_t, int64_t>{0, 10}, {10, 1}, {11, 13}})
    chunks.push_back(m->forward(tokens.narrow(1, start, n), cache));
  EXPECT_LT(max_diff(torch::cat(chunks, 1), logits), 1e-4) << "through the KV cache";

  const Tensor prompt = golden.get("greedy.prompt"), want = golden.get("greedy.tokens");
  const std::vector<int64_t> p(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
  const std::vector<int64_t> w(want.data_ptr<int64_t>(), want.data_ptr<int64_t>() + want.numel());
  EXPECT_EQ(model::greedy_decode(*m, {p}, static_cast<int64_t>(w.size()))[0], w);

  if (f.windowed) {  // the window matters over these rows: without it the logits differ
    io::LlamaConfig c = m->config();
    c.sliding_window = 0, c.sliding_layers.clear();
    Llama plain(c, {}, false);
    for (auto& q : plain.named_parameters()) q.value().copy_(m->named_parameters()[q.key()]);
    EXPECT_GT(max_diff(plain.forward(tokens), logits), 1e-2);
  }

  testing::ScratchDir tmp;
  model::save_llama(*m, tmp / "export");
  EXPECT_EQ(io::read_hf_config(tmp / "export" / "config.json").model_type, m->config().model_type);
  auto r = transformers_check(tmp / "export", dir / "golden.safetensors");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_HAS(r.output, f.architecture);
}

INSTANTIATE_TEST_SUITE_P(Families, Family,
                         ::testing::Values(FamilyCase{"llama3", "LlamaForCausalLM", false},
                                           FamilyCase{"qwen2", "Qwen2ForCausalLM", false},
                                           FamilyCase{"qwen2-window", "Qwen2ForCausalLM", true},
                                           FamilyCase{"qwen3", "Qwen3ForCausalLM", false},
                                           FamilyCase{"mistral", "MistralForCausalLM", true}),
                         [](const ::testing::TestParamInfo<FamilyCase>& info) {
                           std::string name = info.param.name;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace draftalign
