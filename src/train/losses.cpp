#include "train/losses.h"

#include <cmath>
#include <limits>

#include "common/error.h"

namespace draftalign::train {

using config::Loss;
using torch::Tensor;
namespace F = torch::nn::functional;

namespace {

using config::TvdppScope;
using config::TvdppStats;
using config::TvdppWeighting;

// The normalised reward r~ of TVD++ for r = 1[log p > log q] ([N, V], no gradient). Its mean and std are q-weighted
// (stats q: mu = E_q[r], the expectation of the mean of rewards of tokens sampled from the drafter) or uniform over
// the vocabulary (stats vocab: mu = |{x : p > q}| / V, which the tail sets). Per row (scope token) or over all N rows
// (scope batch: the mean of the rows' mu).
Tensor normalised_reward(const Tensor& log_p, const Tensor& log_q, const KdOptions& o) {
  const Tensor r = (log_p > log_q).to(log_p.scalar_type());
  Tensor mu =
      o.tvdpp_stats == TvdppStats::kQ ? (log_q.exp() * r).sum(-1, /*keepdim=*/true) : r.mean(-1, /*keepdim=*/true);
  if (o.tvdpp_scope == TvdppScope::kBatch) mu = mu.mean();
  return (r - mu) / kernels::reward_sd(mu, o.eps);
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

Tensor acceptance(const Tensor& student, const Tensor& teacher, double temperature) {
  torch::NoGradGuard no_grad;
  const auto type = student.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const Tensor q = torch::softmax(student.to(type) / temperature, -1);
  const Tensor p = torch::softmax(teacher.to(type) / temperature, -1);
  return torch::minimum(p, q).sum(-1);
}

TopkBins topk_bins(const Tensor& student_logits, const Tensor& topk_ids, const Tensor& topk_logprobs, bool outside) {
  DA_CHECK(student_logits.dim() == 2 && topk_ids.dim() == 2 && topk_ids.sizes() == topk_logprobs.sizes() &&
               topk_ids.size(0) == student_logits.size(0),
           "topk_bins: student logits ", student_logits.sizes(), ", top-k ids ", topk_ids.sizes(), " and log-probs ",
           topk_logprobs.sizes(), " must be [N, V], [N, k], [N, k]");
  const int64_t vocab = student_logits.size(1), k = topk_ids.size(1);
  DA_CHECK(k >= 1, "topk_bins: k = ", k, " must be at least 1");
  const auto type = student_logits.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const Tensor lq = torch::log_softmax(student_logits.to(type), -1);
  const Tensor ids = topk_ids.to(torch::kInt64);
  const bool all_in = !outside;
  DA_CHECK(!all_in || k <= vocab, "topk_bins: k = ", k, " must be in [1, ", vocab, "]");
  TopkBins b;
  if (all_in) {
    b.student = lq.gather(1, ids);
    b.teacher = topk_logprobs.detach().to(type);
    if (k == vocab) return b;
  } else {
    // A stored token the student cannot propose (-1: outside its draft vocabulary): its bin is the floor for both
    // (contributing nothing to any loss), and the teacher's mass there goes to the rest bucket.
    const Tensor in = ids.ge(0), floor = torch::full({}, std::log(1e-12), lq.options());
    b.student = torch::where(in, lq.gather(1, ids.clamp_min(0)), floor);
    b.teacher = torch::where(in, topk_logprobs.detach().to(type), floor);
  }
  // The student's rest: logsumexp over the tokens outside the k (the k masked to -inf); the teacher's: log(1 - mass),
  // floored at 1e-12 so that a row whose stored mass rounds to 1 keeps every loss finite.
  constexpr double kMinusInf = -std::numeric_limits<double>::infinity();
  const Tensor student_rest =
      all_in ? lq.scatter(1, ids, kMinusInf).logsumexp(-1, true)
             : lq.masked_fill(torch::zeros_like(lq, torch::kInt32)  // the columns some in-vocabulary id keeps
                                  .scatter_add(1, ids.clamp_min(0), ids.ge(0).to(torch::kInt32))
                                  .gt(0),
                              kMinusInf)
                   .logsumexp(-1, true)
                   .clamp_min(std::log(1e-12));  // k ids may cover every column
  const Tensor in_mass = all_in ? b.teacher.exp() : torch::where(ids.ge(0), b.teacher.exp(), torch::zeros_like(b.teacher));
  const Tensor rest = (1.0 - in_mass.sum(-1, true)).clamp_min(1e-12).log();
  b.student = torch::cat({b.student, student_rest}, 1);
  b.teacher = torch::cat({b.teacher, rest}, 1);
  return b;
}

// --- The fused head ---------------------------------------------------------------------------------------------

int64_t head_chunk_rows(int64_t rows, int64_t hidden, int64_t vocab, bool cuda) {
  const int64_t factor = (vocab + hidden - 1) / std::max<int64_t>(1, hidden);
  const int64_t floor = cuda ? 1024 : 256;
  const int64_t want = std::max<int64_t>(floor, (rows + factor - 1) / std::max<int64_t>(1, factor));
  int64_t c = 1;
  while (c < want) c *= 2;
  return c;
}

namespace {

struct FusedHeadFunction : public torch::autograd::Function<FusedHeadFunction> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& hidden, const Tensor& weight,
                        const HeadScore* score, int64_t chunk, bool need_grad) {
    const int64_t n = hidden.size(0);
    // Gradients in the parameters' dtype (fp32 master weights), accumulated over the chunks.
    Tensor grad_h = torch::zeros_like(hidden, torch::MemoryFormat::Contiguous);
    Tensor grad_w = torch::zeros_like(weight, torch::MemoryFormat::Contiguous);
    Tensor total;
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t m = std::min(chunk, n - begin);
      const Tensor h = hidden.narrow(0, begin, m);
      const Tensor logits = torch::matmul(h, weight.t());  // bf16 under CUDA autocast, as Llama::logits
      HeadChunk r = (*score)(logits, begin, begin + m);
      DA_CHECK(r.grad.defined() && r.grad.sizes() == logits.sizes(), "fused_head_loss: the score of rows ", begin, "..",
               begin + m, " gave a gradient of shape ", r.grad.sizes(), " for logits ", logits.sizes());
      total = total.defined() ? total + r.value : r.value;
      if (!need_grad) continue;
      const Tensor g = r.grad.to(logits.scalar_type());
      grad_h.narrow(0, begin, m).copy_(torch::matmul(g, weight));
      if (g.scalar_type() == grad_w.scalar_type() && h.scalar_type() == grad_w.scalar_type())
        grad_w.addmm_(g.t(), h);
      else
        grad_w.add_(torch::matmul(g.t(), h));  // autocast: the product in bf16, the sum in the weights' dtype
    }
    ctx->save_for_backward({grad_h, grad_w});
    return total.defined() ? total : torch::zeros({}, hidden.options().dtype(torch::kFloat32));
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const Tensor go = grad_out[0];
    return {saved[0] * go.to(saved[0].scalar_type()), saved[1] * go.to(saved[1].scalar_type()), Tensor(), Tensor(),
            Tensor()};
  }
};

}  // namespace

