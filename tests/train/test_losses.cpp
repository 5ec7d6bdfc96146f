// The distillation losses in float64 on random logits: FKL, RKL and TVD gradients against central finite
// differences; the TVD gradient is REINFORCE with reward 1[p > q]; the TVD++ gradients (q and uniform weighting, token
// and batch scope, several temperatures) against the closed forms, with the reward normalisation recomputed here
// element by element; acceptance = 1 - TVD; the expected tokens per target call.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "test_util.h"
#include "evaluators/metrics.h"
#include "train/losses.h"

namespace draftalign::train {
namespace {

// The option named `name`, as the config loader maps it.
template <class E>
E named(const char* name) {
  return config::enum_from<E>(name, "option");
}

using torch::Tensor;
const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

struct Case {
  Tensor student, teacher;
};

Case random_case(int64_t n = 5, int64_t v = 11, uint64_t seed = 7) {
  torch::manual_seed(seed);
  return {torch::randn({n, v}, kF64) * 2.0, torch::randn({n, v}, kF64) * 2.0};
}

Tensor autograd_grad(const Case& c, const KdOptions& o) {
  Tensor s = c.student.clone().set_requires_grad(true);
  kd_loss(s, c.teacher, o).backward();
  return s.grad();
}

double max_abs(const Tensor& a) { return a.abs().max().item<double>(); }

TEST(KdLoss, SmoothLossGradientsEqualFiniteDifferences) {
  const Case c = random_case();
  for (const char* loss : {"fkl", "rkl", "tvd"}) {
    for (double t : {1.0, 2.0}) {
      KdOptions o;
      o.loss = named<config::Loss>(loss), o.temperature = t;
      const Tensor g = autograd_grad(c, o);
      Tensor fd = torch::zeros_like(c.student);
      const double h = 1e-6;
      for (int64_t i = 0; i < c.student.size(0); ++i)
        for (int64_t j = 0; j < c.student.size(1); ++j) {
          Tensor up = c.student.clone(), down = c.student.clone();
          up[i][j] += h, down[i][j] -= h;
          fd[i][j] = (kd_loss(up, c.teacher, o) - kd_loss(down, c.teacher, o)) / (2 * h);
        }
      EXPECT_LT(max_abs(g - fd), 1e-7) << loss << " T=" << t;
      EXPECT_GT(max_abs(g), 1e-3) << loss;
    }
  }
  // FKL against LibTorch's kl_div, the value.
  KdOptions o;
  o.loss = config::Loss::kFkl, o.temperature = 1.5;
  const Tensor lq = torch::log_softmax(c.student / 1.5, -1), lp = torch::log_softmax(c.teacher / 1.5, -1);
  const Tensor ref = torch::kl_div(lq, lp, at::Reduction::None, /*log_target=*/true).sum(-1).mean();
  EXPECT_NEAR(kd_loss(c.student, c.teacher, o).item<double>(), ref.item<double>(), 1e-12);
}

TEST(KdLoss, TvdGradientIsReinforceWithRewardPGreaterThanQ) {
  const Case c = random_case(6, 13, 3);
  for (double t : {1.0, 0.7}) {
    KdOptions o;
    o.loss = config::Loss::kTvd, o.temperature = t;
    const Tensor q = torch::softmax(c.student / t, -1), p = torch::softmax(c.teacher / t, -1);
    const Tensor r = (p > q).to(torch::kFloat64);
    const Tensor want = -(q / t) * (r - (q * r).sum(-1, true)) / static_cast<double>(c.student.size(0));
    EXPECT_LT(max_abs(autograd_grad(c, o) - want), 1e-12) << "T=" << t;
  }
}

// r~ for scope token (per row) or batch, computed element by element.
// r~ element by element: r = 1[p > q], its mean and (population) std weighted by q (q_stats) or uniformly, per row or
// over all rows.
Tensor reward_by_hand(const Tensor& p, const Tensor& q, bool per_row, bool q_stats, double eps) {
  const int64_t n = p.size(0), v = p.size(1);
  Tensor r = torch::zeros({n, v}, kF64);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < v; ++j) r[i][j] = p[i][j].item<double>() > q[i][j].item<double>() ? 1.0 : 0.0;
  auto weight = [&](int64_t i, int64_t j) { return q_stats ? q[i][j].item<double>() : 1.0; };
  auto stats = [&](int64_t row_lo, int64_t row_hi) {
    double sum = 0, sq = 0, total = 0;
    for (int64_t i = row_lo; i < row_hi; ++i)
      for (int64_t j = 0; j < v; ++j) sum += weight(i, j) * r[i][j].item<double>(), total += weight(i, j);
    const double mean = sum / total;
    for (int64_t i = row_lo; i < row_hi; ++i)
      for (int64_t j = 0; j < v; ++j) sq += weight(i, j) * std::pow(r[i][j].item<double>() - mean, 2);
    return std::make_pair(mean, std::sqrt(sq / total));
  };
  Tensor out = torch::zeros_like(r);
  for (int64_t i = 0; i < n; ++i) {
    const auto [mean, sd] = per_row ? stats(i, i + 1) : stats(0, n);
    for (int64_t j = 0; j < v; ++j) out[i][j] = (r[i][j].item<double>() - mean) / (sd + eps);
  }
  return out;
}

TEST(KdLoss, TvdppGradientsEqualTheClosedFormsForEveryOption) {
  const Case c = random_case(4, 9, 11);
  const double n = static_cast<double>(c.student.size(0)), v = static_cast<double>(c.student.size(1));
  for (const char* scope : {"token", "batch"}) {
    for (const char* weighting : {"q", "uniform"}) {
      for (const char* stats : {"q", "vocab"}) {
        for (double t : {1.0, 2.5}) {
          KdOptions o;
          o.loss = config::Loss::kTvdpp, o.temperature = t, o.tvdpp_scope = named<config::TvdppScope>(scope),
          o.tvdpp_weighting = named<config::TvdppWeighting>(weighting);
          o.tvdpp_stats = named<config::TvdppStats>(stats);
          const Tensor q = torch::softmax(c.student / t, -1), p = torch::softmax(c.teacher / t, -1);
          const Tensor rt = reward_by_hand(p, q, std::string(scope) == "token", std::string(stats) == "q", o.eps);
          const Tensor want = std::string(weighting) == "q"
                                  ? -(q / t) * (rt - (q * rt).sum(-1, true)) / n
                                  : -(1.0 / (t * v)) * (rt - q * rt.sum(-1, true)) / n;
          EXPECT_LT(max_abs(autograd_grad(c, o) - want), 1e-12) << scope << " " << weighting << " " << stats << " T=" << t;
        }
      }
    }
  }
  // A word that names no scope is refused where the config is read (the schema's enum), not in the loss.
  EXPECT_HAS(testing::error_of([] { named<config::TvdppScope>("row"); }), "expected one of: token, batch, got 'row'");
}

TEST(KdLoss, AcceptanceIsOneMinusTvdAndTokensPerCallFollow) {
  const Case c = random_case();
  KdOptions o;
  o.loss = config::Loss::kTvd, o.temperature = 1.3;
  const Tensor alpha = acceptance(c.student, c.teacher, 1.3);
  EXPECT_NEAR(alpha.mean().item<double>(), 1.0 - kd_loss(c.student, c.teacher, o).item<double>(), 1e-12);
  EXPECT_NEAR(acceptance(c.teacher, c.teacher, 1.0).min().item<double>(), 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(eval::iid_tokens_per_call(0.5, 1), 1.5);
  EXPECT_DOUBLE_EQ(eval::iid_tokens_per_call(0.5, 3), 1.875);
  EXPECT_DOUBLE_EQ(eval::iid_tokens_per_call(1.0, 4), 5.0);
  EXPECT_DOUBLE_EQ(eval::iid_tokens_per_call(0.0, 4), 1.0);
}


// The one-pass path (the interface of the fused kernel) against kd_loss's autograd, every option, fp64 and fp32.
// The offline teacher's bins. With k = V (the ids a shuffled vocabulary) every loss, its gradient with respect to the
// student's logits and alpha equal the full-vocabulary ones; with k < V both sides sum to 1, the student's rest bucket
// is its mass outside the k, and the binned TVD never exceeds the true one (data processing).
TEST(TopkBins, FullTopkIsTheFullLossAndFewerBinsBoundTvdFromBelow) {
  const Case c = random_case(6, 13, 11);
  const int64_t v = c.student.size(1);
  const Tensor lp = torch::log_softmax(c.teacher, -1);
  torch::manual_seed(3);
  std::vector<Tensor> rows;  // a shuffled vocabulary per row
  for (int64_t i = 0; i < c.student.size(0); ++i) rows.push_back(torch::randperm(v, torch::kInt64));
  const Tensor perm = torch::stack(rows);
  for (const char* loss : {"fkl", "rkl", "tvd", "tvdpp"}) {
    for (const char* weighting : {"q", "uniform"}) {
      KdOptions o;
      o.loss = named<config::Loss>(loss), o.tvdpp_weighting = named<config::TvdppWeighting>(weighting);
      Tensor s_full = c.student.clone().set_requires_grad(true), s_bins = c.student.clone().set_requires_grad(true);
      const Tensor full = kd_loss(s_full, c.teacher, o);
      const TopkBins b = topk_bins(s_bins, perm, lp.gather(1, perm));
      ASSERT_EQ(b.student.size(1), v) << "k = V: no rest bucket";
      const Tensor binned = kd_loss(b.student, b.teacher, o);
      full.backward(), binned.backward();
      EXPECT_NEAR(binned.item<double>(), full.item<double>(), 1e-12) << loss << " " << weighting;
      EXPECT_LT(max_abs(s_bins.grad() - s_full.grad()), 1e-12) << loss << " " << weighting;
      EXPECT_GT(max_abs(s_full.grad()), 1e-3);
      if (std::string(loss) != "tvd" && std::string(loss) != "tvdpp") continue;
      // The fused loss on the bins: its gradient goes back through the gather to the student's logits.
      Tensor s_fused = c.student.clone().set_requires_grad(true);
      const TopkBins f = topk_bins(s_fused, perm, lp.gather(1, perm));
      kd_loss_fused(f.student, f.teacher, o).backward();
      EXPECT_LT(max_abs(s_fused.grad() - s_full.grad()), 1e-12) << loss << " " << weighting << " fused";
    }
  }
  const TopkBins full = topk_bins(c.student, perm, lp.gather(1, perm));
  EXPECT_LT(max_abs(acceptance(full.student, full.teacher, 1.0) - acceptance(c.student, c.teacher, 1.0)), 1e-12);

  // k = 3 of 13: the top 3 of the teacher, and a rest bucket.
  const auto top = lp.topk(3, -1);
  const Tensor ids = std::get<1>(top);
  const TopkBins b = topk_bins(c.student, ids, std::get<0>(top));
  ASSERT_EQ(b.student.size(1), 4);
  EXPECT_LT(max_abs(b.student.exp().sum(-1) - 1), 1e-12);
  EXPECT_LT(max_abs(b.teacher.exp().sum(-1) - 1), 1e-12);
  const Tensor q = torch::softmax(c.student, -1);
  const Tensor outside = q.sum(-1) - q.gather(1, ids).sum(-1);
  EXPECT_LT(max_abs(b.student.select(1, 3).exp() - outside), 1e-12);
  const Tensor true_alpha = acceptance(c.student, c.teacher, 1.0), binned_alpha = acceptance(b.student, b.teacher, 1.0);
  EXPECT_TRUE((binned_alpha >= true_alpha - 1e-12).all().item<bool>()) << binned_alpha << true_alpha;
  EXPECT_GT((binned_alpha - true_alpha).max().item<double>(), 1e-3) << "the bound is strict somewhere";
  EXPECT_THROW(topk_bins(c.student, ids, std::get<0>(top).narrow(0, 0, 2)), Error);
}

// A student with a draft vocabulary (its columns a subset of the teacher's tokens): a stored top-k token outside it
// (-1) is a bin of 1e-12 for both, the teacher's mass there joins the rest, and the binning is the one of the teacher
// and the student extended by zeros to the whole vocabulary, stored tokens outside dropped from the k.
TEST(TopkBins, TokensOutsideADraftVocabularyJoinTheRestBucket) {
  const Case c = random_case(5, 13, 21);
  const Tensor lp = torch::log_softmax(c.teacher, -1);
  const std::vector<int64_t> draft = {0, 2, 3, 5, 8, 9, 12};  // student column j = token draft[j]
  const Tensor cols = torch::tensor(draft, torch::kInt64), student = c.student.index_select(1, cols);
  std::vector<int64_t> to_col(13, -1);
  for (size_t j = 0; j < draft.size(); ++j) to_col[static_cast<size_t>(draft[j])] = static_cast<int64_t>(j);
  const auto top = lp.topk(4, -1);
  const Tensor ids = std::get<1>(top), mapped = torch::tensor(to_col, torch::kInt64).index({ids});
  ASSERT_TRUE(mapped.lt(0).any().item<bool>() && mapped.ge(0).any().item<bool>());
  const TopkBins b = topk_bins(student, mapped, std::get<0>(top), /*outside=*/true);
  ASSERT_EQ(b.student.size(1), 5);
  EXPECT_TRUE(b.student.isfinite().all().item<bool>() && b.teacher.isfinite().all().item<bool>());
  EXPECT_LT(max_abs(b.student.exp().sum(-1) - 1), 1e-9);
  EXPECT_LT(max_abs(b.teacher.exp().sum(-1) - 1), 1e-9);
  // Row by row against the definition.
  const Tensor q = torch::softmax(student.to(torch::kFloat64), -1), p = lp.exp();
  for (int64_t r = 0; r < 5; ++r) {
    double q_kept = 0, p_kept = 0;
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t col = mapped[r][i].item<int64_t>();
      const double sb = b.student[r][i].exp().item<double>(), tb = b.teacher[r][i].exp().item<double>();
      if (col < 0) {
        EXPECT_NEAR(sb, 1e-12, 1e-18);
        EXPECT_NEAR(tb, 1e-12, 1e-18);
        continue;
      }
      EXPECT_NEAR(sb, q[r][col].item<double>(), 1e-12);
      EXPECT_NEAR(tb, p[r][ids[r][i].item<int64_t>()].item<double>(), 1e-12);
      q_kept += sb, p_kept += tb;
    }
    EXPECT_NEAR(b.student[r][4].exp().item<double>(), 1 - q_kept, 1e-12) << "row " << r;
    EXPECT_NEAR(b.teacher[r][4].exp().item<double>(), 1 - p_kept, 1e-12) << "row " << r;
  }
  KdOptions o;
  o.loss = config::Loss::kFkl;
  Tensor s = student.clone().set_requires_grad(true);
  const TopkBins g = topk_bins(s, mapped, std::get<0>(top), /*outside=*/true);
  const Tensor loss = kd_loss(g.student, g.teacher, o);
  loss.backward();
  EXPECT_TRUE(loss.isfinite().item<bool>() && s.grad().isfinite().all().item<bool>());
  // Ids that happen to be all in the draft vocabulary: the general path is the plain one.
  const auto in_top = student.topk(3, -1);
  const TopkBins plain = topk_bins(student, std::get<1>(in_top), std::get<0>(in_top));
  const TopkBins general = topk_bins(student, std::get<1>(in_top), std::get<0>(in_top), /*outside=*/true);
  EXPECT_LT(max_abs(plain.student - general.student), 1e-12);
  EXPECT_LT(max_abs(plain.teacher - general.teacher), 1e-12);
}

TEST(KdLossFused, EqualsTheAutogradReferenceForEveryOption) {
  const Case c = random_case(7, 17, 5);
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 2e-6;
    for (const char* loss : {"tvd", "tvdpp"}) {
      for (const char* scope : {"token", "batch"}) {
        for (const char* weighting : {"q", "uniform"}) {
         for (const char* stats : {"q", "vocab"}) {
          KdOptions o;
          o.loss = named<config::Loss>(loss), o.temperature = 1.7, o.tvdpp_scope = named<config::TvdppScope>(scope),
          o.tvdpp_weighting = named<config::TvdppWeighting>(weighting);
          o.tvdpp_stats = named<config::TvdppStats>(stats);
          const Tensor s0 = c.student.to(dtype), t0 = c.teacher.to(dtype);
          Tensor a = s0.clone().set_requires_grad(true), b = s0.clone().set_requires_grad(true);
          const Tensor ref = kd_loss(a, t0, o);
          (ref * 3.0).backward();
          Tensor alpha_sum;
          const Tensor fused = kd_loss_fused(b, t0, o, &alpha_sum);
          (fused * 3.0).backward();
          const std::string what = str_cat(loss, " ", scope, " ", weighting, " ", stats, " ", dtype);
          EXPECT_NEAR(fused.item<double>(), ref.item<double>(), tol) << what;
          EXPECT_LT(max_abs(b.grad() - a.grad()), tol) << what;
          EXPECT_EQ(b.grad().scalar_type(), dtype);
          EXPECT_NEAR(alpha_sum.item<double>(), acceptance(s0, t0, 1.7).sum().item<double>(), tol) << what;
         }
        }
      }
    }
  }
  KdOptions fkl;
  fkl.loss = config::Loss::kFkl;
  EXPECT_HAS(testing::error_of([&] { kd_loss_fused(c.student, c.teacher, fkl); }), "only tvd and tvdpp are fused");
}


