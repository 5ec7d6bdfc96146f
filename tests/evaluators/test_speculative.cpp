// Speculative decoding: the accept/reject core on hand-computed cases; greedy speculative output identical token for
// token to the target's own greedy decoding for every prompt and several gamma (with rejections, so cache rollback is
// exercised); a drafter equal to the target accepts everything; and the distribution of the first two tokens of
// speculative sampling matches the target's exact distribution (chi-square), where the drafter's own samples fail the
// same test. Hybrid drafting (prompt lookup, then the drafter) is lossless in both modes, and its greedy counters are
// exactly those of the one-pass simulation (simulate_greedy with the hybrid over a replayed argmax). An EAGLE-3 head
// through the same drafter interface: greedy output equal to the target's at every gamma with counters equal to the
// one-pass chain count (chain_drafter), and sampled output distributed as the target's though the head's q is zero off
// its draft vocabulary. Drafts that stop when the drafter is unsure (draft_stop_prob): lossless in both modes, and
// counted exactly by the one-pass chains (a drafter model's own greedy chains, checked against its decoding). A drafter
// model with a draft vocabulary: lossless in both modes, counted exactly, drafting only inside it.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>

#include "data/draft_vocab.h"
#include "evaluators/onepass.h"
#include "evaluators/speculative.h"
#include "test_util.h"

