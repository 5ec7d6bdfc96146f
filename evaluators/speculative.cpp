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

SpeculativeDecoder::SpeculativeDecoder(model::Llama& target, model::Llama* drafter)
    : target_(target), drafter_(drafter) {
  if (drafter_ != nullptr)
    DA_CHECK(drafter_->config().vocab_size == target_.config().vocab_size, "speculative decoding: the drafter has ",
             drafter_->config().vocab_size, " tokens, the target ", target_.config().vocab_size);
}

namespace {

LookupDrafting checked(LookupDrafting lookup) {
  DA_CHECK(lookup.n_min >= 1 && lookup.n_max >= lookup.n_min, "prompt lookup: n from ", lookup.n_min, " to ",
           lookup.n_max);
  return lookup;
}

}  // namespace

SpeculativeDecoder::SpeculativeDecoder(model::Llama& target, LookupDrafting lookup)
    : target_(target), lookup_(checked(lookup)) {}

SpeculativeDecoder::SpeculativeDecoder(model::Llama& target, model::Llama& drafter, LookupDrafting lookup)
    : SpeculativeDecoder(target, &drafter) {
  lookup_ = checked(lookup);
}

// A model with its cache and the number of valid positions, kept on the host so a rollback needs no device read.
// On CUDA the short steps (a drafter's token, a target's verification of a draft) replay CUDA graphs
// (model::DecodeGraphs, one per step length); prompts run eagerly. Held by a unique_ptr: the graphs keep the cache's
// address.
struct DecodeStream {
  static constexpr int64_t kMaxGraphTokens = 16;

  model::Llama& model;
  model::KVCache cache;
  int64_t length = 0;
  std::unique_ptr<model::DecodeGraphs> graphs;
  // The tokens whose keys and values fill the cache's first positions since the last prefill: a decode only writes
  // past them, so a later decode of the same prompt skips its prefill (a timed turn's repeats).
  std::vector<int64_t> prefilled;

  // Makes the cache hold `head` and nothing after it: fed, or kept from the last prefill of the same tokens.
  void prefill(const std::vector<int64_t>& head) {
    if (head == prefilled && !head.empty()) {
      truncate(static_cast<int64_t>(head.size()));
      return;
    }
    truncate(0);
    prefilled.clear();
    if (head.empty()) return;
    feed_last(head).argmax().item<int64_t>();  // a host read: the prefill has finished
    prefilled = head;
  }

  DecodeStream(model::Llama& m, int64_t capacity) : model(m), cache(m.new_cache(1, capacity)) {
    if (model::use_cuda_graphs(cache.lengths.device())) graphs = std::make_unique<model::DecodeGraphs>(model, cache);
  }

