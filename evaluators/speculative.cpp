#include "evaluators/speculative.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>
#include <type_traits>

#include "common/error.h"
#include "evaluators/decode_stream.h"

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

namespace {

// One step's bookkeeping, the same in the decoder and the simulation: a target call that verified `proposed` draft
// tokens (0: a plain target step) after `drafter_calls` drafter calls, `accepted` of them kept.
void record_step(int64_t gamma, int64_t drafter_calls, int64_t proposed, int64_t accepted, SpecCounters& c,
                 std::vector<int64_t>* per_step) {
  c.num_drafter_calls += drafter_calls;
  c.record_target_call(gamma, proposed);
  if (proposed > 0) c.record_draft(gamma, accepted, proposed);
  if (per_step != nullptr) per_step->push_back(proposed > 0 ? accepted : -1);
}

// Adds `seconds` the wall time of f() (each model step ends with a host read, so the time is the step's).
template <class F>
auto timed(double& seconds, F&& f) {
  const auto t0 = Clock::now();
  if constexpr (std::is_void_v<decltype(f())>) {
    f();
    seconds += since(t0);
  } else {
    auto r = f();
    seconds += since(t0);
    return r;
  }
}

// Emits d_1..d_a and the target's token into `out` and `context`, up to a stop token or the length limit; whether
// the answer is finished.
bool emit(const std::vector<int64_t>& draft, const Verdict& v, const model::SamplingParams& sp, Decoded& out,
          std::vector<int64_t>& context) {
  std::vector<int64_t> fresh(draft.begin(), draft.begin() + v.accepted);
  fresh.push_back(v.token);
  for (int64_t x : fresh) {
    out.tokens.push_back(x);
    context.push_back(x);
    if (std::find(sp.stop_ids.begin(), sp.stop_ids.end(), x) != sp.stop_ids.end()) {
      out.finish = model::Finish::kEos;
      return true;
    }
    if (static_cast<int64_t>(out.tokens.size()) >= sp.max_new_tokens) {
      out.finish = model::Finish::kLength;
      return true;
    }
  }
  return false;
}

}  // namespace

Verdict SpeculativeDecoder::verify(DecodeStream& target, int64_t pending, const std::vector<int64_t>& draft,
                                   const std::vector<Tensor>& qs, const DraftSampler& sampler, model::Taps* taps) {
  std::vector<int64_t> block = {pending};
  block.insert(block.end(), draft.begin(), draft.end());
  const Tensor logits = target.feed(block, taps);  // [gamma + 1, V]
  if (sampler.greedy()) return accept_greedy(logits, draft);
  std::vector<double> u(draft.size());
  for (double& x : u) x = model::uniform01(*sampler.rng);
  const Tensor p = sampler.probs(logits);
  return accept_reject(p, qs.empty() ? Tensor() : torch::stack(qs).to(p.device()), draft, u,
                       model::uniform01(*sampler.rng));
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
  DraftSampler sampler;
  if (sp.temperature != 0)
    sampler = DraftSampler{
        [&](const Tensor& l) { return model::sampling_probs(l, sp.temperature, sp.top_p, sp.top_k); }, &rng};
  sampler.stop_prob = draft_stop_prob;
  Drafter* drafter = gamma > 0 ? drafter_.get() : nullptr;
  const std::vector<int64_t> taps = drafter ? drafter->taps() : std::vector<int64_t>{};

  // The target's cache holds every token but the last one (`pending`), which the next step feeds.
  Decoded out;
  out.target_seconds_by_draft_length.assign(static_cast<size_t>(gamma + 1), 0.0);
  DecodeStream& target = stream_for(target_stream_, target_, capacity);
  timed(out.prefill_seconds, [&] {
    const std::vector<int64_t> head(prompt.begin(), prompt.end() - 1);
    const std::vector<Tensor> prefill_taps = target.prefill(head, taps);
    if (drafter) drafter->start(prompt, capacity, prefill_taps);
  });
  int64_t pending = prompt.back();
  std::vector<int64_t> context = prompt;  // the prompt and the tokens emitted so far; `pending` last
  for (bool finished = false; !finished;) {
    // 1. Draft up to gamma tokens.
    std::vector<int64_t> draft;
    std::vector<Tensor> qs;
    const int64_t calls =
        drafter ? timed(out.drafter_seconds, [&] { return drafter->propose(context, gamma, sampler, draft, qs); }) : 0;
    // 2. Verify [pending, d_1..d_gamma] in one target call: p_1..p_{gamma+1}.
    const int64_t base = target.length;
    model::Taps block_taps{taps, {}};
    double verified = 0;
    const Verdict v = timed(
        verified, [&] { return verify(target, pending, draft, qs, sampler, taps.empty() ? nullptr : &block_taps); });
    out.target_seconds += verified;
    out.target_seconds_by_draft_length[draft.size()] += verified;
    record_step(gamma, calls, static_cast<int64_t>(draft.size()), v.accepted, out.counters, &out.accepted_per_step);
    // 3. Roll the target back to the accepted prefix; the drafter follows.
    target.truncate(base + 1 + v.accepted);
    if (drafter) timed(out.drafter_seconds, [&] { drafter->commit(draft, v, block_taps.out); });
    // 4. Emit d_1..d_a and the target's token, up to a stop token or the length limit.
    finished = emit(draft, v, sp, out, context);
    pending = v.token;
  }
  out.counters.num_emitted_tokens = static_cast<int64_t>(out.tokens.size());
  return out;
}

SpecCounters simulate_greedy(const std::vector<int64_t>& prompt, const GreedyAnswer& answer, int64_t gamma,
                             Drafter& drafter, double draft_stop_prob, std::vector<int64_t>* steps) {
  DA_CHECK(gamma >= 1, "simulate_greedy: gamma must be >= 1, got ", gamma);
  DA_CHECK(answer.emitted >= 1 && static_cast<int64_t>(answer.tokens.size()) >= answer.emitted - 1 + gamma,
           "simulate_greedy: an answer of ", answer.emitted, " tokens needs a greedy continuation of at least ",
           answer.emitted - 1 + gamma, " tokens, got ", answer.tokens.size());
  DraftSampler sampler;
  sampler.stop_prob = draft_stop_prob;
  drafter.start(prompt, static_cast<int64_t>(prompt.size() + answer.tokens.size()), {});
  SpecCounters c;
  std::vector<int64_t> context = prompt;
  for (int64_t pos = 0; pos < answer.emitted;) {
    std::vector<int64_t> draft;
    std::vector<Tensor> qs;
    const int64_t calls = drafter.propose(context, gamma, sampler, draft, qs);
    // The target's verdict: its greedy answer's tokens, kept while the draft matches them, then its next token.
    Verdict v;
    while (v.accepted < static_cast<int64_t>(draft.size()) && draft[v.accepted] == answer.tokens[pos + v.accepted])
      ++v.accepted;
    v.token = answer.tokens[pos + v.accepted];
    record_step(gamma, calls, static_cast<int64_t>(draft.size()), v.accepted, c, steps);
    drafter.commit(draft, v, {});
    context.insert(context.end(), answer.tokens.begin() + pos, answer.tokens.begin() + pos + v.accepted + 1);
    pos += v.accepted + 1;  // the accepted drafts and the target's own token
  }
  c.num_emitted_tokens = answer.emitted;
  return c;
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