namespace draftalign::eval {
namespace {

using torch::Tensor;

Tensor rows(std::vector<std::vector<double>> r) {
  std::vector<Tensor> out;
  for (auto& x : r) out.push_back(torch::tensor(x, torch::kFloat64));
  return torch::stack(out);
}

TEST(AcceptReject, HandComputedCases) {
  // p/q of the draft token 1 at position 1 is 0.3 / 0.5 = 0.6; position 2 (token 0) 0.5 / 0.25 = 2 (always accepted).
  const Tensor p = rows({{0.5, 0.3, 0.2}, {0.5, 0.25, 0.25}, {0.1, 0.1, 0.8}});
  const Tensor q = rows({{0.2, 0.5, 0.3}, {0.25, 0.5, 0.25}});
  // u = 0.5 < 0.6: accepted; then accepted at 2; bonus from p_3 = [0.1, 0.1, 0.8]: u 0.15 -> token 1 (cdf 0.1, 0.2).
  EXPECT_EQ(accept_reject(p, q, {1, 0}, {0.5, 0.99}, 0.15), (Verdict{2, 1}));
  EXPECT_EQ(accept_reject(p, q, {1, 0}, {0.5, 0.99}, 0.05), (Verdict{2, 0}));
  // u = 0.7 > 0.6: rejected at 1; the residual max(0, p - q) = [0.3, 0, 0] -> token 0 whatever u.
  EXPECT_EQ(accept_reject(p, q, {1, 0}, {0.7, 0.0}, 0.99), (Verdict{0, 0}));
  // Draft token 2 at position 1: p/q = 0.2 / 0.3; u 0.6 < 0.667 accepted (then token 1 at 2: 0.5 < u 0.9, rejected),
  // u 0.7 rejected.
  EXPECT_EQ(accept_reject(p, q, {2, 1}, {0.6, 0.9}, 0.0).accepted, 1);
  EXPECT_EQ(accept_reject(p, q, {2, 1}, {0.7, 0.0}, 0.0).accepted, 0);
  // Rejected at 2 (token 1: 0.25 / 0.5, u 0.6): residual at 2 = [0.25, 0, 0] -> 0.
  EXPECT_EQ(accept_reject(p, q, {1, 1}, {0.1, 0.6}, 0.5), (Verdict{1, 0}));
  // Residual with two tokens: p = [0.6, 0.1, 0.3], q = [0.2, 0.7, 0.1] -> [0.4, 0, 0.2] / 0.6; u 0.5 -> 0.3 / 0.6
  // of the way: cdf [0.4, 0.4, 0.6], 0.3 < 0.4 -> 0; u 0.8 -> 0.48 -> 2.
  const Tensor p2 = rows({{0.6, 0.1, 0.3}, {1, 0, 0}}), q2 = rows({{0.2, 0.7, 0.1}});
  EXPECT_EQ(accept_reject(p2, q2, {1}, {0.99}, 0.5), (Verdict{0, 0}));
  EXPECT_EQ(accept_reject(p2, q2, {1}, {0.99}, 0.8), (Verdict{0, 2}));
  // gamma = 0 is plain sampling from p_1.
  EXPECT_EQ(accept_reject(rows({{0.25, 0.25, 0.5}}), Tensor(), {}, {}, 0.49), (Verdict{0, 1}));
  // p == q: every draft is accepted, whatever u < 1.
  EXPECT_EQ(accept_reject(rows({{0.3, 0.7}, {0.3, 0.7}, {1, 0}}), rows({{0.3, 0.7}, {0.3, 0.7}}), {1, 0},
                          {0.999999, 0.999999}, 0.0),
            (Verdict{2, 0}));
  // Shapes are checked.
  EXPECT_HAS(testing::error_of([&] { accept_reject(p, q, {1}, {0.5}, 0.5); }), "[gamma + 1, V]");
}

TEST(AcceptReject, GreedyAcceptsWhileTheArgmaxAgrees) {
  const Tensor logits = rows({{0, 3, 1}, {2, 0, 1}, {0, 0, 5}});
  EXPECT_EQ(accept_greedy(logits, {1, 0}), (Verdict{2, 2}));  // both agree; the bonus is argmax of row 3
  EXPECT_EQ(accept_greedy(logits, {1, 2}), (Verdict{1, 0}));  // second disagrees: the target's own token 0
  EXPECT_EQ(accept_greedy(logits, {0, 0}), (Verdict{0, 1}));
  EXPECT_EQ(accept_greedy(logits.narrow(0, 0, 1), {}), (Verdict{0, 1}));
}

TEST(AcceptReject, SampleFromIsInverseCdf) {
  const Tensor w = torch::tensor({0.0, 2.0, 0.0, 1.0, 1.0}, torch::kFloat64);  // cdf 0 2 2 3 4 of 4
  EXPECT_EQ(sample_from(w, 0.0), 1);   // zero-weight tokens are never drawn
  EXPECT_EQ(sample_from(w, 0.49), 1);
  EXPECT_EQ(sample_from(w, 0.5), 3);
  EXPECT_EQ(sample_from(w, 0.76), 4);
  EXPECT_EQ(sample_from(w, 0.999999), 4);
  EXPECT_HAS(testing::error_of([] { sample_from(torch::zeros({3}), 0.5); }), "sum to zero");
}

// Tiny models with a small vocabulary. The target's final norm is scaled so its distributions are peaked; a drafter
// made `like` the target shares its embeddings, final norm and output head (it agrees with the target often, not
// always, as a pretrained drafter does).
io::LlamaConfig tiny(int64_t vocab, int64_t layers) {
  io::LlamaConfig c = testing::tiny_smol_config(layers);
  c.vocab_size = vocab;
  return c;
}

std::shared_ptr<model::Llama> make(int64_t vocab, int64_t layers, uint64_t seed, double norm_scale,
                                   model::Llama* like = nullptr) {
  torch::manual_seed(seed);
  auto m = std::make_shared<model::Llama>(tiny(vocab, layers));
  torch::NoGradGuard no_grad;
  auto params = m->named_parameters();
  params["model.norm.weight"].mul_(norm_scale);
  if (like != nullptr) {
    auto src = like->named_parameters();
    for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"})
      params[name].copy_(src[name]);
  }
  m->eval();
  return m;
}

std::vector<std::vector<int64_t>> random_prompts(int64_t vocab, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> p(1 + rng() % 12);
    for (auto& t : p) t = static_cast<int64_t>(rng() % vocab);
    out.push_back(p);
  }
  return out;
}

TEST(SpeculativeDecoding, GreedyOutputIsTheTargetsOwnGreedyOutput) {
  const int64_t vocab = 64;
  auto target = make(vocab, 2, 1, 8.0);
  auto drafter = make(vocab, 1, 2, 1.0, target.get());
  model::SamplingParams sp;
  sp.temperature = 0, sp.max_new_tokens = 40, sp.stop_ids = {3};
  SpeculativeDecoder dec(*target, drafter.get());
  SpecCounters all;
  for (const auto& prompt : random_prompts(vocab, 8, 7)) {
    const auto want = model::greedy_decode(*target, {prompt}, sp.max_new_tokens, sp.stop_ids)[0];
    for (int64_t g : {0, 1, 2, 3, 5}) {
      const Decoded d = dec.decode(prompt, g, sp, 0);
      ASSERT_EQ(d.tokens, want) << "gamma " << g << ", prompt of " << prompt.size() << " tokens";
      EXPECT_EQ(d.finish, want.back() == 3 ? model::Finish::kEos : model::Finish::kLength);
      EXPECT_EQ(d.counters.num_emitted_tokens, static_cast<int64_t>(want.size()));
      EXPECT_EQ(d.counters.num_drafts, g == 0 ? 0 : d.counters.num_target_calls);
      EXPECT_EQ(d.counters.num_drafter_calls, g * d.counters.num_drafts);
      all.add(g == 3 ? d.counters : SpecCounters{});
    }
  }
  // The test means something only if drafts were both accepted and rejected (rollbacks happened).
  EXPECT_GT(all.num_accepted_tokens, 0);
  EXPECT_LT(all.num_accepted_tokens, all.num_draft_tokens);
}

// Prompts over a few token ids, so that n-grams recur and prompt lookup has something to propose.
std::vector<std::vector<int64_t>> repetitive_prompts(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> p(4 + rng() % 12);
    for (auto& t : p) t = 4 + static_cast<int64_t>(rng() % 5);
    out.push_back(p);
  }
  return out;
}