// The gradient can go to a caller's buffer, the student logits themselves included (in place).
TEST(KdLossFused, WritesTheGradientIntoAGivenBufferOrInPlace) {
  const Case c = random_case(6, 40, 9);
  KdOptions o;
  o.temperature = 1.3;
  const Tensor s = c.student.to(torch::kFloat32), t = c.teacher.to(torch::kFloat32);
  const KdFused plain = kd_loss_forward_backward(s, t, o);
  Tensor buffer = torch::full_like(s, std::nan(""));
  const KdFused into = kd_loss_forward_backward(s, t, o, buffer);
  EXPECT_EQ(into.grad.data_ptr(), buffer.data_ptr());
  EXPECT_TRUE(torch::equal(buffer, plain.grad));
  Tensor own = s.clone();
  const KdFused in_place = kd_loss_forward_backward(own, t, o, own);
  EXPECT_TRUE(torch::equal(own, plain.grad));
  EXPECT_EQ(in_place.loss.item<double>(), plain.loss.item<double>());
  EXPECT_HAS(testing::error_of([&] { kd_loss_forward_backward(s, t, o, torch::zeros({6, 41})); }),
             "grad_out must be a row-contiguous tensor like the student logits");
}

// The hard inputs of a real run: peaked rows (logits ~ N(0, 20^2): q and p put nearly all mass on a few tokens).
//   row 0   p = q exactly: r = 0 everywhere, mu = 0;
//   row 1   p = q but for +1 on the student's least likely token: r = 1 there only (ties elsewhere resolve to 0 in
//           any precision, as log p - log q < 0 there), so mu = 1 / V (stats vocab) or its tiny q (stats q);
//   rows 2+ an independent peaked teacher with -inf at tokens 0..2 (a masked vocabulary), and with `student_inf` the
//           student -inf at tokens 3..5 too (uniform weighting's (1/V) sum_x r~ log q is infinite there, so that case
//           is left out).
// Independent peaked rows keep log p - log q away from 0 except by chance, so fp32 and fp64 agree on r.
Case hard_case(int64_t n, int64_t v, uint64_t seed, bool student_inf) {
  torch::manual_seed(seed);
  const double inf = std::numeric_limits<double>::infinity();
  Tensor s = torch::randn({n, v}, kF64) * 20.0, t = torch::randn({n, v}, kF64) * 20.0;
  t.select(0, 0).copy_(s.select(0, 0));
  t.select(0, 1).copy_(s.select(0, 1));
  t[1][s.select(0, 1).argmin().item<int64_t>()] += 1.0;
  t.narrow(0, 2, n - 2).narrow(1, 0, 3).fill_(-inf);
  if (student_inf) s.narrow(0, 2, n - 2).narrow(1, 3, 3).fill_(-inf);
  return {s, t};
}

