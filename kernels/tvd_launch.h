// tvd_launch.h: launcher of the fused TVD / TVD++ kernel (tvd.cu), in raw-pointer terms so the .cu file needs no ATen
// header. The torch glue (kd_loss_fused, kernels/tvd.{h,cpp}) turns the per-row statistics into the loss.
//
// One thread block per row of the [N, V] student and teacher logits. For each row it computes, in fp32, the two
// log-sum-exps (one online pass), then the statistics below (a second pass), then the gradient of the loss with respect
// to the student logits (a third pass) and writes it in the student's dtype, into `grad` (which may be `student`
// itself: every element is read before it is overwritten, by the same thread). When both rows fit in shared memory the
// first pass keeps them there and the later passes read global memory no more; otherwise every pass streams.
// No [N, V] buffer other than `grad` exists.
#pragma once

#include <cstdint>

namespace draftalign::kernels {

// Columns of the per-row statistics ([N, kTvdStats] fp32), with lq = log q(x), r = 1[p(x) > q(x)]:
enum TvdStat : int {
  kMaxS = 0,   // max_x z_s(x) / T
  kLseS,       // log sum_x exp(z_s(x) / T - kMaxS)
  kMaxT,       // the same for the teacher
  kLseT,
  kCount,      // sum_x r
  kSumQR,      // sum_x q r           (E_q[r])
  kAlpha,      // sum_x min(p, q)     (= 1 - TVD)
  kSumQLq,     // sum_x q lq
  kSumQRLq,    // sum_x q r lq
  kSumRLq,     // sum_x r (lq - c)     centred on c = mean_x lq, so that the uniform-weighting loss
  kSumLq,      // sum_x (lq - c)       sum_x (r - mean r) lq does not cancel large fp32 sums
  kLqMean,     // c
  kTvdStats
};

enum class TvdDtype : int { kFloat32 = 0, kBFloat16 = 1 };
enum class TvdLoss : int { kTvd = 0, kTvdppQ = 1, kTvdppUniform = 2 };

struct TvdArgs {
  const void* student = nullptr;  // [rows, vocab], row stride student_stride elements, unit column stride
  const void* teacher = nullptr;
  void* grad = nullptr;           // [rows, vocab] in the student's dtype, row stride grad_stride; may equal student
  float* stats = nullptr;         // [rows, kTvdStats]
  const float* batch_count = nullptr;  // scope batch only: device scalar, sum of kSumQR (q_stats) or kCount over rows
  int64_t rows = 0, vocab = 0;
  int64_t student_stride = 0, teacher_stride = 0, grad_stride = 0;
  TvdDtype student_dtype = TvdDtype::kFloat32, teacher_dtype = TvdDtype::kFloat32;
  TvdLoss loss = TvdLoss::kTvd;
  bool batch_scope = false;       // TVD++: normalise the reward over all rows (needs batch_count) or per row
  bool q_stats = true;            // TVD++: the reward's mean is E_q[r] (kSumQR), else count / vocab (kCount / V);
                                  // batch_count then holds the sum over rows of that column
  float inv_temperature = 1.0f;
  float eps = 1e-6f;
  float grad_scale = 1.0f;        // multiplies the gradient of the per-row loss (1/N for the mean over rows)
  bool allow_cache = true;        // false: always stream (the benchmark compares the two)
};

// Phases: kStatsAndGrad does everything in one launch; the reward normalisation of scope batch needs the statistics of
// every row first, so it runs kStats, lets the caller reduce kCount into batch_count, then kGrad (which reads the
// log-sum-exps back from `stats`). `stream` is a cudaStream_t; the return value a cudaError_t (0 = success).
enum class TvdPhase : int { kStatsAndGrad = 0, kStats = 1, kGrad = 2 };
int launch_tvd(const TvdArgs& args, TvdPhase phase, void* stream);

// Whether launch_tvd would keep both rows in shared memory on the current device (for the benchmark's table).
bool tvd_uses_cache(const TvdArgs& args);

}  // namespace draftalign::kernels