  // Appends tokens; returns their logits [T, V].
  Tensor feed(const std::vector<int64_t>& tokens) {
    const Tensor x = admit(tokens);
    if (graphs && x.size(1) <= kMaxGraphTokens) return graphs->step(x).squeeze(0);
    return model.forward(x, cache).squeeze(0);
  }
  // Appends tokens; returns the last one's logits [V]. Only that token goes through the output projection (on CUDA a
  // short step still replays the graph, which projects all).
  Tensor feed_last(const std::vector<int64_t>& tokens) {
    const Tensor x = admit(tokens);
    if (graphs && x.size(1) <= kMaxGraphTokens) return graphs->step(x).select(1, -1).squeeze(0);
    return model.forward_last(x, cache).squeeze(0);
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

}  // namespace

SpeculativeDecoder::~SpeculativeDecoder() = default;

void SpeculativeDecoder::reserve(int64_t capacity, int64_t max_block) {
  DA_CHECK(capacity >= max_block + 1 && max_block >= 1, "SpeculativeDecoder::reserve: ", capacity, " positions, blocks of up to ",
           max_block);
  torch::NoGradGuard no_grad;
  auto warm = [&](std::unique_ptr<DecodeStream>& slot, model::Llama& m) {
    DecodeStream& s = stream_for(slot, m, capacity);
    s.prefilled.clear();
    s.feed_last({0});  // a prompt's prefill, then every block length once (on CUDA: each graph captured now)
    for (int64_t t = 1; t <= max_block; ++t) {
      s.feed(std::vector<int64_t>(static_cast<size_t>(t), 0));
      s.truncate(1);
    }
    s.truncate(0);
  };
  warm(target_stream_, target_);
  if (drafter_ != nullptr) warm(drafter_stream_, *drafter_);
}

Decoded SpeculativeDecoder::decode(const std::vector<int64_t>& prompt, int64_t gamma, const model::SamplingParams& sp,
                                   uint64_t seed) {
  DA_CHECK(!prompt.empty(), "speculative decoding: empty prompt");
  DA_CHECK(gamma >= 0, "speculative decoding: gamma must be >= 0, got ", gamma);
  DA_CHECK(gamma == 0 || drafter_ != nullptr || lookup_, "speculative decoding: gamma = ", gamma, " needs a drafter");
  DA_CHECK(sp.max_new_tokens >= 1, "speculative decoding: max_new_tokens must be >= 1");
  torch::NoGradGuard no_grad;
  const bool greedy = sp.temperature == 0;
  std::mt19937_64 rng(seed);
  // Room for the prompt, the response and one block past its end (a block is verified before it is cut).
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + sp.max_new_tokens + gamma + 1;
  for (model::Llama* m : {&target_, gamma > 0 ? drafter_ : nullptr})
    if (m != nullptr)
      DA_CHECK(capacity <= m->config().max_position_embeddings, "speculative decoding: a prompt of ", prompt.size(),
               " tokens + ", sp.max_new_tokens, " new + ", gamma + 1, " for the last block exceeds a model's ",
               m->config().max_position_embeddings, " positions");
  auto probs = [&](const Tensor& logits) { return model::sampling_probs(logits, sp.temperature, sp.top_p, sp.top_k); };

  // Both caches hold every token but the last one (`pending`), which the next step feeds.
  DecodeStream& target = stream_for(target_stream_, target_, capacity);
  DecodeStream* drafter = gamma > 0 && drafter_ != nullptr ? &stream_for(drafter_stream_, *drafter_, capacity) : nullptr;
  const auto prefill_start = Clock::now();
  const std::vector<int64_t> head(prompt.begin(), prompt.end() - 1);
  target.prefill(head);
  if (drafter) drafter->prefill(head);
  int64_t pending = prompt.back();
  std::vector<int64_t> lag;  // accepted tokens the drafter's cache lacks before `pending`
  Decoded out;
  out.target_seconds_by_draft_length.assign(static_cast<size_t>(gamma + 1), 0.0);
  out.prefill_seconds = since(prefill_start);
  while (true) {
    // 1. Draft gamma tokens: prompt lookup's first (lookup or hybrid), then the drafter's, one drafter call each.
    std::vector<int64_t> draft;
    std::vector<Tensor> qs;
    if (lookup_ && gamma > 0) {
      const auto t0 = Clock::now();
      std::vector<int64_t> context = prompt;
      context.insert(context.end(), out.tokens.begin(), out.tokens.end());
      draft = prompt_lookup(context, gamma, lookup_->n_min, lookup_->n_max);
      if (!greedy)
        for (int64_t d : draft)
          qs.push_back(torch::one_hot(torch::tensor(d), target_.config().vocab_size).to(torch::kFloat32));
      out.drafter_seconds += since(t0);
    }
    // The drafter's cache: lag and `pending` go in with its first call of the step, then the lookup's tokens;
    // drafter_base is its length up to `pending`, `fed` how many draft tokens follow in it (-1: not called).
    int64_t drafter_base = 0, fed = -1;
    if (drafter && static_cast<int64_t>(draft.size()) < gamma) {
      const auto t0 = Clock::now();
      std::vector<int64_t> in = lag;
      in.push_back(pending);
      drafter_base = drafter->length + static_cast<int64_t>(in.size());
      in.insert(in.end(), draft.begin(), draft.end());
      lag.clear();
      while (static_cast<int64_t>(draft.size()) < gamma) {
        const Tensor logits = drafter->feed_last(in);  // [V]
        fed = static_cast<int64_t>(draft.size());
        ++out.counters.num_drafter_calls;
        int64_t d;
        if (greedy) {
          d = logits.argmax().item<int64_t>();
        } else {
          qs.push_back(probs(logits.unsqueeze(0)).squeeze(0));
          d = sample_from(qs.back(), model::uniform01(rng));
        }
        draft.push_back(d);
        in = {d};
      }
      out.drafter_seconds += since(t0);
    }

    // 2. Verify [pending, d_1..d_gamma] in one target call: p_1..p_{gamma+1}.
    const auto t0 = Clock::now();
    const int64_t base = target.length;
    std::vector<int64_t> block = {pending};
    block.insert(block.end(), draft.begin(), draft.end());
    const Tensor logits = target.feed(block);  // [gamma + 1, V]
    out.counters.record_target_call(gamma, static_cast<int64_t>(draft.size()));
    Verdict v;
    if (greedy) {
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

    // 3. Roll both caches back to the accepted prefix. The drafter holds `pending` and d_1..d_fed (never d_gamma); the
    //    accepted tokens it lacks go in with its next call. Without a call this step (a lookup draft of gamma tokens),
    //    `pending` and every accepted token wait in `lag`.
    target.truncate(base + 1 + v.accepted);
    if (drafter) {
      if (fed < 0) {
        lag.push_back(pending);
        lag.insert(lag.end(), draft.begin(), draft.begin() + v.accepted);
      } else {
        const int64_t kept = std::min(v.accepted, fed);
        drafter->truncate(drafter_base + kept);
        lag.assign(draft.begin() + kept, draft.begin() + v.accepted);
      }
    }

    // 4. Emit d_1..d_a and the target's token, up to a stop token or the length limit.
    std::vector<int64_t> fresh(draft.begin(), draft.begin() + v.accepted);
    fresh.push_back(v.token);
    for (int64_t x : fresh) {
      out.tokens.push_back(x);
      if (std::find(sp.stop_ids.begin(), sp.stop_ids.end(), x) != sp.stop_ids.end()) {
        out.finish = "eos";
        break;
      }
      if (static_cast<int64_t>(out.tokens.size()) >= sp.max_new_tokens) {
        out.finish = "length";
        break;
      }
    }
    if (!out.finish.empty()) break;
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

}  // namespace draftalign::eval
