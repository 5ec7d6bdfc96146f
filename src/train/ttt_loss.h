// ttt_loss.h: the objective of an EAGLE-3 head's training-time test (eagle/traineagle3, SpecForge). The head is
// unrolled k steps (model::Eagle3Head::unroll); step i at position t predicts x_{t+2+i}, and its target is the
// target's distribution there restricted to the draft vocabulary (the target's logits at the draft tokens,
// renormalised by the loss's softmax). A position counts at step i when it is a training position (mask) and the
// target's most likely token there is in the draft vocabulary, as EAGLE-3 masks it; the step's loss (any of the
// framework's distribution losses: FKL, RKL, TVD, TVD++) is the mean over those positions, and the objective is
//   sum_i decay^i loss_i      (decay 0.8 in EAGLE-3 and SpecForge)
#pragma once

#include <torch/torch.h>

#include <vector>

#include "train/losses.h"

namespace draftalign::train {

struct TttLoss {
  torch::Tensor loss;                 // scalar: the weighted sum, differentiable in the head's logits
  std::vector<double> step_loss;      // loss_i (0 for a step with no position)
  std::vector<double> step_agree;     // share of mask positions where the head's argmax is the target's (as target ids)
  std::vector<int64_t> step_rows;     // positions that counted in loss_i
};

// head_logits[i] [B, T, draft vocab]: step i; teacher[i] [B, T, target vocab]: the target's logits of the same
// prediction; mask[i] [B, T] bool: positions that train step i. draft_ids [draft vocab] int64: draft id -> target id.
TttLoss ttt_loss(const std::vector<torch::Tensor>& head_logits, const std::vector<torch::Tensor>& teacher,
                 const std::vector<torch::Tensor>& mask, const torch::Tensor& draft_ids, const KdOptions& kd,
                 double decay = 0.8);

}  // namespace draftalign::train
