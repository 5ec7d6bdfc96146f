#include "model/eagle3.h"

#include <cmath>

#include <set>

#include "common/error.h"
#include "common/fs.h"
#include "io/safetensors.h"
#include "model/llama.h"

namespace draftalign::model {

using torch::Tensor;

namespace {

// transformers' LlamaRMSNorm: normalise in fp32, scale in the model dtype.
Tensor rms(const Tensor& x, const Tensor& weight, double eps) {
  Tensor h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

torch::nn::Linear linear(int64_t in, int64_t out, const torch::TensorOptions& o) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(false));
  l->to(o.dtype().toScalarType());
  if (o.device() != torch::kCPU) l->to(o.device());
  return l;
}

}  // namespace

struct Norm : torch::nn::Module {
  Tensor weight;
  Norm(int64_t n, const torch::TensorOptions& o) : weight(register_parameter("weight", torch::ones({n}, o))) {}
};

// self_attn.{q,k,v}_proj over [2 * hidden], o_proj back to hidden; mlp as Llama's.
struct Eagle3Layer : torch::nn::Module {
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  std::shared_ptr<Norm> input_layernorm, hidden_norm, post_attention_layernorm;
  int64_t heads, kv_heads, head_dim;
  double eps;

  Eagle3Layer(const io::LlamaConfig& c, const torch::TensorOptions& o)
      : heads(c.num_attention_heads), kv_heads(c.num_key_value_heads), head_dim(c.head_dim), eps(c.rms_norm_eps) {
    const int64_t h = c.hidden_size, m = c.intermediate_size;
    auto attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
    q_proj = attn->register_module("q_proj", linear(2 * h, heads * head_dim, o));
    k_proj = attn->register_module("k_proj", linear(2 * h, kv_heads * head_dim, o));
    v_proj = attn->register_module("v_proj", linear(2 * h, kv_heads * head_dim, o));
    o_proj = attn->register_module("o_proj", linear(heads * head_dim, h, o));
    auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    gate_proj = mlp->register_module("gate_proj", linear(h, m, o));
    up_proj = mlp->register_module("up_proj", linear(h, m, o));
    down_proj = mlp->register_module("down_proj", linear(m, h, o));
    input_layernorm = register_module("input_layernorm", std::make_shared<Norm>(h, o));
    hidden_norm = register_module("hidden_norm", std::make_shared<Norm>(h, o));
    post_attention_layernorm = register_module("post_attention_layernorm", std::make_shared<Norm>(h, o));
  }

  // The attention input: [norm(embed), norm(hidden)] [B, T, 2 * hidden].
  Tensor input(const Tensor& embed, const Tensor& hidden) const {
    return torch::cat({rms(embed, input_layernorm->weight, eps), rms(hidden, hidden_norm->weight, eps)}, -1);
  }
  // q, k or v of x [B, T, 2h] as [B, heads, T, head_dim], rotated by cos/sin [B, 1, T, head_dim] (none for v).
  Tensor heads_of(torch::nn::Linear& proj, const Tensor& x, int64_t n, const Tensor& cos, const Tensor& sin) const {
    Tensor y = proj->forward(x).view({x.size(0), x.size(1), n, head_dim}).transpose(1, 2);
    if (!cos.defined()) return y;
    const int64_t half = head_dim / 2;
    const Tensor rotated = torch::cat({-y.narrow(-1, half, half), y.narrow(-1, 0, half)}, -1);
    return y * cos + rotated * sin;
  }
  // After attention a [B, heads, T, head_dim]: residual (the hidden input) + o_proj, then the MLP block.
  Tensor finish(const Tensor& hidden, const Tensor& a) {
    const int64_t B = a.size(0), T = a.size(2);
    Tensor h = hidden + o_proj->forward(a.transpose(1, 2).reshape({B, T, heads * head_dim}));
    const Tensor n = rms(h, post_attention_layernorm->weight, eps);
    return h + down_proj->forward(torch::silu(gate_proj->forward(n)) * up_proj->forward(n));
  }
};

