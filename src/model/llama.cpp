#include "model/llama.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>

#include "common/error.h"
#include "common/fs.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"

namespace draftalign::model {

using torch::Tensor;

struct Weight : torch::nn::Module {
  Tensor weight, bias;  // bias [out]: only a projection with_bias has one
  Weight(std::vector<int64_t> shape, const torch::TensorOptions& options, bool with_bias = false)
      : weight(register_parameter("weight", torch::empty(shape, options))) {
    if (with_bias) bias = register_parameter("bias", torch::empty({shape[0]}, options));
  }
};

namespace {

// transformers' LlamaRMSNorm: normalise in fp32, scale in the model dtype.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

// x W^T for a weight W [out, in]. On a CPU with no gradient, a few rows of x (a plain decode step, a speculative
// verification of 2..8 tokens, a decode batch) go through W x^T instead: BLAS runs x W^T as a GEMM that for 2..8
// rows is far slower than the one-row GEMV (MKL, 2 cores: 2 rows of SmolLM2's 576 x 49152 head take 2.2x one row),
// while W x^T streams W once at about the GEMV's cost, and for two rows below it. So a single row is padded to two
// (itself twice) and the first column kept: the fastest plain step the CPU has (docs/PERFORMANCE.md). Up to 128 rows (a
// decode batch) W x^T also beats x W^T, by 10-25% for every projection of SmolLM2 (MKL packs W on each x W^T call); at
// 256 rows they are even. Anything else (training, a long prefill, CUDA) is torch::linear.
std::atomic<bool> pad_single_row{true};

Tensor project(const Tensor& x, const Tensor& w, const Tensor& bias = {}) {
  const int64_t in = x.size(-1), rows = x.numel() / in;
  if (!x.device().is_cpu() || rows > 128 || torch::GradMode::is_enabled() ||
      (rows == 1 && !pad_single_row.load(std::memory_order_relaxed)))
    return torch::linear(x, w, bias);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = w.size(0);
  const Tensor xt = rows == 1 ? x.reshape({1, in}).repeat({2, 1}).t() : x.reshape({rows, in}).t();
  const Tensor y = torch::mm(w, xt).narrow(1, 0, rows).t().contiguous().view(shape);
  return bias.defined() ? y + bias : y;
}

Tensor project(const Tensor& x, const Weight& linear) { return project(x, linear.weight, linear.bias); }

Tensor rotate_half(const Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// Positions that restart at every document of a packed row: t - (index where t's document starts).
Tensor positions_in_documents(const Tensor& segments) {
  const int64_t T = segments.size(1);
  Tensor t = torch::arange(T, segments.options().dtype(torch::kInt64)).expand_as(segments);
  Tensor starts = torch::ones_like(segments, torch::kBool);
  if (T > 1)
    starts.narrow(1, 1, T - 1).copy_(segments.narrow(1, 1, T - 1) != segments.narrow(1, 0, T - 1));
  auto [start_index, unused] = torch::where(starts, t, torch::zeros_like(t)).cummax(1);
  return t - start_index;
}

std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: throw Error(str_cat("a checkpoint cannot be stored as ", c10::toString(t)));
  }
}

}  // namespace

// What every layer's attention shares in one forward call: the rotary tables of these positions, the mask, and the KV
// cache with the slots the new keys and values go to.
struct Step {
  Tensor cos, sin;             // [B, 1, T, head_dim] in the model dtype
  std::optional<Tensor> mask;  // [B or 1, 1, T, keys] bool, true = attend; none = causal over the T new tokens
  Tensor window_mask;          // the mask of sliding-window layers (the mask, and within the window); else undefined
  KVCache* cache = nullptr;    // decoding: layer l's keys and values are written to cache->k[l], cache->v[l]
  Tensor cache_index;          // [B, kv_heads, T, head_dim]: the cache positions of the new tokens
  int64_t used = 0;            // cache positions attended (the longest row after this call)
  Taps* taps = nullptr;        // hidden states to read out on the way, if any
};

// Grouped-query self-attention with rotary embeddings, through LibTorch's fused scaled_dot_product_attention. Qwen2
// adds q/k/v biases, Qwen3 an RMSNorm on each query and key head, Mistral (and Qwen with use_sliding_window) a window.
struct Attention : torch::nn::Module {
  std::shared_ptr<Weight> q_proj, k_proj, v_proj, o_proj, q_norm, k_norm;
  int64_t heads, kv_heads, head_dim;
  double eps;
  bool sliding;

