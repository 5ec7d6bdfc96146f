#include "train/sampler.h"

#include <random>
#include <utility>

namespace draftalign::train {

int64_t EpochOrder::at(int64_t g) {
  const int64_t epoch = g / n_;
  if (epoch != epoch_) {
    perm_.resize(n_);
    for (int64_t i = 0; i < n_; ++i) perm_[i] = i;
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = n_ - 1; i > 0; --i) std::swap(perm_[i], perm_[rng() % static_cast<uint64_t>(i + 1)]);
    epoch_ = epoch;
  }
  return perm_[g % n_];
}

std::vector<int64_t> rank_sequences(int64_t first, int64_t m, int64_t micro_batch_size, int64_t world, int64_t rank) {
  std::vector<int64_t> ids(micro_batch_size);
  const int64_t start = first + (m * world + rank) * micro_batch_size;
  for (int64_t i = 0; i < micro_batch_size; ++i) ids[i] = start + i;
  return ids;
}

std::vector<int64_t> rank_share(int64_t n, int64_t world, int64_t rank) {
  std::vector<int64_t> ids;
  for (int64_t i = rank; i < n; i += world) ids.push_back(i);
  return ids;
}

}  // namespace draftalign::train
