// tvd.cu: the fused TVD / TVD++ kernel (see tvd_launch.h for the interface, docs/TVDPP.md for the maths).
//
// Per row, with u = z_s / T, w = z_t / T, q = softmax(u), p = softmax(w), r = 1[p > q]:
//   pass 1  online max and sum of exp for u and w (one read of each row);
//   pass 2  k = sum r, E_q[r], alpha = sum min(p, q), and the sums of lq = log q the loss needs;
//   pass 3  the gradient, which for every loss is an affine function of q r, q and r with per-row coefficients:
//             tvd            -(s) q (r - E_q[r])                              s = grad_scale / T
//             tvdpp, q       -(s / sd) q (r - E_q[r])                         sd = sqrt(mu (1 - mu)) + eps
//             tvdpp, uniform -(s / (V sd)) (r - mu - q (k - V mu))           mu = E_q[r] (q_stats) or k / V
//           (the first two are the closed forms of docs/TVDPP.md: with weighting q the mean of the normalised
//           reward cancels against sum_x q = 1, so TVD++ is TVD with each row's gradient divided by sd).
// r is decided in log space (log p > log q), the same way in passes 2 and 3, and pass 3 needs one exp per element.
// Everything is fp32 in registers; loads are 16 bytes wide when the row length and the pointers allow.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/tvd_launch.h"

namespace draftalign::kernels {
namespace {

constexpr int kMaxThreads = 1024;
constexpr int kWarps = kMaxThreads / 32;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// VEC consecutive elements to fp32: one 16-byte load for 8 bf16, two for 8 floats.
template <int VEC, typename T>
__device__ __forceinline__ void load(const T* p, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = to_float(p[0]);
  } else if constexpr (sizeof(T) == 2) {
    static_assert(VEC == 8);
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat16* h = reinterpret_cast<const __nv_bfloat16*>(&u);
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = to_float(h[i]);
  } else {
    static_assert(VEC == 8);
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  }
}

template <int VEC, typename T>
__device__ __forceinline__ void store(T* p, const float (&in)[VEC]) {
  if constexpr (VEC == 1) {
    p[0] = from_float<T>(in[0]);
  } else if constexpr (sizeof(T) == 2) {
    uint4 u;
    __nv_bfloat16* h = reinterpret_cast<__nv_bfloat16*>(&u);
#pragma unroll
    for (int i = 0; i < 8; ++i) h[i] = from_float<T>(in[i]);
    *reinterpret_cast<uint4*>(p) = u;
  } else {
    reinterpret_cast<float4*>(p)[0] = make_float4(in[0], in[1], in[2], in[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(in[4], in[5], in[6], in[7]);
  }
}

// Block-wide copy of n 16-byte words into the shared-memory cache, four loads in flight per thread.
__device__ __forceinline__ void fill_cache(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t n) {
  const int64_t stride = blockDim.x;
  int64_t i = threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    dst[i] = a, dst[i + stride] = b, dst[i + 2 * stride] = c, dst[i + 3 * stride] = d;
  }
  for (; i < n; i += stride) dst[i] = src[i];
}

// Running (max, sum of exp(x - max)); -inf entries contribute nothing.
struct MaxSum {
  float m = -INFINITY, z = 0.f;
  // Adds x[j] * scale for the VEC values: one rescale of the running sum per vector, no branch per element.
  template <int VEC>
  __device__ __forceinline__ void add(const float (&x)[VEC], float scale) {
    float vmax = -INFINITY;
#pragma unroll
    for (int j = 0; j < VEC; ++j) vmax = fmaxf(vmax, x[j] * scale);
    if (vmax == -INFINITY) return;
    const float nm = fmaxf(m, vmax);
    float add = 0.f;
#pragma unroll
    for (int j = 0; j < VEC; ++j) add += __expf(x[j] * scale - nm);
    z = (m == -INFINITY ? 0.f : z * __expf(m - nm)) + add;
    m = nm;
  }
  __device__ __forceinline__ void merge(float om, float oz) {
    if (om == -INFINITY) return;
    if (m == -INFINITY) {
      m = om, z = oz;
      return;
    }
    const float nm = fmaxf(m, om);
    z = z * __expf(m - nm) + oz * __expf(om - nm);
    m = nm;
  }
};

// Block-wide sums of K values per thread; every thread gets the totals. `scratch` holds kWarps * K floats.
template <int K>
__device__ __forceinline__ void block_sum(float (&v)[K], float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
  __syncthreads();  // scratch may still be read by an earlier reduction
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < K; ++k) scratch[warp * K + k] = v[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    float s = 0.f;
    for (int w = 0; w < warps; ++w) s += scratch[w * K + k];
    v[k] = s;
  }
}

// Block-wide merge of two running (max, sum) pairs.
__device__ __forceinline__ void block_maxsum(MaxSum& a, MaxSum& b, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float am = __shfl_xor_sync(0xffffffffu, a.m, o), az = __shfl_xor_sync(0xffffffffu, a.z, o);
    const float bm = __shfl_xor_sync(0xffffffffu, b.m, o), bz = __shfl_xor_sync(0xffffffffu, b.z, o);
    a.merge(am, az);
    b.merge(bm, bz);
  }
  __syncthreads();
  if (lane == 0) {
    scratch[warp * 4 + 0] = a.m, scratch[warp * 4 + 1] = a.z;
    scratch[warp * 4 + 2] = b.m, scratch[warp * 4 + 3] = b.z;
  }
  __syncthreads();
  MaxSum ra, rb;
  for (int w = 0; w < warps; ++w) {
    ra.merge(scratch[w * 4 + 0], scratch[w * 4 + 1]);
    rb.merge(scratch[w * 4 + 2], scratch[w * 4 + 3]);
  }
  a = ra, b = rb;
}