  Attention(const io::LlamaConfig& c, const torch::TensorOptions& o, bool sliding_layer)
      : heads(c.num_attention_heads),
        kv_heads(c.num_key_value_heads),
        head_dim(c.head_dim),
        eps(c.rms_norm_eps),
        sliding(sliding_layer) {
    const int64_t h = c.hidden_size, q = heads * head_dim, kv = kv_heads * head_dim;
    q_proj = register_module("q_proj", std::make_shared<Weight>(std::vector<int64_t>{q, h}, o, c.qkv_bias));
    k_proj = register_module("k_proj", std::make_shared<Weight>(std::vector<int64_t>{kv, h}, o, c.qkv_bias));
    v_proj = register_module("v_proj", std::make_shared<Weight>(std::vector<int64_t>{kv, h}, o, c.qkv_bias));
    o_proj = register_module("o_proj", std::make_shared<Weight>(std::vector<int64_t>{h, q}, o, c.o_bias));
    if (c.qk_norm) {
      q_norm = register_module("q_norm", std::make_shared<Weight>(std::vector<int64_t>{head_dim}, o));
      k_norm = register_module("k_norm", std::make_shared<Weight>(std::vector<int64_t>{head_dim}, o));
    }
  }

  // x [B, T, hidden] (normed) -> [B, T, hidden]; `layer` picks this layer's slot of the KV cache.
  Tensor forward(const Tensor& x, const Step& step, size_t layer) {
    const int64_t B = x.size(0), T = x.size(1);
    Tensor q = project(x, *q_proj).view({B, T, heads, head_dim});
    Tensor k = project(x, *k_proj).view({B, T, kv_heads, head_dim});
    if (q_norm) q = rms_norm(q, q_norm->weight, eps), k = rms_norm(k, k_norm->weight, eps);
    q = q.transpose(1, 2), k = k.transpose(1, 2);
    Tensor v = project(x, *v_proj).view({B, T, kv_heads, head_dim}).transpose(1, 2);
    q = q * step.cos + rotate_half(q) * step.sin;
    k = k * step.cos + rotate_half(k) * step.sin;
    if (step.cache) {
      step.cache->k[layer].scatter_(2, step.cache_index, k);
      step.cache->v[layer].scatter_(2, step.cache_index, v);
      k = step.cache->k[layer].narrow(2, 0, step.used);
      v = step.cache->v[layer].narrow(2, 0, step.used);
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    const std::optional<Tensor> mask = sliding ? std::optional<Tensor>(step.window_mask) : step.mask;
    Tensor a = at::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/!mask.has_value(), scale,
                                                /*enable_gqa=*/kv_heads != heads);
    return project(a.transpose(1, 2).reshape({B, T, heads * head_dim}), *o_proj);
  }
};

// SwiGLU: down(silu(gate(x)) * up(x)).
struct Mlp : torch::nn::Module {
  std::shared_ptr<Weight> gate_proj, up_proj, down_proj;

  Mlp(const io::LlamaConfig& c, const torch::TensorOptions& o) {
    const int64_t h = c.hidden_size, m = c.intermediate_size;
    gate_proj = register_module("gate_proj", std::make_shared<Weight>(std::vector<int64_t>{m, h}, o));
    up_proj = register_module("up_proj", std::make_shared<Weight>(std::vector<int64_t>{m, h}, o));
    down_proj = register_module("down_proj", std::make_shared<Weight>(std::vector<int64_t>{h, m}, o));
  }

  Tensor forward(const Tensor& x) {
    Tensor gate = torch::silu(project(x, *gate_proj));
    return project(gate * project(x, *up_proj), *down_proj);
  }
};

// A pre-norm decoder block: x + attention(norm(x)), then + mlp(norm(x)).
struct Layer : torch::nn::Module {
  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<Mlp> mlp;
  std::shared_ptr<Weight> input_layernorm, post_attention_layernorm;
  double eps;

  Layer(const io::LlamaConfig& c, const torch::TensorOptions& o, bool sliding) : eps(c.rms_norm_eps) {
    self_attn = register_module("self_attn", std::make_shared<Attention>(c, o, sliding));
    mlp = register_module("mlp", std::make_shared<Mlp>(c, o));
    const std::vector<int64_t> h = {c.hidden_size};
    input_layernorm = register_module("input_layernorm", std::make_shared<Weight>(h, o));
    post_attention_layernorm = register_module("post_attention_layernorm", std::make_shared<Weight>(h, o));
  }

