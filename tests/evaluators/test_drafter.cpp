// The drafters of drafter.h on hand-made cases, and simulate_greedy's count through them: a replayed argmax, a
// replayed chain with and without a stop, prompt lookup, and the hybrid (lookup first, then the replay). The same
// classes draft in the real decoder (test_speculative.cpp and test_onepass.cpp check the counts against it).
#include <gtest/gtest.h>

#include "evaluators/drafter.h"
#include "evaluators/speculative.h"
#include "test_util.h"

namespace draftalign::eval {
namespace {

// What a drafter proposes at answer position `pos` of `answer` after `prompt`, and its drafter calls.
struct Draft {
  std::vector<int64_t> tokens;
  int64_t calls = 0;
  bool operator==(const Draft&) const = default;
};
Draft propose_at(Drafter& d, const std::vector<int64_t>& prompt, const std::vector<int64_t>& answer, int64_t pos,
                 int64_t gamma, double stop = 0) {
  d.start(prompt, 0, {});
  std::vector<int64_t> context = prompt;
  context.insert(context.end(), answer.begin(), answer.begin() + pos);
  DraftSampler sampler;
  sampler.stop_prob = stop;
  Draft out;
  std::vector<torch::Tensor> qs;
  out.calls = d.propose(context, gamma, sampler, out.tokens, qs);
  return out;
}

// A drafter with nothing to offer: every step is a plain target step.
struct Silent : Drafter {
  void start(const std::vector<int64_t>&, int64_t, const std::vector<torch::Tensor>&) override {}
  int64_t propose(const std::vector<int64_t>&, int64_t, const DraftSampler&, std::vector<int64_t>&,
                  std::vector<torch::Tensor>&) override {
    return 0;
  }
};

const std::vector<int64_t> kPrompt = {1, 2};

// Greedy speculative decoding counted from one pass, on a hand-made answer: the target's greedy continuation is
// 10, 11, ..., the drafter's argmax after each prefix agrees except at positions 2 and 5.
TEST(OnePass, GreedyCountersOfHandMadeCases) {
  GreedyAnswer a;
  for (int64_t i = 0; i < 12; ++i) a.tokens.push_back(10 + i);
  a.emitted = 8;
  std::vector<int64_t> argmax = a.tokens;
  argmax[2] = 99, argmax[5] = 99;
  const std::unique_ptr<Drafter> replay = argmax_drafter(argmax);
  std::vector<int64_t> steps;
  // g = 2: pos 0 accepts 10, 11, the target adds 12 (the miss at 2 is never proposed); pos 3 accepts 13, 14, + 15;
  // pos 6 accepts 16, 17, + 18: the cut at 8.
  SpecCounters c = simulate_greedy(kPrompt, a, 2, *replay, 0, &steps);
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(c.num_target_calls, 3);
  EXPECT_EQ(c.num_emitted_tokens, 8);
  EXPECT_EQ(c.num_drafts, 3);
  EXPECT_EQ(c.num_draft_tokens, 6);
  EXPECT_EQ(c.num_drafter_calls, 6);
  EXPECT_EQ(c.acceptance_counts, (std::vector<int64_t>{0, 0, 3}));
  // g = 1: pos 0 +1 -> 2; pos 2 rejected -> 3; pos 3 +1 -> 5; pos 5 rejected -> 6; pos 6 +1 -> 8.
  steps.clear();
  c = simulate_greedy(kPrompt, a, 1, *replay, 0, &steps);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 0, 1, 0, 1}));
  EXPECT_EQ(c.num_accepted_tokens_per_pos, (std::vector<int64_t>{3}));
  // g = 4: pos 0 accepts 10, 11 -> 3; pos 3 accepts 13, 14 -> 6; pos 6 accepts 16..19 (past the cut at 8: a draft is
  // verified whole before the output is cut) -> done.
  steps.clear();
  c = simulate_greedy(kPrompt, a, 4, *replay, 0, &steps);
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 2, 4}));
  EXPECT_EQ(c.num_accepted_tokens, 8);
  EXPECT_EQ(c.num_emitted_tokens, 8);
  EXPECT_EQ(derive_metrics(c).block_efficiency, 8.0 / 3);
  // A continuation too short for the last block is an error, not a silent undercount; so is a replayed argmax asked
  // to stop (a stop reads the drafter's own chain).
  GreedyAnswer short_answer{{10, 11, 12}, 3};
  EXPECT_THROW(simulate_greedy(kPrompt, short_answer, 2, *replay), Error);
  EXPECT_HAS(testing::error_of([&] { simulate_greedy(kPrompt, a, 2, *replay, 0.5); }), "chain_drafter");
  // A drafter with nothing to offer: every step is a plain target step.
  Silent silent;
  c = simulate_greedy(kPrompt, a, 3, silent);
  EXPECT_EQ(c.num_target_calls, 8);
  EXPECT_EQ(c.num_drafts, 0);
  EXPECT_EQ(cut_answer({5, 6, 2, 7}, 10, {2}), 3);
  EXPECT_EQ(cut_answer({5, 6, 2, 7}, 2, {2}), 2);
  EXPECT_EQ(cut_answer({5, 6, 2, 7}, 10, {}), 4);
}

