// magpie.h: the text side of `draftalign magpie` (trainers/magpie.h, which says what the command does): the junk
// filter and the near-duplicate index that decide which sampled user turns are kept.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"

namespace draftalign::data {

// ASCII lower case, every run of other than letters and digits one space, trimmed.
std::string normalise_text(const std::string& text);

// Why a sampled user turn (trimmed) is not a prompt: "" = it is one; else "short", "long", "markup", "not text" or
// "repetitive". Unfinished samples and duplicates are decided by the caller.
std::string junk_reason(const std::string& text, const config::MagpieSection& m);

// Texts held for the near-duplicate test: word n-gram containment with an inverted index.
class NearDuplicates {
 public:
  NearDuplicates(int64_t n, double max_overlap) : n_(n), max_overlap_(max_overlap) {}

  // The index (in order of add) of a held text that `text` nearly duplicates, or -1.
  int64_t find(const std::string& text) const;
  void add(const std::string& text);
  int64_t size() const { return static_cast<int64_t>(texts_.size()); }

 private:
  std::vector<std::string> grams(const std::string& normalised) const;

  int64_t n_;
  double max_overlap_;
  std::vector<std::string> texts_;           // normalised
  std::vector<int64_t> gram_counts_;         // distinct n-grams of each
  std::unordered_map<std::string, std::vector<int64_t>> index_;  // n-gram -> texts holding it
};

}  // namespace draftalign::data
