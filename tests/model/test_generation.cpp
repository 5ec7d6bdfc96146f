// Batched sampling with continuous batching: greedy output equals the model's own one-sequence greedy decoding for
// every request of a ragged, refilled batch (SmolLM2); the sampling filters equal hand-computed distributions; a
// request's samples do not depend on the batch it runs in; sampled first tokens follow the model's distribution.
#include <gtest/gtest.h>

#include <set>

#include "model/decode_graphs.h"
#include "model/generation.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

namespace draftalign::model {
namespace {

namespace fsys = std::filesystem;
using torch::Tensor;

using testing::kSmolDir;

TEST(Sampling, FiltersEqualHandComputedDistributions) {
  const Tensor logits = torch::tensor({0.0, std::log(2.0), std::log(3.0), std::log(4.0)}).unsqueeze(0);
  auto close = [](const Tensor& a, std::vector<double> want) {
    return torch::allclose(a.squeeze(0).to(torch::kFloat64), torch::tensor(want, torch::kFloat64), 1e-6, 1e-6);
  };
  EXPECT_TRUE(close(sampling_probs(logits, 1.0, 1.0, 0), {0.1, 0.2, 0.3, 0.4}));
  EXPECT_TRUE(close(sampling_probs(logits, 0.5, 1.0, 0), {1 / 30.0, 4 / 30.0, 9 / 30.0, 16 / 30.0}));
  EXPECT_TRUE(close(sampling_probs(logits, 1.0, 1.0, 2), {0, 0, 3 / 7.0, 4 / 7.0}));
  EXPECT_TRUE(close(sampling_probs(logits, 1.0, 0.5, 0), {0, 0, 3 / 7.0, 4 / 7.0}));  // 0.4 < 0.5: 0.3 joins
  EXPECT_TRUE(close(sampling_probs(logits, 1.0, 0.3, 0), {0, 0, 0, 1}));
  EXPECT_TRUE(close(sampling_probs(logits, 1.0, 0.8, 3), {0, 2 / 9.0, 3 / 9.0, 4 / 9.0}));  // top-k, then top-p
}

TEST(Generator, GreedyEqualsSingleSequenceGreedyForEveryRowOfARefilledBatch) {
  auto model = load_llama(kSmolDir);
  auto tokenizer = tok::load_tokenizer(kSmolDir);
  const auto chat = tok::ChatTemplate::from_dir(kSmolDir);
  const std::vector<std::string> questions = {"What is the capital of France?", "Say hi.",
                                              "Name three colours of the rainbow, separated by commas.",
                                              "What is 2 + 2?"};
  std::vector<Request> requests;
  for (size_t i = 0; i < questions.size(); ++i)
    requests.push_back({static_cast<int64_t>(i), tokenizer->encode(chat.render({{"user", questions[i]}})), 0});
  SamplingParams p;
  p.temperature = 0;
  p.max_new_tokens = 12;
  p.stop_ids = {tokenizer->special().eos};
  Generator gen(*model, p, /*batch_size=*/2);
  int64_t reported = 0;
  const auto out = gen.run(requests, [&](int64_t n) { reported += n; });
  ASSERT_EQ(out.size(), requests.size());
  EXPECT_GT(gen.shared_prefix(), 10) << "the chat template's system prompt is prefilled once and shared";
  int64_t total = 0;
  std::set<size_t> lengths;
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto want = greedy_decode(*model, {requests[i].prompt}, p.max_new_tokens, p.stop_ids)[0];
    EXPECT_EQ(out[i].tokens, want) << "request " << i << ": " << tokenizer->decode(out[i].tokens) << " vs "
                                   << tokenizer->decode(want);
    EXPECT_EQ(out[i].finish, want.back() == p.stop_ids[0] ? Finish::kEos : Finish::kLength);
    EXPECT_EQ(out[i].id, static_cast<int64_t>(i));
    total += static_cast<int64_t>(out[i].tokens.size());
    lengths.insert(out[i].tokens.size());
  }
  EXPECT_EQ(reported, total);