TEST(SpeculativeDecoding, HybridGreedyIsLosslessAndCountsAsTheOnePassSimulation) {
  const int64_t vocab = 64, max_new = 40;
  auto target = make(vocab, 2, 1, 8.0);
  auto drafter = make(vocab, 1, 2, 1.0, target.get());
  model::SamplingParams sp;
  sp.temperature = 0, sp.max_new_tokens = max_new, sp.stop_ids = {3};
  SpeculativeDecoder hybrid(*target, *drafter, LookupDrafting{1, 3});
  const auto prompts = repetitive_prompts(8, 5);
  const std::vector<GreedyAnswer> answers = greedy_answers(*target, prompts, max_new, 5, sp.stop_ids, 8);
  SpecCounters all;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const GreedyAnswer& a = answers[i];
    const std::vector<int64_t> argmax = teacher_forced_argmax(*drafter, prompts[i], a.tokens);
    for (int64_t g : {1, 2, 3, 5}) {
      const Decoded d = hybrid.decode(prompts[i], g, sp, 0);
      ASSERT_EQ(d.tokens, std::vector<int64_t>(a.tokens.begin(), a.tokens.begin() + a.emitted))
          << "prompt " << i << ", gamma " << g;
      const SpecCounters one = simulate_greedy(
          prompts[i], a, g, *hybrid_drafter({1, 3}, target->config().vocab_size, argmax_drafter(argmax)));
      EXPECT_EQ(d.counters, one) << "prompt " << i << ", gamma " << g;
      all.add(g == 3 ? d.counters : SpecCounters{});
    }
  }
  // Both parts drafted: some draft tokens came from lookup (fewer drafter calls than draft tokens), some from the
  // drafter; and drafts were both accepted and rejected (the caches rolled back and caught up).
  EXPECT_GT(all.num_drafter_calls, 0);
  EXPECT_LT(all.num_drafter_calls, all.num_draft_tokens);
  EXPECT_GT(all.num_accepted_tokens, 0);
  EXPECT_LT(all.num_accepted_tokens, all.num_draft_tokens);
}

// An EAGLE-3 head over `target` (2 layers: taps 0, 1, 2) with random weights, whose draft vocabulary is the `n` most
// frequent tokens of `text` (a few, so a random head's drafts are sometimes accepted).
std::shared_ptr<model::Eagle3Head> head_over(model::Llama& target, const std::vector<std::vector<int64_t>>& text,
                                             int64_t n, uint64_t seed) {
  model::Eagle3Config c;
  c.layer = target.config();
  c.layer.num_hidden_layers = 1;
  c.target_hidden = c.layer.hidden_size;
  c.taps = {0, 1, 2};
  data::TokenCounter counter(c.layer.vocab_size);
  for (const auto& t : text) counter.add(t, "test");
  c.vocab = data::select_draft_vocab(counter.counts(), n);
  torch::manual_seed(seed);
  auto head = std::make_shared<model::Eagle3Head>(c, target.named_parameters()["model.embed_tokens.weight"]);
  torch::NoGradGuard no_grad;
  for (auto& p : head->parameters())
    if (p.dim() == 2) p.normal_(0, 0.3);
  head->eval();
  return head;
}

