// speculative.h: lossless speculative decoding, draft-then-verify (Leviathan et al. 2023; Chen et al. 2023), one
// sequence at a time as a chat model serves one user.
//
// A step: the drafter proposes gamma tokens d_1..d_gamma one at a time from its distributions q_1..q_gamma; the target
// runs once over [last token, d_1..d_gamma] and gives p_1..p_{gamma+1}. Then
//   greedy   (temperature 0)  accept d_i while d_i = argmax p_i; the next token is argmax p_{a+1};
//   sampling                  accept d_i with probability min(1, p_i(d_i) / q_i(d_i)), in order, stopping at the first
//                             rejection; after a rejection at i the token is drawn from norm(max(0, p_i - q_i)), after
//                             gamma acceptances the bonus token from p_{gamma+1}.
// The output is distributed exactly as the target's own sampling: P(emit x) = min(p, q)(x) + (1 - sum min(p, q)) *
// max(0, p - q)(x) / sum max(0, p - q) = p(x). Temperature, top-k and top-p filter p and q identically
// (model::sampling_probs), so the output follows the filtered target, as plain sampling with those settings does.
// Both KV caches are rolled back to the accepted prefix after every step (a rejected draft leaves no trace).
//
// gamma = 0 is plain autoregressive decoding with the target, through the same code: the wall-clock baseline.
//
// Every kind of drafter goes through one interface (drafter.h): a drafter model; prompt lookup (acceptance.h: the
// tokens that followed the latest earlier occurrence of the context's trailing n-gram), whose draft may be shorter
// than gamma or empty (then the step is a plain target step) and whose q is one-hot on the proposed token, so a lookup
// token is kept with probability p(d); the hybrid of both (the lookup's tokens first, the model's for the rest); and
// an EAGLE-3 head, which drafts from the target's hidden states: the decoder reads the head's taps out of its own
// target calls (the prefill and every verification) and hands them over with the verdict.
//
// simulate_greedy is the same step with the target's verdict read from its greedy answer instead of computed: exact
// greedy tau from one pass (acceptance.h), through the same drafters and the same counting.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "evaluators/acceptance.h"
#include "evaluators/drafter.h"
#include "evaluators/metrics.h"
#include "model/eagle3.h"
#include "model/generation.h"
#include "model/llama.h"

namespace draftalign::eval {

// Speculative sampling's accept/reject core for one sequence. Randomness comes in as arguments, so a test can check
// hand-computed cases.
//   p        [gamma + 1, V] target probabilities at the draft positions and the one after
//   q        [gamma, V]     drafter probabilities the draft tokens were sampled from
//   draft    [gamma]        the draft tokens
//   u_accept [gamma]        uniforms in [0, 1): d_i is accepted when u_i < p_i(d_i) / q_i(d_i)
//   u_sample                uniform in [0, 1) for the token after (inverse-CDF sampling, sample_from)
Verdict accept_reject(const torch::Tensor& p, const torch::Tensor& q, const std::vector<int64_t>& draft,
                      const std::vector<double>& u_accept, double u_sample);

// Greedy verification: target_logits [gamma + 1, V]; accept while the target's argmax equals the draft token.
Verdict accept_greedy(const torch::Tensor& target_logits, const std::vector<int64_t>& draft);

// Inverse-CDF sampling from unnormalised non-negative weights [V]: the first x with cumsum(w)[x] > u * sum(w).
int64_t sample_from(const torch::Tensor& weights, double u);

struct Decoded {
  std::vector<int64_t> tokens;  // the response (a stop token included)
  model::Finish finish = model::Finish::kLength;  // kEos or kLength
  SpecCounters counters;
  std::vector<int64_t> accepted_per_step;  // per target call: draft tokens accepted (-1: a step without a draft)
  double drafter_seconds = 0, target_seconds = 0;  // wall time inside each model's steps (host-synchronised)
  // target_seconds split by the draft length each call verified (indexed like counters.calls_by_draft_length): the
  // verification time of each block length, measured in the decode itself.
  std::vector<double> target_seconds_by_draft_length;
  double prefill_seconds = 0;  // the prompt into both caches, before the first step (the same for every drafter)
};

struct DecodeStream;  // a model's KV cache, its length and (on CUDA) its decode graphs (decode_stream.h)

class SpeculativeDecoder {
 public:
  // `drafter` null: gamma = 0 only (plain decoding).
  SpeculativeDecoder(model::Llama& target, std::unique_ptr<Drafter> drafter);
  // A drafter model (null for plain decoding); both models must share the vocabulary (the caller checks the tokenizers).
  SpeculativeDecoder(model::Llama& target, model::Llama* drafter);
  // Prompt-lookup drafting instead of a drafter model.
  SpeculativeDecoder(model::Llama& target, LookupDrafting lookup);
  // Hybrid: prompt lookup first, the drafter model for the rest of each draft.
  SpeculativeDecoder(model::Llama& target, model::Llama& drafter, LookupDrafting lookup);
  // An EAGLE-3 head reading `target`; with `lookup`, prompt lookup first and the head for the rest.
  SpeculativeDecoder(model::Llama& target, model::Eagle3Head& head, std::optional<LookupDrafting> lookup = {});
  ~SpeculativeDecoder();