  // Without prefix sharing every row prefills its whole prompt: the same tokens.
  gen.set_prefix_sharing(false);
  const auto unshared = gen.run(requests);
  EXPECT_EQ(gen.shared_prefix(), 0);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(unshared[i].tokens, out[i].tokens) << "request " << i;

  // A stop string ends the response with the token that completes it.
  const std::vector<int64_t>& full = out[0].tokens;
  ASSERT_GE(full.size(), 4u);
  p.stop_strings = {tokenizer->decode({full.begin() + 1, full.begin() + 3})};
  const auto stopped = Generator(*model, p, 2, 0, tokenizer.get()).run({requests[0]})[0];
  EXPECT_EQ(stopped.finish, Finish::kStop);
  ASSERT_LE(stopped.tokens.size(), 3u);
  EXPECT_TRUE(std::equal(stopped.tokens.begin(), stopped.tokens.end(), full.begin()));
  EXPECT_HAS(tokenizer->decode(stopped.tokens), p.stop_strings[0]);
  EXPECT_GT(lengths.size(), 1u) << "the prompts should finish at different times (a refilled batch)";
}

// A small random model with peaked distributions (a scaled final norm), on the CPU.
std::shared_ptr<Llama> peaked_model() {
  io::LlamaConfig c;
  c.vocab_size = 32, c.hidden_size = 32, c.intermediate_size = 64, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 8, c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5, c.rope_theta = 10000, c.tie_word_embeddings = false;  // tied, it copies its input
  torch::manual_seed(11);
  auto m = std::make_shared<Llama>(c);
  torch::NoGradGuard no_grad;
  for (auto& kv : m->named_parameters())
    if (kv.key() == "model.norm.weight") kv.value().mul_(60.0);  // logits 60x sharper
  return m;
}

// The steps a CUDA graph captures (Llama::forward_static through DecodeGraphs: keys over the whole capacity, no host
// synchronisation) equal the eager forward: a ragged prefill, then one-token steps of a ragged batch (a row taking
// none), three-token verification steps, and rollbacks, with greedy choices fed back. On the CPU DecodeGraphs runs the
// static step eagerly; GpuDecodeGraphs replays captured graphs.
void expect_static_steps_equal_eager(torch::Device device, bool graphs_expected) {
  auto model = peaked_model();
  model->to(device);
  torch::NoGradGuard no_grad;
  const int64_t B = 3, capacity = 40;
  KVCache eager = model->new_cache(B, capacity), fixed = model->new_cache(B, capacity);
  DecodeGraphs steps(*model, fixed);
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  torch::manual_seed(5);
  const Tensor prompt = torch::randint(32, {B, 6}, opts), n_prompt = torch::tensor({6, 2, 4}, opts);
  Tensor next = model->forward(prompt, eager, n_prompt).select(1, 1).argmax(-1);  // any column: just a start
  model->forward(prompt, fixed, n_prompt);
  auto compare = [&](const Tensor& a, const Tensor& b, const std::string& what) {
    ASSERT_EQ(a.sizes(), b.sizes()) << what;
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-5 * (1 + a.abs().max().item<double>())) << what;
    EXPECT_TRUE(torch::equal(a.argmax(-1), b.argmax(-1))) << what;
  };
  for (int step = 0; step < 8; ++step) {
    const Tensor n = torch::tensor({1, step % 3 == 0 ? 0 : 1, 1}, opts);  // row 1 idles every third step
    const Tensor x = next.view({B, 1});
    const Tensor a = model->forward(x, eager, n), b = steps.step(x, n);
    compare(a, b, str_cat("one-token step ", step));
    EXPECT_TRUE(torch::equal(eager.lengths, fixed.lengths));
    next = a.select(1, 0).argmax(-1);
  }
  for (int round = 0; round < 3; ++round) {  // verify three tokens, keep the first one, roll the rest back
    const Tensor x = torch::stack({next, (next + 1) % 32, (next + 7) % 32}, 1);
    const Tensor a = model->forward(x, eager), b = steps.step(x);
    compare(a, b, str_cat("verification ", round));
    eager.lengths.sub_(2), fixed.lengths.sub_(2);
    next = a.select(1, 0).argmax(-1);
  }
  EXPECT_EQ(steps.graphs(), graphs_expected ? 2 : 0);  // one per shape: one ragged token, three tokens
}

