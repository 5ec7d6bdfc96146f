#include "train/losses.h"

#include <cmath>
#include <limits>

#include "common/error.h"
#include "kernels/tvd_launch.h"

#if DRAFTALIGN_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#endif

namespace draftalign::train {

using torch::Tensor;

namespace {

using config::Loss;
using config::TvdppScope;
using config::TvdppStats;
using config::TvdppWeighting;

// The reward's std from its mean (r is 0 or 1, so its variance is mu (1 - mu) under any weighting), plus eps.
Tensor reward_sd(const Tensor& mu, double eps) { return (mu - mu * mu).clamp_min(0).sqrt() + eps; }

// The normalised reward r~ of TVD++ for r = 1[log p > log q] ([N, V], no gradient). Its mean and std are q-weighted
// (stats q: mu = E_q[r], the expectation of the mean of rewards of tokens sampled from the drafter) or uniform over
// the vocabulary (stats vocab: mu = |{x : p > q}| / V, which the tail sets). Per row (scope token) or over all N rows
// (scope batch: the mean of the rows' mu).
Tensor normalised_reward(const Tensor& log_p, const Tensor& log_q, const KdOptions& o) {
  const Tensor r = (log_p > log_q).to(log_p.scalar_type());
  Tensor mu =
      o.tvdpp_stats == TvdppStats::kQ ? (log_q.exp() * r).sum(-1, /*keepdim=*/true) : r.mean(-1, /*keepdim=*/true);
  if (o.tvdpp_scope == TvdppScope::kBatch) mu = mu.mean();
  return (r - mu) / reward_sd(mu, o.eps);
}

}  // namespace

Tensor kd_loss(const Tensor& student, const Tensor& teacher, const KdOptions& o) {
  DA_CHECK(student.dim() == 2 && student.sizes() == teacher.sizes(), "kd_loss: student ", student.sizes(),
           " and teacher ", teacher.sizes(), " logits must both be [N, V]");
  DA_CHECK(o.temperature > 0, "kd_loss: temperature must be > 0");
  const auto type = student.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const Tensor log_q = torch::log_softmax(student.to(type) / o.temperature, -1);
  const Tensor log_p = torch::log_softmax(teacher.detach().to(type) / o.temperature, -1);
  const Tensor q = log_q.exp(), p = log_p.exp();
  // w * x with 0 * x = 0 where w = 0, so that -inf logits (probability 0) leave the sums finite: 0 log 0 = 0.
  auto times = [](const Tensor& w, const Tensor& x) { return torch::where(w != 0, w * x, torch::zeros_like(x)); };
  switch (o.loss) {
    case Loss::kFkl:
      return times(p, log_p - log_q).sum(-1).mean();
    case Loss::kRkl:
      return times(q, log_q - log_p).sum(-1).mean();
    case Loss::kTvd:
      return 0.5 * (p - q).abs().sum(-1).mean();
    case Loss::kTvdpp: {
      const Tensor reward = normalised_reward(log_p, log_q.detach(), o);
      if (o.tvdpp_weighting == TvdppWeighting::kQ) return -times(q.detach() * reward, log_q).sum(-1).mean();
      return -(reward * log_q).mean(-1).mean();  // uniform
    }
    case Loss::kCe:
      break;
  }
  throw Error("kd_loss: ce is the next-token loss, not a distance between p and q (distill.cpp computes it)");
}

namespace {

// The fused path. Both devices go through the same algebra: per-row statistics (kernels/tvd_launch.h's columns),
// the loss from the statistics, and a gradient that is affine in q r, q and r with per-row coefficients. On CUDA the
// kernel computes the statistics and the gradient without any [N, V] intermediate; elsewhere LibTorch does, which keeps
// this algebra under test on every machine.
using kernels::TvdStat;

Tensor stat(const Tensor& stats, TvdStat col) { return stats.select(1, col); }

// The reward's mean mu (see normalised_reward): E_q[r] (stats q) or count / V (stats vocab) per row ([N]) for scope
// token, or their mean over the rows (a [1] broadcast) for scope batch.
Tensor reward_mean(const Tensor& stats, const KdOptions& o, int64_t vocab) {
  const Tensor mu = o.tvdpp_stats == TvdppStats::kQ ? stat(stats, kernels::kSumQR)
                                                    : stat(stats, kernels::kCount) / static_cast<double>(vocab);
  if (o.tvdpp_scope == TvdppScope::kBatch) return mu.mean().reshape({1});
  return mu;
}

Tensor loss_from_stats(const Tensor& stats, const KdOptions& o, int64_t vocab) {
  if (o.loss == Loss::kTvd) return (1.0 - stat(stats, kernels::kAlpha)).mean();
  const Tensor mu = reward_mean(stats, o, vocab), sd = reward_sd(mu, o.eps);
  if (o.tvdpp_weighting == TvdppWeighting::kQ)
    return (-(stat(stats, kernels::kSumQRLq) - mu * stat(stats, kernels::kSumQLq)) / sd).mean();
  // sum_x (r - mu) lq from the sums centred on c: sum r (lq - c) - mu sum (lq - c) + c (k - mu V).
  const Tensor centred = stat(stats, kernels::kSumRLq) - mu * stat(stats, kernels::kSumLq) +
                         stat(stats, kernels::kLqMean) * (stat(stats, kernels::kCount) - mu * static_cast<double>(vocab));
  return (-centred / (sd * static_cast<double>(vocab))).mean();
}

// The statistics and the gradient in LibTorch (CPU, float64, or a CUDA build without the kernel).
void stats_and_grad_reference(const Tensor& student, const Tensor& teacher, const KdOptions& o, Tensor& stats,
                              Tensor& grad) {
  const auto type = student.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const int64_t n = student.size(0), v = student.size(1);
  const Tensor u = student.to(type) / o.temperature, w = teacher.to(type) / o.temperature;
  const Tensor max_s = std::get<0>(u.max(-1, true)), max_t = std::get<0>(w.max(-1, true));
  const Tensor lse_s = (u - max_s).exp().sum(-1, true).log(), lse_t = (w - max_t).exp().sum(-1, true).log();
  const Tensor lq = u - max_s - lse_s, q = lq.exp(), lp = w - max_t - lse_t, p = lp.exp();
  const Tensor r = (lp > lq).to(type);  // in log space, as the kernel decides it
  const Tensor q_lq = torch::where(q > 0, q * lq, torch::zeros_like(q));  // 0 log 0 = 0 for -inf student logits
  stats = torch::zeros({n, kernels::kTvdStats}, student.options().dtype(type));
  stats.select(1, kernels::kMaxS).copy_(max_s.squeeze(1));
  stats.select(1, kernels::kLseS).copy_(lse_s.squeeze(1));
  stats.select(1, kernels::kMaxT).copy_(max_t.squeeze(1));
  stats.select(1, kernels::kLseT).copy_(lse_t.squeeze(1));
  stats.select(1, kernels::kCount).copy_(r.sum(-1));
  stats.select(1, kernels::kSumQR).copy_((q * r).sum(-1));
  stats.select(1, kernels::kAlpha).copy_(torch::minimum(p, q).sum(-1));
  stats.select(1, kernels::kSumQLq).copy_(q_lq.sum(-1));
  stats.select(1, kernels::kSumQRLq).copy_((r * q_lq).sum(-1));
  const Tensor lq_mean = lq.mean(-1, true);
  stats.select(1, kernels::kSumRLq).copy_((r * (lq - lq_mean)).sum(-1));
  stats.select(1, kernels::kSumLq).copy_((lq - lq_mean).sum(-1));
  stats.select(1, kernels::kLqMean).copy_(lq_mean.squeeze(1));
  // grad = ca q r + cb q + cc r + cd (kernels/tvd.cu's row_coef).
  const double s = 1.0 / (o.temperature * static_cast<double>(n));
  const Tensor count = stat(stats, kernels::kCount).unsqueeze(1), sum_qr = stat(stats, kernels::kSumQR).unsqueeze(1);
  if (o.loss == Loss::kTvd) {
    grad = -s * q * (r - sum_qr);
  } else {
    const Tensor mu = reward_mean(stats, o, v).unsqueeze(-1), sd = reward_sd(mu, o.eps);
    if (o.tvdpp_weighting == TvdppWeighting::kQ) {
      grad = -(s / sd) * q * (r - sum_qr);
    } else {
      const Tensor c = s / (sd * static_cast<double>(v));
      grad = -c * (r - mu - q * (count - static_cast<double>(v) * mu));
    }
  }
}

#if DRAFTALIGN_WITH_CUDA
kernels::TvdDtype tvd_dtype(const Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 ? kernels::TvdDtype::kBFloat16 : kernels::TvdDtype::kFloat32;
}

bool kernel_takes(const Tensor& student, const Tensor& teacher) {
  auto ok = [](const Tensor& t) { return t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16; };
  return student.is_cuda() && teacher.device() == student.device() && ok(student) && ok(teacher);
}

void stats_and_grad_cuda(const Tensor& student, const Tensor& teacher, const KdOptions& o, bool allow_row_cache,
                         Tensor& stats, Tensor& grad) {
  const c10::cuda::CUDAGuard guard(student.device());
  const Tensor s = student.stride(1) == 1 ? student : student.contiguous();
  const Tensor t = teacher.stride(1) == 1 ? teacher : teacher.contiguous();
  stats = torch::empty({s.size(0), kernels::kTvdStats}, s.options().dtype(torch::kFloat32));
  kernels::TvdArgs a;
  a.student = s.data_ptr(), a.teacher = t.data_ptr(), a.grad = grad.data_ptr(), a.stats = stats.data_ptr<float>();
  a.rows = s.size(0), a.vocab = s.size(1);
  a.student_stride = s.stride(0), a.teacher_stride = t.stride(0), a.grad_stride = grad.stride(0);
  a.student_dtype = tvd_dtype(s), a.teacher_dtype = tvd_dtype(t);
  a.loss = o.loss == Loss::kTvd                      ? kernels::TvdLoss::kTvd
           : o.tvdpp_weighting == TvdppWeighting::kQ ? kernels::TvdLoss::kTvdppQ
                                                     : kernels::TvdLoss::kTvdppUniform;
  a.batch_scope = o.loss == Loss::kTvdpp && o.tvdpp_scope == TvdppScope::kBatch;
  a.q_stats = o.tvdpp_stats == TvdppStats::kQ;
  a.inv_temperature = static_cast<float>(1.0 / o.temperature);
  a.eps = static_cast<float>(o.eps);
  a.grad_scale = static_cast<float>(1.0 / static_cast<double>(a.rows));
  a.allow_cache = allow_row_cache;
  void* stream = c10::cuda::getCurrentCUDAStream(s.get_device()).stream();
  auto check = [](int rc) {
    DA_CHECK(rc == 0, "TVD kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(rc)));
  };
  if (!a.batch_scope) return check(kernels::launch_tvd(a, kernels::TvdPhase::kStatsAndGrad, stream));
  check(kernels::launch_tvd(a, kernels::TvdPhase::kStats, stream));
  // sum over rows of E_q[r] (stats q) or of the counts (stats vocab); it stays on the device: no synchronisation
  const Tensor batch_count = stat(stats, a.q_stats ? kernels::kSumQR : kernels::kCount).sum();
  a.batch_count = batch_count.data_ptr<float>();
  check(kernels::launch_tvd(a, kernels::TvdPhase::kGrad, stream));
}
#endif

void check_fused_args(const Tensor& student, const Tensor& teacher, const KdOptions& o) {
  DA_CHECK(o.loss == Loss::kTvd || o.loss == Loss::kTvdpp, "kd_loss_fused: only tvd and tvdpp are fused, not ",
           config::name_of(o.loss));
  DA_CHECK(student.dim() == 2 && student.sizes() == teacher.sizes(), "kd_loss_fused: student ", student.sizes(),
           " and teacher ", teacher.sizes(), " logits must both be [N, V]");
  DA_CHECK(o.temperature > 0, "kd_loss_fused: temperature must be > 0");
}

}  // namespace

KdFused kd_loss_forward_backward(const Tensor& student, const Tensor& teacher, const KdOptions& o, Tensor grad_out,
                                 bool allow_row_cache) {
  torch::NoGradGuard no_grad;
  check_fused_args(student, teacher, o);
  if (grad_out.defined())
    DA_CHECK(grad_out.sizes() == student.sizes() && grad_out.scalar_type() == student.scalar_type() &&
                 grad_out.device() == student.device() && grad_out.stride(1) == 1,
             "kd_loss_forward_backward: grad_out must be a row-contiguous tensor like the student logits");
  KdFused f;
  Tensor stats;
#if DRAFTALIGN_WITH_CUDA
  if (kernel_takes(student, teacher)) {
    f.grad = grad_out.defined() ? grad_out : torch::empty_like(student, torch::MemoryFormat::Contiguous);
    stats_and_grad_cuda(student, teacher, o, allow_row_cache, stats, f.grad);
  }
#endif
  if (!stats.defined()) {
    Tensor grad;
    stats_and_grad_reference(student, teacher, o, stats, grad);
    f.grad = grad_out.defined() ? grad_out.copy_(grad) : grad.to(student.scalar_type());
  }
  (void)allow_row_cache;
  f.loss = loss_from_stats(stats, o, student.size(1));
  f.alpha = stat(stats, kernels::kAlpha);
  return f;
}

namespace {

struct KdFunction : public torch::autograd::Function<KdFunction> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& student, const Tensor& teacher,
                        const KdOptions* o, Tensor* alpha_sum) {
    KdFused f = kd_loss_forward_backward(student, teacher, *o);
    if (alpha_sum != nullptr) *alpha_sum = f.alpha.sum();
    ctx->save_for_backward({f.grad});
    return f.loss;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_out) {
    const Tensor grad = ctx->get_saved_variables()[0];
    return {grad * grad_out[0].to(grad.scalar_type()), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor kd_loss_fused(const Tensor& student, const Tensor& teacher, const KdOptions& o, Tensor* alpha_sum) {
  return KdFunction::apply(student, teacher.detach(), &o, alpha_sum);
}

Tensor acceptance(const Tensor& student, const Tensor& teacher, double temperature) {
  torch::NoGradGuard no_grad;
  const auto type = student.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const Tensor q = torch::softmax(student.to(type) / temperature, -1);
  const Tensor p = torch::softmax(teacher.to(type) / temperature, -1);
  return torch::minimum(p, q).sum(-1);
}

TopkBins topk_bins(const Tensor& student_logits, const Tensor& topk_ids, const Tensor& topk_logprobs) {
  DA_CHECK(student_logits.dim() == 2 && topk_ids.dim() == 2 && topk_ids.sizes() == topk_logprobs.sizes() &&
               topk_ids.size(0) == student_logits.size(0),
           "topk_bins: student logits ", student_logits.sizes(), ", top-k ids ", topk_ids.sizes(), " and log-probs ",
           topk_logprobs.sizes(), " must be [N, V], [N, k], [N, k]");
  const int64_t vocab = student_logits.size(1), k = topk_ids.size(1);
  DA_CHECK(k >= 1 && k <= vocab, "topk_bins: k = ", k, " must be in [1, ", vocab, "]");
  const auto type = student_logits.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const Tensor lq = torch::log_softmax(student_logits.to(type), -1);
  const Tensor ids = topk_ids.to(torch::kInt64);
  TopkBins b;
  b.student = lq.gather(1, ids);
  b.teacher = topk_logprobs.detach().to(type);
  if (k == vocab) return b;
  // The student's rest: logsumexp over the tokens outside the k (the k masked to -inf); the teacher's: log(1 - mass),
  // floored at 1e-12 so that a row whose stored mass rounds to 1 keeps every loss finite.
  const Tensor outside = lq.scatter(1, ids, -std::numeric_limits<double>::infinity()).logsumexp(-1, true);
  const Tensor rest = (1.0 - b.teacher.exp().sum(-1, true)).clamp_min(1e-12).log();
  b.student = torch::cat({b.student, outside}, 1);
  b.teacher = torch::cat({b.teacher, rest}, 1);
  return b;
}

}  // namespace draftalign::train
