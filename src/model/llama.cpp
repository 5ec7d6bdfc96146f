#include "model/llama.h"

#include <atomic>
#include <cmath>

#include "common/error.h"
#include "common/fs.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"

namespace draftalign::model {

using torch::Tensor;

struct Weight : torch::nn::Module {
  Tensor weight;
  Weight(std::vector<int64_t> shape, const torch::TensorOptions& options)
      : weight(register_parameter("weight", torch::empty(shape, options))) {}
};

namespace {

struct Attention : torch::nn::Module {
  std::shared_ptr<Weight> q_proj, k_proj, v_proj, o_proj;
};

struct Mlp : torch::nn::Module {
  std::shared_ptr<Weight> gate_proj, up_proj, down_proj;
};

struct Layer : torch::nn::Module {
  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<Mlp> mlp;
  std::shared_ptr<Weight> input_layernorm, post_attention_layernorm;

  Layer(const io::LlamaConfig& c, const torch::TensorOptions& o) {
    const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
    self_attn = register_module("self_attn", std::make_shared<Attention>());
    self_attn->q_proj = self_attn->register_module("q_proj", std::make_shared<Weight>(std::vector<int64_t>{q, h}, o));
    self_attn->k_proj = self_attn->register_module("k_proj", std::make_shared<Weight>(std::vector<int64_t>{kv, h}, o));
    self_attn->v_proj = self_attn->register_module("v_proj", std::make_shared<Weight>(std::vector<int64_t>{kv, h}, o));
    self_attn->o_proj = self_attn->register_module("o_proj", std::make_shared<Weight>(std::vector<int64_t>{h, q}, o));
    const int64_t m = c.intermediate_size;
    mlp = register_module("mlp", std::make_shared<Mlp>());
    mlp->gate_proj = mlp->register_module("gate_proj", std::make_shared<Weight>(std::vector<int64_t>{m, h}, o));
    mlp->up_proj = mlp->register_module("up_proj", std::make_shared<Weight>(std::vector<int64_t>{m, h}, o));
    mlp->down_proj = mlp->register_module("down_proj", std::make_shared<Weight>(std::vector<int64_t>{h, m}, o));
    input_layernorm = register_module("input_layernorm", std::make_shared<Weight>(std::vector<int64_t>{h}, o));
    post_attention_layernorm =
        register_module("post_attention_layernorm", std::make_shared<Weight>(std::vector<int64_t>{h}, o));
  }
};

// transformers' LlamaRMSNorm: normalise in fp32, scale in the model dtype.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

// x W^T for a weight W [out, in]. On a CPU with no gradient, a few rows of x (a plain decode step, a speculative
// verification of 2..8 tokens, a small decode batch) go through W x^T instead: BLAS runs x W^T as a GEMM that for 2..8
// rows is far slower than the one-row GEMV (MKL, 2 cores: 2 rows of SmolLM2's 576 x 49152 head take 2.2x one row),
// while W x^T streams W once at about the GEMV's cost, and for two rows below it. So a single row is padded to two
// (itself twice) and the first column kept: the fastest plain step the CPU has (docs/PERFORMANCE.md). Anything else is
// torch::linear.
std::atomic<bool> pad_single_row{true};

Tensor project(const Tensor& x, const Tensor& w) {
  const int64_t in = x.size(-1), rows = x.numel() / in;
  if (!x.device().is_cpu() || rows > 8 || torch::GradMode::is_enabled() ||
      (rows == 1 && !pad_single_row.load(std::memory_order_relaxed)))
    return torch::linear(x, w);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = w.size(0);
  const Tensor xt = rows == 1 ? x.reshape({1, in}).repeat({2, 1}).t() : x.reshape({rows, in}).t();
  return torch::mm(w, xt).narrow(1, 0, rows).t().contiguous().view(shape);
}

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

struct Body : torch::nn::Module {
  std::shared_ptr<Weight> embed_tokens, norm;
  std::vector<std::shared_ptr<Layer>> layers;

  Body(const io::LlamaConfig& c, const torch::TensorOptions& o) {
    embed_tokens =
        register_module("embed_tokens", std::make_shared<Weight>(std::vector<int64_t>{c.vocab_size, c.hidden_size}, o));
    auto list = register_module("layers", torch::nn::ModuleList());
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      layers.push_back(std::make_shared<Layer>(c, o));
      list->push_back(layers.back());
    }
    norm = register_module("norm", std::make_shared<Weight>(std::vector<int64_t>{c.hidden_size}, o));
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
  if (!initialise) return;
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() == 1) p.fill_(1.0);
    else p.normal_(0.0, 0.02);
  }
}

int64_t Llama::num_params() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

