// acceptance.h: greedy speculative decoding counted exactly from one pass, and prompt-lookup drafting (the intervals
// around these counts are stats.h's). Torch-free: tokens and counts come in as plain vectors.
//
// Exact greedy tau from one pass. In greedy speculative decoding a draft token is kept only when it equals the
// target's own greedy token, so every kept proposal was made from exactly the target's greedy prefix. The whole run is
// therefore fixed by two things: the target's greedy answer (decoded once) and what the drafter proposes after each
// prefix of that answer (for a model drafter: its argmax at every position of one teacher-forced pass over prompt +
// answer). A step at answer position pos proposes d_1..d_g, accepts the run of d_i == answer[pos + i - 1], and the
// target adds answer[pos + a]: the counters of every g follow without running the decoder. They equal the real
// decoder's counter for counter up to floating-point near-ties (a batched forward may order two almost-equal logits
// differently from the decoder's one-row steps).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "evaluators/metrics.h"

namespace draftalign::eval {

// The target's greedy answer to one prompt. `tokens` runs past the emitted part: a draft block starting at the last
// emitted position is verified whole before the output is cut, so the continuation must reach emitted - 1 + gamma.
struct GreedyAnswer {
  std::vector<int64_t> tokens;  // the greedy continuation of the prompt, at least emitted - 1 + max gamma long
  int64_t emitted = 0;          // the answer: cut after the first stop token or at max_new_tokens
};

// The first `emitted` of a greedy continuation: after the first of `stop_ids` (kept) or at `max_new`.
int64_t cut_answer(const std::vector<int64_t>& tokens, int64_t max_new, const std::vector<int64_t>& stop_ids);

// What a drafter proposes at answer position pos (it has read the prompt and answer.tokens[0..pos)): at most `gamma`
// tokens, and how many drafter forward passes that took.
struct Proposal {
  std::vector<int64_t> tokens;
  int64_t drafter_calls = 0;
};
using Proposer = std::function<Proposal(int64_t pos, int64_t gamma)>;

// The counters of greedy speculative decoding of one answer with draft length gamma, as SpeculativeDecoder::decode
// counts them. A step whose proposal is empty is a plain target step (counted as a target call, not as a draft).
// `steps`, when given, receives each target call's accepted count (-1 for a step without a draft), as
// Decoded::accepted_per_step.
SpecCounters simulate_greedy(const GreedyAnswer& answer, int64_t gamma, const Proposer& propose,
                             std::vector<int64_t>* steps = nullptr);

// A model drafter: argmax[i] is its most likely token after the prompt and answer.tokens[0..i). It proposes
// argmax[pos..pos+gamma) in gamma forward passes (tokens after the first mismatch differ from what the real drafter
// would propose, but they are never compared: acceptance stops at the first mismatch).
Proposer model_proposer(const std::vector<int64_t>& argmax);

// What a drafter drafts greedily after each prefix of an answer, on its own path: tokens[i][j] is its draft step j
// after the prompt and answer.tokens[0..i) (step j reads its own steps 0..j-1, as the real decoder's drafter does),
// top_prob[i][j] the probability it gave that token (top-1 of its softmax at temperature 1). onepass.h makes them.
struct DraftChains {
  std::vector<std::vector<int64_t>> tokens;
  std::vector<std::vector<float>> top_prob;
};

// A drafter drafting its own chains (a drafter model, an EAGLE-3 head): at most gamma tokens, one forward pass each.
// With stop_prob > 0 the draft ends after the first token whose top_prob is below it (the real decoder's
// draft_stop_prob rule, speculative.h): the step's tokens, target call and accepted count depend only on the chain up
// to its first mismatch, its drafter calls and draft length on the drafter's own path after it; both are the chain's.
Proposer chain_proposer(const DraftChains& chains, double stop_prob = 0);

// Prompt-lookup drafting (vLLM's "ngram" method, llama.cpp's lookup decoding): for n from n_max down to n_min, find
// the latest earlier occurrence of the context's last n tokens and propose the (at most k) tokens that followed it.
// Empty when no n-gram recurs. Costs no model.
std::vector<int64_t> prompt_lookup(const std::vector<int64_t>& context, int64_t k, int64_t n_min, int64_t n_max);

// Prompt lookup over prompt + answer.tokens[0..pos).
Proposer lookup_proposer(const std::vector<int64_t>& prompt, const std::vector<int64_t>& answer, int64_t n_min,
                         int64_t n_max);

// Hybrid drafting: prompt lookup's tokens over prompt + answer.tokens[0..pos) first, then the model drafter's (argmax
// as for model_proposer) for the rest of the gamma, in gamma - (lookup tokens) drafter calls. The drafter's tokens are
// compared only when every lookup token matched the answer, and then its argmax after that longer prefix is exactly
// argmax[pos + lookup tokens ..].
Proposer hybrid_proposer(const std::vector<int64_t>& prompt, const std::vector<int64_t>& answer,
                         const std::vector<int64_t>& argmax, int64_t n_min, int64_t n_max);

// Hybrid drafting with a chain drafter (an EAGLE-3 head): prompt lookup's n tokens first, then the head's chain at
// the same position continued past them, chains[pos][n..gamma) in gamma - n head calls. `chains` are the answer-path
// chains (step j embeds the answer's token, onepass.h): the head's steps embed the lookup's tokens, and they are
// compared only when every lookup token matched the answer, where the two are the same tokens.
Proposer hybrid_chain_proposer(const std::vector<int64_t>& prompt, const std::vector<int64_t>& answer,
                               const DraftChains& chains, int64_t n_min, int64_t n_max);

}  // namespace draftalign::eval
