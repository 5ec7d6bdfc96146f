// decode_stream.h: one model's KV cache as a decode drives it, one sequence at a time: the speculative decoder's target
// and a drafter model (speculative.h, drafter.h) each own one.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/error.h"
#include "model/decode_graphs.h"
#include "model/llama.h"

namespace draftalign::eval {

using torch::Tensor;

// A model with its cache and the number of valid positions, kept on the host so a rollback needs no device read.
// On CUDA the short steps (a drafter's token, a target's verification of a draft) replay CUDA graphs
// (model::DecodeGraphs, one per step length); prompts run eagerly, as does every step that reads hidden-state taps.
// Held by a unique_ptr: the graphs keep the cache's address.
struct DecodeStream {
  static constexpr int64_t kMaxGraphTokens = 16;

  model::Llama& model;
  model::KVCache cache;
  int64_t length = 0;
  std::unique_ptr<model::DecodeGraphs> graphs;
  // The tokens whose keys and values fill the cache's first positions since the last prefill (and their taps, when
  // read): a decode only writes past them, so a later decode of the same prompt skips its prefill (a timed turn's
  // repeats).
  std::vector<int64_t> prefilled;
  std::vector<Tensor> prefilled_taps;

  // Makes the cache hold `head` and nothing after it: fed, or kept from the last prefill of the same tokens. With
  // `taps` (indices), returns the hidden states there over `head`.
  std::vector<Tensor> prefill(const std::vector<int64_t>& head, const std::vector<int64_t>& taps = {}) {
    if (head == prefilled && !head.empty() && prefilled_taps.size() == taps.size()) {
      truncate(static_cast<int64_t>(head.size()));
      return prefilled_taps;
    }
    truncate(0);
    prefilled.clear();
    prefilled_taps.clear();
    if (head.empty()) return {};
    model::Taps t{taps, {}};
    feed_last(head, taps.empty() ? nullptr : &t).argmax().item<int64_t>();  // a host read: the prefill has finished
    prefilled = head;
    prefilled_taps = t.out;
    return t.out;
  }

  DecodeStream(model::Llama& m, int64_t capacity) : model(m), cache(m.new_cache(1, capacity)) {
    if (model::use_cuda_graphs(cache.lengths.device())) graphs = std::make_unique<model::DecodeGraphs>(model, cache);
  }

  // Appends tokens; returns their logits [T, V] (and the hidden states at taps->at).
  Tensor feed(const std::vector<int64_t>& tokens, model::Taps* taps = nullptr) {
    const Tensor x = admit(tokens);
    if (graphs && !taps && x.size(1) <= kMaxGraphTokens) return graphs->step(x).squeeze(0);
    return model.forward(x, cache, {}, taps).squeeze(0);
  }
  // Appends tokens; returns the last one's logits [V]. Only that token goes through the output projection (on CUDA a
  // short step still replays the graph, which projects all).
  Tensor feed_last(const std::vector<int64_t>& tokens, model::Taps* taps = nullptr) {
    const Tensor x = admit(tokens);
    if (graphs && !taps && x.size(1) <= kMaxGraphTokens) return graphs->step(x).select(1, -1).squeeze(0);
    return model.forward_last(x, cache, {}, taps).squeeze(0);
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

// The stream in `slot`, made (again) when there is none or it holds fewer than `capacity` positions; emptied.
inline DecodeStream& stream_for(std::unique_ptr<DecodeStream>& slot, model::Llama& m, int64_t capacity) {
  if (!slot || slot->cache.capacity() < capacity) slot = std::make_unique<DecodeStream>(m, capacity);
  slot->truncate(0);
  return *slot;
}

// Makes the stream in `slot` for `capacity` positions and runs a prefill and every block length once through it.
inline void warm(std::unique_ptr<DecodeStream>& slot, model::Llama& m, int64_t capacity, int64_t max_block) {
  DecodeStream& s = stream_for(slot, m, capacity);
  s.prefilled.clear();
  s.feed_last({0});  // a prompt's prefill, then every block length once (on CUDA: each graph captured now)
  for (int64_t t = 1; t <= max_block; ++t) {
    s.feed(std::vector<int64_t>(static_cast<size_t>(t), 0));
    s.truncate(1);
  }
  s.truncate(0);
}

// A decode of `capacity` positions must fit the model `who` (target, drafter).
inline void check_positions(const model::Llama& m, int64_t capacity, const char* who) {
  DA_CHECK(capacity <= m.config().max_position_embeddings, "speculative decoding: a decode of ", capacity,
           " positions (prompt, new tokens and one block past them) exceeds the ", who, "'s ",
           m.config().max_position_embeddings, " positions");
}

}  // namespace draftalign::eval
