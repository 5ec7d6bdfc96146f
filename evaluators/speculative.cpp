#include "evaluators/speculative.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "common/error.h"
#include "evaluators/acceptance.h"

namespace draftalign::eval {

using torch::Tensor;

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Inverse-CDF sampling; -1 when the weights sum to zero. One host read (the index and the total together).
int64_t try_sample(const Tensor& weights, double u) {
  const Tensor cdf = weights.to(torch::kFloat64).cumsum(0);
  const Tensor total = cdf.narrow(0, cdf.size(0) - 1, 1);
  const Tensor index = torch::searchsorted(cdf, total * u, /*out_int32=*/false, /*right=*/true).to(torch::kFloat64);
  const Tensor host = torch::cat({index, total}).cpu();
  if (!(host[1].item<double>() > 0)) return -1;
  return std::min<int64_t>(static_cast<int64_t>(host[0].item<double>()), weights.size(0) - 1);
}

}  // namespace

int64_t sample_from(const Tensor& weights, double u) {
  DA_CHECK(weights.dim() == 1 && weights.size(0) > 0, "sample_from: weights must be a non-empty vector");
  DA_CHECK(u >= 0 && u < 1, "sample_from: u = ", u, " is not in [0, 1)");
  const int64_t x = try_sample(weights, u);
  DA_CHECK(x >= 0, "sample_from: the weights sum to zero");
  return x;
}

Verdict accept_reject(const Tensor& p, const Tensor& q, const std::vector<int64_t>& draft,
                      const std::vector<double>& u_accept, double u_sample) {
  const int64_t g = static_cast<int64_t>(draft.size());
  DA_CHECK(p.dim() == 2 && p.size(0) == g + 1, "accept_reject: p must be [gamma + 1, V] for ", g, " draft tokens");
  DA_CHECK(g == 0 || (q.dim() == 2 && q.size(0) == g && q.size(1) == p.size(1)),
           "accept_reject: q must be [gamma, V] like p");
  DA_CHECK(static_cast<int64_t>(u_accept.size()) == g, "accept_reject: one acceptance uniform per draft token");
  Verdict v;
  if (g > 0) {
    // p_i(d_i) and q_i(d_i) in one host read; accept while u_i * q_i(d_i) < p_i(d_i) (u < p / q without dividing).
    const Tensor index = torch::tensor(draft, torch::kInt64).to(p.device()).unsqueeze(1);
    const Tensor at = torch::stack({p.narrow(0, 0, g).gather(1, index).squeeze(1), q.gather(1, index).squeeze(1)})
                          .to(torch::kFloat64).cpu();
    const auto a = at.accessor<double, 2>();
    while (v.accepted < g && u_accept[v.accepted] * a[1][v.accepted] < a[0][v.accepted]) ++v.accepted;
  }
  if (v.accepted == g) {
    v.token = sample_from(p[g], u_sample);  // the bonus token
  } else {
    // The correction: the residual max(0, p - q). It has mass whenever a rejection is possible; should rounding
    // reject a draft where p and q agree, p itself is the distribution to draw from.
    v.token = try_sample((p[v.accepted] - q[v.accepted]).clamp_min(0), u_sample);
    if (v.token < 0) v.token = sample_from(p[v.accepted], u_sample);
  }
  return v;
}

Verdict accept_greedy(const Tensor& target_logits, const std::vector<int64_t>& draft) {
  const int64_t g = static_cast<int64_t>(draft.size());
  DA_CHECK(target_logits.dim() == 2 && target_logits.size(0) == g + 1,
           "accept_greedy: target logits must be [gamma + 1, V] for ", g, " draft tokens");
  const Tensor best = target_logits.argmax(-1).cpu();
  const auto* b = best.data_ptr<int64_t>();
  Verdict v;
  while (v.accepted < g && b[v.accepted] == draft[v.accepted]) ++v.accepted;
  v.token = b[v.accepted];
  return v;
}