Tensor Llama::run(const Tensor& tokens, const Tensor& positions, const Tensor& mask, KVCache* cache) {
  const io::LlamaConfig& c = config_;
  const int64_t B = tokens.size(0), T = tokens.size(1), nh = c.num_attention_heads, nkv = c.num_key_value_heads,
                hd = c.head_dim;
  Tensor x = torch::embedding(body_->embed_tokens->weight, tokens);

  // Rotary tables for these positions, computed in fp32 as transformers does, then cast to the model dtype.
  Tensor freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_.to(positions.device());
  Tensor emb = torch::cat({freqs, freqs}, -1);
  Tensor cos = emb.cos().to(x.scalar_type()).unsqueeze(1), sin = emb.sin().to(x.scalar_type()).unsqueeze(1);

  std::optional<Tensor> attn_mask;
  if (mask.defined()) attn_mask = mask;
  const bool causal = !mask.defined();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  Tensor cache_index;
  int64_t used = 0;
  if (cache) {
    cache_index = positions.view({B, 1, T, 1}).expand({B, nkv, T, hd});
    used = mask.size(-1);
  }

  for (size_t l = 0; l < body_->layers.size(); ++l) {
    const Layer& L = *body_->layers[l];
    Tensor h = rms_norm(x, L.input_layernorm->weight, c.rms_norm_eps);
    Tensor q = project(h, L.self_attn->q_proj->weight).view({B, T, nh, hd}).transpose(1, 2);
    Tensor k = project(h, L.self_attn->k_proj->weight).view({B, T, nkv, hd}).transpose(1, 2);
    Tensor v = project(h, L.self_attn->v_proj->weight).view({B, T, nkv, hd}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    if (cache) {
      cache->k[l].scatter_(2, cache_index, k);
      cache->v[l].scatter_(2, cache_index, v);
      k = cache->k[l].narrow(2, 0, used);
      v = cache->v[l].narrow(2, 0, used);
    }
    Tensor a = at::scaled_dot_product_attention(q, k, v, attn_mask, 0.0, causal, scale, /*enable_gqa=*/nkv != nh);
    x = x + project(a.transpose(1, 2).reshape({B, T, nh * hd}), L.self_attn->o_proj->weight);
    h = rms_norm(x, L.post_attention_layernorm->weight, c.rms_norm_eps);
    Tensor gate = torch::silu(project(h, L.mlp->gate_proj->weight));
    x = x + project(gate * project(h, L.mlp->up_proj->weight), L.mlp->down_proj->weight);
  }
  return rms_norm(x, body_->norm->weight, c.rms_norm_eps);
}

Tensor Llama::hidden(const Tensor& tokens, const Tensor& segments) {
  DA_CHECK(tokens.dim() == 2, "Llama: tokens must be [batch, time], got ", io::shape_text(tokens.sizes()));
  const int64_t T = tokens.size(1);
  DA_CHECK(T <= config_.max_position_embeddings, "Llama: ", T, " tokens exceed max_position_embeddings (",
           config_.max_position_embeddings, ")");
  if (!segments.defined()) {
    Tensor positions = torch::arange(T, tokens.options().dtype(torch::kInt64)).expand_as(tokens);
    return run(tokens, positions, Tensor(), nullptr);
  }
  DA_CHECK(segments.sizes() == tokens.sizes(), "Llama: segments ", io::shape_text(segments.sizes()),
           " must have the shape of tokens ", io::shape_text(tokens.sizes()));
  Tensor t = torch::arange(T, tokens.options().dtype(torch::kInt64));
  Tensor causal = (t.view({1, T}) <= t.view({T, 1})).view({1, 1, T, T});
  Tensor same_doc = (segments.unsqueeze(2) == segments.unsqueeze(1)).unsqueeze(1);
  return run(tokens, positions_in_documents(segments), causal.logical_and(same_doc), nullptr);
}

Tensor Llama::logits(const Tensor& hidden) {
  return project(hidden, lm_head_ ? lm_head_->weight : body_->embed_tokens->weight);
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

Tensor Llama::forward(const Tensor& tokens, KVCache& cache, const Tensor& n_new) {
  DA_CHECK(tokens.dim() == 2 && tokens.size(0) == cache.batch(), "Llama: tokens ", io::shape_text(tokens.sizes()),
           " do not match a cache of ", cache.batch(), " rows");
  const int64_t T = tokens.size(1);
  const Tensor n_real = n_new.defined() ? n_new.to(cache.lengths.options()) : torch::full_like(cache.lengths, T);
  // Only real tokens need room: padding past a row's n_new is written at clamped positions (beyond the row's end,
  // never attended), so a long prefill of one row fits next to rows that are nearly full.
  const int64_t used = (cache.lengths + n_real).max().item<int64_t>();
  DA_CHECK(used <= cache.capacity(), "Llama: the KV cache holds ", cache.capacity(), " positions, ", used,
           " are needed");
  Tensor positions = (cache.lengths.unsqueeze(1) + torch::arange(T, cache.lengths.options()).unsqueeze(0))
                         .clamp_max(cache.capacity() - 1);
  DA_CHECK(used <= config_.max_position_embeddings, "Llama: position ", used - 1,
           " is past max_position_embeddings (", config_.max_position_embeddings, ")");
  // Query i of row b sits at positions[b, i] and sees every key at or before it: the row's cached prefix and the new
  // tokens up to itself. Keys past it (padding of this call, stale entries of a rolled-back draft) are masked.
  Tensor keys = torch::arange(used, positions.options());
  Tensor mask = (keys.view({1, 1, 1, used}) <= positions.view({positions.size(0), 1, T, 1}));
  Tensor h = run(tokens, positions, mask, &cache);
  cache.lengths += n_real;
  return logits(h);
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

  if (!tokenizer_dir.empty()) {
    for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                          "chat_template.jinja"}) {
      if (std::filesystem::is_regular_file(tokenizer_dir / f))
        fs::write_file_atomic(out.path() / f, fs::read_file(tokenizer_dir / f));
    }
  }
  out.commit();
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
  Tensor logits = model.forward(tokens, cache, n);
  Tensor last = logits.gather(1, (n - 1).view({B, 1, 1}).expand({B, 1, logits.size(2)}));

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

void set_cpu_pad_single_row(bool on) { pad_single_row.store(on, std::memory_order_relaxed); }

}  // namespace draftalign::model
