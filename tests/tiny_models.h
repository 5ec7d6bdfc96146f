// tiny_models.h: tiny Llama checkpoints with SmolLM2's vocabulary and tokenizer, for the end-to-end tests that run
// the real binary on a target and a drafter (generate, distill, evaluate). Needs torch; test_util.h does not.
#pragma once

#include <filesystem>

#include "model/llama.h"
#include "test_util.h"

namespace draftalign::testing {

// Saves a tiny Llama (tiny_smol_config) with SmolLM2's tokenizer files to `dir`. `norm_scale` multiplies the final
// norm (a large one gives a peaked target). With `like`, the embeddings, final norm and output head are copied from
// that checkpoint: what pretraining on the same text gives a drafter (it starts near the target, not at random).
inline std::filesystem::path save_tiny(const std::filesystem::path& dir, int64_t layers, uint64_t seed,
                                       double norm_scale, const std::filesystem::path& like = {}) {
  torch::manual_seed(seed);
  model::Llama m(tiny_smol_config(layers));
  {
    torch::NoGradGuard no_grad;
    m.named_parameters()["model.norm.weight"].mul_(norm_scale);
    if (!like.empty()) {
      auto src = model::load_llama(like)->named_parameters();
      for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"})
        m.named_parameters()[name].copy_(src[name]);
    }
  }
  model::save_llama(m, dir, torch::kFloat32, kSmolDir);
  return dir;
}

}  // namespace draftalign::testing
