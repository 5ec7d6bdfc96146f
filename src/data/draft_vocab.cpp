#include "data/draft_vocab.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace draftalign::data {

TokenCounter::TokenCounter(int64_t target_vocab) : counts_(static_cast<size_t>(target_vocab), 0) {
  DA_CHECK(target_vocab > 0, "draft vocabulary: the target's vocabulary size must be positive, got ", target_vocab);
}

void TokenCounter::add(const int64_t* ids, int64_t n, const char* where) {
  const int64_t vocab = static_cast<int64_t>(counts_.size());
  for (int64_t i = 0; i < n; ++i) {
    DA_CHECK(ids[i] >= 0 && ids[i] < vocab, where, ": token id ", ids[i], " at position ", i,
             " is outside the target's vocabulary of ", vocab);
    ++counts_[static_cast<size_t>(ids[i])];
  }
  total_ += n;
}

std::vector<int64_t> DraftVocab::d2t() const {
  std::vector<int64_t> out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) out[i] = ids[i] - static_cast<int64_t>(i);
  return out;
}

std::vector<uint8_t> DraftVocab::t2d() const {
  std::vector<uint8_t> out(static_cast<size_t>(target_vocab), 0);
  for (int64_t t : ids) out[static_cast<size_t>(t)] = 1;
  return out;
}

std::vector<int64_t> DraftVocab::target_to_draft() const {
  std::vector<int64_t> out(static_cast<size_t>(target_vocab), -1);
  for (size_t i = 0; i < ids.size(); ++i) out[static_cast<size_t>(ids[i])] = static_cast<int64_t>(i);
  return out;
}

double DraftVocab::coverage(const std::vector<int64_t>& counts) const {
  int64_t in = 0, all = 0;
  for (int64_t c : counts) all += c;
  for (int64_t t : ids)
    if (t < static_cast<int64_t>(counts.size())) in += counts[static_cast<size_t>(t)];
  return all > 0 ? static_cast<double>(in) / static_cast<double>(all) : 0.0;
}

DraftVocab select_draft_vocab(const std::vector<int64_t>& counts, int64_t n, const std::vector<int64_t>& always) {
  DraftVocab v;
  v.target_vocab = static_cast<int64_t>(counts.size());
  v.ids = rank_draft_tokens(counts, n, always);
  std::sort(v.ids.begin(), v.ids.end());
  return v;
}

std::vector<int64_t> rank_draft_tokens(const std::vector<int64_t>& counts, int64_t n, const std::vector<int64_t>& always,
                                       const std::vector<int64_t>& prior) {
  const int64_t vocab = static_cast<int64_t>(counts.size());
  DA_CHECK(n >= 1, "draft vocabulary: draft_vocab_size must be at least 1, got ", n);
  DA_CHECK(n <= vocab, "draft vocabulary: draft_vocab_size ", n, " is larger than the target's vocabulary of ",
           vocab, " tokens");
  DA_CHECK(static_cast<int64_t>(always.size()) <= n, "draft vocabulary: ", always.size(),
           " stop tokens must be in it, more than draft_vocab_size ", n);
  std::vector<uint8_t> forced(static_cast<size_t>(vocab), 0);
  for (int64_t t : always) {
    DA_CHECK(t >= 0 && t < vocab, "draft vocabulary: stop token ", t, " is outside the target's vocabulary of ", vocab);
    forced[static_cast<size_t>(t)] = 1;
  }
  std::vector<int64_t> place(static_cast<size_t>(vocab), vocab);  // place in `prior`; vocab = not in it
  for (size_t i = 0; i < prior.size(); ++i) {
    DA_CHECK(prior[i] >= 0 && prior[i] < vocab, "draft vocabulary: an earlier choice holds ", prior[i],
             ", outside the vocabulary of ", vocab);
    place[static_cast<size_t>(prior[i])] = std::min(place[static_cast<size_t>(prior[i])], static_cast<int64_t>(i));
  }
  std::vector<int64_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int64_t a, int64_t b) {
    const auto ua = static_cast<size_t>(a), ub = static_cast<size_t>(b);
    if (forced[ua] != forced[ub]) return forced[ua] > forced[ub];
    if (counts[ua] != counts[ub]) return counts[ua] > counts[ub];
    return place[ua] != place[ub] ? place[ua] < place[ub] : a < b;
  });
  return std::vector<int64_t>(order.begin(), order.begin() + n);
}

DraftVocab draft_vocab_from_maps(const std::vector<int64_t>& d2t, const std::vector<uint8_t>& t2d, const char* where) {
  DraftVocab v;
  v.target_vocab = static_cast<int64_t>(t2d.size());
  DA_CHECK(!d2t.empty() && d2t.size() <= t2d.size(), where, ": d2t has ", d2t.size(),
           " entries, t2d covers a vocabulary of ", t2d.size(), " (d2t must be non-empty and no longer)");
  for (size_t i = 0; i < d2t.size(); ++i) {
    const int64_t t = d2t[i] + static_cast<int64_t>(i);
    DA_CHECK(t >= 0 && t < v.target_vocab, where, ": d2t[", i, "] = ", d2t[i], " maps draft id ", i,
             " to target id ", t, ", outside the vocabulary of ", v.target_vocab);
    DA_CHECK(v.ids.empty() || t > v.ids.back(), where, ": d2t[", i, "] maps to target id ", t,
             ", not above the previous draft id's ", v.ids.empty() ? -1 : v.ids.back(),
             " (draft ids follow target ids in ascending order)");
    DA_CHECK(t2d[static_cast<size_t>(t)] != 0, where, ": t2d[", t, "] is false but d2t maps draft id ", i, " to it");
    v.ids.push_back(t);
  }
  const auto set = std::count_if(t2d.begin(), t2d.end(), [](uint8_t b) { return b != 0; });
  DA_CHECK(set == static_cast<int64_t>(d2t.size()), where, ": t2d marks ", set, " tokens but d2t has ", d2t.size(),
           " (the two maps disagree)");
  return v;
}

}  // namespace draftalign::data
