// metrics.h: what a speculative decoding run counts, and the numbers derived from the counts.
//
// The counters carry vLLM's spec-decode metric names (num_drafts, num_draft_tokens, num_accepted_tokens,
// num_accepted_tokens_per_pos), so a report reads like a vLLM log. One draft = one speculative step: the drafter
// proposes gamma tokens and one target call verifies them and adds one token of its own (the correction after a
// rejection, or the bonus token when all gamma were accepted). The derived numbers:
//   block efficiency   tau = emitted tokens / target calls: tokens per target forward pass, the paper's measure;
//   mean acceptance length = 1 + accepted / drafts (vLLM's; tau without the cut at EOS or max_new_tokens);
//   per-position acceptance  accepted at position i / drafts (vLLM), and conditional: accepted at i / accepted at i-1
//                      (the acceptance rate alpha_i of a token whose predecessors were all accepted);
//   histogram          the fraction of drafts with exactly k = 0..gamma tokens accepted;
//   MBSU               memory-bound speed-up c * tau / (c + gamma), c = target cost / drafter cost (parameter ratio, or
//                      the measured ratio of one decode step's latencies): a step reads the drafter gamma times and the
//                      target once, and plain decoding reads the target once per token.
// Torch-free.
#pragma once

#include <cstdint>
#include <vector>

namespace draftalign::eval {

struct SpecCounters {
  int64_t num_drafts = 0;        // speculative steps (gamma >= 1)
  int64_t num_draft_tokens = 0;  // tokens proposed
  int64_t num_accepted_tokens = 0;
  std::vector<int64_t> num_accepted_tokens_per_pos;  // [gamma]: drafts whose i-th token was accepted
  std::vector<int64_t> acceptance_counts;            // [gamma + 1]: drafts with exactly k tokens accepted
  int64_t num_emitted_tokens = 0;  // tokens in the outputs (after the cut at EOS / max_new_tokens)
  int64_t num_target_calls = 0;    // target forward passes that produced tokens (the prompt prefill not counted)
  int64_t num_drafter_calls = 0;   // drafter forward passes
  // [gamma + 1]: target calls that verified k = 0..gamma draft tokens (a block of k + 1 tokens). A model drafter's
  // calls all verify gamma; prompt lookup's verify what it found, often nothing. The speed-up bound (report.h) charges
  // each call the measured time of its own block length.
  std::vector<int64_t> calls_by_draft_length;

  // One verified draft of `proposed` tokens (at most `gamma`; -1 = gamma: a model drafter always proposes gamma,
  // prompt lookup may find fewer) of which the first `accepted` were accepted.
  void record_draft(int64_t gamma, int64_t accepted, int64_t proposed = -1);
  // One target call that verified `proposed` draft tokens (0 <= proposed <= gamma; gamma 0 is plain decoding).
  void record_target_call(int64_t gamma, int64_t proposed);
  void add(const SpecCounters& other);
  bool operator==(const SpecCounters&) const = default;
};

struct SpecMetrics {
  double block_efficiency = 0;
  double mean_acceptance_length = 0;
  double draft_acceptance_rate = 0;  // accepted / draft tokens
  std::vector<double> acceptance_rate_per_pos;
  std::vector<double> conditional_acceptance_per_pos;
  std::vector<double> acceptance_histogram;
};

SpecMetrics derive_metrics(const SpecCounters& c);

// The tokens per target call with draft length g if every draft token were accepted independently with probability
// alpha: (1 - alpha^(g+1)) / (1 - alpha). An i.i.d. prediction from a mean alpha, not a measurement.
double iid_tokens_per_call(double alpha, int64_t gamma);

// c * tau / (c + gamma); c > 0.
double mbsu(double tau, int64_t gamma, double c);

// The median of `xs` (the mean of the two middle values for an even count); 0 for none.
double median(std::vector<double> xs);

}  // namespace draftalign::eval