TEST(OnePass, ADraftStopsAfterItsFirstUnsureToken) {
  DraftChains chains;
  chains.tokens = {{10, 11, 12, 13}, {11, 12, 13, 14}, {12, 50, 51, 52}};
  chains.top_prob = {{0.9f, 0.3f, 0.8f, 0.9f}, {0.2f, 0.9f, 0.9f, 0.9f}, {0.9f, 0.9f, 0.9f, 0.1f}};
  const std::vector<int64_t> answer = {10, 11, 12, 13, 14, 15};
  const std::unique_ptr<Drafter> replay = chain_drafter(chains);
  // Off: gamma tokens. On: up to and including the first token below the threshold (its call is spent anyway).
  EXPECT_EQ(propose_at(*replay, kPrompt, answer, 0, 4), (Draft{{10, 11, 12, 13}, 4}));
  EXPECT_EQ(propose_at(*replay, kPrompt, answer, 0, 4, 0.5), (Draft{{10, 11}, 2}));
  EXPECT_EQ(propose_at(*replay, kPrompt, answer, 1, 4, 0.5), (Draft{{11}, 1}));  // the first token is always proposed
  EXPECT_EQ(propose_at(*replay, kPrompt, answer, 2, 3, 0.5), (Draft{{12, 50, 51}, 3}));
  EXPECT_EQ(propose_at(*replay, kPrompt, answer, 2, 3, 0.95).calls, 1);
  // Counted: g = 4 at 0.5: pos 0 proposes 10 11 (both kept) and the target adds 12; pos 3 has no chain here, so the
  // answer is cut at 3.
  GreedyAnswer a{answer, 3};
  const SpecCounters c = simulate_greedy(kPrompt, a, 4, *replay, 0.5);
  EXPECT_EQ(c.num_target_calls, 1);
  EXPECT_EQ(c.num_draft_tokens, 2);
  EXPECT_EQ(c.num_drafter_calls, 2);
  EXPECT_EQ(c.acceptance_counts, (std::vector<int64_t>{0, 0, 1, 0, 0}));
  // A chain shorter than gamma is an error naming the position.
  EXPECT_HAS(testing::error_of([&] { propose_at(*replay, kPrompt, answer, 0, 5); }), "at answer position 0");
}

TEST(OnePass, LookupAndTheHybridDraftFromTheContext) {
  // Prompt lookup: the context is prompt + answer[0..pos).
  const std::vector<int64_t> prompt = {7, 8, 9, 7}, answer = {8, 9, 5, 6, 1}, am = {50, 51, 52, 53, 54};
  const std::unique_ptr<Drafter> lookup = lookup_drafter({1, 3}, 100);
  EXPECT_EQ(propose_at(*lookup, prompt, answer, 0, 2), (Draft{{8, 9}, 0}));
  EXPECT_EQ(propose_at(*lookup, prompt, answer, 1, 2), (Draft{{9, 7}, 0}));
  EXPECT_EQ(propose_at(*lookup, prompt, answer, 3, 2), (Draft{{}, 0}));  // 5 never occurred before
  // The hybrid (a replayed argmax behind lookup). At answer position 0 the context 7 8 9 7 ends in 7, which was
  // followed by 8 9 7 at the start: lookup's 3 tokens, then the drafter's argmax at position 3; at position 3 the
  // context ends in 5, which never occurred: the drafter's 2 tokens. The hybrid drafts without a stop.
  const std::unique_ptr<Drafter> hybrid = hybrid_drafter({1, 3}, 100, argmax_drafter(am));
  EXPECT_EQ(propose_at(*hybrid, prompt, answer, 0, 4), (Draft{{8, 9, 7, 53}, 1}));
  EXPECT_EQ(propose_at(*hybrid, prompt, answer, 3, 2), (Draft{{53, 54}, 2}));
  EXPECT_EQ(propose_at(*hybrid, prompt, answer, 3, 2, 0.5), (Draft{{53, 54}, 2}));
}

}  // namespace
}  // namespace draftalign::eval
