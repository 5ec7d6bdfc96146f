#include "model/generation.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <random>

#include "common/error.h"
#include "model/decode_graphs.h"
#include "tokenizer/tokenizer.h"

namespace draftalign::model {

using torch::Tensor;

Tensor sampling_probs(const Tensor& logits, double temperature, double top_p, int64_t top_k) {
  DA_CHECK(temperature > 0, "sampling_probs: temperature must be > 0 (0 is greedy: take the argmax)");
  Tensor x = logits.to(torch::kFloat32) / temperature;
  const int64_t vocab = x.size(-1);
  if (top_k > 0 && top_k < vocab) {
    const Tensor kth = std::get<0>(x.topk(top_k, -1)).narrow(-1, top_k - 1, 1);
    x = x.masked_fill(x < kth, -std::numeric_limits<float>::infinity());
  }
  Tensor probs = torch::softmax(x, -1);
  if (top_p < 1.0) {
    // Keep the most likely tokens until their mass reaches top_p (the one that crosses it included).
    auto [sorted, index] = probs.sort(-1, /*descending=*/true);
    const Tensor before = sorted.cumsum(-1) - sorted;
    sorted = sorted.masked_fill(before > top_p, 0.0);
    probs = torch::zeros_like(probs).scatter_(-1, index, sorted);
    probs = probs / probs.sum(-1, /*keepdim=*/true);
  }
  return probs;
}

namespace {

struct Slot {
  int64_t request = -1;  // index into the requests; -1 = free
  std::vector<int64_t> tokens;
  std::vector<Tensor> topk_ids, topk_lp;  // per token [k]
  std::mt19937_64 rng;
  bool fresh = false;  // waiting for its prompt to be prefilled
};

// The longest prefix all prompts share, leaving at least one token of each to prefill (its logits give the first
// token).
int64_t common_prefix(const std::vector<Request>& requests) {
  const std::vector<int64_t>& first = requests[0].prompt;
  int64_t n = static_cast<int64_t>(first.size()) - 1;
  for (const auto& r : requests) {
    n = std::min<int64_t>(n, static_cast<int64_t>(r.prompt.size()) - 1);
    int64_t i = 0;
    while (i < n && r.prompt[static_cast<size_t>(i)] == first[static_cast<size_t>(i)]) ++i;
    n = i;
  }
  return std::max<int64_t>(n, 0);
}

}  // namespace

Generator::Generator(Llama& model, SamplingParams params, int64_t batch_size, int64_t topk_logprobs,
                     const tok::Tokenizer* tokenizer)
    : model_(model), params_(std::move(params)), batch_size_(batch_size), topk_(topk_logprobs),
      tokenizer_(tokenizer) {
  DA_CHECK(batch_size_ >= 1, "Generator: batch size must be >= 1");
  DA_CHECK(params_.max_new_tokens >= 1, "Generator: max_new_tokens must be >= 1");
  DA_CHECK(params_.stop_strings.empty() || tokenizer_ != nullptr, "Generator: stop strings need a tokenizer");
}

namespace {

// One Generator::run: the batch's slots and the requests they serve, the KV cache (its first `shared` positions the
// prompts' common prefix), and the completions so far. Each loop: free slots take the next requests and prefill them
// together, then every active row decodes one token (on CUDA a decode step replays a CUDA graph).
class BatchRun {
 public:
  BatchRun(Llama& model, const SamplingParams& params, int64_t topk, const tok::Tokenizer* tokenizer,
           const std::vector<Request>& requests, int64_t batch, int64_t capacity, int64_t shared,
           const std::function<void(int64_t)>& on_token)
      : model_(model),
        params_(params),
        topk_(topk),
        tokenizer_(tokenizer),
        requests_(requests),
        on_token_(on_token),
        device_(model.parameters()[0].device()),
        vocab_(model.config().vocab_size),
        batch_(batch),
        shared_(shared),
        cache_(model.new_cache(batch, capacity)),
        slots_(static_cast<size_t>(batch)),
        out_(requests.size()) {
    if (shared_ > 0) {  // the shared prefix's keys and values, [1, kv_heads, shared, head_dim] per layer
      prefix_ = model_.new_cache(1, shared_);
      const std::vector<int64_t> head(requests[0].prompt.begin(), requests[0].prompt.begin() + shared_);
      model_.forward_last(torch::tensor(head, torch::kInt64).view({1, shared_}).to(device_), prefix_);
    }
    if (use_cuda_graphs(device_)) graphs_ = std::make_unique<DecodeGraphs>(model_, cache_);
  }

  std::vector<Completion> run() {
    while (true) {
      const std::vector<int64_t> fresh = refill();
      if (!fresh.empty()) prefill(fresh);
      std::vector<int64_t> active;
      for (int64_t b = 0; b < batch_; ++b)
        if (slots_[static_cast<size_t>(b)].request >= 0) active.push_back(b);
      if (active.empty()) {
        if (next_ >= requests_.size()) break;
        continue;
      }
      decode_step(active);
    }
    return std::move(out_);
  }