  Tensor forward(Tensor x, const Step& step, size_t layer) {
    x = x + self_attn->forward(rms_norm(x, input_layernorm->weight, eps), step, layer);
    return x + mlp->forward(rms_norm(x, post_attention_layernorm->weight, eps));
  }
};

// model.*: token embeddings, the blocks, the final norm. tokens [B, T] -> final hidden states [B, T, hidden].
struct Body : torch::nn::Module {
  std::shared_ptr<Weight> embed_tokens, norm;
  std::vector<std::shared_ptr<Layer>> layers;
  double eps;

  Body(const io::LlamaConfig& c, const torch::TensorOptions& o) : eps(c.rms_norm_eps) {
    embed_tokens =
        register_module("embed_tokens", std::make_shared<Weight>(std::vector<int64_t>{c.vocab_size, c.hidden_size}, o));
    auto list = register_module("layers", torch::nn::ModuleList());
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const bool sliding = c.sliding_window > 0 && c.sliding_layers.at(static_cast<size_t>(l));
      layers.push_back(std::make_shared<Layer>(c, o, sliding));
      list->push_back(layers.back());
    }
    norm = register_module("norm", std::make_shared<Weight>(std::vector<int64_t>{c.hidden_size}, o));
  }

  Tensor forward(const Tensor& tokens, const Step& step) {
    Tensor x = torch::embedding(embed_tokens->weight, tokens);
    size_t next_tap = 0;  // taps are ascending: the next index to read out
    const auto tap = [&](int64_t index) {
      if (step.taps && next_tap < step.taps->at.size() && step.taps->at[next_tap] == index)
        step.taps->out.push_back(x), ++next_tap;
    };
    tap(0);
    for (size_t l = 0; l < layers.size(); ++l) {
      x = layers[l]->forward(x, step, l);
      tap(static_cast<int64_t>(l) + 1);
    }
    return rms_norm(x, norm->weight, eps);
  }
};

torch::Tensor rope_inv_freq(const io::LlamaConfig& c) {
  const int64_t dim = c.head_dim;
  Tensor exponent = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  Tensor inv_freq = 1.0 / torch::pow(torch::scalar_tensor(c.rope_theta, torch::kFloat32), exponent);
  if (c.rope_scaling.type != "llama3") return inv_freq;
  // Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth blend between.
  const io::RopeScaling& s = c.rope_scaling;
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / s.low_freq_factor, high_freq_wavelen = old_len / s.high_freq_factor;
  Tensor wavelen = 2 * M_PI / inv_freq;
  Tensor scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  Tensor smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  Tensor medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return torch::where(medium, smoothed, scaled);
}

Llama::Llama(const io::LlamaConfig& config, torch::TensorOptions options, bool initialise)
    : config_(config), inv_freq_(rope_inv_freq(config)) {
  if (!options.has_dtype()) options = options.dtype(torch::kFloat32);
  body_ = register_module("model", std::make_shared<Body>(config, options));
  if (!config.tie_word_embeddings)
    lm_head_ = register_module(
        "lm_head", std::make_shared<Weight>(std::vector<int64_t>{config.vocab_size, config.hidden_size}, options));
  set_draft_vocab(config.draft_token_ids);
  if (!initialise) return;
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    if (p.key().ends_with(".bias"))
      p.value().zero_();
    else if (p.value().dim() == 1)
      p.value().fill_(1.0);
    else
      p.value().normal_(0.0, 0.02);
  }
}

int64_t Llama::num_params() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

void Llama::check_taps(const Taps* taps) const {
  if (!taps) return;
  for (size_t j = 0; j < taps->at.size(); ++j)
    DA_CHECK(taps->at[j] >= 0 && taps->at[j] <= config_.num_hidden_layers && (j == 0 || taps->at[j] > taps->at[j - 1]),
             "Llama: hidden-state taps must be ascending indices in [0, ", config_.num_hidden_layers, "], got ",
             taps->at[j], " at place ", j);
}