Eagle3Head::Eagle3Head(const Eagle3Config& config, Tensor target_embed, torch::TensorOptions options,
                       bool initialise)
    : config_(config) {
  const io::LlamaConfig& c = config.layer;
  if (!options.has_dtype()) options = options.dtype(torch::kFloat32);
  DA_CHECK(config.taps.size() == 3, "EAGLE-3 head: it reads 3 target hidden states, ", config.taps.size(), " given");
  DA_CHECK(c.hidden_size == config.target_hidden, "EAGLE-3 head: its hidden size ", c.hidden_size,
           " must be the target's ", config.target_hidden, " (the embedding and the hidden state are concatenated)");
  DA_CHECK(target_embed.dim() == 2 && target_embed.size(0) == config.vocab.target_vocab &&
               target_embed.size(1) == config.target_hidden,
           "EAGLE-3 head: the target's embedding is ", io::shape_text(target_embed.sizes()), ", expected [",
           config.vocab.target_vocab, ", ", config.target_hidden, "]");
  embed_ = target_embed.detach().to(options);
  fc_ = register_module("fc", linear(3 * config.target_hidden, c.hidden_size, options));
  midlayer_ = register_module("midlayer", std::make_shared<Eagle3Layer>(c, options));
  norm_ = register_module("norm", std::make_shared<Norm>(c.hidden_size, options))->weight;
  lm_head_ = register_module("lm_head", linear(c.hidden_size, config.vocab.size(), options));
  d2t_ = register_buffer("d2t", torch::tensor(config.vocab.d2t(), torch::kInt64).to(options.device()));
  const std::vector<uint8_t> t2d = config.vocab.t2d();
  t2d_ = register_buffer("t2d", torch::from_blob(const_cast<uint8_t*>(t2d.data()), {static_cast<int64_t>(t2d.size())},
                                                 torch::kUInt8)
                                    .to(options.device(), torch::kBool));
  inv_freq_ = rope_inv_freq(c).to(options.device());
  if (!initialise) return;
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    if (p.value().dim() == 1)
      p.value().fill_(1.0);
    else
      p.value().normal_(0.0, 0.02);
  }
}

int64_t Eagle3Head::num_params() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

Tensor Eagle3Head::project(const std::vector<Tensor>& taps) {
  DA_CHECK(taps.size() == 3, "EAGLE-3 head: 3 target hidden states expected, got ", taps.size());
  return fc_->forward(torch::cat(taps, -1).to(fc_->weight.scalar_type()));
}

Tensor Eagle3Head::logits(const Tensor& h) {
  return lm_head_->forward(rms(h, norm_, config_.layer.rms_norm_eps));
}

Tensor Eagle3Head::to_target(const Tensor& draft_ids) const { return draft_ids + d2t_.index({draft_ids}); }

namespace {
// cos, sin [B, 1, T, head_dim] of positions [B, T] in `dtype`, as transformers computes them (fp32, then cast).
std::pair<Tensor, Tensor> rotary(const Tensor& inv_freq, const Tensor& positions, torch::ScalarType dtype) {
  const Tensor freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq;
  const Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype).unsqueeze(1), emb.sin().to(dtype).unsqueeze(1)};
}
}  // namespace

std::vector<Tensor> Eagle3Head::unroll(const Tensor& g, const std::vector<Tensor>& inputs) {
  return unroll_with(g, static_cast<int64_t>(inputs.size()),
                     [&](size_t i, const std::vector<Tensor>&) { return inputs[i]; });
}

std::vector<Tensor> Eagle3Head::draft_chain(const Tensor& g, const Tensor& first, int64_t steps) {
  return unroll_with(g, steps, [&](size_t i, const std::vector<Tensor>& out) {
    return i == 0 ? first : to_target(logits(out.back()).argmax(-1));
  });
}

std::vector<Tensor> Eagle3Head::unroll_with(const Tensor& g, int64_t steps,
                                            const std::function<Tensor(size_t, const std::vector<Tensor>&)>& input) {
  Eagle3Layer& m = *midlayer_;
  const int64_t B = g.size(0), T = g.size(1), groups = m.heads / m.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(m.head_dim));
  const Tensor t = torch::arange(T, g.options().dtype(torch::kInt64)).expand({B, T});
  const Tensor causal = (torch::arange(T, t.options()).view({1, T}) <= torch::arange(T, t.options()).view({T, 1}));
  std::vector<Tensor> keys, values, out;  // per step: [B, heads, T, head_dim] (kv heads repeated)
  Tensor hidden = g;
  for (size_t i = 0; i < static_cast<size_t>(steps); ++i) {
    const Tensor tokens = input(i, out);
    DA_CHECK(tokens.dim() == 2 && tokens.size(0) == B && tokens.size(1) == T,
             "EAGLE-3 head: step ", i, "'s tokens are ", io::shape_text(tokens.sizes()), ", expected [", B, ", ", T, "]");
    const Tensor x = m.input(torch::embedding(embed_, tokens), hidden);
    const auto [cos, sin] = rotary(inv_freq_, t + static_cast<int64_t>(i), x.scalar_type());
    const Tensor q = m.heads_of(m.q_proj, x, m.heads, cos, sin);
    keys.push_back(m.heads_of(m.k_proj, x, m.kv_heads, cos, sin).repeat_interleave(groups, 1));
    values.push_back(m.heads_of(m.v_proj, x, m.kv_heads, {}, {}).repeat_interleave(groups, 1));
    // Step i at t sees step 0's keys at positions <= t and steps 1..i at t only: the causal block, then the diagonals.
    std::vector<Tensor> scores = {
        torch::matmul(q, keys[0].transpose(-1, -2)).masked_fill(causal.logical_not(), -INFINITY)};
    for (size_t j = 1; j <= i; ++j) scores.push_back((q * keys[j]).sum(-1, true));
    const Tensor p = torch::softmax(torch::cat(scores, -1).to(torch::kFloat32) * scale, -1).to(q.scalar_type());
    Tensor a = torch::matmul(p.narrow(-1, 0, T), values[0]);
    for (size_t j = 1; j <= i; ++j) a = a + p.narrow(-1, T + static_cast<int64_t>(j) - 1, 1) * values[j];
    hidden = m.finish(hidden, a);
    out.push_back(hidden);
  }
  return out;
}

