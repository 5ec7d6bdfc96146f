// eagle3.h: an EAGLE-3 draft head (Li et al. 2025; SafeAILab/EAGLE eagle/traineagle3, SpecForge), the drafter that
// reads the target instead of being a small model of its own. At a position t whose next token x_{t+1} is known:
//   g_t   = fc(concat of the target's hidden states at three taps)       [3 * target_hidden] -> [hidden]
//   h_t   = midlayer(input_layernorm(embed(x_{t+1})), hidden_norm(g_t))   one decoder layer over [2 * hidden]
//   logits = lm_head(norm(h_t))                                           over the draft vocabulary (d2t / t2d)
// predicts x_{t+2}. Each further draft step feeds the head its own output: step i at t takes h^{i-1}_t in place of
// g_t and embed(x_{t+1+i}), sits at position t + i, and attends to the step-0 keys of positions <= t and to its own
// earlier steps at t (positions t+1 .. t+i), as a decoder with a KV cache does when it drafts a chain.
//
// unroll() is that chain for every position at once (EAGLE-3's training-time test, k steps); Eagle3Cache + append() +
// step() are the same computation one position at a time through a KV cache, as the speculative decoder runs it.
// The embedding is the target's own (frozen, not a parameter). Parameter names are the EAGLE-3 checkpoint's: fc.weight,
// midlayer.{input_layernorm,hidden_norm,post_attention_layernorm}.weight, midlayer.self_attn.{q,k,v,o}_proj.weight,
// midlayer.mlp.{gate,up,down}_proj.weight, norm.weight, lm_head.weight; buffers d2t and t2d.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "data/draft_vocab.h"
#include "io/hf_config.h"

namespace draftalign::model {

struct Eagle3Config {
  io::LlamaConfig layer;     // the midlayer's shape (hidden, heads, kv heads, head_dim, intermediate, eps, rope)
  int64_t target_hidden = 0;  // the target's hidden size (fc's input is 3 x this)
  std::vector<int64_t> taps;  // the target's hidden-state indices it reads (Taps::at), 3 of them
  data::DraftVocab vocab;     // the draft vocabulary over the target's
};

struct Eagle3Layer;  // the midlayer (eagle3.cpp)

class Eagle3Head : public torch::nn::Module {
 public:
  // target_embed [target vocab, target hidden]: the target's token embedding (held, not trained). The midlayer's
  // hidden size must equal the target's (EAGLE-3 concatenates the two).
  Eagle3Head(const Eagle3Config& config, torch::Tensor target_embed, torch::TensorOptions options = {},
             bool initialise = true);
  const Eagle3Config& config() const { return config_; }
  int64_t num_params() const;

  // taps: the target's hidden states at config().taps, each [B, T, target_hidden] -> g [B, T, hidden].
  torch::Tensor project(const std::vector<torch::Tensor>& taps);
  // The training-time test: g [B, T, hidden], inputs[i] [B, T] the token embedded at step i (x_{t+1+i}).
  // Returns each step's final hidden states [B, T, hidden] (before norm); logits() projects them.
  std::vector<torch::Tensor> unroll(const torch::Tensor& g, const std::vector<torch::Tensor>& inputs);
  // The same chain drafting on its own path: step 0 embeds `first` [B, T], step i >= 1 its step i - 1's greedy draft
  // (as target ids). Returns `steps` steps' hidden states, as unroll.
  std::vector<torch::Tensor> draft_chain(const torch::Tensor& g, const torch::Tensor& first, int64_t steps);
  // norm + lm_head: [.., hidden] -> [.., draft vocab]
  torch::Tensor logits(const torch::Tensor& h);
  // Draft ids -> target ids (any shape).
  torch::Tensor to_target(const torch::Tensor& draft_ids) const;

  // Decoding, batch 1. The cache holds one key/value per position: positions < length are the step-0 entries of the
  // accepted prefix (append), later ones a draft chain (step), dropped by lowering length.
  struct Cache {
    torch::Tensor k, v;  // [1, kv_heads, capacity, head_dim]
    int64_t length = 0;
  };
  Cache new_cache(int64_t capacity) const;
  // Step-0 entries for n new positions: g [1, n, hidden], next [1, n] (each position's next token). Returns h [1, n, hidden].
  torch::Tensor append(Cache& cache, const torch::Tensor& g, const torch::Tensor& next);
  // One chain step: h [1, 1, hidden] (the previous step's output), token [1, 1] (the token it drafted).
  torch::Tensor step(Cache& cache, const torch::Tensor& h, const torch::Tensor& token);

 private:
  // unroll's body: step i embeds input(i, outputs of the steps before it).
  std::vector<torch::Tensor> unroll_with(
      const torch::Tensor& g, int64_t steps,
      const std::function<torch::Tensor(size_t, const std::vector<torch::Tensor>&)>& input);

  Eagle3Config config_;
  torch::Tensor embed_;  // [target vocab, hidden], frozen
  torch::nn::Linear fc_{nullptr}, lm_head_{nullptr};
  std::shared_ptr<Eagle3Layer> midlayer_;
  torch::Tensor norm_, d2t_, t2d_;
  torch::Tensor inv_freq_;
};

// Writes `head` in the EAGLE-3 checkpoint layout that vLLM's and SGLang's llama_eagle3 load (read from the vLLM 0.34.0
// sdist, vllm/model_executor/models/llama_eagle3.py): config.json (architectures LlamaForCausalLMEagle3, one hidden
// layer, vocab_size the target's, draft_vocab_size, target_hidden_size, eagle_config.eagle_aux_hidden_state_layer_ids
// = the taps) and model.safetensors (the parameters in `dtype`, d2t int64, t2d bool; no embed_tokens: the engines take
// the target's). Written into a temporary sibling and renamed: `dir` is complete or untouched.
// With `tokenizer_dir`, its tokenizer files go in too (the target's: the head shares its vocabulary).
void save_eagle3(const Eagle3Head& head, const std::filesystem::path& dir, torch::ScalarType dtype = torch::kFloat32,
                 const std::filesystem::path& tokenizer_dir = {});

// Loads a head written by save_eagle3 (or by EAGLE-3 / SpecForge in that layout) for a target whose token embedding is
// `target_embed` [target vocab, target hidden]. Every tensor's name and shape, the maps' agreement and the config's
// fit to the target are checked; errors name the file and the key or tensor.
std::shared_ptr<Eagle3Head> load_eagle3(const std::filesystem::path& dir, const torch::Tensor& target_embed,
                                        torch::Device device = torch::kCPU, torch::ScalarType dtype = torch::kFloat32);

}  // namespace draftalign::model