// A model with its cache and the number of valid positions, kept on the host so a rollback needs no device read.
// On CUDA the short steps (a drafter's token, a target's verification of a draft) replay CUDA graphs
// (model::DecodeGraphs, one per step length); prompts run eagerly, as does every step that reads hidden-state taps.
// Held by a unique_ptr: the graphs keep the cache's address.
struct DecodeStream {
  static constexpr int64_t kMaxGraphTokens = 16;

  model::Llama& model;
  model::KVCache cache;
  int64_t length = 0;
  std::unique_ptr<model::DecodeGraphs> graphs;
  // The tokens whose keys and values fill the cache's first positions since the last prefill (and their taps, when
  // read): a decode only writes past them, so a later decode of the same prompt skips its prefill (a timed turn's
  // repeats).
  std::vector<int64_t> prefilled;
  std::vector<Tensor> prefilled_taps;

  // Makes the cache hold `head` and nothing after it: fed, or kept from the last prefill of the same tokens. With
  // `taps` (indices), returns the hidden states there over `head`.
  std::vector<Tensor> prefill(const std::vector<int64_t>& head, const std::vector<int64_t>& taps = {}) {
    if (head == prefilled && !head.empty() && prefilled_taps.size() == taps.size()) {
      truncate(static_cast<int64_t>(head.size()));
      return prefilled_taps;
    }
    truncate(0);
    prefilled.clear();
    prefilled_taps.clear();
    if (head.empty()) return {};
    model::Taps t{taps, {}};
    feed_last(head, taps.empty() ? nullptr : &t).argmax().item<int64_t>();  // a host read: the prefill has finished
    prefilled = head;
    prefilled_taps = t.out;
    return t.out;
  }

  DecodeStream(model::Llama& m, int64_t capacity) : model(m), cache(m.new_cache(1, capacity)) {
    if (model::use_cuda_graphs(cache.lengths.device())) graphs = std::make_unique<model::DecodeGraphs>(model, cache);
  }

  // Appends tokens; returns their logits [T, V] (and the hidden states at taps->at).
  Tensor feed(const std::vector<int64_t>& tokens, model::Taps* taps = nullptr) {
    const Tensor x = admit(tokens);
    if (graphs && !taps && x.size(1) <= kMaxGraphTokens) return graphs->step(x).squeeze(0);
    return model.forward(x, cache, {}, taps).squeeze(0);
  }
  // Appends tokens; returns the last one's logits [V]. Only that token goes through the output projection (on CUDA a
  // short step still replays the graph, which projects all).
  Tensor feed_last(const std::vector<int64_t>& tokens, model::Taps* taps = nullptr) {
    const Tensor x = admit(tokens);
    if (graphs && !taps && x.size(1) <= kMaxGraphTokens) return graphs->step(x).select(1, -1).squeeze(0);
    return model.forward_last(x, cache, {}, taps).squeeze(0);
  }
  // The tokens as a [1, T] tensor on the cache's device, counted into `length`.
  Tensor admit(const std::vector<int64_t>& tokens) {
    const int64_t t = static_cast<int64_t>(tokens.size());
    DA_CHECK(length + t <= cache.capacity(), "speculative decoding: the KV cache holds ", cache.capacity(),
             " positions, ", length + t, " are needed");
    length += t;
    return torch::tensor(tokens, torch::kInt64).view({1, -1}).to(cache.lengths.device());
  }
  void truncate(int64_t n) {
    length = n;
    cache.lengths.fill_(n);
  }
};

namespace {

// The stream in `slot`, made (again) when there is none or it holds fewer than `capacity` positions; emptied.
DecodeStream& stream_for(std::unique_ptr<DecodeStream>& slot, model::Llama& m, int64_t capacity) {
  if (!slot || slot->cache.capacity() < capacity) slot = std::make_unique<DecodeStream>(m, capacity);
  slot->truncate(0);
  return *slot;
}

// Makes the stream in `slot` for `capacity` positions and runs a prefill and every block length once through it.
void warm(std::unique_ptr<DecodeStream>& slot, model::Llama& m, int64_t capacity, int64_t max_block) {
  DecodeStream& s = stream_for(slot, m, capacity);
  s.prefilled.clear();
  s.feed_last({0});  // a prompt's prefill, then every block length once (on CUDA: each graph captured now)
  for (int64_t t = 1; t <= max_block; ++t) {
    s.feed(std::vector<int64_t>(static_cast<size_t>(t), 0));
    s.truncate(1);
  }
  s.truncate(0);
}

// The token a drafter picks from logits [1, V]: the argmax, or a draw from sampler.probs (its q goes to `qs`).
int64_t pick(const Tensor& logits, const DraftSampler& sampler, std::vector<Tensor>& qs) {
  if (sampler.greedy()) return logits.argmax().item<int64_t>();
  qs.push_back(sampler.probs(logits).squeeze(0));
  return sample_from(qs.back(), model::uniform01(*sampler.rng));
}

}  // namespace

