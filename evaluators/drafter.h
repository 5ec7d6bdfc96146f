// drafter.h: what a drafter is, once, for both ways tau is measured: the real speculative decoder (speculative.h) and
// the exact one-pass simulation of greedy decoding (speculative.h, simulate_greedy). Per decode: start(), then per step
// propose() and, once the target has verified the block [pending, draft...], commit(). Each kind is one class:
//   a drafter model (its own KV cache), an EAGLE-3 head (reads the target's hidden states), prompt lookup (no model:
//   acceptance.h's prompt_lookup), the hybrid (lookup's tokens first, another drafter for the rest of the draft);
//   and, for the one-pass simulation, replay drafters that read what a drafter proposes after each prefix of the
//   target's greedy answer from one teacher-forced pass (onepass.h) instead of running it.
// A new drafter kind is a new Drafter: the decoder, the simulation and the hybrid take it as it is.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "evaluators/acceptance.h"
#include "model/eagle3.h"
#include "model/llama.h"

namespace draftalign::eval {

// Prompt-lookup drafting: n-grams from n_max down to n_min.
struct LookupDrafting {
  int64_t n_min = 1, n_max = 3;
};

// How a drafter picks its tokens in one decode: greedy (argmax) when `probs` is empty, else sampled with `rng` from
// probs(logits [1, V]) [1, V], the target vocabulary's sampling distribution (the filters the target's p gets).
// stop_prob > 0: a drafter model or head ends its draft after a token whose probability, the top-1 of its softmax at
// temperature 1, is below stop_prob (transformers' assistant_confidence_threshold). The stop reads the drafter alone,
// so sampling stays lossless.
struct DraftSampler {
  std::function<torch::Tensor(const torch::Tensor&)> probs;
  std::mt19937_64* rng = nullptr;
  double stop_prob = 0;
  bool greedy() const { return !probs; }
  // Whether a draft ends after a token the drafter gave probability `top_prob` (the top-1 of its softmax).
  bool stops_at(double top_prob) const { return stop_prob > 0 && top_prob < stop_prob; }
  // The same, for the token that came from logits [1, V].
  bool stops(const torch::Tensor& logits) const;
};

// The outcome of verifying one draft: how many draft tokens were accepted, then the target's own next token (the
// correction after a rejection, or the bonus token after gamma acceptances).
struct Verdict {
  int64_t accepted = 0;
  int64_t token = -1;
  bool operator==(const Verdict&) const = default;
};

class Drafter {
 public:
  virtual ~Drafter() = default;
  // The target hidden states it reads (model::Taps indices); the decoder reads them out of its target calls.
  virtual std::vector<int64_t> taps() const { return {}; }
  // Makes its caches hold `capacity` positions now, running each step shape up to `max_block` once.
  virtual void reserve(int64_t /*capacity*/, int64_t /*max_block*/) {}
  // A new decode of `prompt` needing up to `capacity` positions. prefill_taps: the target's taps over prompt minus its
  // last token, [1, n - 1, hidden] each (empty unless taps(), or for a one-token prompt).
  virtual void start(const std::vector<int64_t>& prompt, int64_t capacity,
                     const std::vector<torch::Tensor>& prefill_taps) = 0;
  // Extends `draft` towards `gamma` tokens after `context` (the prompt and the tokens emitted so far; its last token
  // is the one the target reads next). When sampling, one q [V] per token added to `qs`. Returns the model calls made.
  virtual int64_t propose(const std::vector<int64_t>& context, int64_t gamma, const DraftSampler& sampler,
                          std::vector<int64_t>& draft, std::vector<torch::Tensor>& qs) = 0;
  // The verdict on `draft`; block_taps: the target's taps over the verified block [pending, draft...] (taps() only).
  virtual void commit(const std::vector<int64_t>& /*draft*/, const Verdict& /*v*/,
                      const std::vector<torch::Tensor>& /*block_taps*/) {}
};

// The drafters the real decoder runs, over a target of `vocab` tokens where one is asked.
std::unique_ptr<Drafter> model_drafter(model::Llama& drafter);
std::unique_ptr<Drafter> lookup_drafter(LookupDrafting lookup, int64_t vocab);
// Lookup's tokens first, then `rest` (a model drafter, a head, a replay drafter) for the rest of each draft, drafting
// without a stop (the one-pass count has no chain past a rejected lookup token).
std::unique_ptr<Drafter> hybrid_drafter(LookupDrafting lookup, int64_t vocab, std::unique_ptr<Drafter> rest);
// An EAGLE-3 head over the target it was trained for: step 0 from the target's taps of the accepted prefix, each
// further step from its own output (model::Eagle3Head::step), sampling from its draft vocabulary's distribution placed
// in the target vocabulary (tokens outside it have q = 0).
std::unique_ptr<Drafter> head_drafter(model::Eagle3Head& head);

// Replay drafters for the one-pass simulation (greedy only; they keep a reference to what they replay). At answer
// position pos (the context minus the prompt) with `draft` already holding n tokens (a hybrid's lookup tokens):
// argmax_drafter proposes argmax[pos + n .. pos + gamma), one call each: a drafter model's argmax after each prefix
// of the answer (teacher_forced_argmax); its tokens after a mismatch differ from what the real drafter would propose,
// but they are never compared. It takes no stop (that needs the drafter's own path: chains).
std::unique_ptr<Drafter> argmax_drafter(const std::vector<int64_t>& argmax);
// chain_drafter proposes chains.tokens[pos][n .. gamma), one call each, ending after a token whose top_prob the
// sampler's stop rule rejects: a drafter's own draft chains (teacher_forced_chains, teacher_forced_head_drafts).
std::unique_ptr<Drafter> chain_drafter(const DraftChains& chains);

}  // namespace draftalign::eval
