// losses.h: the distillation losses of stage 3, in plain LibTorch (the reference every faster path is tested against).
// Rows are the masked response positions, already selected: student and teacher logits are [N, V]. With temperature T,
// p = softmax(teacher / T) (no gradient), q = softmax(student / T), and every loss is the mean over the N rows of
//   fkl    sum_x p log(p / q)
//   rkl    sum_x q log(q / p)
//   tvd    1/2 sum_x |p - q|
//   tvdpp  a surrogate whose gradient is the policy gradient of the reward r(x) = 1[log p(x) > log q(x)], normalised
//          to r~ = (r - mean r) / (std r + eps) per row (scope token) or over all N rows (scope batch), the mean and
//          std taken under q (stats q: mu = E_q[r], the expected mean reward of tokens the drafter samples, as a
//          policy-gradient baseline over sampled tokens would be) or uniformly over the V entries (stats vocab:
//          mu = |{x : p > q}| / V, set by the tail where p and q are both negligible; docs/TVDPP.md), and weighted by
//            q        -sum_x sg[q(x) r~(x)] log q(x): gradient wrt student logit z_j = -(q_j / T)(r~_j - sum_x q_x r~_x)
//            uniform  -(1/V) sum_x r~(x) log q(x)
//          (the gradient of TVD itself is -(q_j / T)(r_j - sum_x q_x r_x): REINFORCE with reward 1[p > q]).
// The value of tvdpp is the surrogate's, which is not a distance: log tvd and the acceptance statistics to follow it.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>

#include "config/config.h"
#include "kernels/tvd.h"
#include "train/kd_options.h"

