#include "model/generation.h"

#include <algorithm>
#include <random>

#include "common/error.h"
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

std::vector<Completion> Generator::run(const std::vector<Request>& requests,
                                       const std::function<void(int64_t)>& on_token) {
  torch::NoGradGuard no_grad;
  std::vector<Completion> out(requests.size());
  if (requests.empty()) return out;
  const int64_t B = std::min<int64_t>(batch_size_, static_cast<int64_t>(requests.size()));
  int64_t longest = 0;
  for (const auto& r : requests) {
    DA_CHECK(!r.prompt.empty(), "Generator: request ", r.id, " has an empty prompt");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(r.prompt.size()));
  }
  const int64_t capacity = longest + params_.max_new_tokens;
  DA_CHECK(capacity <= model_.config().max_position_embeddings, "Generator: a prompt of ", longest, " tokens plus ",
           params_.max_new_tokens, " new ones exceeds the model's ", model_.config().max_position_embeddings,
           " positions");
  const torch::Device device = model_.parameters()[0].device();
  const int64_t vocab = model_.config().vocab_size;
  KVCache cache = model_.new_cache(B, capacity);
  // The shared prefix's keys and values, [1, kv_heads, shared, head_dim] per layer.
  shared_prefix_ = share_prefix_ ? common_prefix(requests) : 0;
  const int64_t shared = shared_prefix_;
  KVCache prefix;
  if (shared > 0) {
    prefix = model_.new_cache(1, shared);
    const std::vector<int64_t> head(requests[0].prompt.begin(), requests[0].prompt.begin() + shared);
    model_.forward_last(torch::tensor(head, torch::kInt64).view({1, shared}).to(device), prefix);
  }
  // On CUDA the decode steps (every row one token or none) replay a CUDA graph; prefills run eagerly.
  std::unique_ptr<DecodeGraphs> graphs;
  if (use_cuda_graphs(device)) graphs = std::make_unique<DecodeGraphs>(model_, cache);
  std::vector<Slot> slots(static_cast<size_t>(B));
  size_t next = 0;
  auto finish = [&](Slot& s, Finish why) {
    Completion& c = out[static_cast<size_t>(s.request)];
    c.id = requests[static_cast<size_t>(s.request)].id;
    c.tokens = std::move(s.tokens);
    c.finish = why;
    if (topk_ > 0 && !s.topk_ids.empty()) {
      c.topk_ids = torch::stack(s.topk_ids);
      c.topk_logprobs = torch::stack(s.topk_lp);
    }
    s = Slot{};
  };

  // Samples the next token of `rows` from their logits [B, V] (only those rows are read).
  auto sample = [&](const std::vector<int64_t>& rows, const Tensor& logits) {
    const Tensor index = torch::tensor(rows, torch::kInt64).to(device);
    const Tensor l = logits.index_select(0, index);
    Tensor picked;
    if (params_.temperature == 0) {
      picked = l.argmax(-1);
    } else {
      const Tensor cdf = sampling_probs(l, params_.temperature, params_.top_p, params_.top_k).cumsum(-1);
      std::vector<double> u;
      for (int64_t r : rows) u.push_back(uniform01(slots[static_cast<size_t>(r)].rng));
      const Tensor target = torch::tensor(u, torch::kFloat64).to(device).to(torch::kFloat32).unsqueeze(1) *
                            cdf.narrow(1, vocab - 1, 1);
      picked = torch::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).squeeze(1).clamp_max(vocab - 1);
    }
    Tensor topk_ids, topk_lp;
    if (topk_ > 0) {
      auto [v, i] = torch::log_softmax(l.to(torch::kFloat32), -1).topk(topk_, -1);
      topk_lp = v.cpu();
      topk_ids = i.cpu();
    }
    const Tensor host = picked.cpu();
    for (size_t j = 0; j < rows.size(); ++j) {
      Slot& s = slots[static_cast<size_t>(rows[j])];
      const int64_t t = host[static_cast<int64_t>(j)].item<int64_t>();
      s.tokens.push_back(t);
      if (topk_ > 0) s.topk_ids.push_back(topk_ids[static_cast<int64_t>(j)]), s.topk_lp.push_back(topk_lp[static_cast<int64_t>(j)]);
      const auto& p = params_;
      if (std::find(p.stop_ids.begin(), p.stop_ids.end(), t) != p.stop_ids.end()) {
        finish(s, Finish::kEos);
        continue;
      }
      if (!p.stop_strings.empty()) {
        const std::string text = tokenizer_->decode(s.tokens);
        if (std::any_of(p.stop_strings.begin(), p.stop_strings.end(),
                        [&](const std::string& stop) { return text.find(stop) != std::string::npos; })) {
          finish(s, Finish::kStop);
          continue;
        }
      }
      if (static_cast<int64_t>(s.tokens.size()) >= p.max_new_tokens) finish(s, Finish::kLength);
    }
    if (on_token) on_token(static_cast<int64_t>(rows.size()));
  };

  while (true) {
    // Refill free slots and prefill their prompts in one pass (the other rows take no token).
    std::vector<int64_t> fresh;
    for (int64_t b = 0; b < B && next < requests.size(); ++b) {
      Slot& s = slots[static_cast<size_t>(b)];
      if (s.request >= 0) continue;
      s.request = static_cast<int64_t>(next);
      s.rng.seed(requests[next].seed);
      ++next;
      fresh.push_back(b);
    }
    if (!fresh.empty()) {
      // Each fresh row starts with the shared prefix's keys and values and prefills the rest of its prompt.
      int64_t t = 0;
      for (int64_t b : fresh)
        t = std::max<int64_t>(t, requests[slots[static_cast<size_t>(b)].request].prompt.size() - shared);
      Tensor tokens = torch::zeros({B, t}, torch::kInt64), n = torch::zeros({B}, torch::kInt64);
      Tensor lengths = cache.lengths.cpu();
      for (int64_t b : fresh) {
        const auto& p = requests[slots[static_cast<size_t>(b)].request].prompt;
        const int64_t rest = static_cast<int64_t>(p.size()) - shared;
        tokens[b]
            .narrow(0, 0, rest)
            .copy_(torch::tensor(std::vector<int64_t>(p.begin() + shared, p.end()), torch::kInt64));
        n[b] = rest;
        lengths[b] = shared;
      }
      cache.lengths.copy_(lengths);
      if (shared > 0) {
        const Tensor rows = torch::tensor(fresh, torch::kInt64).to(device);
        const int64_t f = rows.size(0);
        for (size_t l = 0; l < cache.k.size(); ++l) {
          cache.k[l].narrow(2, 0, shared).index_copy_(0, rows, prefix.k[l].expand({f, -1, -1, -1}));
          cache.v[l].narrow(2, 0, shared).index_copy_(0, rows, prefix.v[l].expand({f, -1, -1, -1}));
        }
      }
      sample(fresh, model_.forward_last(tokens.to(device), cache, n.to(device)));
    }
    std::vector<int64_t> active;
    for (int64_t b = 0; b < B; ++b)
      if (slots[static_cast<size_t>(b)].request >= 0) active.push_back(b);
    if (active.empty()) {
      if (next >= requests.size()) break;
      continue;
    }
    Tensor tokens = torch::zeros({B, 1}, torch::kInt64), n = torch::zeros({B}, torch::kInt64);
    for (int64_t b : active) {
      tokens[b][0] = slots[static_cast<size_t>(b)].tokens.back();
      n[b] = 1;
    }
    const Tensor logits =
        graphs ? graphs->step(tokens.to(device), n.to(device)) : model_.forward(tokens.to(device), cache, n.to(device));
    sample(active, logits.select(1, 0));
  }
  return out;
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