Tensor fused_head_loss(const Tensor& hidden, const Tensor& weight, const HeadScore& score, int64_t chunk_rows) {
  DA_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1), "fused_head_loss: hidden ",
           hidden.sizes(), " and weight ", weight.sizes(), " must be [N, H] and [V, H]");
  const int64_t chunk =
      chunk_rows > 0 ? chunk_rows : head_chunk_rows(hidden.size(0), weight.size(1), weight.size(0), hidden.is_cuda());
  // Without autograd (validation) only the values are summed.
  const bool need_grad = torch::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad());
  return FusedHeadFunction::apply(hidden, weight, &score, chunk, need_grad);
}

HeadChunk score_by_autograd(const Tensor& logits, const std::function<Tensor(const Tensor&)>& loss) {
  torch::AutoGradMode grad_on(true);
  const Tensor leaf = logits.detach().requires_grad_(true);
  const Tensor value = loss(leaf);
  Tensor grad = torch::autograd::grad({value}, {leaf}, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                      /*allow_unused=*/true)[0];
  if (!grad.defined()) grad = torch::zeros_like(logits);
  return {value.detach(), grad};
}

HeadChunk cross_entropy_chunk(const Tensor& logits, const Tensor& targets, double count) {
  torch::NoGradGuard no_grad;
  const auto type = logits.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const Tensor lp = torch::log_softmax(logits.to(type), -1);
  const Tensor valid = targets >= 0, safe = targets.clamp_min(0).unsqueeze(1);
  const Tensor w = valid.to(type).unsqueeze(1) / std::max(1.0, count);
  HeadChunk r;
  r.value = -(lp.gather(1, safe) * w).sum();
  // d/d logits of -log softmax(z)_y = softmax(z) - onehot(y), weighted per row
  r.grad = lp.exp().mul_(w).scatter_add_(1, safe, -w);
  return r;
}

