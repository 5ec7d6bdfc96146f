// magpie.h: `draftalign magpie`: instruction prompts written by the target itself (Magpie, Xu et al. 2024).
//
// The target samples a user turn from the bare chat prefix (tok::ChatTemplate::user_prefix: for ChatML the system
// turn, then `<|im_start|>user\n`) up to the end of the turn. Each sample has its own seed (run.seed and its index),
// and samples are drawn in a fixed order until magpie.count are kept, so a run is the same for a seed whatever the
// batch size. A sample is dropped, and the reason counted, when it
//   - did not end its turn within magpie.max_new_tokens (unfinished),
//   - is shorter than min_chars or longer than max_chars (after trimming),
//   - holds chat-template markup (the model began another turn inside the user turn),
//   - is mostly not text (under half of its non-space characters are letters),
//   - repeats itself (under 40% distinct words, from 12 words on),
//   - nearly duplicates an evaluation prompt (magpie.exclude) or a prompt already kept: one's normalised text holds
//     the other's, or at least max_overlap of the smaller one's word n-grams occur in the other.
// The kept prompts go to magpie.output (written to a temporary file, then renamed) as
//   {"instruction": ..., "id": "target-<k>", "source": "target", "sample": i, "seed": s, "temperature": T,
//    "top_p": p, "target": dir}
// which load_prompts (prompts.h) reads; beside it, <output>.manifest.json holds the settings' fingerprint, the
// sample and drop counts. A run whose manifest matches the settings is not redone.
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

struct MagpieSummary {
  int64_t samples = 0, kept = 0;
  std::map<std::string, int64_t> dropped;  // reason -> count
  bool reused = false;                     // the output was already there, made with these settings
};

// The whole command (defined in generate.cpp, beside generate, so the text code above stays free of torch).
MagpieSummary write_target_prompts(const config::Config& cfg);

}  // namespace draftalign::data