// Byte offset of the teacher row in the shared-memory cache: 16-byte aligned after the student row.
__host__ __device__ __forceinline__ size_t teacher_offset(size_t student_bytes) { return (student_bytes + 15) / 16 * 16; }

// One vocabulary entry: log q, log p, q and r = 1[log p > log q]. Passes 2 and 3 both call this, so they agree on r.
struct Element {
  float lq, lp, q, r;
};
__device__ __forceinline__ Element element(float s, float t, float inv_t, float lse_s, float lse_t) {
  const float lq = s * inv_t - lse_s, lp = t * inv_t - lse_t;
  return {lq, lp, __expf(lq), lp > lq ? 1.f : 0.f};
}

// grad = ca * q r + cb * q + cc * r + cd.
struct Coef {
  float ca, cb, cc, cd;
};

__device__ __forceinline__ Coef row_coef(const TvdArgs& a, float count, float sum_qr, float batch_count) {
  const float s = a.grad_scale * a.inv_temperature;
  if (a.loss == TvdLoss::kTvd) return {-s, s * sum_qr, 0.f, 0.f};
  const float v = static_cast<float>(a.vocab);
  const float per_row = a.q_stats ? 1.f : v;  // E_q[r] = sum_qr, or count / V
  const float mu = a.batch_scope ? batch_count / (static_cast<float>(a.rows) * per_row)
                                 : (a.q_stats ? sum_qr : count / v);
  const float sd = sqrtf(fmaxf(mu - mu * mu, 0.f)) + a.eps;
  if (a.loss == TvdLoss::kTvdppQ) return {-s / sd, s * sum_qr / sd, 0.f, 0.f};
  const float w = s / (v * sd);
  return {0.f, w * (count - v * mu), -w, w * mu};
}