// The fused path on the hard inputs against the autograd reference (float64): everything finite and equal.
TEST(KdLossFused, PeakedRowsInfiniteLogitsAndTinyMuStayFiniteAndExact) {
  for (const char* loss : {"tvd", "tvdpp"}) {
    for (const char* weighting : {"q", "uniform"}) {
      for (const char* stats : {"q", "vocab"}) {
        for (bool student_inf : {false, true}) {
          if (student_inf && std::string(weighting) == "uniform" && std::string(loss) == "tvdpp") continue;
          KdOptions o;
          o.loss = named<config::Loss>(loss), o.tvdpp_weighting = named<config::TvdppWeighting>(weighting),
          o.tvdpp_stats = named<config::TvdppStats>(stats);
          const Case c = hard_case(6, 50, 21, student_inf);
          const Tensor s0 = c.student;
          Tensor a = s0.clone().set_requires_grad(true), b = s0.clone().set_requires_grad(true);
          const Tensor ref = kd_loss(a, c.teacher, o);
          ref.backward();
          const Tensor fused = kd_loss_fused(b, c.teacher, o);
          fused.backward();
          const std::string what = str_cat(loss, " ", weighting, " ", stats, student_inf ? " -inf student" : "");
          ASSERT_TRUE(std::isfinite(fused.item<double>())) << what;
          ASSERT_TRUE(torch::isfinite(b.grad()).all().item<bool>()) << what;
          EXPECT_NEAR(fused.item<double>(), ref.item<double>(), 1e-9 * std::max(1.0, std::abs(ref.item<double>())))
              << what;
          EXPECT_LT(max_abs(b.grad() - a.grad()), 1e-9) << what;
        }
      }
    }
  }
}