TEST(SpeculativeDecoding, HeadGreedyIsLosslessAndCountsAsTheOnePassSimulation) {
  const int64_t vocab = 64, max_new = 40;
  auto target = make(vocab, 2, 1, 8.0);
  model::SamplingParams sp;
  sp.temperature = 0, sp.max_new_tokens = max_new, sp.stop_ids = {3};
  auto prompts = random_prompts(vocab, 10, 9);
  prompts.push_back({17});  // one token: the head has no prefix to read, the first step is a plain target step
  const std::vector<GreedyAnswer> answers = greedy_answers(*target, prompts, max_new, 5, sp.stop_ids, 8);
  std::vector<std::vector<int64_t>> text;
  for (const auto& a : answers) text.push_back(a.tokens);
  auto head = head_over(*target, text, 4, 21);
  SpeculativeDecoder dec(*target, *head), hybrid(*target, *head, LookupDrafting{1, 3});
  SpecCounters all, all_hybrid;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const GreedyAnswer& a = answers[i];
    DraftChains chains, answer_path;
    if (prompts[i].size() >= 2)
      chains = teacher_forced_head_drafts(*target, *head, prompts[i], a.tokens, 5, &answer_path);
    for (int64_t g : {1, 2, 3, 5}) {
      const Decoded d = dec.decode(prompts[i], g, sp, 0);
      ASSERT_EQ(d.tokens, std::vector<int64_t>(a.tokens.begin(), a.tokens.begin() + a.emitted))
          << "prompt " << i << ", gamma " << g;
      EXPECT_EQ(d.counters.num_drafter_calls, g * d.counters.num_drafts);
      all.add(g == 3 ? d.counters : SpecCounters{});
      if (chains.tokens.empty()) {
        EXPECT_EQ(d.accepted_per_step[0], -1) << "a one-token prompt's first step has no draft";
        continue;
      }
      EXPECT_EQ(d.counters, simulate_greedy(prompts[i], a, g, *chain_drafter(chains)))
          << "prompt " << i << ", gamma " << g;
      // Behind prompt lookup the head continues from the lookup's tokens: the answer-path chains count it.
      const Decoded h = hybrid.decode(prompts[i], g, sp, 0);
      ASSERT_EQ(h.tokens, d.tokens) << "hybrid, prompt " << i << ", gamma " << g;
      EXPECT_EQ(h.counters,
                simulate_greedy(prompts[i], a, g,
                                *hybrid_drafter({1, 3}, target->config().vocab_size, chain_drafter(answer_path))))
          << "hybrid, prompt " << i << ", gamma " << g;
      all_hybrid.add(g == 5 ? h.counters : SpecCounters{});
    }
  }
  // The hybrid drafted with both parts: lookup tokens (fewer head calls than draft tokens) and the head's.
  EXPECT_GT(all_hybrid.num_drafter_calls, 0);
  EXPECT_LT(all_hybrid.num_drafter_calls, all_hybrid.num_draft_tokens);
  // Drafts were both accepted (whole chains too) and rejected: the head's cache rolled back and caught up.
  EXPECT_GT(all.num_accepted_tokens, 0);
  EXPECT_GT(all.acceptance_counts.back(), 0);
  EXPECT_LT(all.num_accepted_tokens, all.num_draft_tokens);
}

