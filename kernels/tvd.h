// tvd.h: the fused TVD / TVD++ distillation loss in torch::Tensor terms, as copy.h is for the copy kernel: the
// loss and d loss / d student in one pass from per-row statistics (tvd_launch.h's columns). On CUDA (fp32 or bf16
// logits, either mix) the kernel of tvd.cu computes them without any [N, V] intermediate besides the gradient;
// elsewhere (CPU, fp64) the LibTorch reference in tvd.cpp runs the same algebra, which keeps it under test on every
// machine. The definitions of the losses are train/losses.h's.
#pragma once

#include <torch/torch.h>

#include "train/kd_options.h"

namespace draftalign::kernels {

// The TVD++ reward's std from its mean (r is 0 or 1, so its variance is mu (1 - mu) under any weighting), plus eps.
inline torch::Tensor reward_sd(const torch::Tensor& mu, double eps) { return (mu - mu * mu).clamp_min(0).sqrt() + eps; }

// TVD and TVD++ in one pass that yields the loss and d loss / d student together (train/losses.h's closed forms), with
// no autograd graph. On CUDA (fp32 or bf16 logits, either mix) the fused kernel of kernels/tvd.cu does it without any
// [N, V] intermediate besides the gradient; elsewhere LibTorch runs the same algebra. `grad_out` (optional): a
// row-contiguous tensor like `student` that receives the gradient, which may be `student` itself (in place).
// `allow_row_cache` = false makes the kernel stream every pass even when a row fits in shared memory (benchmarks).
struct KdFused {
  torch::Tensor loss;   // scalar, fp32 (fp64 for fp64 inputs)
  torch::Tensor grad;   // [N, V], the student's dtype: d loss / d student
  torch::Tensor alpha;  // [N]: sum_x min(p, q) per row
};
KdFused kd_loss_forward_backward(const torch::Tensor& student, const torch::Tensor& teacher, const train::KdOptions& o,
                                 torch::Tensor grad_out = {}, bool allow_row_cache = true);

// kd_loss_forward_backward entering autograd as a torch::autograd::Function: backward only scales the stored
// gradient. `alpha_sum` (optional) receives sum over rows of sum_x min(p, q).
torch::Tensor kd_loss_fused(const torch::Tensor& student, const torch::Tensor& teacher, const train::KdOptions& o,
                            torch::Tensor* alpha_sum = nullptr);

}  // namespace draftalign::kernels