// --- Stage 3's objective -----------------------------------------------------------------------------------------

namespace {

// The objective's terms on rows [begin, begin + n) of `rows`, from their student logits (differentiable). KD's value
// is this chunk's share of the mean over all N rows; CE's its share of the mean over the `ce_count` rows with a target.
struct ChunkTerms {
  Tensor loss, kd, ce, alpha_sum;
};
ChunkTerms chunk_terms(const Tensor& logits, int64_t begin, const DistillRows& rows, const KdOptions& kd,
                       config::Loss loss, double kd_weight, double ce_weight, double ce_count) {
  const int64_t n = logits.size(0), total = rows.student_hidden.size(0);
  const Tensor y = rows.targets.narrow(0, begin, n);
  const Tensor ce =
      F::cross_entropy(logits.to(logits.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32), y,
                       F::CrossEntropyFuncOptions().reduction(torch::kSum).ignore_index(-100)) /
      std::max(1.0, ce_count);
  Tensor student = logits, teacher;
  if (rows.topk_ids.defined()) {
    TopkBins bins = topk_bins(logits, rows.topk_ids.narrow(0, begin, n), rows.topk_logprobs.narrow(0, begin, n),
                              rows.topk_outside);
    student = bins.student, teacher = bins.teacher;
  } else {
    torch::NoGradGuard no_grad;
    teacher = torch::matmul(rows.teacher_hidden.narrow(0, begin, n), rows.teacher_head.t());
  }
  ChunkTerms t;
  t.ce = ce;
  if (loss == Loss::kCe) {
    t.kd = ce;
  } else {
    const double share = static_cast<double>(n) / static_cast<double>(total);
    if (loss == Loss::kTvd || loss == Loss::kTvdpp)
      t.kd = kd_loss_fused(student, teacher, kd, &t.alpha_sum) * share;
    else
      t.kd = kd_loss(student, teacher, kd) * share;
  }
  if (!t.alpha_sum.defined()) t.alpha_sum = acceptance(student.detach(), teacher, kd.temperature).sum();
  t.loss = kd_weight * t.kd;
  if (ce_weight > 0) t.loss = t.loss + ce_weight * ce;
  return t;
}

}  // namespace

DistillTerms distill_objective(const DistillRows& rows, const KdOptions& kd, config::Loss loss, double kd_weight,
                               double ce_weight, bool fused, int64_t chunk_rows) {
  const int64_t n = rows.student_hidden.size(0);
  const double ce_count = rows.targets.ge(0).sum().item<double>();
  DistillTerms out;
  if (!fused) {
    const ChunkTerms t = chunk_terms(torch::matmul(rows.student_hidden, rows.student_head.t()), 0, rows, kd, loss,
                                     kd_weight, ce_weight, ce_count);
    return {t.loss, t.kd.detach(), t.ce.detach(), t.alpha_sum.detach()};
  }
  const bool batch_wide = loss == Loss::kTvdpp && kd.tvdpp_scope == config::TvdppScope::kBatch;
  Tensor kd_sum, ce_sum, alpha_sum;
  auto add = [](Tensor& sum, const Tensor& x) { sum = sum.defined() ? sum + x.detach() : x.detach(); };
  const HeadScore score = [&](const Tensor& logits, int64_t begin, int64_t) {
    return score_by_autograd(logits, [&](const Tensor& leaf) {
      const ChunkTerms t = chunk_terms(leaf, begin, rows, kd, loss, kd_weight, ce_weight, ce_count);
      add(kd_sum, t.kd), add(ce_sum, t.ce), add(alpha_sum, t.alpha_sum);
      return t.loss;
    });
  };
  out.loss = fused_head_loss(rows.student_hidden, rows.student_head, score, batch_wide ? n : chunk_rows);
  out.kd = kd_sum, out.ce = ce_sum, out.alpha_sum = alpha_sum;
  return out;
}

}  // namespace draftalign::train
