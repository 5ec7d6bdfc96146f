// acceptance.h: what greedy speculative decoding counted exactly from one pass reads (the target's greedy answer, a
// drafter's draft chains), and prompt-lookup drafting; the count itself is speculative.h's simulate_greedy, through
// the drafters of drafter.h (the intervals around the counts are stats.h's). Torch-free: tokens come in as plain
// vectors.
//
// Exact greedy tau from one pass. In greedy speculative decoding a draft token is kept only when it equals the
// target's own greedy token, so every kept proposal was made from exactly the target's greedy prefix. The whole run is
// therefore fixed by two things: the target's greedy answer (decoded once) and what the drafter proposes after each
// prefix of that answer (for a model drafter: its argmax at every position of one teacher-forced pass over prompt +
// answer). A step at answer position pos proposes d_1..d_g, accepts the run of d_i == answer[pos + i - 1], and the
// target adds answer[pos + a]: the counters of every g follow without running the target. They equal the real
// decoder's counter for counter up to floating-point near-ties (a batched forward may order two almost-equal logits
// differently from the decoder's one-row steps).
#pragma once

#include <cstdint>
#include <vector>

namespace draftalign::eval {

// The target's greedy answer to one prompt. `tokens` runs past the emitted part: a draft block starting at the last
// emitted position is verified whole before the output is cut, so the continuation must reach emitted - 1 + gamma.
struct GreedyAnswer {
  std::vector<int64_t> tokens;  // the greedy continuation of the prompt, at least emitted - 1 + max gamma long
  int64_t emitted = 0;          // the answer: cut after the first stop token or at max_new_tokens
};

// The first `emitted` of a greedy continuation: after the first of `stop_ids` (kept) or at `max_new`.
int64_t cut_answer(const std::vector<int64_t>& tokens, int64_t max_new, const std::vector<int64_t>& stop_ids);

// What a drafter drafts greedily after each prefix of an answer, on its own path: tokens[i][j] is its draft step j
// after the prompt and answer.tokens[0..i) (step j reads its own steps 0..j-1, as the real decoder's drafter does),
// top_prob[i][j] the probability it gave that token (top-1 of its softmax at temperature 1). onepass.h makes them.
struct DraftChains {
  std::vector<std::vector<int64_t>> tokens;
  std::vector<std::vector<float>> top_prob;
};

// Prompt-lookup drafting (vLLM's "ngram" method, llama.cpp's lookup decoding): for n from n_max down to n_min, find
// the latest earlier occurrence of the context's last n tokens and propose the (at most k) tokens that followed it.
// Empty when no n-gram recurs. Costs no model.
std::vector<int64_t> prompt_lookup(const std::vector<int64_t>& context, int64_t k, int64_t n_min, int64_t n_max);

}  // namespace draftalign::eval