Tensor Llama::run(const Tensor& tokens, const Tensor& positions, const Tensor& mask, KVCache* cache, Taps* taps) {
  const io::LlamaConfig& c = config_;
  check_taps(taps);
  if (taps) taps->out.clear();
  const int64_t B = tokens.size(0), T = tokens.size(1);
  const torch::ScalarType dtype = body_->embed_tokens->weight.scalar_type();
  Step step;
  // Rotary tables for these positions, computed in fp32 as transformers does, then cast to the model dtype.
  if (inv_freq_.device() != positions.device()) inv_freq_ = inv_freq_.to(positions.device());  // once per device
  Tensor freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_;
  Tensor emb = torch::cat({freqs, freqs}, -1);
  step.cos = emb.cos().to(dtype).unsqueeze(1), step.sin = emb.sin().to(dtype).unsqueeze(1);
  if (mask.defined()) step.mask = mask;
  step.taps = taps;
  if (cache) {
    step.cache = cache;
    step.cache_index = positions.view({B, 1, T, 1}).expand({B, c.num_key_value_heads, T, c.head_dim});
    step.used = mask.size(-1);
  }
  if (c.sliding_window > 0) {
    // Key j is in query i's window when i - j < sliding_window, i and j being cache slots (decoding) or indices in
    // the row (a forward; within a packed document they differ as its positions do).
    const Tensor rows = torch::arange(T, positions.options()).view({1, T});
    const Tensor query = cache ? positions : rows.expand({B, T});
    const int64_t keys = cache ? step.used : T;
    const Tensor key = torch::arange(keys, positions.options()).view({1, 1, 1, keys});
    const Tensor in_window = key > query.view({B, 1, T, 1}) - c.sliding_window;
    const Tensor causal = mask.defined() ? mask : (key <= rows.view({1, 1, T, 1}));
    step.window_mask = causal.logical_and(in_window);
  }
  return body_->forward(tokens, step);
}

Tensor Llama::hidden(const Tensor& tokens, const Tensor& segments, Taps* taps) {
  DA_CHECK(tokens.dim() == 2, "Llama: tokens must be [batch, time], got ", io::shape_text(tokens.sizes()));
  const int64_t T = tokens.size(1);
  DA_CHECK(T <= config_.max_position_embeddings, "Llama: ", T, " tokens exceed max_position_embeddings (",
           config_.max_position_embeddings, ")");
  if (!segments.defined()) {
    Tensor positions = torch::arange(T, tokens.options().dtype(torch::kInt64)).expand_as(tokens);
    return run(tokens, positions, Tensor(), nullptr, taps);
  }
  DA_CHECK(segments.sizes() == tokens.sizes(), "Llama: segments ", io::shape_text(segments.sizes()),
           " must have the shape of tokens ", io::shape_text(tokens.sizes()));
  Tensor t = torch::arange(T, tokens.options().dtype(torch::kInt64));
  Tensor causal = (t.view({1, T}) <= t.view({T, 1})).view({1, 1, T, T});
  Tensor same_doc = (segments.unsqueeze(2) == segments.unsqueeze(1)).unsqueeze(1);
  return run(tokens, positions_in_documents(segments), causal.logical_and(same_doc), nullptr, taps);
}

Tensor Llama::hidden(const Tensor& tokens, const Tensor& positions, const Tensor& mask) {
  const int64_t T = tokens.dim() == 2 ? tokens.size(1) : -1;
  DA_CHECK(T > 0 && positions.sizes() == tokens.sizes() && mask.dim() == 4 && mask.size(2) == T && mask.size(3) == T,
           "Llama: a masked forward needs tokens [B, T], positions of the same shape and a mask [B, 1, T, T]; got ",
           io::shape_text(tokens.sizes()), ", ", io::shape_text(positions.sizes()), ", ", io::shape_text(mask.sizes()));
  DA_CHECK(config_.sliding_window == 0, "Llama: a masked forward of a sliding-window model is not supported");
  DA_CHECK(positions.max().item<int64_t>() < config_.max_position_embeddings, "Llama: position ",
           positions.max().item<int64_t>(), " exceeds max_position_embeddings (", config_.max_position_embeddings, ")");
  return run(tokens, positions, mask, nullptr);
}

void Llama::set_draft_vocab(const std::vector<int64_t>& ids) {
  const int64_t V = config_.vocab_size;
  DA_CHECK(static_cast<int64_t>(ids.size()) <= V, "Llama: a draft vocabulary of ", ids.size(),
           " tokens is larger than the vocabulary of ", V);
  std::vector<int64_t> row(static_cast<size_t>(V), -1);
  for (size_t i = 0; i < ids.size(); ++i) {
    DA_CHECK(ids[i] >= 0 && ids[i] < V && row[static_cast<size_t>(ids[i])] < 0, "Llama: draft vocabulary entry ", i,
             " (", ids[i], ") is not a token id below ", V, " that appears once");
    row[static_cast<size_t>(ids[i])] = static_cast<int64_t>(i);
  }
  config_.draft_token_ids = ids;
  draft_ids_ = draft_row_ = head_rows_ = Tensor();
  if (ids.empty()) return;
  const torch::Device device = body_->embed_tokens->weight.device();
  draft_ids_ = torch::tensor(ids, torch::kInt64).to(device);
  draft_row_ = torch::tensor(row, torch::kInt64).to(device);
}