// A drafter model's one-pass chains are its own greedy drafts after every prefix, step for step (not only up to the
// first mismatch), with the probabilities it gave them.
TEST(SpeculativeDecoding, OnePassChainsAreTheDraftersOwnGreedyDrafts) {
  const int64_t vocab = 64, gamma = 4;
  auto target = make(vocab, 2, 1, 8.0);
  auto drafter = make(vocab, 1, 2, 1.0, target.get());
  const std::vector<int64_t> prompt = {5, 9, 13, 2, 40, 7};
  const std::vector<int64_t> cont = model::greedy_decode(*target, {prompt}, 12, {})[0];
  const DraftChains chains = teacher_forced_chains(*drafter, prompt, cont, gamma);
  ASSERT_EQ(chains.tokens.size(), cont.size());
  EXPECT_EQ(teacher_forced_argmax(*drafter, prompt, cont), [&] {
    std::vector<int64_t> first;
    for (const auto& c : chains.tokens) first.push_back(c[0]);
    return first;
  }());
  int64_t off_path = 0;
  for (size_t pos = 0; pos < cont.size(); ++pos) {
    std::vector<int64_t> prefix = prompt;
    prefix.insert(prefix.end(), cont.begin(), cont.begin() + static_cast<std::ptrdiff_t>(pos));
    const std::vector<int64_t> own = model::greedy_decode(*drafter, {prefix}, gamma, {})[0];
    EXPECT_EQ(chains.tokens[pos], own) << "position " << pos;
    for (int64_t j = 0; j < gamma; ++j) {
      std::vector<int64_t> ctx = prefix;
      ctx.insert(ctx.end(), own.begin(), own.begin() + j);
      torch::NoGradGuard no_grad;
      const double p = torch::softmax(drafter->forward(torch::tensor(ctx).view({1, -1})).select(1, -1), -1)
                           .max().item<double>();
      EXPECT_NEAR(chains.top_prob[pos][static_cast<size_t>(j)], p, 1e-5) << "position " << pos << " step " << j;
      if (j > 0 && (pos + j > cont.size() || own[j - 1] != cont[pos + j - 1])) ++off_path;
    }
  }
  EXPECT_GT(off_path, 0);  // steps past a mismatch were compared: the drafter's path, not the answer's
}

// draft_stop_prob: the drafter ends a draft after a token it gave less than the threshold. Greedy output stays the
// target's own; every counter (draft lengths and drafter calls included) equals the one-pass chain count, for a
// drafter model and an EAGLE-3 head; and the stop saves drafter calls.
TEST(SpeculativeDecoding, DraftsThatStopWhenUnsureAreLosslessAndCountAsTheOnePassChains) {
  const int64_t vocab = 64, max_new = 40, max_gamma = 5;
  auto target = make(vocab, 2, 1, 8.0);
  auto drafter = make(vocab, 1, 2, 1.0, target.get());
  model::SamplingParams sp;
  sp.temperature = 0, sp.max_new_tokens = max_new, sp.stop_ids = {3};
  auto prompts = random_prompts(vocab, 8, 7);
  for (auto& p : prompts) p.push_back(11);  // two tokens at least, for the head
  const std::vector<GreedyAnswer> answers = greedy_answers(*target, prompts, max_new, max_gamma, sp.stop_ids, 8);
  std::vector<std::vector<int64_t>> text;
  for (const auto& a : answers) text.push_back(a.tokens);
  auto head = head_over(*target, text, 4, 21);
  SpeculativeDecoder by_model(*target, drafter.get()), by_head(*target, *head);
  for (const char* who : {"drafter", "head"}) {
    const bool is_head = who[0] == 'h';
    SpeculativeDecoder& dec = is_head ? by_head : by_model;
    std::vector<DraftChains> chains;
    std::vector<float> probs;
    for (size_t i = 0; i < prompts.size(); ++i) {
      chains.push_back(is_head ? teacher_forced_head_drafts(*target, *head, prompts[i], answers[i].tokens, max_gamma)
                               : teacher_forced_chains(*drafter, prompts[i], answers[i].tokens, max_gamma));
      for (const auto& row : chains.back().top_prob) probs.insert(probs.end(), row.begin(), row.end());
    }
    std::nth_element(probs.begin(), probs.begin() + probs.size() / 2, probs.end());
    const double stop = probs[probs.size() / 2];  // half the draft tokens are unsure
    SpecCounters with_stop, without;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const GreedyAnswer& a = answers[i];
      for (int64_t g : {1, 2, 3, 5}) {
        const Decoded d = dec.decode(prompts[i], g, sp, 0, stop);
        ASSERT_EQ(d.tokens, std::vector<int64_t>(a.tokens.begin(), a.tokens.begin() + a.emitted))
            << who << ", prompt " << i << ", gamma " << g;
        EXPECT_EQ(d.counters, simulate_greedy(prompts[i], a, g, *chain_drafter(chains[i]), stop))
            << who << ", prompt " << i << ", gamma " << g;
        if (g == 5) with_stop.add(d.counters), without.add(dec.decode(prompts[i], g, sp, 0).counters);
      }
    }
    // Drafts stopped early (fewer calls than gamma per draft) and ran on past the first token; drafter calls saved.
    EXPECT_LT(with_stop.num_drafter_calls, 5 * with_stop.num_drafts) << who;
    EXPECT_GT(with_stop.num_drafter_calls, with_stop.num_drafts) << who;
    EXPECT_LT(with_stop.num_drafter_calls, without.num_drafter_calls) << who;
    EXPECT_GT(with_stop.num_accepted_tokens, 0) << who;
  }
  EXPECT_HAS(testing::error_of([&] { by_model.decode(prompts[0], 2, sp, 0, 1.0); }), "draft_stop_prob must be in [0, 1)");
  EXPECT_HAS(testing::error_of([&] { by_model.decode(prompts[0], 2, sp, 0, -0.1); }), "draft_stop_prob");
}

