#include "evaluators/acceptance.h"

#include <algorithm>

#include "common/error.h"

namespace draftalign::eval {

int64_t cut_answer(const std::vector<int64_t>& tokens, int64_t max_new, const std::vector<int64_t>& stop_ids) {
  const int64_t n = std::min<int64_t>(max_new, static_cast<int64_t>(tokens.size()));
  for (int64_t i = 0; i < n; ++i)
    if (std::find(stop_ids.begin(), stop_ids.end(), tokens[i]) != stop_ids.end()) return i + 1;
  return n;
}

SpecCounters simulate_greedy(const GreedyAnswer& answer, int64_t gamma, const Proposer& propose,
                             std::vector<int64_t>* steps) {
  DA_CHECK(gamma >= 1, "simulate_greedy: gamma must be >= 1, got ", gamma);
  DA_CHECK(answer.emitted >= 1 && static_cast<int64_t>(answer.tokens.size()) >= answer.emitted - 1 + gamma,
           "simulate_greedy: an answer of ", answer.emitted, " tokens needs a greedy continuation of at least ",
           answer.emitted - 1 + gamma, " tokens, got ", answer.tokens.size());
  SpecCounters c;
  for (int64_t pos = 0; pos < answer.emitted;) {
    Proposal p = propose(pos, gamma);
    const int64_t proposed = std::min<int64_t>(gamma, static_cast<int64_t>(p.tokens.size()));
    int64_t a = 0;
    while (a < proposed && p.tokens[a] == answer.tokens[pos + a]) ++a;
    c.record_target_call(gamma, proposed);
    c.num_drafter_calls += p.drafter_calls;
    if (proposed > 0) c.record_draft(gamma, a, proposed);
    if (steps != nullptr) steps->push_back(proposed > 0 ? a : -1);
    pos += a + 1;  // the accepted drafts and the target's own token
  }
  c.num_emitted_tokens = answer.emitted;
  return c;
}

Proposer model_proposer(const std::vector<int64_t>& argmax) {
  return [&argmax](int64_t pos, int64_t gamma) {
    DA_CHECK(pos + gamma <= static_cast<int64_t>(argmax.size()), "model_proposer: no drafter prediction at answer ",
             "position ", pos + gamma - 1, " (", argmax.size(), " positions)");
    return Proposal{std::vector<int64_t>(argmax.begin() + pos, argmax.begin() + pos + gamma), gamma};
  };
}

Proposer chain_proposer(const DraftChains& chains, double stop_prob) {
  DA_CHECK(chains.top_prob.size() == chains.tokens.size(), "chain_proposer: ", chains.tokens.size(), " chains but ",
           chains.top_prob.size(), " rows of probabilities");
  return [&chains, stop_prob](int64_t pos, int64_t gamma) {
    DA_CHECK(pos < static_cast<int64_t>(chains.tokens.size()) &&
                 gamma <= static_cast<int64_t>(chains.tokens[static_cast<size_t>(pos)].size()) &&
                 gamma <= static_cast<int64_t>(chains.top_prob[static_cast<size_t>(pos)].size()),
             "chain_proposer: no ", gamma, "-token chain at answer position ", pos, " (", chains.tokens.size(),
             " positions)");
    const auto& c = chains.tokens[static_cast<size_t>(pos)];
    const auto& prob = chains.top_prob[static_cast<size_t>(pos)];
    int64_t n = 0;
    while (n < gamma && !(n > 0 && prob[static_cast<size_t>(n - 1)] < stop_prob)) ++n;
    return Proposal{std::vector<int64_t>(c.begin(), c.begin() + n), n};
  };
}

std::vector<int64_t> prompt_lookup(const std::vector<int64_t>& context, int64_t k, int64_t n_min, int64_t n_max) {
  DA_CHECK(k >= 1 && n_min >= 1 && n_max >= n_min, "prompt_lookup: k = ", k, ", n from ", n_min, " to ", n_max);
  const int64_t len = static_cast<int64_t>(context.size());
  for (int64_t n = std::min(n_max, len - 1); n >= n_min; --n) {
    const int64_t tail = len - n;  // the trailing n-gram is context[tail..len)
    // The latest earlier occurrence: start s < tail with context[s..s+n) == the trailing n-gram.
    for (int64_t s = tail - 1; s >= 0; --s) {
      if (!std::equal(context.begin() + s, context.begin() + s + n, context.begin() + tail)) continue;
      const int64_t from = s + n, to = std::min(len, from + k);
      return std::vector<int64_t>(context.begin() + from, context.begin() + to);
    }
  }
  return {};
}

Proposer lookup_proposer(const std::vector<int64_t>& prompt, const std::vector<int64_t>& answer, int64_t n_min,
                         int64_t n_max) {
  return [&prompt, &answer, n_min, n_max](int64_t pos, int64_t gamma) {
    std::vector<int64_t> context = prompt;
    context.insert(context.end(), answer.begin(), answer.begin() + pos);
    return Proposal{prompt_lookup(context, gamma, n_min, n_max), 0};
  };
}

Proposer hybrid_proposer(const std::vector<int64_t>& prompt, const std::vector<int64_t>& answer,
                         const std::vector<int64_t>& argmax, int64_t n_min, int64_t n_max) {
  const Proposer lookup = lookup_proposer(prompt, answer, n_min, n_max), model = model_proposer(argmax);
  return [lookup, model](int64_t pos, int64_t gamma) {
    Proposal p = lookup(pos, gamma);
    const int64_t n = static_cast<int64_t>(p.tokens.size());
    if (n == gamma) return p;
    const Proposal rest = model(pos + n, gamma - n);
    p.tokens.insert(p.tokens.end(), rest.tokens.begin(), rest.tokens.end());
    p.drafter_calls += rest.drafter_calls;
    return p;
  };
}

Proposer hybrid_chain_proposer(const std::vector<int64_t>& prompt, const std::vector<int64_t>& answer,
                                const DraftChains& chains, int64_t n_min, int64_t n_max) {
  const Proposer lookup = lookup_proposer(prompt, answer, n_min, n_max), chain = chain_proposer(chains);
  return [lookup, chain](int64_t pos, int64_t gamma) {
    Proposal p = lookup(pos, gamma);
    const int64_t n = static_cast<int64_t>(p.tokens.size());
    if (n == gamma) return p;
    const Proposal whole = chain(pos, gamma);  // the chain at pos, its first n steps fed the lookup's tokens
    p.tokens.insert(p.tokens.end(), whole.tokens.begin() + n, whole.tokens.end());
    p.drafter_calls += gamma - n;
    return p;
  };
}

}  // namespace draftalign::eval