int64_t Llama::head_rows() const {
  return has_draft_vocab() ? static_cast<int64_t>(config_.draft_token_ids.size()) : config_.vocab_size;
}

const Tensor& Llama::draft_ids() const {
  const torch::Device device = body_->embed_tokens->weight.device();
  if (draft_ids_.defined() && draft_ids_.device() != device)  // the model moved since
    draft_ids_ = draft_ids_.to(device), draft_row_ = draft_row_.to(device);
  return draft_ids_;
}

Tensor Llama::head_row_of(const Tensor& ids) const {
  if (!has_draft_vocab()) return ids;
  draft_ids();
  return draft_row_.to(ids.device()).index({ids.to(torch::kInt64)});
}

Tensor Llama::head_weight() const {
  const Tensor& w = lm_head_ ? lm_head_->weight : body_->embed_tokens->weight;
  if (!has_draft_vocab()) return w;
  if (torch::GradMode::is_enabled()) return w.index_select(0, draft_ids());
  // Without autograd the gathered rows are kept until the weight changes: an optimiser step or a load bumps its
  // version counter, a move or a cast gives it new storage.
  if (!head_rows_.defined() || head_rows_of_.version != w._version() || head_rows_of_.data != w.data_ptr()) {
    head_rows_ = w.index_select(0, draft_ids());
    head_rows_of_ = {w._version(), w.data_ptr()};
  }
  return head_rows_;
}

Tensor head_rows_for(const Llama& target, const Llama& drafter) {
  return drafter.has_draft_vocab() ? target.head_weight().index_select(0, drafter.draft_ids()) : target.head_weight();
}

Tensor Llama::logits(const Tensor& hidden) {
  if (!has_draft_vocab()) return project(hidden, head_weight());
  const Tensor rows = project(hidden, head_weight());  // [..., N]
  std::vector<int64_t> shape = rows.sizes().vec();
  shape.back() = config_.vocab_size;
  return torch::full(shape, -std::numeric_limits<double>::infinity(), rows.options())
      .index_copy(rows.dim() - 1, draft_ids(), rows);
}

Tensor Llama::forward(const Tensor& tokens, const Tensor& segments) { return logits(hidden(tokens, segments)); }

KVCache Llama::new_cache(int64_t batch, int64_t capacity) const {
  const Tensor& w = body_->embed_tokens->weight;
  KVCache cache;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    cache.k.push_back(torch::zeros({batch, config_.num_key_value_heads, capacity, config_.head_dim}, w.options()));
    cache.v.push_back(torch::zeros_like(cache.k.back()));
  }
  cache.lengths = torch::zeros({batch}, w.options().dtype(torch::kInt64));
  return cache;
}

Tensor Llama::new_counts(const Tensor& tokens, const KVCache& cache, const Tensor& n_new) {
  return n_new.defined() ? n_new.to(cache.lengths.options()) : torch::full_like(cache.lengths, tokens.size(-1));
}

Tensor Llama::append(const Tensor& tokens, KVCache& cache, const Tensor& n_real, Taps* taps) {
  DA_CHECK(tokens.dim() == 2 && tokens.size(0) == cache.batch(), "Llama: tokens ", io::shape_text(tokens.sizes()),
           " do not match a cache of ", cache.batch(), " rows");
  // Only real tokens need room: padding past a row's n_new is written at clamped positions (beyond the row's end,
  // never attended), so a long prefill of one row fits next to rows that are nearly full.
  const int64_t used = (cache.lengths + n_real).max().item<int64_t>();
  DA_CHECK(used <= cache.capacity(), "Llama: the KV cache holds ", cache.capacity(), " positions, ", used,
           " are needed");
  DA_CHECK(used <= config_.max_position_embeddings, "Llama: position ", used - 1,
           " is past max_position_embeddings (", config_.max_position_embeddings, ")");
  return decode(tokens, cache, n_real, used, taps);
}

Tensor Llama::forward(const Tensor& tokens, KVCache& cache, const Tensor& n_new, Taps* taps) {
  return logits(append(tokens, cache, new_counts(tokens, cache, n_new), taps));
}