TEST(DecodeGraphs, StaticStepsEqualTheEagerForward) { expect_static_steps_equal_eager(torch::kCPU, false); }

TEST(GpuDecodeGraphs, ReplayedGraphsEqualTheEagerForward) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  expect_static_steps_equal_eager(torch::Device(torch::kCUDA, 0), true);
}

TEST(Generator, SamplesOfARequestDoNotDependOnItsBatchAndStopsAreApplied) {
  auto model = peaked_model();
  std::vector<Request> requests;
  for (int64_t i = 0; i < 9; ++i) requests.push_back({i, {1 + i % 5, 2, 3 + i % 3, 4}, 1000 + static_cast<uint64_t>(i)});
  SamplingParams p;
  p.temperature = 1.0, p.top_p = 0.95, p.top_k = 20, p.max_new_tokens = 12, p.stop_ids = {7};
  const auto alone = Generator(*model, p, 1, 4).run(requests);
  const auto batched = Generator(*model, p, 4, 4).run(requests);
  std::vector<Request> reversed(requests.rbegin(), requests.rend());
  const auto other_order = Generator(*model, p, 3, 4).run(reversed);
  std::set<std::vector<int64_t>> distinct;
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(batched[i].tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(other_order[requests.size() - 1 - i].tokens, alone[i].tokens) << "request " << i;
    EXPECT_TRUE(torch::equal(batched[i].topk_ids, alone[i].topk_ids));
    ASSERT_EQ(alone[i].topk_logprobs.sizes(), (c10::IntArrayRef{static_cast<int64_t>(alone[i].tokens.size()), 4}));
    EXPECT_LE(alone[i].topk_logprobs.max().item<double>(), 0.0);
    distinct.insert(alone[i].tokens);
  }

  EXPECT_GT(distinct.size(), 3u) << "different seeds should give different samples";
  std::set<Finish> finishes;
  for (const auto& c : alone) finishes.insert(c.finish);
  EXPECT_EQ(finishes, (std::set<Finish>{Finish::kEos, Finish::kLength}));
  for (const auto& c : alone)
    if (c.finish == Finish::kEos) EXPECT_EQ(c.tokens.back(), 7);
}

// The names are what preview.jsonl and sweep.jsonl hold, the values what generate's shards store.
TEST(Finish, NamesAndCodesRoundTripAndAnUnknownNameIsAnError) {
  for (Finish f : {Finish::kEos, Finish::kStop, Finish::kLength})
    EXPECT_EQ(finish_from_name(finish_name(f), "here"), f);
  EXPECT_EQ(std::string(finish_name(static_cast<Finish>(1))), "stop");
  EXPECT_HAS(testing::error_of([] { finish_from_name("done", "sweep.jsonl: 'finish'"); }),
             "sweep.jsonl: 'finish': 'done' is not a finish reason (eos, stop or length)");
}

TEST(Generator, FirstTokensFollowTheModelsDistribution) {
  auto model = peaked_model();
  const std::vector<int64_t> prompt = {5, 9, 2};
  torch::NoGradGuard no_grad;
  const Tensor probs = torch::softmax(model->forward(torch::tensor(prompt).unsqueeze(0)).select(1, 2), -1)
                           .squeeze(0).to(torch::kFloat64);
  const int64_t n = 4000;
  std::vector<Request> requests;
  for (int64_t i = 0; i < n; ++i) requests.push_back({i, prompt, static_cast<uint64_t>(i) * 7919 + 1});
  SamplingParams p;
  p.max_new_tokens = 1;
  const auto out = Generator(*model, p, 64).run(requests);
  Tensor counts = torch::zeros({32}, torch::kFloat64);
  for (const auto& c : out) counts[c.tokens[0]] += 1;
  const double tvd = 0.5 * (counts / static_cast<double>(n) - probs).abs().sum().item<double>();
  EXPECT_LT(tvd, 0.05) << "empirical " << counts / static_cast<double>(n) << " vs model " << probs;
  EXPECT_GT(probs.max().item<double>(), 0.2) << "a peaked distribution makes the test sharp";
}

}  // namespace
}  // namespace draftalign::model