// A drafter model with a draft vocabulary (model.draft_vocab_size) of 16 of the 64 tokens, chosen on the target's
// answers: greedy output equal to the target's, every drafted token inside the vocabulary, and the counters those of
// the one-pass simulation, with and without drafts that stop when unsure. The same weights over the whole vocabulary
// draft differently (the restriction is live).
TEST(SpeculativeDecoding, ADraftVocabularyDrafterIsLosslessAndCountsAsTheOnePassSimulation) {
  const int64_t vocab = 64, max_new = 40, max_gamma = 5;
  auto target = make(vocab, 2, 1, 8.0);
  auto whole = make(vocab, 1, 2, 1.0, target.get()), drafter = make(vocab, 1, 2, 1.0, target.get());
  model::SamplingParams sp;
  sp.temperature = 0, sp.max_new_tokens = max_new, sp.stop_ids = {3};
  const auto prompts = random_prompts(vocab, 8, 7);
  const std::vector<GreedyAnswer> answers = greedy_answers(*target, prompts, max_new, max_gamma, sp.stop_ids, 8);
  data::TokenCounter counter(vocab);
  for (const auto& a : answers) counter.add(a.tokens, "test");
  drafter->set_draft_vocab(data::rank_draft_tokens(counter.counts(), 16, sp.stop_ids));
  const std::vector<int64_t>& ids = drafter->config().draft_token_ids;
  auto in_vocab = [&](int64_t t) { return std::find(ids.begin(), ids.end(), t) != ids.end(); };
  SpeculativeDecoder dec(*target, drafter.get());
  SpecCounters all;
  int64_t differ = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const GreedyAnswer& a = answers[i];
    const std::vector<int64_t> argmax = teacher_forced_argmax(*drafter, prompts[i], a.tokens);
    const DraftChains chains = teacher_forced_chains(*drafter, prompts[i], a.tokens, max_gamma);
    for (const auto& chain : chains.tokens)
      for (int64_t t : chain) ASSERT_TRUE(in_vocab(t)) << "drafted token " << t << " is outside the draft vocabulary";
    const std::vector<int64_t> unrestricted = teacher_forced_argmax(*whole, prompts[i], a.tokens);
    for (size_t k = 0; k < argmax.size(); ++k) differ += argmax[k] != unrestricted[k];
    for (int64_t g : {1, 2, 3, 5}) {
      const Decoded d = dec.decode(prompts[i], g, sp, 0);
      ASSERT_EQ(d.tokens, std::vector<int64_t>(a.tokens.begin(), a.tokens.begin() + a.emitted))
          << "prompt " << i << ", gamma " << g;
      EXPECT_EQ(d.counters, simulate_greedy(prompts[i], a, g, *argmax_drafter(argmax)))
          << "prompt " << i << ", gamma " << g;
      const Decoded s = dec.decode(prompts[i], g, sp, 0, 0.5);
      ASSERT_EQ(s.tokens, d.tokens) << "prompt " << i << ", gamma " << g << ", stopping";
      EXPECT_EQ(s.counters, simulate_greedy(prompts[i], a, g, *chain_drafter(chains), 0.5))
          << "prompt " << i << ", gamma " << g;
      all.add(g == 3 ? d.counters : SpecCounters{});
    }
  }
  EXPECT_GT(differ, 0) << "the draft vocabulary never changed a drafted token";
  EXPECT_GT(all.num_accepted_tokens, 0);
  EXPECT_LT(all.num_accepted_tokens, all.num_draft_tokens);
}