Tensor Llama::forward_last(const Tensor& tokens, KVCache& cache, const Tensor& n_new, Taps* taps) {
  const Tensor n_real = new_counts(tokens, cache, n_new);
  const Tensor h = append(tokens, cache, n_real, taps);
  const Tensor last = (n_real - 1).clamp_min(0).view({-1, 1, 1}).expand({h.size(0), 1, h.size(2)});
  return logits(h.gather(1, last).squeeze(1));
}

Tensor Llama::forward_static(const Tensor& tokens, KVCache& cache, const Tensor& n_new) {
  return logits(decode(tokens, cache, new_counts(tokens, cache, n_new), cache.capacity()));
}

Tensor Llama::decode(const Tensor& tokens, KVCache& cache, const Tensor& n_real, int64_t keys, Taps* taps) {
  const int64_t B = tokens.size(0), T = tokens.size(1);
  Tensor positions = (cache.lengths.unsqueeze(1) + torch::arange(T, cache.lengths.options()).unsqueeze(0))
                         .clamp_max(cache.capacity() - 1);
  // Query i of row b sits at positions[b, i] and sees every key at or before it: the row's cached prefix and the new
  // tokens up to itself. Keys past it (padding of this call, stale entries of a rolled-back draft) are masked.
  Tensor mask = torch::arange(keys, positions.options()).view({1, 1, 1, keys}) <= positions.view({B, 1, T, 1});
  Tensor h = run(tokens, positions, mask, &cache, taps);
  cache.lengths.add_(n_real);
  return h;
}

std::shared_ptr<Llama> load_llama(const std::filesystem::path& dir, torch::Device device, torch::ScalarType dtype) {
  io::HfCheckpoint ckpt = io::HfCheckpoint::open(dir);
  ckpt.check_llama();
  auto model = std::make_shared<Llama>(ckpt.config(), torch::TensorOptions().device(device).dtype(dtype), false);
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) p.value().copy_(ckpt.get(p.key()));
  return model;
}

void save_llama(const Llama& model, const std::filesystem::path& dir, torch::ScalarType dtype,
                const std::filesystem::path& tokenizer_dir) {
  io::LlamaConfig c = model.config();
  c.dtype = dtype_name(dtype);
  fs::AtomicDir out(dir);
  fs::write_file_atomic(out.path() / "config.json", io::to_hf_json(c).dump(2) + "\n");
  nlohmann::json gen = {{"_from_model_config", true}};
  if (c.bos_token_id >= 0) gen["bos_token_id"] = c.bos_token_id;
  if (!c.eos_token_ids.empty()) gen["eos_token_id"] = c.eos_token_ids.size() == 1 ? nlohmann::json(c.eos_token_ids[0])
                                                                                  : nlohmann::json(c.eos_token_ids);
  if (c.pad_token_id >= 0) gen["pad_token_id"] = c.pad_token_id;
  fs::write_file_atomic(out.path() / "generation_config.json", gen.dump(2) + "\n");

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& p : model.named_parameters())
    tensors.emplace_back(p.key(), p.value().detach().to(torch::kCPU, dtype).contiguous());
  io::save_safetensors(out.path() / "model.safetensors", tensors, {{"format", "pt"}});

  copy_tokenizer_files(tokenizer_dir, out.path());
  out.commit();
}

std::shared_ptr<Llama> with_full_head(const Llama& drafter) {
  io::LlamaConfig c = drafter.config();
  const bool reduced = !c.draft_token_ids.empty();
  if (reduced) c.draft_token_ids.clear(), c.tie_word_embeddings = false;
  auto out = std::make_shared<Llama>(c, drafter.head_weight().options(), false);
  torch::NoGradGuard no_grad;
  const auto from = drafter.named_parameters();
  for (auto& p : out->named_parameters()) {
    if (p.key() != "lm_head.weight" || !reduced) {
      p.value().copy_(from[p.key()]);
      continue;
    }
    p.value().zero_();
    p.value().index_copy_(0, drafter.draft_ids(), drafter.head_weight());
  }
  return out;
}

void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (from.empty()) return;
  for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "chat_template.jinja"})
    if (std::filesystem::is_regular_file(from / f)) fs::write_file_atomic(to / f, fs::read_file(from / f));
}

void set_cpu_pad_single_row(bool on) { pad_single_row.store(on, std::memory_order_relaxed); }

}  // namespace draftalign::model