bool DraftSampler::stops(const Tensor& logits) const {
  return stop_prob > 0 && torch::softmax(logits.to(torch::kFloat32), -1).max().item<double>() < stop_prob;
}

namespace {

void check_positions(const model::Llama& m, int64_t capacity, const char* who) {
  DA_CHECK(capacity <= m.config().max_position_embeddings, "speculative decoding: a decode of ", capacity,
           " positions (prompt, new tokens and one block past them) exceeds the ", who, "'s ",
           m.config().max_position_embeddings, " positions");
}

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
  int64_t propose(const std::vector<int64_t>&, int64_t gamma, const DraftSampler& sampler,
                  std::vector<int64_t>& draft, std::vector<Tensor>& qs) override {
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

}  // namespace

std::unique_ptr<Drafter> model_drafter(model::Llama& drafter) { return std::make_unique<ModelDrafter>(drafter); }
std::unique_ptr<Drafter> lookup_drafter(LookupDrafting lookup, int64_t vocab) {
  return std::make_unique<LookupDrafter>(lookup, vocab);
}
std::unique_ptr<Drafter> hybrid_drafter(LookupDrafting lookup, int64_t vocab, std::unique_ptr<Drafter> rest) {
  return std::make_unique<HybridDrafter>(lookup, vocab, std::move(rest));
}
std::unique_ptr<Drafter> head_drafter(model::Eagle3Head& head) { return std::make_unique<HeadDrafter>(head); }

SpeculativeDecoder::SpeculativeDecoder(model::Llama& target, std::unique_ptr<Drafter> drafter)
    : target_(target), drafter_(std::move(drafter)) {}

namespace {
model::Llama* same_vocab(model::Llama& target, model::Llama* drafter) {
  if (drafter != nullptr)
    DA_CHECK(drafter->config().vocab_size == target.config().vocab_size, "speculative decoding: the drafter has ",
             drafter->config().vocab_size, " tokens, the target ", target.config().vocab_size);
  return drafter;
}
}  // namespace

SpeculativeDecoder::SpeculativeDecoder(model::Llama& target, model::Llama* drafter)
    : SpeculativeDecoder(target, same_vocab(target, drafter) ? model_drafter(*drafter) : nullptr) {}

SpeculativeDecoder::SpeculativeDecoder(model::Llama& target, LookupDrafting lookup)
    : SpeculativeDecoder(target, lookup_drafter(lookup, target.config().vocab_size)) {}

SpeculativeDecoder::SpeculativeDecoder(model::Llama& target, model::Llama& drafter, LookupDrafting lookup)
    : SpeculativeDecoder(target, hybrid_drafter(lookup, target.config().vocab_size,
                                                model_drafter(*same_vocab(target, &drafter)))) {}

SpeculativeDecoder::SpeculativeDecoder(model::Llama& target, model::Eagle3Head& head, std::optional<LookupDrafting> lookup)
    : SpeculativeDecoder(target, lookup ? hybrid_drafter(*lookup, target.config().vocab_size, head_drafter(head))
                                        : head_drafter(head)) {
  DA_CHECK(head.config().vocab.target_vocab == target.config().vocab_size &&
               head.config().target_hidden == target.config().hidden_size,
           "speculative decoding: the EAGLE-3 head is for a target of ", head.config().vocab.target_vocab,
           " tokens and hidden size ", head.config().target_hidden, "; this target has ", target.config().vocab_size,
           " and ", target.config().hidden_size);
  for (int64_t t : head.config().taps)
    DA_CHECK(t >= 0 && t <= target.config().num_hidden_layers, "speculative decoding: the EAGLE-3 head reads layer ",
             t, ", the target has ", target.config().num_hidden_layers);
}

SpeculativeDecoder::~SpeculativeDecoder() = default;

void SpeculativeDecoder::reserve(int64_t capacity, int64_t max_block) {
  DA_CHECK(capacity >= max_block + 1 && max_block >= 1, "SpeculativeDecoder::reserve: ", capacity,
           " positions, blocks of up to ", max_block);
  torch::NoGradGuard no_grad;
  warm(target_stream_, target_, capacity, max_block);
  if (drafter_) drafter_->reserve(capacity, max_block);
}

Decoded SpeculativeDecoder::decode(const std::vector<int64_t>& prompt, int64_t gamma, const model::SamplingParams& sp,
                                   uint64_t seed, double draft_stop_prob) {
  DA_CHECK(draft_stop_prob >= 0 && draft_stop_prob < 1, "speculative decoding: draft_stop_prob must be in [0, 1), got ",
           draft_stop_prob);
  DA_CHECK(!prompt.empty(), "speculative decoding: empty prompt");
  DA_CHECK(gamma >= 0, "speculative decoding: gamma must be >= 0, got ", gamma);
  DA_CHECK(gamma == 0 || drafter_, "speculative decoding: gamma = ", gamma, " needs a drafter");
  DA_CHECK(sp.max_new_tokens >= 1, "speculative decoding: max_new_tokens must be >= 1");
  torch::NoGradGuard no_grad;
  std::mt19937_64 rng(seed);
  // Room for the prompt, the response and one block past its end (a block is verified before it is cut).
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + sp.max_new_tokens + gamma + 1;
  check_positions(target_, capacity, "target");
  auto probs = [&](const Tensor& logits) { return model::sampling_probs(logits, sp.temperature, sp.top_p, sp.top_k); };
  DraftSampler sampler;
  if (sp.temperature != 0) sampler = DraftSampler{probs, &rng};
  sampler.stop_prob = draft_stop_prob;
  Drafter* drafter = gamma > 0 ? drafter_.get() : nullptr;
  const std::vector<int64_t> taps = drafter ? drafter->taps() : std::vector<int64_t>{};

  // The target's cache holds every token but the last one (`pending`), which the next step feeds.
  DecodeStream& target = stream_for(target_stream_, target_, capacity);
  const auto prefill_start = Clock::now();
  const std::vector<int64_t> head(prompt.begin(), prompt.end() - 1);
  const std::vector<Tensor> prefill_taps = target.prefill(head, taps);
  if (drafter) drafter->start(prompt, capacity, prefill_taps);
  int64_t pending = prompt.back();
  Decoded out;
  out.target_seconds_by_draft_length.assign(static_cast<size_t>(gamma + 1), 0.0);
  out.prefill_seconds = since(prefill_start);
  std::vector<int64_t> context = prompt;  // the prompt and the tokens emitted so far; `pending` last
  for (bool finished = false; !finished;) {
    // 1. Draft up to gamma tokens.
    std::vector<int64_t> draft;
    std::vector<Tensor> qs;
    if (drafter) {
      const auto t0 = Clock::now();
      out.counters.num_drafter_calls += drafter->propose(context, gamma, sampler, draft, qs);
      out.drafter_seconds += since(t0);
    }

    // 2. Verify [pending, d_1..d_gamma] in one target call: p_1..p_{gamma+1}.
    const auto t0 = Clock::now();
    const int64_t base = target.length;
    std::vector<int64_t> block = {pending};
    block.insert(block.end(), draft.begin(), draft.end());
    model::Taps block_taps{taps, {}};
    const Tensor logits = target.feed(block, taps.empty() ? nullptr : &block_taps);  // [gamma + 1, V]
    out.counters.record_target_call(gamma, static_cast<int64_t>(draft.size()));
    Verdict v;
    if (sampler.greedy()) {
      v = accept_greedy(logits, draft);
    } else {
      std::vector<double> u(draft.size());
      for (double& x : u) x = model::uniform01(rng);
      const Tensor p = probs(logits);
      v = accept_reject(p, qs.empty() ? Tensor() : torch::stack(qs).to(p.device()), draft, u, model::uniform01(rng));
    }
    const double verified = since(t0);
    out.target_seconds += verified;
    out.target_seconds_by_draft_length[draft.size()] += verified;
    if (!draft.empty()) out.counters.record_draft(gamma, v.accepted, static_cast<int64_t>(draft.size()));
    out.accepted_per_step.push_back(draft.empty() ? -1 : v.accepted);

    // 3. Roll the target back to the accepted prefix; the drafter follows.
    target.truncate(base + 1 + v.accepted);
    if (drafter) {
      const auto t1 = Clock::now();
      drafter->commit(draft, v, block_taps.out);
      out.drafter_seconds += since(t1);
    }

    // 4. Emit d_1..d_a and the target's token, up to a stop token or the length limit.
    std::vector<int64_t> fresh(draft.begin(), draft.begin() + v.accepted);
    fresh.push_back(v.token);
    for (int64_t x : fresh) {
      out.tokens.push_back(x);
      context.push_back(x);
      if (std::find(sp.stop_ids.begin(), sp.stop_ids.end(), x) != sp.stop_ids.end()) {
        out.finish = model::Finish::kEos, finished = true;
        break;
      }
      if (static_cast<int64_t>(out.tokens.size()) >= sp.max_new_tokens) {
        out.finish = model::Finish::kLength, finished = true;
        break;
      }
    }
    pending = v.token;
  }
  out.counters.num_emitted_tokens = static_cast<int64_t>(out.tokens.size());
  return out;
}

double decode_step_seconds(model::Llama& model, const std::vector<int64_t>& context, int64_t block, int64_t steps) {
  const int64_t n = static_cast<int64_t>(context.size());
  DA_CHECK(block >= 1 && n >= block && steps >= 1, "decode_step_seconds: needs a context of at least ", block,
           " tokens and steps >= 1");
  DA_CHECK(n <= model.config().max_position_embeddings, "decode_step_seconds: the context exceeds the model's ",
           model.config().max_position_embeddings, " positions");
  torch::NoGradGuard no_grad;
  DecodeStream s(model, n);
  if (n > block) s.feed_last(std::vector<int64_t>(context.begin(), context.end() - block));
  const int64_t base = s.length;
  const std::vector<int64_t> last(context.end() - block, context.end());
  std::vector<double> times;
  for (int64_t i = 0; i <= steps; ++i) {  // the first step warms up and is not counted
    const auto t0 = Clock::now();
    s.feed(last).argmax(-1).cpu();  // a host read: the step has finished
    if (i > 0) times.push_back(since(t0));
    s.truncate(base);
  }
  return median(times);
}

double head_step_seconds(model::Eagle3Head& head, int64_t context, int64_t steps) {
  DA_CHECK(context >= 1 && steps >= 1, "head_step_seconds: needs a context of at least 1 position and steps >= 1");
  torch::NoGradGuard no_grad;
  const Tensor w = head.parameters()[0];
  const torch::TensorOptions o = torch::TensorOptions().device(w.device()).dtype(w.scalar_type());
  model::Eagle3Head::Cache cache = head.new_cache(context + 1);
  const Tensor h = head.append(cache, torch::zeros({1, context, head.config().layer.hidden_size}, o),
                               torch::zeros({1, context}, o.dtype(torch::kInt64)))
                       .narrow(1, context - 1, 1);
  const Tensor token = torch::zeros({1, 1}, o.dtype(torch::kInt64));
  std::vector<double> times;
  for (int64_t i = 0; i <= steps; ++i) {  // the first step warms up and is not counted
    cache.length = context;
    const auto t0 = Clock::now();
    head.logits(head.step(cache, h, token)).argmax(-1).cpu();  // a host read: the step has finished
    if (i > 0) times.push_back(since(t0));
  }
  return median(times);
}

}  // namespace draftalign::eval
