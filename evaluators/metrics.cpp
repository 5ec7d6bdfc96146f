#include "evaluators/metrics.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace draftalign::eval {

void SpecCounters::record_draft(int64_t gamma, int64_t accepted, int64_t proposed) {
  if (proposed < 0) proposed = gamma;
  DA_CHECK(gamma >= 1 && proposed >= 1 && proposed <= gamma && accepted >= 0 && accepted <= proposed,
           "record_draft: ", accepted, " of ", proposed, " accepted (gamma ", gamma, ")");
  if (num_accepted_tokens_per_pos.empty()) {
    num_accepted_tokens_per_pos.assign(gamma, 0);
    acceptance_counts.assign(gamma + 1, 0);
  }
  DA_CHECK(static_cast<int64_t>(num_accepted_tokens_per_pos.size()) == gamma, "record_draft: a draft of ", gamma,
           " tokens in counters of drafts of ", num_accepted_tokens_per_pos.size());
  ++num_drafts;
  num_draft_tokens += proposed;
  num_accepted_tokens += accepted;
  for (int64_t i = 0; i < accepted; ++i) ++num_accepted_tokens_per_pos[i];
  ++acceptance_counts[accepted];
}

void SpecCounters::record_target_call(int64_t gamma, int64_t proposed) {
  DA_CHECK(gamma >= 0 && proposed >= 0 && proposed <= gamma, "record_target_call: ", proposed, " draft tokens (gamma ",
           gamma, ")");
  if (calls_by_draft_length.empty()) calls_by_draft_length.assign(gamma + 1, 0);
  DA_CHECK(static_cast<int64_t>(calls_by_draft_length.size()) == gamma + 1, "record_target_call: a call at gamma ",
           gamma, " in counters of gamma ", calls_by_draft_length.size() - 1);
  ++num_target_calls;
  ++calls_by_draft_length[proposed];
}

void SpecCounters::add(const SpecCounters& o) {
  auto add_vec = [](std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    if (b.empty()) return;
    if (a.empty()) a.assign(b.size(), 0);
    DA_CHECK(a.size() == b.size(), "SpecCounters::add: counters of different draft lengths");
    for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  };
  num_drafts += o.num_drafts;
  num_draft_tokens += o.num_draft_tokens;
  num_accepted_tokens += o.num_accepted_tokens;
  add_vec(num_accepted_tokens_per_pos, o.num_accepted_tokens_per_pos);
  add_vec(acceptance_counts, o.acceptance_counts);
  add_vec(calls_by_draft_length, o.calls_by_draft_length);
  num_emitted_tokens += o.num_emitted_tokens;
  num_target_calls += o.num_target_calls;
  num_drafter_calls += o.num_drafter_calls;
}

SpecMetrics derive_metrics(const SpecCounters& c) {
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  SpecMetrics m;
  m.block_efficiency = ratio(c.num_emitted_tokens, c.num_target_calls);
  m.mean_acceptance_length = c.num_drafts > 0 ? 1.0 + ratio(c.num_accepted_tokens, c.num_drafts) : 0.0;
  m.draft_acceptance_rate = ratio(c.num_accepted_tokens, c.num_draft_tokens);
  for (size_t i = 0; i < c.num_accepted_tokens_per_pos.size(); ++i) {
    const double here = c.num_accepted_tokens_per_pos[i];
    m.acceptance_rate_per_pos.push_back(ratio(here, c.num_drafts));
    const double before = i == 0 ? c.num_drafts : c.num_accepted_tokens_per_pos[i - 1];
    m.conditional_acceptance_per_pos.push_back(ratio(here, before));
  }
  for (int64_t k : c.acceptance_counts) m.acceptance_histogram.push_back(ratio(k, c.num_drafts));
  return m;
}

double iid_tokens_per_call(double alpha, int64_t gamma) {
  if (alpha >= 1.0) return static_cast<double>(gamma + 1);
  return (1.0 - std::pow(alpha, static_cast<double>(gamma + 1))) / (1.0 - alpha);
}

double mbsu(double tau, int64_t gamma, double c) {
  DA_CHECK(c > 0 && gamma >= 0, "mbsu: cost ratio ", c, ", gamma ", gamma);
  return c * tau / (c + static_cast<double>(gamma));
}

double median(std::vector<double> xs) {
  if (xs.empty()) return 0;
  std::sort(xs.begin(), xs.end());
  const size_t n = xs.size();
  return n % 2 == 1 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2]);
}

}  // namespace draftalign::eval