// With token scope and stats vocab the per-row weight 1 / sd is set by how many vocabulary entries have p > q, which
// the tail decides: appending tokens with negligible p and q (a wider vocabulary of unused tokens) moves it a lot. With
// stats q it stays where the mass is: the gradient barely moves.
TEST(KdLoss, RewardStatisticsUnderQAreNotSetByTheTail) {
  torch::manual_seed(4);
  const Tensor s = torch::randn({4, 20}, kF64) * 2, t = s + torch::randn({4, 20}, kF64) * 0.5;
  // 2000 tail tokens at -30 for the student and -30 +- 0.1 for the teacher: p > q on about half of them.
  const Tensor tail_s = torch::full({4, 2000}, -30.0, kF64);
  const Tensor tail_t = tail_s + torch::randn({4, 2000}, kF64) * 0.1;
  const Tensor s_wide = torch::cat({s, tail_s}, 1), t_wide = torch::cat({t, tail_t}, 1);
  for (const char* stats : {"q", "vocab"}) {
    KdOptions o;
    o.tvdpp_stats = named<config::TvdppStats>(stats);
    const Tensor g = kd_loss_forward_backward(s, t, o).grad;
    const Tensor g_wide = kd_loss_forward_backward(s_wide, t_wide, o).grad.narrow(1, 0, 20);
    const double change = ((g_wide - g).norm() / g.norm()).item<double>();
    std::printf("stats %s: the tail changes the head's gradient by %.2e (relative)\n", stats, change);
    if (std::string(stats) == "q") EXPECT_LT(change, 1e-6);
    else EXPECT_GT(change, 0.5);
  }
}