 private:
  // Free slots take the next requests (each seeds its own generator); returns their rows.
  std::vector<int64_t> refill() {
    std::vector<int64_t> fresh;
    for (int64_t b = 0; b < batch_ && next_ < requests_.size(); ++b) {
      Slot& s = slots_[static_cast<size_t>(b)];
      if (s.request >= 0) continue;
      s.request = static_cast<int64_t>(next_);
      s.rng.seed(requests_[next_].seed);
      ++next_;
      fresh.push_back(b);
    }
    return fresh;
  }

  // The fresh rows' prompts in one pass (the other rows take no token): each starts from the shared prefix's keys and
  // values and prefills the rest; their first tokens are sampled from the last position.
  void prefill(const std::vector<int64_t>& fresh) {
    int64_t t = 0;
    for (int64_t b : fresh)
      t = std::max<int64_t>(t, requests_[slots_[static_cast<size_t>(b)].request].prompt.size() - shared_);
    Tensor tokens = torch::zeros({batch_, t}, torch::kInt64), n = torch::zeros({batch_}, torch::kInt64);
    Tensor lengths = cache_.lengths.cpu();
    for (int64_t b : fresh) {
      const auto& p = requests_[slots_[static_cast<size_t>(b)].request].prompt;
      const int64_t rest = static_cast<int64_t>(p.size()) - shared_;
      tokens[b]
          .narrow(0, 0, rest)
          .copy_(torch::tensor(std::vector<int64_t>(p.begin() + shared_, p.end()), torch::kInt64));
      n[b] = rest;
      lengths[b] = shared_;
    }
    cache_.lengths.copy_(lengths);
    if (shared_ > 0) {
      const Tensor rows = torch::tensor(fresh, torch::kInt64).to(device_);
      const int64_t f = rows.size(0);
      for (size_t l = 0; l < cache_.k.size(); ++l) {
        cache_.k[l].narrow(2, 0, shared_).index_copy_(0, rows, prefix_.k[l].expand({f, -1, -1, -1}));
        cache_.v[l].narrow(2, 0, shared_).index_copy_(0, rows, prefix_.v[l].expand({f, -1, -1, -1}));
      }
    }
    sample(fresh, model_.forward_last(tokens.to(device_), cache_, n.to(device_)));
  }

  // One token for every active row.
  void decode_step(const std::vector<int64_t>& active) {
    Tensor tokens = torch::zeros({batch_, 1}, torch::kInt64), n = torch::zeros({batch_}, torch::kInt64);
    for (int64_t b : active) {
      tokens[b][0] = slots_[static_cast<size_t>(b)].tokens.back();
      n[b] = 1;
    }
    const Tensor logits = graphs_ ? graphs_->step(tokens.to(device_), n.to(device_))
                                  : model_.forward(tokens.to(device_), cache_, n.to(device_));
    sample(active, logits.select(1, 0));
  }

  // Picks the next token of `rows` from their logits [B, V] (only those rows are read): the argmax, or an
  // inverse-CDF draw with each row's own uniform.
  Tensor pick(const std::vector<int64_t>& rows, const Tensor& l) {
    if (params_.temperature == 0) return l.argmax(-1);
    const Tensor cdf = sampling_probs(l, params_.temperature, params_.top_p, params_.top_k).cumsum(-1);
    std::vector<double> u;
    for (int64_t r : rows) u.push_back(uniform01(slots_[static_cast<size_t>(r)].rng));
    const Tensor target =
        torch::tensor(u, torch::kFloat64).to(device_).to(torch::kFloat32).unsqueeze(1) * cdf.narrow(1, vocab_ - 1, 1);
    return torch::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).squeeze(1).clamp_max(vocab_ - 1);
  }

  // Samples the next token of `rows` (with its top-k log-probs when asked) and finishes the rows that end.
  void sample(const std::vector<int64_t>& rows, const Tensor& logits) {
    const Tensor l = logits.index_select(0, torch::tensor(rows, torch::kInt64).to(device_));
    const Tensor picked = pick(rows, l);
    Tensor topk_ids, topk_lp;
    if (topk_ > 0) {
      auto [v, i] = torch::log_softmax(l.to(torch::kFloat32), -1).topk(topk_, -1);
      topk_lp = v.cpu();
      topk_ids = i.cpu();
    }
    const Tensor host = picked.cpu();
    for (size_t j = 0; j < rows.size(); ++j) {
      Slot& s = slots_[static_cast<size_t>(rows[j])];
      const int64_t t = host[static_cast<int64_t>(j)].item<int64_t>();
      s.tokens.push_back(t);
      if (topk_ > 0)
        s.topk_ids.push_back(topk_ids[static_cast<int64_t>(j)]), s.topk_lp.push_back(topk_lp[static_cast<int64_t>(j)]);
      if (const std::optional<Finish> why = ends(s)) finish(s, *why);
    }
    if (on_token_) on_token_(static_cast<int64_t>(rows.size()));
  }

