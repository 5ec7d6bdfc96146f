// sampler.h: which sequences a rank trains and validates on, as a distributed sampler hands them out. Torch-free.
//
// Training: global sequence g of a run (counted over all ranks and steps) is item EpochOrder::at(g); the optimizer
// step whose first global sequence is `first` hands rank r's micro-batch m the sequences
// first + (m * world + r) * micro_batch_size + [0, micro_batch_size) (rank_sequences), so a resumed run, or one with
// another world size and the same global batch, sees the same sequences. Validation: rank r takes held-out items
// r, r + world, ... (rank_share), so the union over ranks is the same whatever the world size.
#pragma once

#include <cstdint>
#include <vector>

namespace draftalign::train {

// The visiting order of n items over epochs: global sequence g is item perm_{g / n}[g % n], each epoch's permutation a
// Fisher-Yates shuffle with mt19937_64 seeded from (seed, epoch): the same on every platform and rank.
class EpochOrder {
 public:
  EpochOrder(int64_t n, uint64_t seed) : n_(n), seed_(seed) {}
  int64_t size() const { return n_; }
  int64_t at(int64_t g);

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> perm_;
};

// Rank `rank`'s global sequence ids for micro-batch m of the step whose first global sequence is `first`.
std::vector<int64_t> rank_sequences(int64_t first, int64_t m, int64_t micro_batch_size, int64_t world, int64_t rank);

// Rank `rank`'s share of n held-out items: rank, rank + world, ... (< n).
std::vector<int64_t> rank_share(int64_t n, int64_t world, int64_t rank);

}  // namespace draftalign::train
