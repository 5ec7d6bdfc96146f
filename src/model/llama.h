// llama.h: the Llama-architecture decoder every stage runs: the drafter being trained and the target it learns from.
// RMSNorm, rotary embeddings (rope_theta, Llama-3 rope scaling), grouped-query attention through LibTorch's fused
// scaled_dot_product_attention, SwiGLU MLP, tied or untied embeddings. Parameter names are the Hugging Face ones
// ("model.layers.0.self_attn.q_proj.weight", ...), so loading and exporting a checkpoint is a walk over
// named_parameters(). The numerics follow transformers' LlamaForCausalLM: RMSNorm and RoPE in fp32, then the model dtype.
//
// Two forward passes:
//   forward(tokens, segments)     training: causal over [B, T]; with `segments` (packed documents), a token attends
//                                 only to earlier tokens of its own document and positions restart at each document.
//   forward(tokens, cache, n_new) decoding: appends tokens to each row of a KV cache whose rows may hold different
//                                 lengths (a ragged batch); row b takes only its first n_new[b] tokens.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "io/hf_config.h"

namespace draftalign::model {

// Per-layer keys and values for a batch of sequences. Row b holds lengths[b] valid positions; positions past it are
// free (a rejected speculative draft is rolled back by lowering lengths).
struct KVCache {
  std::vector<torch::Tensor> k, v;  // per layer [B, kv_heads, capacity, head_dim]
  torch::Tensor lengths;            // [B] int64, on the cache's device

  int64_t batch() const { return lengths.size(0); }
  int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
};

// Hidden states read out of the residual stream on the way through the layers, for a head that drafts from them
// (EAGLE-3). Index i is transformers' output_hidden_states[i]: 0 the token embeddings, i >= 1 the output of decoder
// layer i - 1 (before the final norm), which is also the input of layer i as vLLM's aux_hidden_state_layers count.
struct Taps {
  std::vector<int64_t> at;         // ascending, distinct, each in [0, num_hidden_layers]
  std::vector<torch::Tensor> out;  // filled by the forward: out[j] [B, T, hidden] at index at[j]
};

struct Body;    // model.*: embeddings, layers, final norm (llama.cpp)
struct Weight;  // a module holding one parameter named "weight" (llama.cpp)

class Llama : public torch::nn::Module {
 public:
  // Parameters made with `options` (dtype, device) and, when `initialise`, set as transformers does for a fresh model:
  // normal(0, 0.02) matrices, unit norm weights. Loading skips the initialisation.
  explicit Llama(const io::LlamaConfig& config, torch::TensorOptions options = {}, bool initialise = true);

  const io::LlamaConfig& config() const { return config_; }
  int64_t num_params() const;  // tied embeddings counted once

  // tokens [B, T] int64 -> logits [B, T, vocab]. segments [B, T] (optional): document ids of packed sequences,
  // non-decreasing along each row.
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& segments = {});
  // The final hidden states [B, T, hidden] (after the last norm), and the output projection applied to them: losses
  // that need only some positions project only those.
  // `taps` (optional) receives the hidden states at its indices.
  torch::Tensor hidden(const torch::Tensor& tokens, const torch::Tensor& segments = {}, Taps* taps = nullptr);
  torch::Tensor logits(const torch::Tensor& hidden);
  // hidden() with explicit positions [B, T] (int64) and attention mask [B or 1, 1, T, T] (bool, true = attend): draft
  // branches that share one prefix, each at its own positions, in one pass (evaluators/onepass.h). Full attention
  // models only.
  torch::Tensor hidden(const torch::Tensor& tokens, const torch::Tensor& positions, const torch::Tensor& mask);
  // The output projection's weight [head rows, hidden]: lm_head.weight, or model.embed_tokens.weight when tied; with a
  // draft vocabulary, only its rows (a differentiable gather). Losses that fuse the head (train/losses.h,
  // fused_head_loss) multiply by it themselves. Under NoGradGuard the gathered rows are cached (decoding gathers
  // once per weight update, not once per step); with autograd on, a fresh gather each call.
  torch::Tensor head_weight() const;

  // The draft vocabulary (config().draft_token_ids; model.draft_vocab_size): the output head covers only these target
  // ids, and logits() gives every other id -inf, so a drafter samples and argmaxes over the draft vocabulary while
  // every consumer of its logits keeps working in target ids. The rows stay in the full embedding (and lm_head, when
  // untied), so a new vocabulary is a new choice of rows, not new weights.
  void set_draft_vocab(const std::vector<int64_t>& ids);
  bool has_draft_vocab() const { return !config_.draft_token_ids.empty(); }
  int64_t head_rows() const;  // draft vocabulary size, or vocab_size
  // Target ids [N] -> their rows in head_weight() (the draft index), -1 for ids outside the draft vocabulary; the ids
  // themselves without one.
  torch::Tensor head_row_of(const torch::Tensor& ids) const;
  // The head's target ids [head rows] int64 on this model's device (undefined without a draft vocabulary).
  const torch::Tensor& draft_ids() const;