Eagle3Head::Cache Eagle3Head::new_cache(int64_t capacity) const {
  const io::LlamaConfig& c = config_.layer;
  Cache cache;
  cache.k = torch::zeros({1, c.num_key_value_heads, capacity, c.head_dim}, embed_.options());
  cache.v = torch::zeros_like(cache.k);
  return cache;
}

Tensor Eagle3Head::append(Cache& cache, const Tensor& g, const Tensor& next) {
  Eagle3Layer& m = *midlayer_;
  const int64_t n = g.size(1), start = cache.length, end = start + n;
  DA_CHECK(end <= cache.k.size(2), "EAGLE-3 head: the cache holds ", cache.k.size(2), " positions, ", end,
           " are needed");
  const Tensor x = m.input(torch::embedding(embed_, next), g);
  const Tensor positions = torch::arange(start, end, next.options().dtype(torch::kInt64)).view({1, n});
  const auto [cos, sin] = rotary(inv_freq_, positions, x.scalar_type());
  cache.k.narrow(2, start, n).copy_(m.heads_of(m.k_proj, x, m.kv_heads, cos, sin));
  cache.v.narrow(2, start, n).copy_(m.heads_of(m.v_proj, x, m.kv_heads, {}, {}));
  cache.length = end;
  const Tensor q = m.heads_of(m.q_proj, x, m.heads, cos, sin);
  const Tensor mask = torch::arange(end, positions.options()).view({1, 1, 1, end}) <= positions.view({1, 1, n, 1});
  const double scale = 1.0 / std::sqrt(static_cast<double>(m.head_dim));
  const Tensor a = at::scaled_dot_product_attention(q, cache.k.narrow(2, 0, end), cache.v.narrow(2, 0, end), mask,
                                                    0.0, false, scale, /*enable_gqa=*/m.kv_heads != m.heads);
  return m.finish(g, a);
}

Tensor Eagle3Head::step(Cache& cache, const Tensor& h, const Tensor& token) { return append(cache, h, token); }

void save_eagle3(const Eagle3Head& head, const std::filesystem::path& dir, torch::ScalarType dtype,
                 const std::filesystem::path& tokenizer_dir) {
  const Eagle3Config& c = head.config();
  io::LlamaConfig layer = c.layer;
  layer.num_hidden_layers = 1;
  layer.vocab_size = c.vocab.target_vocab;
  layer.tie_word_embeddings = false;
  layer.dtype = io::dtype_name_of(dtype) == "BF16" ? "bfloat16" : io::dtype_name_of(dtype) == "F16" ? "float16" : "float32";
  nlohmann::json j = io::to_hf_json(layer);
  j["architectures"] = {"LlamaForCausalLMEagle3"};
  j["draft_vocab_size"] = c.vocab.size();
  j["target_hidden_size"] = c.target_hidden;
  j["eagle_config"] = {{"eagle_aux_hidden_state_layer_ids", c.taps}};
  fs::AtomicDir out(dir);
  fs::write_file_atomic(out.path() / "config.json", j.dump(2) + "\n");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& p : head.named_parameters())
    tensors.emplace_back(p.key(), p.value().detach().to(torch::kCPU, dtype).contiguous());
  for (const auto& b : head.named_buffers()) tensors.emplace_back(b.key(), b.value().detach().to(torch::kCPU).contiguous());
  io::save_safetensors(out.path() / "model.safetensors", tensors, {{"format", "pt"}});
  copy_tokenizer_files(tokenizer_dir, out.path());
  out.commit();
}