TEST(SpeculativeDecoding, ADrafterEqualToTheTargetIsAlwaysAccepted) {
  auto target = make(64, 2, 1, 8.0);
  SpeculativeDecoder dec(*target, target.get());
  for (double t : {0.0, 1.0}) {
    model::SamplingParams sp;
    sp.temperature = t, sp.max_new_tokens = 30;
    SpecCounters c;
    for (uint64_t seed = 0; seed < 8; ++seed) c.add(dec.decode({5, 6, 7}, 4, sp, seed).counters);
    EXPECT_EQ(c.num_accepted_tokens, c.num_draft_tokens) << "temperature " << t;
    EXPECT_EQ(c.acceptance_counts.back(), c.num_drafts);
    EXPECT_GE(static_cast<double>(c.num_emitted_tokens) / c.num_target_calls, 4.5);  // 5 per call but the last
  }
}

TEST(SpeculativeDecoding, SampledTokensFollowTheTargetsDistribution) {
  const int64_t V = 8, n = 1200, gamma = 2;
  auto target = make(V, 2, 11, 12.0);
  auto drafter = make(V, 1, 12, 12.0);  // a different random model: many rejections
  // The prompt ends in a repeated token, so the hybrid's first draft is lookup's one token (2), then the drafter's.
  const std::vector<int64_t> prompt = {5, 1, 2, 2};
  SpeculativeDecoder model_only(*target, drafter.get()), hybrid(*target, *drafter, LookupDrafting{1, 2});
  // A random head whose draft vocabulary is half the tokens: q is zero on the rest.
  auto head = head_over(*target, {{0, 1, 2, 3}}, 4, 13);
  SpeculativeDecoder eagle3(*target, *head);
  // The drafter model's weights with a draft vocabulary of half the tokens: its q is zero on the rest.
  auto narrow = make(V, 1, 12, 12.0);
  narrow->set_draft_vocab({2, 5, 1, 6});
  SpeculativeDecoder reduced(*target, narrow.get());
  struct Setting {
    double temperature, top_p;
    int64_t top_k;
  };
  for (const Setting s : {Setting{1.0, 1.0, 0}, Setting{0.7, 0.9, 5}}) {
    model::SamplingParams sp;
    sp.temperature = s.temperature, sp.top_p = s.top_p, sp.top_k = s.top_k, sp.max_new_tokens = 2;
    auto dist = [&](model::Llama& m, std::vector<int64_t> ctx) {
      torch::NoGradGuard no_grad;
      const Tensor logits = m.forward(torch::tensor(ctx).view({1, -1})).select(1, -1);
      const Tensor p = model::sampling_probs(logits, s.temperature, s.top_p, s.top_k).squeeze(0).to(torch::kFloat64);
      return std::vector<double>(p.data_ptr<double>(), p.data_ptr<double>() + V);
    };
    // The exact joint distribution of the first two tokens, p(x1) p(x2 | x1), for the target and for the drafter.
    auto joint = [&](model::Llama& m) {
      std::vector<double> out(V * V);
      const auto p1 = dist(m, prompt);
      for (int64_t a = 0; a < V; ++a) {
        auto ctx = prompt;
        ctx.push_back(a);
        const auto p2 = dist(m, ctx);
        for (int64_t b = 0; b < V; ++b) out[a * V + b] = p1[a] * p2[b];
      }
      return out;
    };
    const auto p_joint = joint(*target), q_joint = joint(*drafter);
    // The drafters, and the drafter model again with draft_stop_prob (a draft that ends early stays lossless; the
    // head's stop is the same rule, checked greedy).
    struct Run {
      SpeculativeDecoder* dec;
      double stop;
    };
    for (const Run run : {Run{&model_only, 0}, Run{&hybrid, 0}, Run{&eagle3, 0}, Run{&reduced, 0},
                          Run{&model_only, 0.7}}) {
      SpeculativeDecoder* dec = run.dec;
      const std::string who = std::string(dec == &hybrid       ? "hybrid"
                                          : dec == &eagle3     ? "eagle3 head"
                                          : dec == &reduced ? "drafter with a draft vocabulary"
                                                               : "drafter") +
                              (run.stop > 0 ? " stopping" : "");
      std::map<int64_t, int64_t> counts;
      SpecCounters c;
      for (int64_t i = 0; i < n; ++i) {
        const Decoded d = dec->decode(prompt, gamma, sp, 1000 + i, run.stop);
        ASSERT_EQ(d.tokens.size(), 2u);
        ++counts[d.tokens[0] * V + d.tokens[1]];
        c.add(d.counters);
      }
      const auto [stat, crit] = testing::chi_square(counts, p_joint, n);
      std::printf("%s T %.1f: chi-square %.1f against the target, critical %.1f\n", who.c_str(), s.temperature, stat,
                  crit);
      EXPECT_LT(stat, crit) << who << " T " << s.temperature << ": speculative samples do not follow the target";
      // The same test rejects the drafter's own distribution: it has the power to see a wrong sampler. (The head's
      // q, zero outside its 4 tokens, is not the drafter model's: a wrong sampler would show as a target mismatch.)
      const auto [stat_q, crit_q] = testing::chi_square(counts, q_joint, n);
      std::printf("%s T %.1f: chi-square %.1f against the drafter, critical %.1f; acceptance %.3f\n", who.c_str(),
                  s.temperature, stat_q, crit_q, static_cast<double>(c.num_accepted_tokens) / c.num_draft_tokens);
      if (dec != &eagle3 && dec != &reduced) EXPECT_GT(stat_q, crit_q) << who << " T " << s.temperature << ": the test cannot tell the drafter from the target";
      EXPECT_GT(c.num_accepted_tokens, 0) << who;
      EXPECT_LT(c.num_accepted_tokens, c.num_draft_tokens) << who;
      // Lookup proposed some of the hybrid's draft tokens.
      if (dec == &hybrid) EXPECT_LT(c.num_drafter_calls, c.num_draft_tokens);
      // The stop ended some drafts after their first token, and not all.
      if (run.stop > 0) {
        EXPECT_LT(c.num_draft_tokens, gamma * c.num_drafts) << who;
        EXPECT_GT(c.num_draft_tokens, c.num_drafts) << who;
      }
    }
  }
}

