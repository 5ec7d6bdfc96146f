#include "train/losses.h"

#include <cmath>

#include "common/error.h"

namespace draftalign::train {

using torch::Tensor;

namespace {

// The normalised reward r~ of TVD++ for r = 1[p > q] ([N, V], no gradient).
Tensor normalised_reward(const Tensor& p, const Tensor& q, const KdOptions& o) {
  const Tensor r = (p > q).to(p.scalar_type());
  if (o.tvdpp_scope == "token") {
    const Tensor mean = r.mean(-1, /*keepdim=*/true);
    const Tensor std = r.std(-1, /*unbiased=*/false, /*keepdim=*/true);
    return (r - mean) / (std + o.eps);
  }
  DA_CHECK(o.tvdpp_scope == "batch", "distill.tvdpp_scope must be token or batch, not '", o.tvdpp_scope, "'");
  return (r - r.mean()) / (r.std(/*unbiased=*/false) + o.eps);
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
  if (o.loss == "fkl") return (p * (log_p - log_q)).sum(-1).mean();
  if (o.loss == "rkl") return (q * (log_q - log_p)).sum(-1).mean();
  if (o.loss == "tvd") return 0.5 * (p - q).abs().sum(-1).mean();
  DA_CHECK(o.loss == "tvdpp", "kd_loss: unknown loss '", o.loss, "' (fkl, rkl, tvd, tvdpp)");
  const Tensor reward = normalised_reward(p, q.detach(), o);
  if (o.tvdpp_weighting == "q") return -((q.detach() * reward) * log_q).sum(-1).mean();
  DA_CHECK(o.tvdpp_weighting == "uniform", "distill.tvdpp_weighting must be q or uniform, not '", o.tvdpp_weighting,
           "'");
  return -(reward * log_q).mean(-1).mean();
}

namespace {

// Loss (scalar), gradient wrt the student logits [N, V], and sum of alpha, from the closed forms.
struct Fused {
  Tensor loss, grad, alpha_sum;
};

Fused fused_forward(const Tensor& student, const Tensor& teacher, const KdOptions& o) {
  DA_CHECK(o.loss == "tvd" || o.loss == "tvdpp", "kd_loss_fused: only tvd and tvdpp are fused, not '", o.loss, "'");
  DA_CHECK(student.dim() == 2 && student.sizes() == teacher.sizes(), "kd_loss_fused: student ", student.sizes(),
           " and teacher ", teacher.sizes(), " logits must both be [N, V]");
  const auto type = student.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const double t = o.temperature, n = static_cast<double>(student.size(0)), v = static_cast<double>(student.size(1));
  const Tensor log_q = torch::log_softmax(student.to(type) / t, -1);
  const Tensor q = log_q.exp(), p = torch::softmax(teacher.to(type) / t, -1);
  Fused f;
  f.alpha_sum = torch::minimum(p, q).sum();
  if (o.loss == "tvd") {
    const Tensor r = (p > q).to(type);
    f.loss = 0.5 * (p - q).abs().sum(-1).mean();
    f.grad = -(q / t) * (r - (q * r).sum(-1, true)) / n;
  } else if (o.tvdpp_weighting == "q") {
    const Tensor rt = normalised_reward(p, q, o);
    f.loss = -(q * rt * log_q).sum(-1).mean();
    f.grad = -(q / t) * (rt - (q * rt).sum(-1, true)) / n;
  } else {
    DA_CHECK(o.tvdpp_weighting == "uniform", "distill.tvdpp_weighting must be q or uniform, not '",
             o.tvdpp_weighting, "'");
    const Tensor rt = normalised_reward(p, q, o);
    f.loss = -(rt * log_q).mean(-1).mean();
    f.grad = -(1.0 / (t * v)) * (rt - q * rt.sum(-1, true)) / n;
  }
  f.grad = f.grad.to(student.scalar_type());
  return f;
}

struct KdFunction : public torch::autograd::Function<KdFunction> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& student, const Tensor& teacher,
                        const KdOptions* o, Tensor* alpha_sum) {
    Fused f = fused_forward(student, teacher, *o);
    if (alpha_sum != nullptr) *alpha_sum = f.alpha_sum;
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

double expected_tokens_per_call(double alpha, int64_t gamma) {
  if (alpha >= 1.0) return static_cast<double>(gamma + 1);
  return (1.0 - std::pow(alpha, static_cast<double>(gamma + 1))) / (1.0 - alpha);
}

}  // namespace draftalign::train