std::shared_ptr<Eagle3Head> load_eagle3(const std::filesystem::path& dir, const Tensor& target_embed,
                                        torch::Device device, torch::ScalarType dtype) {
  const std::filesystem::path config_file = dir / "config.json", weights = dir / "model.safetensors";
  DA_CHECK(std::filesystem::is_regular_file(config_file), config_file.string(),
           ": no such file (not an EAGLE-3 head directory)");
  const nlohmann::json j = io::read_json_file(config_file);
  const auto integer = [&](const char* key) {
    DA_CHECK(j.contains(key) && j[key].is_number_integer(), config_file.string(), ": '", key,
             "' is missing or not an integer (an EAGLE-3 head's config names it)");
    return j[key].get<int64_t>();
  };
  Eagle3Config c;
  c.layer = io::read_hf_config(config_file);
  DA_CHECK(c.layer.num_hidden_layers == 1, config_file.string(), ": num_hidden_layers is ", c.layer.num_hidden_layers,
           "; an EAGLE-3 head has one layer");
  c.target_hidden = j.contains("target_hidden_size") ? integer("target_hidden_size") : c.layer.hidden_size;
  const int64_t draft_vocab = integer("draft_vocab_size");
  DA_CHECK(j.contains("eagle_config") && j["eagle_config"].contains("eagle_aux_hidden_state_layer_ids") &&
               j["eagle_config"]["eagle_aux_hidden_state_layer_ids"].is_array(),
           config_file.string(), ": 'eagle_config.eagle_aux_hidden_state_layer_ids' is missing (the target layers the head reads)");
  for (const auto& t : j["eagle_config"]["eagle_aux_hidden_state_layer_ids"]) {
    DA_CHECK(t.is_number_integer(), config_file.string(), ": eagle_aux_hidden_state_layer_ids holds a non-integer");
    c.taps.push_back(t.get<int64_t>());
  }
  DA_CHECK(target_embed.dim() == 2 && target_embed.size(0) == c.layer.vocab_size &&
               target_embed.size(1) == c.target_hidden,
           config_file.string(), ": the head is for a target of vocabulary ", c.layer.vocab_size, " and hidden size ",
           c.target_hidden, "; this target's embedding is ", io::shape_text(target_embed.sizes()));
  const io::SafetensorsFile f = io::SafetensorsFile::open(weights);
  for (const char* name : {"d2t", "t2d"})
    DA_CHECK(f.contains(name), weights.string(), ": no tensor '", name, "' (the draft vocabulary's maps)");
  const Tensor d2t = f.get("d2t").to(torch::kInt64).contiguous(), t2d = f.get("t2d").to(torch::kUInt8).contiguous();
  DA_CHECK(d2t.dim() == 1 && d2t.size(0) == draft_vocab && t2d.dim() == 1 && t2d.size(0) == c.layer.vocab_size,
           weights.string(), ": d2t ", io::shape_text(d2t.sizes()), " and t2d ", io::shape_text(t2d.sizes()),
           " do not match draft_vocab_size ", draft_vocab, " and vocab_size ", c.layer.vocab_size);
  c.vocab = data::draft_vocab_from_maps(std::vector<int64_t>(d2t.data_ptr<int64_t>(), d2t.data_ptr<int64_t>() + draft_vocab),
                                        std::vector<uint8_t>(t2d.data_ptr<uint8_t>(), t2d.data_ptr<uint8_t>() + t2d.size(0)),
                                        weights.string().c_str());
  auto head = std::make_shared<Eagle3Head>(c, target_embed, torch::TensorOptions().device(device).dtype(dtype), false);
  std::set<std::string> expected, present;
  for (const auto& e : f.entries())
    if (e.name != "embed_tokens.weight") present.insert(e.name);  // an engine's optional copy of the target's
  torch::NoGradGuard no_grad;
  for (auto& p : head->named_parameters()) {
    expected.insert(p.key());
    if (!f.contains(p.key())) continue;
    const Tensor t = f.get(p.key());
    DA_CHECK(t.sizes() == p.value().sizes(), weights.string(), ": tensor '", p.key(), "' is ", io::shape_text(t.sizes()),
             ", the config asks for ", io::shape_text(p.value().sizes()));
    p.value().copy_(t);
  }
  expected.insert("d2t"), expected.insert("t2d");
  io::check_tensor_names(weights.string(), present, expected);
  return head;
}

}  // namespace draftalign::model