// Relative error in the 2-norm: |a - b| / |b|.
double rel_err(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(torch::kCPU, torch::kFloat64), y = b.to(torch::kCPU, torch::kFloat64);
  return ((x - y).norm() / y.norm().clamp_min(1e-300)).item<double>();
}

// The size of the terms of the TVD++ surrogate for the student logits s (float64): the mean over rows of
// sum_x q |lq| / sd (weighting q) or (1/V) sum_x |lq - mean lq| / sd (uniform), with sd >= eps the reward's std bound
// 0.5 + eps. 1 for tvd, whose value 1 - alpha does not cancel.
double surrogate_scale(const Tensor& student, const KdOptions& o) {
  if (o.loss == config::Loss::kTvd) return 1.0;
  const Tensor lq = torch::log_softmax(student.to(torch::kCPU, torch::kFloat64) / o.temperature, -1);
  const Tensor terms = o.tvdpp_weighting == config::TvdppWeighting::kQ ? (lq.exp() * lq.abs()).sum(-1)
                                                                       : (lq - lq.mean(-1, true)).abs().mean(-1);
  return terms.mean().item<double>() / (0.5 + o.eps);
}

// --- The fused head: chunks of rows through the output projection, no [N, V] logits ---------------------------------

TEST(FusedHead, ChunkRowsFollowLigerAboveAFloor) {
  EXPECT_EQ(head_chunk_rows(16384, 4096, 128256, false), 512);  // ceil(128256 / 4096) = 32: 16384 / 32 = 512
  EXPECT_EQ(head_chunk_rows(65536, 576, 49152, false), 1024);   // ceil(49152 / 576) = 86: 65536 / 86 -> 763 -> 1024
  EXPECT_EQ(head_chunk_rows(16384, 576, 49152, false), 256);    // 191 -> the CPU floor
  EXPECT_EQ(head_chunk_rows(16384, 576, 49152, true), 1024);    // the CUDA floor
  EXPECT_EQ(head_chunk_rows(262144, 768, 128256, true), 2048);  // ceil(128256 / 768) = 167: 1570 -> 2048
  EXPECT_EQ(head_chunk_rows(10, 64, 64, false), 256);           // above N: one chunk
}

