// generation.h: batched sampling from a Llama with the KV cache and continuous batching.
//
// A fixed number of slots decode together. A slot whose sequence finishes (an end token, a stop string, the length
// limit) is refilled with the next request at once: its cache row is reset and the new prompt is prefilled in one
// forward pass next to the other rows' single decode tokens, so the batch stays full until the queue runs dry. The
// prompts' common prefix is prefilled once and copied into each row's cache (set_prefix_sharing).
//
// Sampling is reproducible per request, whatever the batch it runs in: every request carries its own seed, and each
// token is drawn by inverse-CDF sampling of the (temperature, top-k, top-p filtered) distribution with one uniform
// number from that request's own generator. Only the uniforms cross from the host; the distributions stay on the
// device. temperature 0 is greedy (argmax).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/finish.h"
#include "model/llama.h"

namespace draftalign::tok {
class Tokenizer;
}

namespace draftalign::model {

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy
  double top_p = 1.0;
  int64_t top_k = 0;  // 0 = off
  int64_t max_new_tokens = 256;
  std::vector<int64_t> stop_ids;         // end tokens (kept in the response)
  std::vector<std::string> stop_strings;  // the response ends with the token that completes one (needs a tokenizer)
};

struct Request {
  int64_t id = 0;
  std::vector<int64_t> prompt;
  uint64_t seed = 0;
};

struct Completion {
  int64_t id = 0;
  std::vector<int64_t> tokens;  // the response
  Finish finish = Finish::kLength;
  torch::Tensor topk_ids;       // [tokens, k] int64, the target's k most likely tokens at each step (k > 0)
  torch::Tensor topk_logprobs;  // [tokens, k] fp32, their log-probabilities at temperature 1
};

// A uniform number in [0, 1) from 53 random bits: the same on every platform and standard library (unlike
// std::uniform_real_distribution), so seeded samples reproduce anywhere.
inline double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// splitmix64: a well-mixed 64-bit seed from a run seed and an index (request, prompt), so neighbouring indices get
// unrelated random streams.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The next-token distribution's filters, batched: logits [B, V] -> probabilities [B, V] (fp32).
torch::Tensor sampling_probs(const torch::Tensor& logits, double temperature, double top_p, int64_t top_k);

class Generator {
 public:
  // `tokenizer` is needed only for stop strings. `topk_logprobs` > 0 records that many log-probabilities per token.
  Generator(Llama& model, SamplingParams params, int64_t batch_size, int64_t topk_logprobs = 0,
            const tok::Tokenizer* tokenizer = nullptr);

  // Runs every request to completion; returns completions in request order. `on_token(n)` reports n more tokens.
  std::vector<Completion> run(const std::vector<Request>& requests,
                              const std::function<void(int64_t)>& on_token = {});

  // Prefix sharing (on by default): the requests' common prompt prefix (the chat template's system prompt, usually)
  // is prefilled once and its keys and values copied into each row's cache, as vLLM's prefix caching does; each row
  // prefills only the rest of its prompt. shared_prefix() is how many tokens the last run shared.
  void set_prefix_sharing(bool on) { share_prefix_ = on; }
  int64_t shared_prefix() const { return shared_prefix_; }

 private:
  Llama& model_;
  SamplingParams params_;
  int64_t batch_size_, topk_;
  const tok::Tokenizer* tokenizer_;
  bool share_prefix_ = true;
  int64_t shared_prefix_ = 0;
};

// The reference decoder the batched Generator and the speculative decoders are tested against: greedy decoding of a
// ragged batch with the KV cache, each prompt gets up to max_new tokens, stopping after any of
// `stop_ids`. Returns the new tokens of each prompt (the stop token included).
std::vector<std::vector<int64_t>> greedy_decode(Llama& model, const std::vector<std::vector<int64_t>>& prompts,
                                                int64_t max_new, const std::vector<int64_t>& stop_ids = {});

}  // namespace draftalign::model