  // Why the answer in `s` ends after its last token: a stop id, a stop string, the length limit; or not.
  std::optional<Finish> ends(const Slot& s) const {
    const SamplingParams& p = params_;
    if (std::find(p.stop_ids.begin(), p.stop_ids.end(), s.tokens.back()) != p.stop_ids.end()) return Finish::kEos;
    if (!p.stop_strings.empty()) {
      const std::string text = tokenizer_->decode(s.tokens);
      if (std::any_of(p.stop_strings.begin(), p.stop_strings.end(),
                      [&](const std::string& stop) { return text.find(stop) != std::string::npos; }))
        return Finish::kStop;
    }
    if (static_cast<int64_t>(s.tokens.size()) >= p.max_new_tokens) return Finish::kLength;
    return std::nullopt;
  }

  // The slot's answer into its completion; the slot is free again.
  void finish(Slot& s, Finish why) {
    Completion& c = out_[static_cast<size_t>(s.request)];
    c.id = requests_[static_cast<size_t>(s.request)].id;
    c.tokens = std::move(s.tokens);
    c.finish = why;
    if (topk_ > 0 && !s.topk_ids.empty()) {
      c.topk_ids = torch::stack(s.topk_ids);
      c.topk_logprobs = torch::stack(s.topk_lp);
    }
    s = Slot{};
  }

  Llama& model_;
  const SamplingParams& params_;
  const int64_t topk_;
  const tok::Tokenizer* tokenizer_;
  const std::vector<Request>& requests_;
  const std::function<void(int64_t)>& on_token_;
  const torch::Device device_;
  const int64_t vocab_, batch_, shared_;
  KVCache cache_, prefix_;
  std::unique_ptr<DecodeGraphs> graphs_;
  std::vector<Slot> slots_;
  size_t next_ = 0;  // the next request to take
  std::vector<Completion> out_;
};

}  // namespace

std::vector<Completion> Generator::run(const std::vector<Request>& requests,
                                       const std::function<void(int64_t)>& on_token) {
  torch::NoGradGuard no_grad;
  if (requests.empty()) return {};
  const int64_t batch = std::min<int64_t>(batch_size_, static_cast<int64_t>(requests.size()));
  int64_t longest = 0;
  for (const auto& r : requests) {
    DA_CHECK(!r.prompt.empty(), "Generator: request ", r.id, " has an empty prompt");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(r.prompt.size()));
  }
  const int64_t capacity = longest + params_.max_new_tokens;
  DA_CHECK(capacity <= model_.config().max_position_embeddings, "Generator: a prompt of ", longest, " tokens plus ",
           params_.max_new_tokens, " new ones exceeds the model's ", model_.config().max_position_embeddings,
           " positions");
  shared_prefix_ = share_prefix_ ? common_prefix(requests) : 0;
  return BatchRun(model_, params_, topk_, tokenizer_, requests, batch, capacity, shared_prefix_, on_token).run();
}

std::vector<std::vector<int64_t>> greedy_decode(Llama& model, const std::vector<std::vector<int64_t>>& prompts,
                                                int64_t max_new, const std::vector<int64_t>& stop_ids) {
  torch::NoGradGuard no_grad;
  const int64_t B = static_cast<int64_t>(prompts.size());
  const torch::Device device = model.parameters()[0].device();
  int64_t longest = 0;
  for (size_t b = 0; b < prompts.size(); ++b) {
    DA_CHECK(!prompts[b].empty(), "greedy_decode: prompt ", b, " is empty");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts[b].size()));
  }
  Tensor tokens = torch::zeros({B, longest}, torch::kInt64), n = torch::empty({B}, torch::kInt64);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<size_t>(b)];
    tokens[b].narrow(0, 0, static_cast<int64_t>(p.size())).copy_(torch::tensor(p, torch::kInt64));
    n[b] = static_cast<int64_t>(p.size());
  }
  KVCache cache = model.new_cache(B, longest + max_new);
  tokens = tokens.to(device);
  n = n.to(device);
  Tensor last = model.forward_last(tokens, cache, n).unsqueeze(1);

  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
  std::vector<bool> done(static_cast<size_t>(B), false);
  for (int64_t step = 0; step < max_new; ++step) {
    Tensor next = last.argmax(-1);  // [B, 1]
    Tensor host = next.to(torch::kCPU);
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[static_cast<size_t>(b)]) continue;
      const int64_t t = host[b][0].item<int64_t>();
      out[static_cast<size_t>(b)].push_back(t);
      if (std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end()) done[static_cast<size_t>(b)] = true;
      all_done = all_done && done[static_cast<size_t>(b)];
    }
    if (all_done || step + 1 == max_new) break;
    last = model.forward(next, cache);
  }
  return out;
}

}  // namespace draftalign::model
