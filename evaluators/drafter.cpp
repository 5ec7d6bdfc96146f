#include "evaluators/drafter.h"

#include <cmath>

#include "common/error.h"
#include "evaluators/decode_stream.h"
#include "evaluators/speculative.h"  // sample_from
#include "model/generation.h"

namespace draftalign::eval {

namespace {

// The token a drafter picks from logits [1, V]: the argmax, or a draw from sampler.probs (its q goes to `qs`).
int64_t pick(const Tensor& logits, const DraftSampler& sampler, std::vector<Tensor>& qs) {
  if (sampler.greedy()) return logits.argmax().item<int64_t>();
  qs.push_back(sampler.probs(logits).squeeze(0));
  return sample_from(qs.back(), model::uniform01(*sampler.rng));
}

}  // namespace

bool DraftSampler::stops(const Tensor& logits) const {
  return stop_prob > 0 && stops_at(torch::softmax(logits.to(torch::kFloat32), -1).max().item<double>());
}

namespace {

// A drafter model with its own KV cache. Its cache holds a token sequence (`held`); each propose() keeps the longest
// prefix `held` shares with the context + draft so far and feeds the rest, so rolled-back drafts and accepted tokens
// it did not propose (a hybrid's lookup tokens, the target's corrections) need no bookkeeping of their own.
class ModelDrafter : public Drafter {
 public:
  explicit ModelDrafter(model::Llama& m) : model_(m) {}
  void reserve(int64_t capacity, int64_t max_block) override { warm(stream_, model_, capacity, max_block); }
  void start(const std::vector<int64_t>& prompt, int64_t capacity, const std::vector<Tensor>&) override {
    check_positions(model_, capacity, "drafter");
    held_.assign(prompt.begin(), prompt.end() - 1);
    stream_for(stream_, model_, capacity).prefill(held_);
  }
  int64_t propose(const std::vector<int64_t>& context, int64_t gamma, const DraftSampler& sampler,
                  std::vector<int64_t>& draft, std::vector<Tensor>& qs) override {
    std::vector<int64_t> seq = context;
    seq.insert(seq.end(), draft.begin(), draft.end());
    size_t keep = 0;
    while (keep < held_.size() && keep + 1 < seq.size() && held_[keep] == seq[keep]) ++keep;
    stream_->truncate(static_cast<int64_t>(keep));
    held_.assign(seq.begin(), seq.end());
    std::vector<int64_t> in(seq.begin() + static_cast<int64_t>(keep), seq.end());
    int64_t calls = 0;
    while (static_cast<int64_t>(draft.size()) < gamma) {
      const Tensor logits = stream_->feed_last(in);  // [V]
      ++calls;
      draft.push_back(pick(logits.unsqueeze(0), sampler, qs));
      if (sampler.stops(logits)) break;
      in = {draft.back()};
      if (static_cast<int64_t>(draft.size()) < gamma) held_.push_back(draft.back());  // d_gamma is never fed
    }
    return calls;
  }

 private:
  model::Llama& model_;
  std::unique_ptr<DecodeStream> stream_;
  std::vector<int64_t> held_;
};

// Prompt lookup; for sampling q is one-hot on the proposed token.
class LookupDrafter : public Drafter {
 public:
  LookupDrafter(LookupDrafting lookup, int64_t vocab) : lookup_(lookup), vocab_(vocab) {
    DA_CHECK(lookup.n_min >= 1 && lookup.n_max >= lookup.n_min, "prompt lookup: n from ", lookup.n_min, " to ",
             lookup.n_max);
  }
  void start(const std::vector<int64_t>&, int64_t, const std::vector<Tensor>&) override {}
  int64_t propose(const std::vector<int64_t>& context, int64_t gamma, const DraftSampler& sampler,
                  std::vector<int64_t>& draft, std::vector<Tensor>& qs) override {
    for (int64_t d : prompt_lookup(context, gamma - static_cast<int64_t>(draft.size()), lookup_.n_min, lookup_.n_max)) {
      draft.push_back(d);
      if (!sampler.greedy()) qs.push_back(torch::one_hot(torch::tensor(d), vocab_).to(torch::kFloat32));
    }
    return 0;
  }