template <typename TS, typename TT, int VEC>
__global__ void __launch_bounds__(kMaxThreads) tvd_rows(TvdArgs a, TvdPhase phase, bool cache) {
  extern __shared__ __align__(16) unsigned char row_cache[];
  __shared__ float scratch[kWarps * kTvdStats];
  __shared__ float row_stat[kTvdStats];

  const int64_t row = blockIdx.x, vocab = a.vocab;
  const TS* gs = static_cast<const TS*>(a.student) + row * a.student_stride;
  const TT* gt = static_cast<const TT*>(a.teacher) + row * a.teacher_stride;
  TS* gg = static_cast<TS*>(a.grad) + row * a.grad_stride;
  TS* cs = reinterpret_cast<TS*>(row_cache);
  TT* ct = reinterpret_cast<TT*>(row_cache + teacher_offset(vocab * sizeof(TS)));
  const TS* rs = cache ? cs : gs;  // where passes 2 and 3 read
  const TT* rt = cache ? ct : gt;
  const float inv_t = a.inv_temperature;
  const int64_t step = static_cast<int64_t>(blockDim.x) * VEC;
  float* out = a.stats + row * kTvdStats;

  float lse_s, lse_t;   // log normalisers: log q = u - lse_s
  float count, sum_qr;  // k and E_q[r] of this row
  if (phase == TvdPhase::kGrad) {
    if (threadIdx.x < kTvdStats) row_stat[threadIdx.x] = out[threadIdx.x];
    __syncthreads();
    lse_s = row_stat[kMaxS] + row_stat[kLseS];
    lse_t = row_stat[kMaxT] + row_stat[kLseT];
    count = row_stat[kCount];
    sum_qr = row_stat[kSumQR];
  } else {
    // Pass 1: online log-sum-exp of both rows. With the cache, the block first copies both rows into shared memory
    // in a loop that keeps several 16-byte loads in flight per thread (nothing depends on them until the barrier), and
    // every later pass reads shared memory: global memory is read once.
    if (cache) {
      const int64_t n_s = vocab * sizeof(TS) / 16, n_t = vocab * sizeof(TT) / 16;
      if (VEC > 1) {
        fill_cache(reinterpret_cast<const uint4*>(gs), reinterpret_cast<uint4*>(cs), n_s);
        fill_cache(reinterpret_cast<const uint4*>(gt), reinterpret_cast<uint4*>(ct), n_t);
      } else {
        for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) cs[i] = gs[i], ct[i] = gt[i];
      }
      __syncthreads();
    }
    MaxSum ms, mt;
    float sum_u[1] = {0.f};
    for (int64_t i = threadIdx.x * VEC; i < vocab; i += step) {
      float s[VEC], t[VEC];
      load<VEC>(rs + i, s);
      load<VEC>(rt + i, t);
      ms.add<VEC>(s, inv_t);
      mt.add<VEC>(t, inv_t);
#pragma unroll
      for (int j = 0; j < VEC; ++j) sum_u[0] += s[j];
    }
    block_sum<1>(sum_u, scratch);
    block_maxsum(ms, mt, scratch);
    lse_s = ms.m + __logf(ms.z);
    lse_t = mt.m + __logf(mt.z);
    const float lq_mean = sum_u[0] * inv_t / static_cast<float>(vocab) - lse_s;

    // Pass 2: the statistics.
    float acc[7] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};  // count, qr, alpha, q lq, q r lq, r lqc, lqc
    for (int64_t i = threadIdx.x * VEC; i < vocab; i += step) {
      float s[VEC], t[VEC];
      load<VEC>(rs + i, s);
      load<VEC>(rt + i, t);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const auto [lq, lp, q, r] = element(s[j], t[j], inv_t, lse_s, lse_t);
        acc[0] += r;
        acc[1] += q * r;
        acc[2] += __expf(fminf(lp, lq));
        const float q_lq = q > 0.f ? q * lq : 0.f;  // 0 log 0 = 0 for a -inf student logit
        acc[3] += q_lq;
        acc[4] += r * q_lq;
        acc[5] += r * (lq - lq_mean);
        acc[6] += lq - lq_mean;
      }
    }
    block_sum<7>(acc, scratch);
    if (threadIdx.x == 0) {
      out[kMaxS] = ms.m, out[kLseS] = __logf(ms.z), out[kMaxT] = mt.m, out[kLseT] = __logf(mt.z);
      out[kCount] = acc[0], out[kSumQR] = acc[1], out[kAlpha] = acc[2], out[kSumQLq] = acc[3];
      out[kSumQRLq] = acc[4], out[kSumRLq] = acc[5], out[kSumLq] = acc[6], out[kLqMean] = lq_mean;
    }
    if (phase == TvdPhase::kStats) return;
    count = acc[0];  // block_sum gave every thread the totals
    sum_qr = acc[1];
  }

  // Pass 3: the gradient.
  const Coef c = row_coef(a, count, sum_qr, a.batch_scope ? *a.batch_count : 0.f);
  for (int64_t i = threadIdx.x * VEC; i < vocab; i += step) {
    float s[VEC], t[VEC], g[VEC];
    load<VEC>(rs + i, s);
    load<VEC>(rt + i, t);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const Element e = element(s[j], t[j], inv_t, lse_s, lse_t);
      g[j] = fmaf(c.ca * e.r + c.cb, e.q, fmaf(c.cc, e.r, c.cd));
    }
    store<VEC>(gg + i, g);
  }
}