// Cross-entropy through the fused head equals it through the materialised logits, in value and in the gradients of
// the hidden states and the weight, for chunks that divide N, that do not, of one row and of more than N rows.
TEST(FusedHead, CrossEntropyEqualsTheMaterialisedHead) {
  torch::manual_seed(3);
  const int64_t n = 13, h = 6, v = 29;
  const Tensor hidden0 = torch::randn({n, h}, kF64), weight0 = torch::randn({v, h}, kF64);
  Tensor targets = torch::randint(v, {n}, torch::kInt64);
  targets[4] = -100, targets[9] = -100;  // ignored rows
  Tensor hr = hidden0.clone().set_requires_grad(true), wr = weight0.clone().set_requires_grad(true);
  const Tensor ref = torch::nn::functional::cross_entropy(
      torch::matmul(hr, wr.t()), targets, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  (ref * 2.5).backward();
  const double count = targets.ge(0).sum().item<double>();
  for (int64_t chunk : {1, 4, 5, 13, 64, 0}) {
    Tensor hf = hidden0.clone().set_requires_grad(true), wf = weight0.clone().set_requires_grad(true);
    const HeadScore score = [&](const Tensor& logits, int64_t begin, int64_t end) {
      return cross_entropy_chunk(logits, targets.narrow(0, begin, end - begin), count);
    };
    const Tensor fused = fused_head_loss(hf, wf, score, chunk);
    (fused * 2.5).backward();
    EXPECT_NEAR(fused.item<double>(), ref.item<double>(), 1e-12) << "chunk " << chunk;
    EXPECT_LT(max_abs(hf.grad() - hr.grad()), 1e-12) << "chunk " << chunk;
    EXPECT_LT(max_abs(wf.grad() - wr.grad()), 1e-12) << "chunk " << chunk;
  }
}

// Stage 3's objective with the heads fused equals it through materialised logits, for every loss, both teachers,
// CE with rows that have no target, in float64: the loss, its parts, and the gradients of the student's hidden states
// and head. TVD++ with batch scope couples the rows, so it runs as one chunk; the others in chunks of 3 of 10 rows.
TEST(FusedHead, DistillObjectiveEqualsTheMaterialisedHeadForEveryLossAndTeacher) {
  torch::manual_seed(11);
  const int64_t n = 10, h = 5, ht = 7, v = 23, k = 4;
  DistillRows rows;
  rows.student_hidden = torch::randn({n, h}, kF64);
  rows.student_head = torch::randn({v, h}, kF64);
  rows.teacher_hidden = torch::randn({n, ht}, kF64);
  rows.teacher_head = torch::randn({v, ht}, kF64) * 1.5;
  rows.targets = torch::randint(v, {n}, torch::kInt64);
  rows.targets[2] = -100;  // an on-policy row: KD only
  const Tensor teacher_logits = torch::matmul(rows.teacher_hidden, rows.teacher_head.t());
  const auto top = torch::log_softmax(teacher_logits, -1).topk(k, -1);
  struct Variant {
    const char *loss, *scope;
  };
  for (const Variant var : {Variant{"fkl", "token"},
                            {"rkl", "token"},
                            {"tvd", "token"},
                            {"ce", "token"},
                            {"tvdpp", "token"},
                            {"tvdpp", "batch"}})
    for (bool offline : {false, true}) {
      DistillRows r = rows;
      if (offline) {
        r.teacher_hidden = Tensor(), r.teacher_head = Tensor();
        r.topk_ids = std::get<1>(top), r.topk_logprobs = std::get<0>(top);
      }
      KdOptions o;
      o.loss = named<config::Loss>(var.loss);
      o.tvdpp_scope = named<config::TvdppScope>(var.scope);
      o.temperature = offline ? 1.0 : 1.3;
      const std::string what = str_cat(var.loss, " ", var.scope, offline ? " offline" : " online");
      auto run = [&](bool fused, Tensor& gh, Tensor& gw) {
        DistillRows x = r;
        x.student_hidden = r.student_hidden.clone().set_requires_grad(true);
        x.student_head = r.student_head.clone().set_requires_grad(true);
        DistillTerms t = distill_objective(x, o, o.loss, 0.7, 0.4, fused, 3);
        t.loss.backward();
        gh = x.student_hidden.grad(), gw = x.student_head.grad();
        return t;
      };
      Tensor gh_ref, gw_ref, gh, gw;
      const DistillTerms ref = run(false, gh_ref, gw_ref), fused = run(true, gh, gw);
      EXPECT_NEAR(fused.loss.item<double>(), ref.loss.item<double>(), 1e-12) << what;
      EXPECT_NEAR(fused.kd.item<double>(), ref.kd.item<double>(), 1e-12) << what;
      EXPECT_NEAR(fused.ce.item<double>(), ref.ce.item<double>(), 1e-12) << what;
      EXPECT_NEAR(fused.alpha_sum.item<double>(), ref.alpha_sum.item<double>(), 1e-12) << what;
      EXPECT_LT(max_abs(gh - gh_ref), 1e-12) << what;
      EXPECT_LT(max_abs(gw - gw_ref), 1e-12) << what;
      EXPECT_GT(max_abs(gw_ref), 1e-3) << what;  // a gradient that is there to compare
      if (!offline && var.loss != std::string("ce")) {
        // The reference itself: the loss of the materialised logits, composed here from kd_loss and CE.
        const Tensor s = torch::matmul(r.student_hidden, r.student_head.t());
        const Tensor kd_ref = kd_loss(s, teacher_logits, o);
        const Tensor ce_ref = torch::nn::functional::cross_entropy(
            s, r.targets, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
        EXPECT_NEAR(ref.kd.item<double>(), kd_ref.item<double>(), 1e-12) << what;
        EXPECT_NEAR(ref.ce.item<double>(), ce_ref.item<double>(), 1e-12) << what;
        EXPECT_NEAR(ref.loss.item<double>(), 0.7 * kd_ref.item<double>() + 0.4 * ce_ref.item<double>(), 1e-12) << what;
      }
    }
}

// The CUDA kernel against the float64 reference (LibTorch on the CPU, from the same input values), on fresh random
// logits for every case: shapes that take the 16-byte and the one-element paths, rows held in shared memory and
// streamed, V up to 256k; fp32, bf16 and mixed inputs; every loss and option; two temperatures. The gradient buffer is
// poisoned with NaN first, so an element the kernel skips fails the test.
TEST(GpuKdFused, KernelEqualsTheFloat64ReferenceOnFreshInputs) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  struct Shape {
    int64_t rows, vocab;
  };
  const std::vector<Shape> shapes = {{5, 1003}, {33, 4096}, {40, 20000}, {16, 49152}, {3, 262144}, {300, 32000}};
  const std::vector<std::pair<torch::ScalarType, torch::ScalarType>> dtypes = {
      {torch::kFloat32, torch::kFloat32}, {torch::kBFloat16, torch::kBFloat16},
      {torch::kBFloat16, torch::kFloat32}, {torch::kFloat32, torch::kBFloat16}};
  std::vector<KdOptions> options(5);
  options[0].loss = config::Loss::kTvd;
  options[2].tvdpp_scope = config::TvdppScope::kBatch;
  options[3].tvdpp_weighting = config::TvdppWeighting::kUniform;
  options[4].tvdpp_scope = config::TvdppScope::kBatch, options[4].tvdpp_weighting = config::TvdppWeighting::kUniform;
  int seed = 100, cases = 0;
  double worst_grad = 0, worst_loss = 0, worst_alpha = 0;
  for (const Shape& sh : shapes) {
    for (const auto& [sd, td] : dtypes) {
      for (size_t k = 0; k < options.size(); ++k) {
        KdOptions o = options[k];
        o.temperature = (seed % 2 == 0) ? 1.0 : 2.0;
        torch::manual_seed(seed++);
        const auto cuda = torch::TensorOptions().device(torch::kCUDA);
        // The teacher is the student shifted by +-0.5 at random, so log(p / q) = +-0.5 / T - log E_q[exp(shift / T)],
        // and with logits spread this wide no q dominates a row, which keeps the second term near 0.12 / T: no entry
        // is near a tie p = q, where fp32 and fp64 may legitimately disagree on r = 1[p > q].
        const Tensor s = (torch::randn({sh.rows, sh.vocab}, cuda) * 2).to(sd);
        const Tensor shift = torch::randint(0, 2, {sh.rows, sh.vocab}, cuda) - 0.5;
        const Tensor t = (s.to(torch::kFloat32) + shift).to(td);
        const KdFused ref = kd_loss_forward_backward(s.to(torch::kCPU, torch::kFloat64),
                                                     t.to(torch::kCPU, torch::kFloat64), o);
        for (bool cache : {true, false}) {
          Tensor grad = torch::full_like(s, std::nan(""));
          const KdFused got = kd_loss_forward_backward(s, t, o, grad, cache);
          const std::string what = str_cat(sh.rows, "x", sh.vocab, " ", sd, "/", td, " option ", k, " T ",
                                           o.temperature, cache ? " cache" : " stream");
          ASSERT_TRUE(torch::isfinite(grad).all().item<bool>()) << what << ": unwritten or non-finite gradient";
          // The TVD++ surrogate is a difference of sums (sum_x (r - mean r) w(x) lq(x)) that nearly cancels when r
          // is independent of q, as here: its error is measured against the size of the terms, not of the result.
          const double eg = rel_err(grad, ref.grad);
          const double el = (got.loss.to(torch::kCPU, torch::kFloat64) - ref.loss).abs().item<double>() /
                            std::max(std::abs(ref.loss.item<double>()), surrogate_scale(s, o));
          const double ea = (got.alpha.to(torch::kCPU, torch::kFloat64) - ref.alpha).abs().max().item<double>();
          // fp32 arithmetic throughout; a bf16 student also gets its gradient rounded to bf16.
          EXPECT_LT(eg, sd == torch::kBFloat16 ? 8e-3 : 1e-4) << what;
          EXPECT_LT(el, 1e-4) << what;
          EXPECT_LT(ea, 1e-4) << what;
          worst_grad = std::max(worst_grad, sd == torch::kFloat32 ? eg : 0.0);
          worst_loss = std::max(worst_loss, el), worst_alpha = std::max(worst_alpha, ea);
          ++cases;
        }
      }
    }
  }
  std::printf("%d cases; worst relative error: fp32 gradient %.2e, loss %.2e; worst |alpha error| %.2e\n", cases,
              worst_grad, worst_loss, worst_alpha);
}

// The kernel on the hard inputs (hard_case at V = 1003 and 49152: peaked rows, -inf entries, mu = 0 and tiny) against
// the float64 reference, for every loss and statistics option, fp32 and bf16 logits.
TEST(GpuKdFused, KernelOnPeakedRowsInfiniteLogitsAndTinyMu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (int64_t v : {1003, 49152}) {
    for (const char* loss : {"tvd", "tvdpp"}) {
      for (const char* weighting : {"q", "uniform"}) {
        for (const char* stats : {"q", "vocab"}) {
          for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
            const bool student_inf = !(std::string(loss) == "tvdpp" && std::string(weighting) == "uniform");
            const Case c = hard_case(8, v, 31, student_inf);
            KdOptions o;
            o.loss = named<config::Loss>(loss), o.tvdpp_weighting = named<config::TvdppWeighting>(weighting),
            o.tvdpp_stats = named<config::TvdppStats>(stats);
            const Tensor s = c.student.to(torch::kCUDA, dtype), t = c.teacher.to(torch::kCUDA, dtype);
            const KdFused ref = kd_loss_forward_backward(s.to(torch::kCPU, torch::kFloat64),
                                                         t.to(torch::kCPU, torch::kFloat64), o);
            const KdFused got = kd_loss_forward_backward(s, t, o);
            const std::string what = str_cat("V ", v, " ", loss, " ", weighting, " ", stats, " ", dtype);
            ASSERT_TRUE(torch::isfinite(got.grad).all().item<bool>()) << what;
            ASSERT_TRUE(std::isfinite(got.loss.item<double>())) << what;
            EXPECT_LT(rel_err(got.grad, ref.grad), dtype == torch::kBFloat16 ? 8e-3 : 1e-4) << what;
            EXPECT_LT((got.alpha.to(torch::kCPU, torch::kFloat64) - ref.alpha).abs().max().item<double>(), 1e-4)
                << what;
          }
        }
      }
    }
  }
}