TEST(SpeculativeDecoding, BadArgumentsAreErrors) {
  auto target = make(64, 1, 1, 1.0);
  auto other = std::make_shared<model::Llama>(tiny(65, 1));
  EXPECT_HAS(testing::error_of([&] { SpeculativeDecoder(*target, other.get()); }), "65 tokens, the target 64");
  SpeculativeDecoder alone(*target, nullptr);
  model::SamplingParams sp;
  EXPECT_HAS(testing::error_of([&] { alone.decode({1}, 2, sp, 0); }), "needs a drafter");
  EXPECT_HAS(testing::error_of([&] { alone.decode({}, 0, sp, 0); }), "empty prompt");
  sp.max_new_tokens = 300;
  EXPECT_HAS(testing::error_of([&] { alone.decode({1, 2}, 0, sp, 0); }), "exceeds the target's 256 positions");
}

// On CUDA a decoder makes its caches, side streams and decode graphs once: the first decode captures the graphs, so
// it runs before the timing, and then two back-to-back decodes of one prompt take the same time within 10% (before,
// every decode built new streams and captured its graphs again inside the timed run).
TEST(GpuSpeculativeDecoding, BackToBackDecodesTimeAlike) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA, 0);
  auto target = model::load_llama(testing::kSmolDir, cuda, torch::kBFloat16);
  auto drafter = model::load_llama(testing::kSmolDir, cuda, torch::kBFloat16);  // its own drafter: all accepted
  target->eval(), drafter->eval();
  model::SamplingParams sp;
  sp.temperature = 0, sp.max_new_tokens = 128;
  std::vector<int64_t> prompt;
  for (int64_t i = 0; i < 64; ++i) prompt.push_back(100 + (i * 37) % 5000);
  SpeculativeDecoder dec(*target, drafter.get());
  dec.reserve(static_cast<int64_t>(prompt.size()) + sp.max_new_tokens + 4 + 1, 5);
  dec.decode(prompt, 4, sp, 0);  // warm-up
  std::vector<double> times;
  for (int k = 0; k < 2; ++k) {
    torch::cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    const Decoded d = dec.decode(prompt, 4, sp, 0);
    torch::cuda::synchronize();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    EXPECT_EQ(d.counters.num_emitted_tokens, sp.max_new_tokens);
  }
  std::printf("back-to-back decodes: %.4f s, %.4f s\n", times[0], times[1]);
  EXPECT_LT(std::abs(times[0] - times[1]), 0.1 * std::min(times[0], times[1]));
}

}  // namespace
}  // namespace draftalign::eval