  // An empty cache on this model's device and dtype.
  KVCache new_cache(int64_t batch, int64_t capacity) const;
  // Appends tokens [B, T] to the cache: row b's first n_new[b] tokens (all T when n_new is undefined) are real, the
  // rest padding that is written past the row's end and never attended to. Returns logits [B, T, vocab]; rows' logits
  // past n_new[b] are meaningless.
  torch::Tensor forward(const torch::Tensor& tokens, KVCache& cache, const torch::Tensor& n_new = {},
                        Taps* taps = nullptr);
  // The same append, projecting only each row's last real token (n_new[b] - 1): logits [B, vocab]. A prefill needs no
  // more, and the output projection over a whole prompt is most of a prefill's work at a 49k-152k vocabulary.
  torch::Tensor forward_last(const torch::Tensor& tokens, KVCache& cache, const torch::Tensor& n_new = {},
                             Taps* taps = nullptr);
  // forward(tokens, cache, n_new) with shapes fixed by the cache alone and no host synchronisation, so that a CUDA
  // graph can capture it: every row's keys span the cache's whole capacity (masked past the row's position), and
  // nothing is checked on the device. The caller keeps lengths + n_new within the capacity. n_new: all T if undefined.
  torch::Tensor forward_static(const torch::Tensor& tokens, KVCache& cache, const torch::Tensor& n_new = {});

 private:
  torch::Tensor run(const torch::Tensor& tokens, const torch::Tensor& positions, const torch::Tensor& mask,
                    KVCache* cache, Taps* taps = nullptr);
  void check_taps(const Taps* taps) const;
  // n_new as the cache's lengths are kept (int64, on its device), or all T tokens of every row when undefined.
  static torch::Tensor new_counts(const torch::Tensor& tokens, const KVCache& cache, const torch::Tensor& n_new);
  // forward's checks, then decode over the keys in use: the final hidden states [B, T, hidden].
  torch::Tensor append(const torch::Tensor& tokens, KVCache& cache, const torch::Tensor& n_real, Taps* taps = nullptr);
  // Both cached forwards: tokens appended at each row's length, attending over the cache's first `keys` positions,
  // then each row's length raised by n_real [B]. Returns the final hidden states.
  torch::Tensor decode(const torch::Tensor& tokens, KVCache& cache, const torch::Tensor& n_real, int64_t keys,
                       Taps* taps = nullptr);

  io::LlamaConfig config_;
  std::shared_ptr<Body> body_;
  std::shared_ptr<Weight> lm_head_;  // null when tied to model.embed_tokens
  torch::Tensor inv_freq_;  // [head_dim / 2] fp32 RoPE frequencies; not a buffer, so .to(bf16) leaves it fp32
  // The draft vocabulary on the weights' device: ids [N] and the inverse map [vocab] (-1 outside); undefined without.
  mutable torch::Tensor draft_ids_, draft_row_;
  // head_weight()'s gathered rows without autograd, and the weight they were gathered from (version, storage).
  mutable torch::Tensor head_rows_;
  mutable struct {
    int64_t version = -1;
    const void* data = nullptr;
  } head_rows_of_;
};

// RoPE inverse frequencies exactly as transformers computes them (fp32), Llama-3 scaling included.
torch::Tensor rope_inv_freq(const io::LlamaConfig& config);

// On the CPU without gradients a single-row projection runs as two rows through W x^T, faster there than the one-row
// GEMV (on by default; llama.cpp's project). Off only to time both forms side by side (bench_speculative).
void set_cpu_pad_single_row(bool on);

// Loads an HF checkpoint directory (validated against the Llama layout) onto `device` in `dtype`.
std::shared_ptr<Llama> load_llama(const std::filesystem::path& dir, torch::Device device = torch::kCPU,
                                  torch::ScalarType dtype = torch::kFloat32);

// Writes `model` as an HF checkpoint directory that transformers' AutoModelForCausalLM and vLLM open: config.json,
// generation_config.json, model.safetensors (in `dtype`), and the tokenizer files found in `tokenizer_dir` (may be
// empty). Written into a temporary sibling and renamed into place: `dir` is complete or untouched.
void save_llama(const Llama& model, const std::filesystem::path& dir, torch::ScalarType dtype = torch::kFloat32,
                const std::filesystem::path& tokenizer_dir = {});

// A drafter with a draft vocabulary as a plain Llama over the whole vocabulary, for transformers and vLLM (`export`):
// an untied lm_head [vocab, hidden] whose draft-vocabulary rows are the head's and whose other rows are zero, so those
// tokens' logits are exactly 0. Its greedy token is the drafter's wherever the drafter's top logit is positive (a
// token outside then never wins); its sampled drafts give the outside tokens probability exp(0) / Z. Without a draft
// vocabulary, a copy.
std::shared_ptr<Llama> with_full_head(const Llama& drafter);

// A target's (teacher's) head restricted to a drafter's draft vocabulary: its rows at drafter.draft_ids() [N, H'], so
// a distribution over them is the target's renormalised on the draft vocabulary; the whole head without one.
torch::Tensor head_rows_for(const Llama& target, const Llama& drafter);

// Copies the tokenizer and chat-template files found in `from` (tokenizer.json / .model, tokenizer_config.json,
// special_tokens_map.json, chat_template.jinja) into `to`; nothing when `from` is empty.
void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace draftalign::model
