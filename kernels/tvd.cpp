// tvd.cpp: the fused TVD / TVD++ loss in torch::Tensor terms (tvd.h): the CUDA kernel's glue (tvd.cu through
// tvd_launch.h), the LibTorch reference of the same algebra, and the autograd Function.
#include "kernels/tvd.h"

#include "common/error.h"
#include "kernels/tvd_launch.h"

#if DRAFTALIGN_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#endif

namespace draftalign::kernels {

using config::Loss;
using config::TvdppScope;
using config::TvdppStats;
using config::TvdppWeighting;
using torch::Tensor;
using train::KdOptions;

namespace {

// The fused path. Both devices go through the same algebra: per-row statistics (kernels/tvd_launch.h's columns),
// the loss from the statistics, and a gradient that is affine in q r, q and r with per-row coefficients. On CUDA the
// kernel computes the statistics and the gradient without any [N, V] intermediate; elsewhere LibTorch does, which keeps
// this algebra under test on every machine.

Tensor stat(const Tensor& stats, TvdStat col) { return stats.select(1, col); }

// The reward's mean mu (see normalised_reward): E_q[r] (stats q) or count / V (stats vocab) per row ([N]) for scope
// token, or their mean over the rows (a [1] broadcast) for scope batch.
Tensor reward_mean(const Tensor& stats, const KdOptions& o, int64_t vocab) {
  const Tensor mu =
      o.tvdpp_stats == TvdppStats::kQ ? stat(stats, kSumQR) : stat(stats, kCount) / static_cast<double>(vocab);
  if (o.tvdpp_scope == TvdppScope::kBatch) return mu.mean().reshape({1});
  return mu;
}

Tensor loss_from_stats(const Tensor& stats, const KdOptions& o, int64_t vocab) {
  if (o.loss == Loss::kTvd) return (1.0 - stat(stats, kAlpha)).mean();
  const Tensor mu = reward_mean(stats, o, vocab), sd = reward_sd(mu, o.eps);
  if (o.tvdpp_weighting == TvdppWeighting::kQ)
    return (-(stat(stats, kSumQRLq) - mu * stat(stats, kSumQLq)) / sd).mean();
  // sum_x (r - mu) lq from the sums centred on c: sum r (lq - c) - mu sum (lq - c) + c (k - mu V).
  const Tensor centred = stat(stats, kSumRLq) - mu * stat(stats, kSumLq) +
                         stat(stats, kLqMean) * (stat(stats, kCount) - mu * static_cast<double>(vocab));
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
  const Tensor r = (lp > lq).to(type);                                    // in log space, as the kernel decides it
  const Tensor q_lq = torch::where(q > 0, q * lq, torch::zeros_like(q));  // 0 log 0 = 0 for -inf student logits
  stats = torch::zeros({n, kTvdStats}, student.options().dtype(type));
  stats.select(1, kMaxS).copy_(max_s.squeeze(1));
  stats.select(1, kLseS).copy_(lse_s.squeeze(1));
  stats.select(1, kMaxT).copy_(max_t.squeeze(1));
  stats.select(1, kLseT).copy_(lse_t.squeeze(1));
  stats.select(1, kCount).copy_(r.sum(-1));
  stats.select(1, kSumQR).copy_((q * r).sum(-1));
  stats.select(1, kAlpha).copy_(torch::minimum(p, q).sum(-1));
  stats.select(1, kSumQLq).copy_(q_lq.sum(-1));
  stats.select(1, kSumQRLq).copy_((r * q_lq).sum(-1));
  const Tensor lq_mean = lq.mean(-1, true);
  stats.select(1, kSumRLq).copy_((r * (lq - lq_mean)).sum(-1));
  stats.select(1, kSumLq).copy_((lq - lq_mean).sum(-1));
  stats.select(1, kLqMean).copy_(lq_mean.squeeze(1));
  // grad = ca q r + cb q + cc r + cd (kernels/tvd.cu's row_coef).
  const double s = 1.0 / (o.temperature * static_cast<double>(n));
  const Tensor count = stat(stats, kCount).unsqueeze(1), sum_qr = stat(stats, kSumQR).unsqueeze(1);
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
TvdDtype tvd_dtype(const Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 ? TvdDtype::kBFloat16 : TvdDtype::kFloat32;
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
  stats = torch::empty({s.size(0), kTvdStats}, s.options().dtype(torch::kFloat32));
  TvdArgs a;
  a.student = s.data_ptr(), a.teacher = t.data_ptr(), a.grad = grad.data_ptr(), a.stats = stats.data_ptr<float>();
  a.rows = s.size(0), a.vocab = s.size(1);
  a.student_stride = s.stride(0), a.teacher_stride = t.stride(0), a.grad_stride = grad.stride(0);
  a.student_dtype = tvd_dtype(s), a.teacher_dtype = tvd_dtype(t);
  a.loss = o.loss == Loss::kTvd                      ? TvdLoss::kTvd
           : o.tvdpp_weighting == TvdppWeighting::kQ ? TvdLoss::kTvdppQ
                                                     : TvdLoss::kTvdppUniform;
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
  if (!a.batch_scope) return check(launch_tvd(a, TvdPhase::kStatsAndGrad, stream));
  check(launch_tvd(a, TvdPhase::kStats, stream));
  // sum over rows of E_q[r] (stats q) or of the counts (stats vocab); it stays on the device: no synchronisation
  const Tensor batch_count = stat(stats, a.q_stats ? kSumQR : kCount).sum();
  a.batch_count = batch_count.data_ptr<float>();
  check(launch_tvd(a, TvdPhase::kGrad, stream));
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
  f.alpha = stat(stats, kAlpha);
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

}  // namespace draftalign::kernels
