// draft_vocab.h: the draft vocabulary of an EAGLE-3 head. The head's output layer covers only the N target tokens its
// training text uses most, not the target's whole vocabulary (SmolLM2: 16k of 49k): a smaller head costs less per
// draft step, and a token outside the N is one the head almost never had to propose. EAGLE-3 and SpecForge store the
// choice as two maps, and so does our export (vLLM and SGLang read them):
//   d2t [N]      int64  draft id i -> target id d2t[i] + i  (an offset, not the id)
//   t2d [vocab]  bool   t2d[t]: target token t is in the draft vocabulary
// Draft ids follow target ids in ascending order, so d2t is non-decreasing. Counting happens on training text only
// (the pretraining corpus, the target's answers), never on an evaluation set.
#pragma once

#include <cstdint>
#include <vector>

namespace draftalign::data {

// Occurrences of each target token id in the text counted so far.
class TokenCounter {
 public:
  explicit TokenCounter(int64_t target_vocab);
  // Counts ids[0..n); an id outside [0, target_vocab) is an Error naming `where` (the file the ids came from).
  void add(const int64_t* ids, int64_t n, const char* where);
  void add(const std::vector<int64_t>& ids, const char* where) { add(ids.data(), static_cast<int64_t>(ids.size()), where); }
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t total() const { return total_; }

 private:
  std::vector<int64_t> counts_;
  int64_t total_ = 0;
};

struct DraftVocab {
  int64_t target_vocab = 0;
  std::vector<int64_t> ids;  // [N] draft id -> target id, ascending

  int64_t size() const { return static_cast<int64_t>(ids.size()); }
  std::vector<int64_t> d2t() const;  // [N] ids[i] - i
  std::vector<uint8_t> t2d() const;  // [target_vocab] 1 where the target token is a draft token
  // [target_vocab] target id -> draft id, -1 outside the draft vocabulary.
  std::vector<int64_t> target_to_draft() const;
  // The share of the counted tokens the vocabulary covers: the fraction of training positions whose target token the
  // head can propose at all (the rest are masked in training, as EAGLE-3 does).
  double coverage(const std::vector<int64_t>& counts) const;
};

// The `n` most counted tokens (ties and never-seen tokens by ascending id, so the result is exactly n tokens and
// deterministic); the `always` ids (the target's stop tokens: a head that cannot propose the end of an answer drafts
// past it) are in regardless of their counts. Errors: n < 1, n larger than the target's vocabulary, more `always`
// ids than n, an `always` id outside the vocabulary.
DraftVocab select_draft_vocab(const std::vector<int64_t>& counts, int64_t n, const std::vector<int64_t>& always = {});

// The independent drafter's draft vocabulary (model.draft_vocab_size; model/llama.h set_draft_vocab), most wanted
// first: the `always` ids, then by count (descending), ties by place in `prior` (an earlier choice, its ids before all
// others: distill counts the target's answers and lets the corpus's choice fill the rest), then by id. The errors of
// select_draft_vocab.
std::vector<int64_t> rank_draft_tokens(const std::vector<int64_t>& counts, int64_t n,
                                       const std::vector<int64_t>& always = {}, const std::vector<int64_t>& prior = {});

// Rebuilds a vocabulary from stored d2t and t2d maps (an EAGLE-3 checkpoint), checking that they agree: d2t[i] + i
// ascending and in range, and exactly those entries set in t2d. `where` names the file in errors.
DraftVocab draft_vocab_from_maps(const std::vector<int64_t>& d2t, const std::vector<uint8_t>& t2d, const char* where);

}  // namespace draftalign::data