namespace draftalign::train {

// The loss (a scalar, differentiable in `student`), averaged over rows. Any float dtype; computed in fp32 at least.
torch::Tensor kd_loss(const torch::Tensor& student, const torch::Tensor& teacher, const KdOptions& o);

// TVD and TVD++ fused (kernels/tvd.h: loss and gradient in one pass, the CUDA kernel on CUDA; an autograd Function).
using kernels::kd_loss_forward_backward;
using kernels::kd_loss_fused;
using kernels::KdFused;

// Per-row expected acceptance of speculative sampling with the drafter q for the target p: alpha = sum_x min(p, q)
// = 1 - TVD(p, q), at temperature T. [N], no gradient.
torch::Tensor acceptance(const torch::Tensor& student, const torch::Tensor& teacher, double temperature);

// The offline teacher's partition of the vocabulary: each row's k stored tokens and one "rest" bucket holding all
// the others, applied to teacher and student alike (temperature 1). The stored top-k log-probs and log(1 - their
// mass) give the teacher's k + 1 bins; the student's are its log-probs gathered at the same ids and the log of its
// mass outside them (a logsumexp over the other tokens, differentiable). Any loss of this file on the two [N, k + 1]
// tensors (they are log-probabilities, so valid logits) is the loss between the coarse-grained distributions; by the
// data-processing inequality its TVD is a lower bound of the true TVD (its alpha an upper bound). With k = V the rest
// bucket is dropped and the bins are the vocabulary reordered: every loss, gradient and alpha is the online one.
struct TopkBins {
  torch::Tensor student;  // [N, k (+ 1)] log-probabilities, differentiable in the student logits
  torch::Tensor teacher;  // [N, k (+ 1)] log-probabilities, no gradient
};
// With `outside` set, a top-k id of -1 is a token the student cannot propose (outside its draft vocabulary,
// model.draft_vocab_size; ids are then the student's columns): its bin is 1e-12 for both and the teacher's mass there
// joins the rest bucket; the student's rest is floored at 1e-12 too. The caller says so (no device-to-host look at the
// ids per chunk); without it every id must be a column.
TopkBins topk_bins(const torch::Tensor& student_logits, const torch::Tensor& topk_ids,
                   const torch::Tensor& topk_logprobs, bool outside = false);

// --- The output head fused with its loss: the [N, V] logits never exist ------------------------------------------
// A loss of logits = hidden W^T, computed over chunks of rows: each chunk's logits are made, scored (the loss and its
// gradient with respect to those logits) and dropped, and only d loss / d hidden [N, H] and d loss / d W [V, H] are
// kept (Liger's fused linear losses). The student's logits, the teacher's (its own hidden states through its own head,
// chunk by chunk) and every [N, V] intermediate of the loss exist for one chunk at a time.

// One chunk's part of the loss.
struct HeadChunk {
  torch::Tensor value;  // scalar: this chunk's contribution (a mean over N rows contributes sum over its rows / N)
  torch::Tensor grad;   // [rows, V]: d value / d logits
};
// Scores rows [begin, end) from their logits [end - begin, V].
using HeadScore = std::function<HeadChunk(const torch::Tensor& logits, int64_t begin, int64_t end)>;

// Rows per chunk for N rows, hidden size H and vocabulary V: Liger's N / ceil(V / H) rounded up to a power of two (a
// chunk's logits about the size of the hidden states [N, H]), but at least 256 rows on the CPU and 1024 on CUDA. Below
// that each chunk's pass over d loss / d W ([V, H] in fp32, read and written once per chunk) costs more than its
// matrix products: with a drafter's small H, Liger's rule gives 16-row chunks, 3.2x the unfused step's time on the CPU
// machine; 128 rows 1.04x, 512 rows 0.89x (docs/PERFORMANCE.md). The CUDA floor is reasoned, not yet measured.
int64_t head_chunk_rows(int64_t rows, int64_t hidden, int64_t vocab, bool cuda);

// The sum of `score`'s values over all chunks of hidden [N, H] W^T (W = `weight` [V, H]), differentiable in both
// (an autograd function: the gradients are computed here, chunk by chunk, and backward scales them). Under CUDA
// autocast the head's matrix products run in bf16, as the unfused head's would. chunk_rows <= 0: head_chunk_rows.
torch::Tensor fused_head_loss(const torch::Tensor& hidden, const torch::Tensor& weight, const HeadScore& score,
                              int64_t chunk_rows = 0);

// A HeadScore's gradient by autograd: `loss(logits)` over a chunk's logits (a leaf that wants a gradient) is any
// differentiable scalar; the chunk's value is its result and the gradient d result / d logits.
HeadChunk score_by_autograd(const torch::Tensor& logits,
                            const std::function<torch::Tensor(const torch::Tensor&)>& loss);

// Next-token cross-entropy as a HeadScore: the mean over the rows whose target (`targets` [N] int64, all N rows) is
// >= 0, `count` of them (a negative target is ignored), in fp32 at least.
HeadChunk cross_entropy_chunk(const torch::Tensor& logits, const torch::Tensor& targets, double count);

// --- Stage 3's objective at the response rows of a micro-batch -------------------------------------------------
//   loss = kd_weight * KD + ce_weight * CE
// KD: the mean over the N rows of distill.loss between the student's and the teacher's distributions (online: the
// teacher's logits from its hidden states; offline: the stored top-k + rest bins, topk_bins), or the CE itself for
// loss = ce. CE: the mean next-token loss over the rows whose target is >= 0 (on-policy rows have none).
struct DistillRows {
  torch::Tensor student_hidden;                // [N, H], differentiable
  torch::Tensor student_head;                  // [V, H], differentiable (Llama::head_weight)
  torch::Tensor teacher_hidden, teacher_head;  // [N, H'], [V, H']: online teacher
  torch::Tensor topk_ids, topk_logprobs;       // [N, k]: offline teacher
  bool topk_outside = false;                   // topk_ids may hold -1 (topk_bins' `outside`)
  torch::Tensor targets;                       // [N] int64: the next token, or -100 where CE does not apply
};
struct DistillTerms {
  torch::Tensor loss;               // differentiable in student_hidden and student_head
  torch::Tensor kd, ce, alpha_sum;  // detached: KD and CE as above, sum over the rows of sum_x min(p, q)
};
// Every row is independent except under tvdpp_scope = batch (one reward mean over all N rows), so the head is fused
// (fused_head_loss: no [N, V] logits, of student or teacher) in chunks of chunk_rows (<= 0: head_chunk_rows; all N
// rows for scope batch). `fused` = false materialises the logits and differentiates through them: the reference.
DistillTerms distill_objective(const DistillRows& rows, const KdOptions& kd, config::Loss loss, double kd_weight,
                               double ce_weight, bool fused = true, int64_t chunk_rows = 0);

}  // namespace draftalign::train