 private:
  LookupDrafting lookup_;
  int64_t vocab_;
};

// Lookup's tokens first, another drafter's (a model, an EAGLE-3 head) for the rest of the gamma.
class HybridDrafter : public Drafter {
 public:
  HybridDrafter(LookupDrafting lookup, int64_t vocab, std::unique_ptr<Drafter> rest)
      : lookup_(lookup, vocab), rest_(std::move(rest)) {}
  std::vector<int64_t> taps() const override { return rest_->taps(); }
  void reserve(int64_t capacity, int64_t max_block) override { rest_->reserve(capacity, max_block); }
  void start(const std::vector<int64_t>& prompt, int64_t capacity, const std::vector<Tensor>& taps) override {
    rest_->start(prompt, capacity, taps);
  }
  int64_t propose(const std::vector<int64_t>& context, int64_t gamma, const DraftSampler& sampler,
                  std::vector<int64_t>& draft, std::vector<Tensor>& qs) override {
    lookup_.propose(context, gamma, sampler, draft, qs);
    DraftSampler rest = sampler;
    rest.stop_prob = 0;  // no stop after the lookup's tokens: the one-pass count has no chain past a rejected one
    return static_cast<int64_t>(draft.size()) < gamma ? rest_->propose(context, gamma, rest, draft, qs) : 0;
  }
  void commit(const std::vector<int64_t>& draft, const Verdict& v, const std::vector<Tensor>& taps) override {
    rest_->commit(draft, v, taps);
  }

 private:
  LookupDrafter lookup_;
  std::unique_ptr<Drafter> rest_;
};

// An EAGLE-3 head. Its cache holds step-0 entries for the accepted prefix but the last token (`accepted_`), as the
// target's does; `last_` is the head's output at the last of them, whose logits propose the first draft token. A
// draft chain's entries sit past `accepted_` and are dropped by the next commit. Draft tokens already proposed (a
// hybrid's lookup tokens) enter the chain as steps, as its own tokens would.
class HeadDrafter : public Drafter {
 public:
  explicit HeadDrafter(model::Eagle3Head& head) : head_(head) {}
  std::vector<int64_t> taps() const override { return head_.config().taps; }
  void reserve(int64_t capacity, int64_t) override { cache_for(capacity); }
  void start(const std::vector<int64_t>& prompt, int64_t capacity, const std::vector<Tensor>& taps) override {
    cache_for(capacity);
    cache_.length = accepted_ = 0;
    last_ = Tensor();
    if (prompt.size() >= 2) extend(taps, std::vector<int64_t>(prompt.begin() + 1, prompt.end()));
  }
  int64_t propose(const std::vector<int64_t>&, int64_t gamma, const DraftSampler& sampler, std::vector<int64_t>& draft,
                  std::vector<Tensor>& qs) override {
    if (!last_.defined()) return 0;  // a one-token prompt: the first step is a plain target step
    cache_.length = accepted_;
    Tensor h = last_;
    auto step_on = [&](int64_t token) {
      h = head_.step(cache_, h, torch::tensor({token}, torch::kInt64).view({1, 1}).to(h.device()));
    };
    for (int64_t d : draft) step_on(d);
    int64_t calls = 0;
    while (static_cast<int64_t>(draft.size()) < gamma) {
      if (calls > 0) step_on(draft.back());
      ++calls;
      const Tensor logits = head_.logits(h).view({1, -1});  // [1, draft vocab]
      if (sampler.greedy()) {
        draft.push_back(head_.to_target(logits.argmax(-1)).item<int64_t>());
      } else {
        // The draft vocabulary's logits in the target's (-inf elsewhere): the target's filters apply alike.
        const Tensor full = torch::full({1, head_.config().vocab.target_vocab}, -INFINITY, logits.options())
                                .index_put_({0, target_ids()}, logits[0]);
        draft.push_back(pick(full, sampler, qs));
      }
      if (sampler.stops(logits)) break;
    }
    return calls;
  }
  void commit(const std::vector<int64_t>& draft, const Verdict& v, const std::vector<Tensor>& taps) override {
    // Step-0 entries for the verified positions the target kept (pending, d_1..d_a), each with its next token.
    std::vector<int64_t> next(draft.begin(), draft.begin() + v.accepted);
    next.push_back(v.token);
    std::vector<Tensor> kept;
    for (const Tensor& t : taps) kept.push_back(t.narrow(1, 0, v.accepted + 1));
    cache_.length = accepted_;
    extend(kept, next);
  }

 private:
  void cache_for(int64_t capacity) {
    if (!cache_.k.defined() || cache_.k.size(2) < capacity) cache_ = head_.new_cache(capacity);
  }
  void extend(const std::vector<Tensor>& taps, const std::vector<int64_t>& next) {
    const Tensor g = head_.project(taps);
    const Tensor h = head_.append(cache_, g, torch::tensor(next, torch::kInt64).view({1, -1}).to(g.device()));
    last_ = h.narrow(1, h.size(1) - 1, 1);
    accepted_ = cache_.length;
  }
  const Tensor& target_ids() {
    if (!target_ids_.defined()) target_ids_ = torch::tensor(head_.config().vocab.ids, torch::kInt64).to(last_.device());
    return target_ids_;
  }

