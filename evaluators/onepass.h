// onepass.h: the model side of exact greedy tau from one pass (acceptance.h): the target's greedy answers, decoded
// once for all prompts with the continuous-batching generator, and a drafter's argmax after every prefix of an
// answer, from one teacher-forced forward pass over prompt + answer. For sampling, the same pass gives a model's
// sampling distribution after every prefix of the target's sampled answer, from which the per-position acceptance
// alpha = sum_x min(p, q) of speculative sampling follows.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "evaluators/acceptance.h"
#include "model/eagle3.h"
#include "model/generation.h"
#include "model/llama.h"

namespace draftalign::eval {

// The target's greedy continuation of each prompt, max_new + extra tokens long (it does not stop at a stop token: a
// draft verified at the end of the answer reads past it), cut at the first of `stop_ids` or max_new for `emitted`.
// `on_token(n)` reports progress.
std::vector<GreedyAnswer> greedy_answers(model::Llama& target, const std::vector<std::vector<int64_t>>& prompts,
                                         int64_t max_new, int64_t extra, const std::vector<int64_t>& stop_ids,
                                         int64_t batch_size, const std::function<void(int64_t)>& on_token = {});

// The drafter's most likely token after prompt + continuation[0..i), for i = 0 .. continuation.size() - 1: one
// forward pass over prompt + continuation minus its last token.
std::vector<int64_t> teacher_forced_argmax(model::Llama& drafter, const std::vector<int64_t>& prompt,
                                           const std::vector<int64_t>& continuation);

// The drafter's own greedy draft chains after prompt + continuation[0..i), for i = 0 .. continuation.size() - 1,
// gamma steps each with their top-1 probabilities (acceptance.h, DraftChains): step 0 is teacher_forced_argmax's
// pass; each further step is one masked forward over the prompt + continuation and every chain so far, chain i's step
// j at position prompt + i + j attending to prompt + continuation[0..i) and to its own earlier steps (a tree of n
// branches over one shared prefix, as a decoder with a KV cache drafts each of them).
DraftChains teacher_forced_chains(model::Llama& drafter, const std::vector<int64_t>& prompt,
                                  const std::vector<int64_t>& continuation, int64_t gamma);

// The target's sampled answers (temperature, top-p, top-k and stop ids of `sp`; request i seeded with seeds[i], so an
// answer does not depend on its batch), decoded with the continuous-batching generator, the stop token included.
// `on_token(n)` reports progress.
std::vector<std::vector<int64_t>> sampled_answers(model::Llama& target, const std::vector<std::vector<int64_t>>& prompts,
                                                  const std::vector<uint64_t>& seeds, const model::SamplingParams& sp,
                                                  int64_t batch_size,
                                                  const std::function<void(int64_t)>& on_token = {});

// The sampling distribution (model::sampling_probs at sp's temperature, top-p and top-k) of `model` after
// prompt + continuation[0..i), for i = 0 .. continuation.size() - 1: [n, V] fp32 on the model's device, one pass.
torch::Tensor teacher_forced_probs(model::Llama& model, const std::vector<int64_t>& prompt,
                                   const std::vector<int64_t>& continuation, const model::SamplingParams& sp);

// An EAGLE-3 head's greedy draft chains after prompt + continuation[0..i), for i = 0 .. continuation.size() - 1: gamma
// target ids each with their top-1 probabilities, from one target pass with the head's taps and one gamma-step
// unroll. After prefix s[0..n) the target has read s[0..n-1), so the head sits at t = n - 2 (the prompt must hold 2
// tokens): step 0 there embeds s[n-1] and proposes d_1; step j >= 1 embeds its own d_j, as the real decoder's head
// does (Eagle3Head::draft_chain). `answer_path`, when given, receives the chains whose step j >= 1 embeds the answer's
// s[n-1+j] instead: what the head drafts after a hybrid's lookup tokens when they all matched the answer
// (drafter.h: hybrid_drafter over chain_drafter).
DraftChains teacher_forced_head_drafts(model::Llama& target, model::Eagle3Head& head, const std::vector<int64_t>& prompt,
                                       const std::vector<int64_t>& continuation, int64_t gamma,
                                       DraftChains* answer_path = nullptr);

}  // namespace draftalign::eval