size_t dtype_size(TvdDtype d) { return d == TvdDtype::kBFloat16 ? 2 : 4; }

size_t cache_bytes(const TvdArgs& a) {
  return teacher_offset(static_cast<size_t>(a.vocab) * dtype_size(a.student_dtype)) +
         static_cast<size_t>(a.vocab) * dtype_size(a.teacher_dtype);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename TS, typename TT>
int launch_typed(const TvdArgs& a, TvdPhase phase, cudaStream_t stream) {
  const bool vec = a.vocab % 8 == 0 && aligned16(a.student) && aligned16(a.teacher) && aligned16(a.grad) &&
                   (a.student_stride * sizeof(TS)) % 16 == 0 && (a.teacher_stride * sizeof(TT)) % 16 == 0 &&
                   (a.grad_stride * sizeof(TS)) % 16 == 0;
  const bool cache = phase != TvdPhase::kGrad && tvd_uses_cache(a);
  const size_t smem = cache ? cache_bytes(a) : 0;
  const int64_t items = vec ? a.vocab / 8 : a.vocab;
  const int threads = items >= 2048 ? 512 : items >= 512 ? 256 : 128;
  auto run = [&](auto kernel) {
    if (smem > 48 * 1024) {
      const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(smem));
      if (e != cudaSuccess) return static_cast<int>(e);
    }
    kernel<<<static_cast<unsigned>(a.rows), threads, smem, stream>>>(a, phase, cache);
    return static_cast<int>(cudaGetLastError());
  };
  return vec ? run(tvd_rows<TS, TT, 8>) : run(tvd_rows<TS, TT, 1>);
}

}  // namespace

bool tvd_uses_cache(const TvdArgs& a) {
  // Measured on an H100 (docs/PERFORMANCE.md): a cached row that leaves room for one block per multiprocessor (49152
  // bf16 logits, 192 KiB) ran 1.26 ms against 1.00 ms streaming, since nothing overlaps its loads with its arithmetic;
  // so the cache is used only when two blocks fit on a multiprocessor.
  if (!a.allow_cache) return false;
  int device = 0, optin = 0, per_sm = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device) != cudaSuccess) return false;
  constexpr size_t kStatic = (kWarps + 1) * kTvdStats * sizeof(float) + 1024;  // scratch, row_stat, reserved
  const size_t block = cache_bytes(a) + kStatic;
  return block <= static_cast<size_t>(optin) && 2 * block <= static_cast<size_t>(per_sm);
}

int launch_tvd(const TvdArgs& a, TvdPhase phase, void* stream) {
  if (a.rows == 0) return cudaSuccess;
  if (a.rows > 0x7fffffff || a.vocab <= 0) return cudaErrorInvalidValue;
  if (a.batch_scope && a.loss != TvdLoss::kTvd && phase == TvdPhase::kStatsAndGrad) return cudaErrorInvalidValue;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool sb = a.student_dtype == TvdDtype::kBFloat16, tb = a.teacher_dtype == TvdDtype::kBFloat16;
  if (sb && tb) return launch_typed<__nv_bfloat16, __nv_bfloat16>(a, phase, s);
  if (sb) return launch_typed<__nv_bfloat16, float>(a, phase, s);
  if (tb) return launch_typed<float, __nv_bfloat16>(a, phase, s);
  return launch_typed<float, float>(a, phase, s);
}

}  // namespace draftalign::kernels