// In place over the student logits gives the same gradient; through autograd (kd_loss_fused) the kernel's gradient
// equals the composite loss's autograd gradient on the GPU.
TEST(GpuKdFused, InPlaceAndAutogradAgreeWithTheComposite) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(5);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const Tensor s = torch::randn({64, 49152}, cuda) * 2;
  const Tensor t = s + torch::randint(0, 2, {64, 49152}, cuda) - 0.5;  // no near-ties (see above)
  for (const char* weighting : {"q", "uniform"}) {
    KdOptions o;
    o.tvdpp_weighting = named<config::TvdppWeighting>(weighting);
    const KdFused plain = kd_loss_forward_backward(s, t, o);
    Tensor own = s.clone();
    kd_loss_forward_backward(own, t, o, own);
    EXPECT_TRUE(torch::equal(own, plain.grad)) << weighting;
    Tensor a = s.clone().requires_grad_(true), b = s.clone().requires_grad_(true);
    (kd_loss(a, t, o) * 2).backward();
    Tensor alpha_sum;
    (kd_loss_fused(b, t, o, &alpha_sum) * 2).backward();
    EXPECT_LT(rel_err(b.grad(), a.grad()), 1e-4) << weighting;
    EXPECT_NEAR(alpha_sum.item<double>(), acceptance(s, t, 1.0).sum().item<double>(), 1e-3) << weighting;
  }
}

}  // namespace
}  // namespace draftalign::train
