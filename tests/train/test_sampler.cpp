// The distributed sampler: every rank's micro-batches tile a step's global batch exactly once, whatever the world
// size; held-out items are split among ranks without overlap or gap; the epoch order is a seeded permutation per epoch.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "train/sampler.h"

namespace draftalign::train {
namespace {

TEST(Sampler, RankMicroBatchesTileTheGlobalBatchOnce) {
  for (int64_t world : {1, 2, 3, 4})
    for (int64_t mbs : {1, 3})
      for (int64_t accum : {1, 2}) {
        const int64_t first = 17, global = mbs * world * accum;
        std::vector<int64_t> seen;
        for (int64_t m = 0; m < accum; ++m)
          for (int64_t r = 0; r < world; ++r) {
            const auto ids = rank_sequences(first, m, mbs, world, r);
            ASSERT_EQ(static_cast<int64_t>(ids.size()), mbs);
            // Rank r's micro-batch m is the (m * world + r)-th block of the step: one world's micro-batch m together
            // is a contiguous stretch, so a world of one with world x the accumulation sees the same order.
            EXPECT_EQ(ids.front(), first + (m * world + r) * mbs);
            seen.insert(seen.end(), ids.begin(), ids.end());
          }
        std::vector<int64_t> want(global);
        std::iota(want.begin(), want.end(), first);
        EXPECT_EQ(seen, want) << "world " << world << ", micro-batch " << mbs << ", accumulation " << accum;
      }
}

TEST(Sampler, HeldOutItemsArePartitionedAmongRanks) {
  for (int64_t world : {1, 2, 3, 5})
    for (int64_t n : {0, 1, 7, 10}) {
      std::vector<int64_t> all;
      for (int64_t r = 0; r < world; ++r) {
        const auto mine = rank_share(n, world, r);
        for (const int64_t i : mine) EXPECT_EQ(i % world, r);
        all.insert(all.end(), mine.begin(), mine.end());
      }
      std::sort(all.begin(), all.end());
      std::vector<int64_t> want(n);
      std::iota(want.begin(), want.end(), 0);
      EXPECT_EQ(all, want) << "world " << world << ", n " << n;
    }
}

TEST(Sampler, EpochOrderIsASeededPermutationPerEpoch) {
  EpochOrder a(50, 7), b(50, 7), c(50, 8);
  std::vector<int64_t> e0, e1, other;
  for (int64_t g = 0; g < 50; ++g) e0.push_back(a.at(g));
  for (int64_t g = 50; g < 100; ++g) e1.push_back(a.at(g));
  for (int64_t g = 0; g < 50; ++g) other.push_back(c.at(g));
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> want(50);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(sorted, want);
  EXPECT_NE(e0, e1) << "each epoch has its own order";
  EXPECT_NE(e0, other) << "the seed decides the order";
  EXPECT_EQ(b.at(73), e1[23]) << "random access gives the same item as sequential access";
  EXPECT_EQ(b.at(5), e0[5]);
}

}  // namespace
}  // namespace draftalign::train
