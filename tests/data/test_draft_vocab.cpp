// The EAGLE-3 draft vocabulary: the n most counted tokens (ties by id), stop tokens always in, the d2t / t2d maps as
// EAGLE-3 stores them (d2t[i] = target id - draft id), maps read back checked, and bad sizes one clear error.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "common/error.h"
#include "data/draft_vocab.h"
#include "test_util.h"

namespace draftalign::data {
namespace {

TEST(DraftVocab, MostCountedTokensWithTheirMaps) {
  TokenCounter counter(6);
  counter.add({2, 3, 0, 2, 3, 0, 2, 3, 4, 0, 0}, "test");
  // counts: 0 -> 4, 1 -> 0, 2 -> 3, 3 -> 3, 4 -> 1, 5 -> 0
  EXPECT_EQ(counter.total(), 11);
  const DraftVocab v = select_draft_vocab(counter.counts(), 3);
  EXPECT_EQ(v.ids, (std::vector<int64_t>{0, 2, 3}));
  EXPECT_EQ(v.d2t(), (std::vector<int64_t>{0, 1, 1}));
  EXPECT_EQ(v.t2d(), (std::vector<uint8_t>{1, 0, 1, 1, 0, 0}));
  EXPECT_EQ(v.target_to_draft(), (std::vector<int64_t>{0, -1, 1, 2, -1, -1}));
  EXPECT_DOUBLE_EQ(v.coverage(counter.counts()), 10.0 / 11.0);
  // A tie at the cut goes to the lower id (2 before 3); a stop token is in whatever its count.
  EXPECT_EQ(select_draft_vocab(counter.counts(), 2).ids, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(select_draft_vocab(counter.counts(), 2, {5}).ids, (std::vector<int64_t>{0, 5}));
  // Fewer seen tokens than n: the unseen ones fill up by ascending id, so there are always n.
  EXPECT_EQ(select_draft_vocab(counter.counts(), 6).ids, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
}

// The independent drafter's ranking (model.draft_vocab_size): most wanted first, not sorted by id; an earlier choice
// breaks ties, so distill's answers come first and the corpus's choice fills the rest in its own order.
TEST(DraftVocab, RankedTokensPutStopsThenCountsThenTheEarlierChoice) {
  TokenCounter counter(6);
  counter.add({2, 3, 0, 2, 3, 0, 2, 3, 4, 0, 0}, "test");  // 0 -> 4, 2 -> 3, 3 -> 3, 4 -> 1
  EXPECT_EQ(rank_draft_tokens(counter.counts(), 4), (std::vector<int64_t>{0, 2, 3, 4}));
  EXPECT_EQ(rank_draft_tokens(counter.counts(), 3, {5}), (std::vector<int64_t>{5, 0, 2}));
  // Ties (2 and 3 at 3; 1 and 5 never seen) follow the earlier choice, then the id.
  EXPECT_EQ(rank_draft_tokens(counter.counts(), 6, {}, {5, 3, 1}), (std::vector<int64_t>{0, 3, 2, 4, 5, 1}));
  TokenCounter none(6);
  EXPECT_EQ(rank_draft_tokens(none.counts(), 3, {4}, {1, 0, 2}), (std::vector<int64_t>{4, 1, 0}));
  // The same order as select_draft_vocab's choice, as a set.
  std::vector<int64_t> ranked = rank_draft_tokens(counter.counts(), 3);
  std::sort(ranked.begin(), ranked.end());
  EXPECT_EQ(ranked, select_draft_vocab(counter.counts(), 3).ids);
  EXPECT_HAS(testing::error_of([&] { rank_draft_tokens(counter.counts(), 7); }), "larger than the target's vocabulary of 6");
  EXPECT_HAS(testing::error_of([&] { rank_draft_tokens(counter.counts(), 2, {}, {9}); }), "outside the vocabulary of 6");
}

TEST(DraftVocab, AgreesWithAFullSortOnRandomCounts) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t vocab = 50 + static_cast<int64_t>(rng() % 200), n = 1 + static_cast<int64_t>(rng() % vocab);
    std::vector<int64_t> counts(static_cast<size_t>(vocab));
    for (auto& c : counts) c = static_cast<int64_t>(rng() % 6);  // many ties
    const DraftVocab v = select_draft_vocab(counts, n);
    std::vector<int64_t> order(static_cast<size_t>(vocab));
    for (int64_t t = 0; t < vocab; ++t) order[static_cast<size_t>(t)] = t;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return counts[a] > counts[b]; });
    std::vector<int64_t> want(order.begin(), order.begin() + n);
    std::sort(want.begin(), want.end());
    ASSERT_EQ(v.ids, want) << "trial " << trial;
    const DraftVocab back = draft_vocab_from_maps(v.d2t(), v.t2d(), "maps");
    ASSERT_EQ(back.ids, v.ids);
    ASSERT_EQ(back.target_vocab, vocab);
  }
}

TEST(DraftVocab, BadSizesAndMapsAreOneClearError) {
  const std::vector<int64_t> counts(10, 1);
  EXPECT_NE(testing::error_of([&] { select_draft_vocab(counts, 11); }).find("larger than the target's vocabulary of 10"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { select_draft_vocab(counts, 0); }).find("at least 1"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { select_draft_vocab(counts, 1, {3, 4}); }).find("more than draft_vocab_size 1"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { select_draft_vocab(counts, 2, {10}); }).find("stop token 10 is outside"), std::string::npos);
  TokenCounter counter(4);
  EXPECT_NE(testing::error_of([&] { counter.add({1, 4}, "shard-00000"); }).find("shard-00000: token id 4 at position 1"), std::string::npos);
  // d2t that is not ascending, points outside, or disagrees with t2d.
  EXPECT_NE(testing::error_of([&] { draft_vocab_from_maps({2, 0}, {1, 1, 1, 0}, "head.safetensors"); }).find("head.safetensors: d2t[1] maps to target id 1, not above"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { draft_vocab_from_maps({0, 5}, {1, 1, 1, 0}, "head.safetensors"); }).find("outside the vocabulary of 4"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { draft_vocab_from_maps({0, 0}, {1, 1, 1, 0}, "head.safetensors"); }).find("t2d marks 3 tokens but d2t has 2"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { draft_vocab_from_maps({0, 0}, {1, 0, 1, 0}, "head.safetensors"); }).find("t2d[1] is false"), std::string::npos);
}

}  // namespace
}  // namespace draftalign::data