  model::Eagle3Head& head_;
  model::Eagle3Head::Cache cache_;
  int64_t accepted_ = 0;
  Tensor last_, target_ids_;
};

// --- Replay drafters (the one-pass simulation) ------------------------------------------------------------------

// The answer position of a replay: the context minus the prompt.
class ReplayDrafter : public Drafter {
 public:
  void start(const std::vector<int64_t>& prompt, int64_t, const std::vector<Tensor>&) override {
    prompt_len_ = static_cast<int64_t>(prompt.size());
  }

 protected:
  int64_t position(const std::vector<int64_t>& context, const DraftSampler& sampler, const char* who) const {
    DA_CHECK(sampler.greedy(), who, ": replays greedy drafts only");
    return static_cast<int64_t>(context.size()) - prompt_len_;
  }
  int64_t prompt_len_ = 0;
};

class ArgmaxDrafter : public ReplayDrafter {
 public:
  explicit ArgmaxDrafter(const std::vector<int64_t>& argmax) : argmax_(argmax) {}
  int64_t propose(const std::vector<int64_t>& context, int64_t gamma, const DraftSampler& sampler,
                  std::vector<int64_t>& draft, std::vector<Tensor>&) override {
    const int64_t pos = position(context, sampler, "argmax_drafter");
    DA_CHECK(sampler.stop_prob == 0, "argmax_drafter: a draft stop reads the drafter's own chain (chain_drafter)");
    DA_CHECK(pos + gamma <= static_cast<int64_t>(argmax_.size()), "argmax_drafter: no drafter prediction at answer ",
             "position ", pos + gamma - 1, " (", argmax_.size(), " positions)");
    int64_t calls = 0;
    for (int64_t j = static_cast<int64_t>(draft.size()); j < gamma; ++j, ++calls)
      draft.push_back(argmax_[static_cast<size_t>(pos + j)]);
    return calls;
  }

 private:
  const std::vector<int64_t>& argmax_;
};

class ChainDrafter : public ReplayDrafter {
 public:
  explicit ChainDrafter(const DraftChains& chains) : chains_(chains) {
    DA_CHECK(chains.top_prob.size() == chains.tokens.size(), "chain_drafter: ", chains.tokens.size(), " chains but ",
             chains.top_prob.size(), " rows of probabilities");
  }
  int64_t propose(const std::vector<int64_t>& context, int64_t gamma, const DraftSampler& sampler,
                  std::vector<int64_t>& draft, std::vector<Tensor>&) override {
    const int64_t pos = position(context, sampler, "chain_drafter");
    DA_CHECK(pos < static_cast<int64_t>(chains_.tokens.size()) &&
                 gamma <= static_cast<int64_t>(chains_.tokens[static_cast<size_t>(pos)].size()) &&
                 gamma <= static_cast<int64_t>(chains_.top_prob[static_cast<size_t>(pos)].size()),
             "chain_drafter: no ", gamma, "-token chain at answer position ", pos, " (", chains_.tokens.size(),
             " positions)");
    const auto& chain = chains_.tokens[static_cast<size_t>(pos)];
    const auto& prob = chains_.top_prob[static_cast<size_t>(pos)];
    int64_t calls = 0;
    for (size_t j = draft.size(); static_cast<int64_t>(j) < gamma; ++j) {
      draft.push_back(chain[j]);
      ++calls;
      if (sampler.stops_at(prob[j])) break;
    }
    return calls;
  }

 private:
  const DraftChains& chains_;
};

}  // namespace

std::unique_ptr<Drafter> model_drafter(model::Llama& drafter) { return std::make_unique<ModelDrafter>(drafter); }
std::unique_ptr<Drafter> lookup_drafter(LookupDrafting lookup, int64_t vocab) {
  return std::make_unique<LookupDrafter>(lookup, vocab);
}
std::unique_ptr<Drafter> hybrid_drafter(LookupDrafting lookup, int64_t vocab, std::unique_ptr<Drafter> rest) {
  return std::make_unique<HybridDrafter>(lookup, vocab, std::move(rest));
}
std::unique_ptr<Drafter> head_drafter(model::Eagle3Head& head) { return std::make_unique<HeadDrafter>(head); }

std::unique_ptr<Drafter> argmax_drafter(const std::vector<int64_t>& argmax) {
  return std::make_unique<ArgmaxDrafter>(argmax);
}
std::unique_ptr<Drafter> chain_drafter(const DraftChains& chains) { return std::make_unique<ChainDrafter>(chains); }

}  // namespace draftalign::eval