  // The target's cache and (on CUDA) its decode graphs and side streams are made once and kept, as are the drafter's:
  // a decode reuses them when they hold enough positions and makes larger ones only when they do not. reserve() makes
  // them now for decodes of up to `capacity` positions (prompt + new tokens + gamma + 1) and runs one step of each
  // block length up to `max_block` through them, so that timed decodes allocate nothing and capture no graph.
  void reserve(int64_t capacity, int64_t max_block);

  // Decodes one prompt: up to sp.max_new_tokens tokens, stopping after any of sp.stop_ids; sp.temperature 0 is greedy.
  // `seed` seeds the uniforms (drafter sampling, acceptance, correction) in a fixed order. draft_stop_prob: see
  // DraftSampler (a hybrid's drafter drafts without it).
  Decoded decode(const std::vector<int64_t>& prompt, int64_t gamma, const model::SamplingParams& sp, uint64_t seed,
                 double draft_stop_prob = 0);

 private:
  // The target's verdict on `draft` after `pending`: one call over the block (its taps read into `taps`), then greedy
  // acceptance or speculative sampling's accept/reject with the sampler's uniforms.
  Verdict verify(DecodeStream& target, int64_t pending, const std::vector<int64_t>& draft,
                 const std::vector<torch::Tensor>& qs, const DraftSampler& sampler, model::Taps* taps);

  model::Llama& target_;
  std::unique_ptr<Drafter> drafter_;
  std::unique_ptr<DecodeStream> target_stream_;
};

// The counters of greedy speculative decoding of `answer` to `prompt` with draft length gamma, as decode() counts
// them, the target's verdict on each draft read from its greedy answer (accept while a draft token equals the
// answer's; then the answer's next token) instead of a target call. `drafter` drafts as in decode() (with
// draft_stop_prob); for a model it is a replay drafter (drafter.h). A step whose draft is empty is a plain target
// step. `steps`, when given, receives each target call's accepted count (-1 for a step without a draft), as
// Decoded::accepted_per_step. They equal the real decoder's counter for counter up to floating-point near-ties.
SpecCounters simulate_greedy(const std::vector<int64_t>& prompt, const GreedyAnswer& answer, int64_t gamma,
                             Drafter& drafter, double draft_stop_prob = 0, std::vector<int64_t>* steps = nullptr);

// The median wall time of one decode step of `model` that appends the last `block` tokens of `context` to a cache
// holding the rest (each step rolled back): block 1 is a plain decode step, gamma + 1 a verification.
double decode_step_seconds(model::Llama& model, const std::vector<int64_t>& context, int64_t block = 1,
                           int64_t steps = 16);

// The median wall time of one draft step of an EAGLE-3 head (a chain step and its logits) over a cache holding
// `context` positions.
double head_step_seconds(model::Eagle3Head& head, int64_t context, int64_t steps = 16);

}  // namespace draftalign::eval
