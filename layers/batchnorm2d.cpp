// N batch, C channels, HW = H*W positions; M = N*HW values per channel.
// NCHW puts channel c of image n at (n*C + c)*HW; NHWC puts position i of
// image n at (n*HW + i)*C. Statistics are accumulated in double.
#include "batchnorm2d.h"

#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "../core/allocator.h"
#include "../core/autograd.h"
#include "../core/iter.h"
#include "../core/kernel_policy.h"
#include "activation.h"
#include "batchnorm_sync.h"
#include "pooling.h"

namespace norma::nn {

namespace {

// This thread's share of rows [0, n) inside a parallel region: contiguous,
// as schedule(static) would give.
std::pair<int64_t, int64_t> thread_rows(int64_t n) {
  const int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
  return {n * t / T, n * (t + 1) / T};
}

// Per-channel sums over an NHWC tensor: rows of C values, split across threads
// with a private accumulator each, then combined (no atomics, deterministic for
// a thread count). add_rows(acc, r, rows) adds rows [r, r + rows) into
// acc[0, width), rows a std::integral_constant: 4, or 1 for the last few. Its
// loop over a row's channels is the one that vectorises; four rows to a call
// it loads and stores the accumulators a quarter as often (one row at a time,
// that bound the pass at 12.7 GB/s).
template <class F>
void nhwc_channel_sums(double* out, int64_t rows, int64_t width, F add_rows) {
  const int T = omp_get_max_threads();
  std::vector<double> part(size_t(T) * width, 0.0);
#pragma omp parallel num_threads(T)
  {
    double* acc = part.data() + size_t(omp_get_thread_num()) * width;
    const auto [r0, r1] = thread_rows(rows);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) add_rows(acc, r, std::integral_constant<int, 4>{});
    for (; r < r1; ++r) add_rows(acc, r, std::integral_constant<int, 1>{});
  }
  for (int64_t j = 0; j < width; ++j) {
    double s = 0;
    for (int t = 0; t < T; ++t) s += part[size_t(t) * width + j];
    out[j] = s;
  }
}

// A channel's N planes lie C HW floats apart and each starts cold: the
// hardware prefetchers stop at 4 KiB pages, a 32x32 plane's size. So the
// first passes over a channel go through each plane kSegment floats at a time
// and ask for the same segment of the next image's plane (next floats on) as
// they go; a whole plane asked for at once, the prefetches waited on each other.
constexpr int64_t kSegment = 256;

// Sum of f(value, c) over channel c of an NCHW tensor, in double: its N planes
// are contiguous runs of HW floats. simd lets the sum be split across vector
// lanes; without it every add waits for the one before and the pass runs at a
// quarter of its speed. (f takes the value, not an index: an indexed term made
// the compiler gather element by element.)
template <class F>
double nchw_channel_sum(const float* x, int64_t c, int64_t N, int64_t C, int64_t HW, F f) {
  double s = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* p = x + (n * C + c) * HW;
    const int64_t next = n + 1 < N ? C * HW : 0;
    for (int64_t i0 = 0; i0 < HW; i0 += kSegment) {
      const int64_t i1 = std::min(HW, i0 + kSegment);
      if (next) detail::prefetch_floats(p + next + i0, i1 - i0);
#pragma omp simd reduction(+ : s)
      for (int64_t i = i0; i < i1; ++i) s += f(p[i], c);
    }
  }
  return s;
}

// mean and var (biased) of channel c of an NCHW tensor: two passes, or
// BrainPy's one (E[x^2] - E[x]^2, clamped at 0).
void nchw_channel_stats(double& mean, double& var, const float* x, int64_t c, int64_t N, int64_t C, int64_t HW,
                        VarianceMethod method) {
  const double M = double(N * HW);
  mean = nchw_channel_sum(x, c, N, C, HW, [](float v, int64_t) { return double(v); }) / M;
  if (method == VarianceMethod::two_pass) {
    const double m = mean;
    var = nchw_channel_sum(x, c, N, C, HW, [m](float v, int64_t) {
            const double d = v - m;
            return d * d;
          }) / M;
  } else {
    var = nchw_channel_sum(x, c, N, C, HW, [](float v, int64_t) { return double(v) * v; }) / M;
    var = std::max(0.0, var - mean * mean);
  }
}

// mean as hi + lo, hi its float rounding: then (x - hi) - lo is x - mean to
// float precision in float arithmetic, where a plain x - float(mean) would
// lose log2(|mean| / std) bits (x - hi is exact when x is within a factor 2
// of hi). The passes over the values run in float with it, twice the lanes of
// double, and still keep |mean| >> std (1e4 +- 1) float32-accurate.
struct SplitMean {
  float hi, lo;
  explicit SplitMean(double m) : hi(float(m)), lo(float(m - double(float(m)))) {}
  float centre(float x) const { return (x - hi) - lo; }
};

// One normalised value from x - mean (xc): every kernel goes through this, so
// that the fused ReLU's backward, which recomputes the forward's output to
// find where it was positive, gets the same float arithmetic to the bit
// (whether the compiler fuses the multiply and add into one instruction).
inline float bn_value(float xc, float scale, float shift) { return xc * scale + shift; }

// The normalisation of one run of values of a channel: y = (x - m) * scale + shift,
// then max(y, 0) with the fused ReLU (NaN gives 0, as relu). y may be x.
void normalize_run(float* y, const float* x, double m, double scale, double shift, int64_t n, bool relu) {
  const SplitMean sm(m);
  const float sc = float(scale), sh = float(shift);
  if (relu)
    for (int64_t i = 0; i < n; ++i) {
      const float v = bn_value(sm.centre(x[i]), sc, sh);
      y[i] = v > 0 ? v : 0.0f;
    }
  else
    for (int64_t i = 0; i < n; ++i) y[i] = bn_value(sm.centre(x[i]), sc, sh);
}

// out(buf, i, len) writes values [i, i + len) of a run of n floats to buf.
// stream_run sends them on to y with streaming stores, a chunk at a time
// through an L1 buffer: an ordinary store first reads y's cache line from
// memory, so writing a tensor that the next layer reads from memory anyway
// moves its bytes twice; a streaming store writes the line without reading it.
// Only for tensors of 16 MiB and more (a first version that streamed every
// size was slower on small ones, which the next layer could have found in
// cache) and where AVX-512 is there; else out writes y. stream_fence() after
// the last run a thread writes makes them visible to the others.
constexpr int64_t kStreamChunk = 256, kStreamMinBytes = int64_t(16) << 20;
bool streams(int64_t numel) {
  // KernelPolicy::stream_stores off (NORMA_STREAM_STORES=0): to measure what they buy.
  return kernel_policy().stream_stores && numel * int64_t(sizeof(float)) >= kStreamMinBytes;
}
// y[0, n) = buf[0, n): ordinary stores up to y's first 64-byte boundary and
// after its last (a streaming store writes a whole aligned line), streaming
// ones between.
void stream_copy(float* y, const float* buf, int64_t n) {
#if defined(__AVX512F__)
  int64_t j = 0;
  for (; j < n && reinterpret_cast<uintptr_t>(y + j) % 64 != 0; ++j) y[j] = buf[j];
  for (; j + 16 <= n; j += 16) _mm512_stream_ps(y + j, _mm512_loadu_ps(buf + j));
  for (; j < n; ++j) y[j] = buf[j];
#else
  std::memcpy(y, buf, size_t(n) * sizeof(float));
#endif
}
template <class Out>
void stream_run(float* y, int64_t n, bool stream, Out out) {
#if defined(__AVX512F__)
  if (stream) {
    alignas(64) float buf[kStreamChunk];
    for (int64_t i = 0; i < n; i += kStreamChunk) {
      const int64_t len = std::min(kStreamChunk, n - i);
      out(buf, i, len);
      stream_copy(y + i, buf, len);
    }
    return;
  }
#endif
  out(y, 0, n);
}
// The NHWC form: rows [r0, r1) of C floats, row(out, r) writing row r to out;
// as many whole rows per chunk as fit kStreamChunk (rows wider than that are
// written directly).
template <class Row>
void stream_rows(float* y, int64_t r0, int64_t r1, int64_t C, bool stream, Row row) {
#if defined(__AVX512F__)
  if (stream && C <= kStreamChunk) {
    alignas(64) float buf[kStreamChunk];
    const int64_t k = kStreamChunk / C;
    for (int64_t r = r0; r < r1; r += k) {
      const int64_t n = std::min(k, r1 - r);
      for (int64_t j = 0; j < n; ++j) row(buf + j * C, r + j);
      stream_copy(y + r * C, buf, n * C);
    }
    return;
  }
#endif
  for (int64_t r = r0; r < r1; ++r) row(y + r * C, r);
}
void stream_fence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

// g where the fused ReLU's output r is positive, else 0 (0 also for a NaN g, as
// ReLU's backward gives): a bit mask, since a select (r > 0 ? g : 0) kept the
// loops around it from vectorising ("control flow in loop").
inline float relu_masked(float g, float r) {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(g) & -uint32_t(r > 0));
}

// A channel's scale and shift as the forward uses them. The fused ReLU's
// backward recomputes the forward's output r = bn_value(x - mean, scale, shift)
// for relu_masked from x, which it reads anyway, instead of reading r back
// from memory: one tensor less in each pass. beta null is 0.
struct ScaleShift {
  float scale, shift;
};
ScaleShift scale_shift(const double* invstd, const float* gamma, const float* beta, int64_t c) {
  return {float(invstd[c] * (gamma ? gamma[c] : 1.0f)), beta ? beta[c] : 0.0f};
}

// What an NHWC row's loop over channels needs, as arrays it reads with vector
// loads: each channel's split mean (hi, lo) and scale and shift.
struct RowCoefficients {
  std::vector<float> v;  // hi, lo, scale, shift: C floats each
  RowCoefficients(const double* mean, const double* invstd, const float* gamma, const float* beta, int64_t C)
      : v(4 * C) {
    for (int64_t c = 0; c < C; ++c) {
      const SplitMean sm(mean[c]);
      const ScaleShift ss = scale_shift(invstd, gamma, beta, c);
      v[c] = sm.hi, v[C + c] = sm.lo, v[2 * C + c] = ss.scale, v[3 * C + c] = ss.shift;
    }
  }
};

// sum(dy) and sum(dy (x - mean)) over channel c of NCHW tensors, in one sweep,
// (x - mean) formed per element (sum(dy x) - mean sum(dy) would cancel). With
// relu (the fused ReLU), dy counts only where the forward's output was positive.
// dy_plane(n) gives image n's plane of dy and the next image's (to prefetch, or
// null): a plane of the tensor, or one the fused pool's backward fills in.
template <class Planes>
void nchw_grad_sums(double& sum_dy, double& sum_dy_xc, Planes dy_plane, const float* x, const ScaleShift* relu,
                    double m, int64_t c, int64_t N, int64_t C, int64_t HW) {
  const SplitMean sm(m);
  double a = 0, b = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t o = (n * C + c) * HW, next = n + 1 < N ? C * HW : 0;
    const std::pair<const float*, const float*> planes = dy_plane(n);
    const float *g = planes.first, *g_next = planes.second;  // (clang 14 cannot use structured bindings under omp simd)
    const float* xp = x + o;
    for (int64_t i0 = 0; i0 < HW; i0 += kSegment) {
      const int64_t i1 = std::min(HW, i0 + kSegment);
      if (g_next) detail::prefetch_floats(g_next + i0, i1 - i0);
      if (next) detail::prefetch_floats(xp + next + i0, i1 - i0);
      if (relu) {
        const float sc = relu->scale, sh = relu->shift;
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = i0; i < i1; ++i) {
          const float gi = relu_masked(g[i], bn_value(sm.centre(xp[i]), sc, sh));
          a += gi, b += gi * (xp[i] - m);
        }
      } else {
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = i0; i < i1; ++i) a += g[i], b += g[i] * (xp[i] - m);
      }
    }
  }
  sum_dy = a, sum_dy_xc = b;
}

// Channel c's planes of an NCHW tensor, for nchw_grad_sums.
struct TensorPlanes {
  const float* t;
  int64_t c, N, C, HW;
  std::pair<const float*, const float*> operator()(int64_t n) const {
    const float* p = t + (n * C + c) * HW;
    return {p, n + 1 < N ? p + C * HW : nullptr};
  }
};

// Per-channel constants of dx = k (dy - mean_dy - (x - mean) q) (see batchnorm2d_backward_dx).
struct DxCoefficients {
  double k, mean_dy, q;
};
DxCoefficients dx_coefficients(double invstd, const float* gamma, int64_t c, double sum_dy, double sum_dy_xhat,
                               double M, bool batch_stats) {
  return {invstd * (gamma ? gamma[c] : 1.0f), batch_stats ? sum_dy / M : 0.0,
          batch_stats ? invstd * sum_dy_xhat / M : 0.0};
}

// dx over one run of values of a channel. Without batch_stats x plays no part
// but the fused ReLU's (and an infinite x must not turn dx into NaN). relu as
// in nchw_grad_sums.
void dx_run(float* __restrict d, const float* __restrict g, const float* __restrict xp, const ScaleShift* relu,
            DxCoefficients k, double m, int64_t n, bool batch_stats) {
  const SplitMean sm(m);
  const float kk = float(k.k), mdy = float(k.mean_dy), q = float(k.q);
  const float sc = relu ? relu->scale : 0.0f, sh = relu ? relu->shift : 0.0f;
  if (relu && batch_stats)
    for (int64_t i = 0; i < n; ++i) {
      const float xc = sm.centre(xp[i]);
      d[i] = kk * (relu_masked(g[i], bn_value(xc, sc, sh)) - mdy - xc * q);
    }
  else if (relu)
    for (int64_t i = 0; i < n; ++i) d[i] = kk * relu_masked(g[i], bn_value(sm.centre(xp[i]), sc, sh));
  else if (batch_stats)
    for (int64_t i = 0; i < n; ++i) d[i] = kk * (g[i] - mdy - sm.centre(xp[i]) * q);
  else
    for (int64_t i = 0; i < n; ++i) d[i] = kk * g[i];
}

}  // namespace

void batchnorm2d_stats(double* mean, double* var, const float* x, int64_t N, int64_t C, int64_t HW, Layout layout,
                       VarianceMethod method) {
  if (layout == Layout::NCHW) {  // threads over channels, each channel's passes one after the other
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t c = 0; c < C; ++c) nchw_channel_stats(mean[c], var[c], x, c, N, C, HW, method);
    return;
  }
  // NHWC: one sweep over the rows, each thread adding every row into its own
  // row of accumulators: sums of d = x - k and of d^2 per channel, from which
  // mean = k + E[d] and var = E[d^2] - E[d]^2. BrainPy's one-pass form is k = 0.
  // Otherwise k is the channel's first value: var >= (k - mean)^2 / M, so the
  // subtraction cancels at most log2(M) of double's 53 bits (17 at M = 131072),
  // and x need not be read a second time for the squared deviations.
  std::vector<double> k(C, 0.0), sums(2 * C);
  if (method == VarianceMethod::two_pass)
    for (int64_t c = 0; c < C; ++c) k[c] = x[c];
  nhwc_channel_sums(sums.data(), N * HW, 2 * C, [&](double* __restrict acc, int64_t r, auto rows) {
    const float* __restrict p = x + r * C;
    const double* __restrict kc = k.data();
    for (int64_t c = 0; c < C; ++c) {
      double s = 0, s2 = 0;
      for (int j = 0; j < rows; ++j) {
        const double d = p[j * C + c] - kc[c];
        s += d, s2 += d * d;
      }
      acc[c] += s, acc[C + c] += s2;
    }
  });
  const double M = double(N * HW);
  for (int64_t c = 0; c < C; ++c) {
    const double e = sums[c] / M;
    mean[c] = k[c] + e, var[c] = std::max(0.0, sums[C + c] / M - e * e);
  }
}

void batchnorm2d_forward(float* y, const float* x, const double* mean, const double* invstd, const float* gamma,
                         const float* beta, int64_t N, int64_t C, int64_t HW, Layout layout, bool relu) {
  // y = (x - mean) * scale + shift with scale = gamma * invstd and shift = beta,
  // x - mean through SplitMean so |mean| >> std loses nothing.
  if (layout == Layout::NCHW) {
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t p = 0; p < N * C; ++p) {
      const int64_t c = p % C;
      const double scale = invstd[c] * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
      normalize_run(y + p * HW, x + p * HW, mean[c], scale, shift, HW, relu);
    }
  } else {
    const RowCoefficients rc(mean, invstd, gamma, beta, C);
    const float *__restrict hi = rc.v.data(), *__restrict lo = hi + C, *__restrict sc = lo + C,
                            *__restrict sh = sc + C;
    const bool stream = streams(N * C * HW);
#pragma omp parallel if (N * C * HW >= (1 << 15))
    {
      const auto [r0, r1] = thread_rows(N * HW);
      stream_rows(y, r0, r1, C, stream, [&](float* __restrict yp, int64_t r) {
        const float* __restrict xp = x + r * C;
        for (int64_t c = 0; c < C; ++c) yp[c] = bn_value((xp[c] - hi[c]) - lo[c], sc[c], sh[c]);
        if (relu)
          for (int64_t c = 0; c < C; ++c) yp[c] = yp[c] > 0 ? yp[c] : 0.0f;
      });
      if (stream) stream_fence();
    }
  }
}

void batchnorm2d_forward_train(float* y, double* mean, double* var, double* invstd, const float* x, const float* gamma,
                               const float* beta, double eps, int64_t N, int64_t C, int64_t HW, Layout layout,
                               VarianceMethod method, bool relu) {
  if (layout == Layout::NHWC) {  // a channel is every C-th float: nothing to gain from going channel by channel
    batchnorm2d_stats(mean, var, x, N, C, HW, layout, method);
    for (int64_t c = 0; c < C; ++c) invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    batchnorm2d_forward(y, x, mean, invstd, gamma, beta, N, C, HW, layout, relu);
    return;
  }
  // NCHW, a channel at a time: its statistics, then its normalisation while its
  // planes are still in L2 (a channel of a (128, 64, 32, 32) batch is 512 KiB),
  // so x comes from memory once where the two kernels one after the other read it
  // three times.
  const bool stream = streams(N * C * HW);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t c = 0; c < C; ++c) {
    nchw_channel_stats(mean[c], var[c], x, c, N, C, HW, method);
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    const double scale = invstd[c] * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      stream_run(y + o, HW, stream, [&](float* out, int64_t i, int64_t len) {
        normalize_run(out, x + o + i, mean[c], scale, shift, len, relu);
      });
    }
    if (stream) stream_fence();
  }
}

void batchnorm2d_backward_reduce(double* sum_dy, double* sum_dy_xhat, const float* dy, const float* x,
                                 const double* mean, const double* invstd, int64_t N, int64_t C, int64_t HW,
                                 Layout layout, bool relu, const float* gamma, const float* beta) {
  if (layout == Layout::NCHW) {
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t c = 0; c < C; ++c) {
      const ScaleShift fr = scale_shift(invstd, gamma, beta, c);
      nchw_grad_sums(sum_dy[c], sum_dy_xhat[c], TensorPlanes{dy, c, N, C, HW}, x, relu ? &fr : nullptr, mean[c], c,
                     N, C, HW);
      sum_dy_xhat[c] *= invstd[c];
    }
    return;
  }
  std::vector<double> sums(2 * C);  // sum(dy) per channel, then sum(dy (x - mean))
  const RowCoefficients rc(mean, invstd, gamma, beta, C);  // for the fused ReLU's mask
  const float *__restrict hi = rc.v.data(), *__restrict lo = hi + C, *__restrict sc = lo + C, *__restrict sh = sc + C;
  nhwc_channel_sums(sums.data(), N * HW, 2 * C, [&](double* __restrict acc, int64_t r, auto rows) {
    const float *__restrict g = dy + r * C, *__restrict xp = x + r * C;
    const double* __restrict m = mean;
    auto add = [&](bool masked) {  // masked a constant in each loop: one version with the ReLU, one without
      for (int64_t c = 0; c < C; ++c) {
        double s = 0, s2 = 0;
        for (int j = 0; j < rows; ++j) {
          const int64_t i = j * C + c;
          const float gc = masked ? relu_masked(g[i], bn_value((xp[i] - hi[c]) - lo[c], sc[c], sh[c])) : g[i];
          s += gc, s2 += gc * (xp[i] - m[c]);
        }
        acc[c] += s, acc[C + c] += s2;
      }
    };
    if (relu) add(true);
    else add(false);
  });
  for (int64_t c = 0; c < C; ++c) sum_dy[c] = sums[c], sum_dy_xhat[c] = sums[C + c] * invstd[c];
}

void batchnorm2d_backward_dx(float* dx, const float* dy, const float* x, const double* mean, const double* invstd,
                             const float* gamma, const double* sum_dy, const double* sum_dy_xhat, double M, int64_t N,
                             int64_t C, int64_t HW, Layout layout, bool batch_stats, bool relu, const float* beta) {
  // One pass: dx = k (dy - sum_dy/M - xhat sum_dy_xhat/M) with k = invstd * gamma and
  // xhat = (x - mean) invstd, or dx = k dy when the statistics were constants.
  // Per channel: dx = k (dy - mean_dy - (x - mean) q) with q = invstd sum_dy_xhat / M.
  auto coefficients = [&](int64_t c) {
    return dx_coefficients(invstd[c], gamma, c, sum_dy[c], sum_dy_xhat[c], M, batch_stats);
  };
  if (layout == Layout::NCHW) {
    std::vector<DxCoefficients> k(C);
    std::vector<ScaleShift> fr(C);
    for (int64_t c = 0; c < C; ++c) k[c] = coefficients(c), fr[c] = scale_shift(invstd, gamma, beta, c);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t p = 0; p < N * C; ++p) {
      const int64_t c = p % C;
      dx_run(dx + p * HW, dy + p * HW, x + p * HW, relu ? &fr[c] : nullptr, k[c], mean[c], HW, batch_stats);
    }
    return;
  }
  // NHWC: the coefficients (and the split mean) as arrays, so the loop over a
  // row's channels reads each with contiguous vector loads.
  std::vector<float> coef(3 * C);
  float *__restrict kp = coef.data(), *__restrict mp = kp + C, *__restrict qp = mp + C;
  for (int64_t c = 0; c < C; ++c) {
    const DxCoefficients k = coefficients(c);
    kp[c] = float(k.k), mp[c] = float(k.mean_dy), qp[c] = float(k.q);
  }
  const RowCoefficients rc(mean, invstd, gamma, beta, C);
  const float *__restrict hi = rc.v.data(), *__restrict lo = hi + C, *__restrict sc = lo + C, *__restrict sh = sc + C;
  const bool stream = streams(N * C * HW);
#pragma omp parallel if (N * C * HW >= (1 << 15))
  {
    const auto [r0, r1] = thread_rows(N * HW);
    stream_rows(dx, r0, r1, C, stream, [&](float* __restrict d, int64_t r) {
      const float *g = dy + r * C, *__restrict xp = x + r * C;  // g may become d below: not restrict
      if (relu) {  // dy through the fused ReLU first, into d, then dx over it
        for (int64_t c = 0; c < C; ++c) d[c] = relu_masked(g[c], bn_value((xp[c] - hi[c]) - lo[c], sc[c], sh[c]));
        g = d;
      }
      if (batch_stats)
        for (int64_t c = 0; c < C; ++c) d[c] = kp[c] * (g[c] - mp[c] - ((xp[c] - hi[c]) - lo[c]) * qp[c]);
      else
        for (int64_t c = 0; c < C; ++c) d[c] = kp[c] * g[c];
    });
    if (stream) stream_fence();
  }
}

void batchnorm2d_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const double* mean,
                          const double* invstd, const float* gamma, int64_t N, int64_t C, int64_t HW, Layout layout,
                          bool batch_stats, bool relu, const float* beta) {
  const double M = double(N * HW);
  if (layout == Layout::NCHW && dx) {
    // A channel at a time, as batchnorm2d_forward_train: its two sums, then its
    // dx while its planes of dy and x are still in L2, the images in reverse
    // (the last read are the likeliest still there: a channel of (128, 32, 32,
    // 32)'s dy and x is 1 MiB, an L2's size). Reversed, five alternating runs
    // (2 threads, best of 3 calls each) took that shape's backward with the
    // ReLU from a median of 1.98 ms to 1.85, and the pool backward's (below)
    // from 2.09 to 1.88.
    const bool stream = streams(N * C * HW);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t c = 0; c < C; ++c) {
      double sum_dy, sum_dy_xhat;
      const ScaleShift fr = scale_shift(invstd, gamma, beta, c);
      nchw_grad_sums(sum_dy, sum_dy_xhat, TensorPlanes{dy, c, N, C, HW}, x, relu ? &fr : nullptr, mean[c], c, N, C,
                     HW);
      sum_dy_xhat *= invstd[c];
      if (dbeta) dbeta[c] = float(sum_dy);
      if (dgamma) dgamma[c] = float(sum_dy_xhat);
      const DxCoefficients k = dx_coefficients(invstd[c], gamma, c, sum_dy, sum_dy_xhat, M, batch_stats);
      for (int64_t n = N - 1; n >= 0; --n) {
        const int64_t o = (n * C + c) * HW;
        stream_run(dx + o, HW, stream, [&](float* out, int64_t i, int64_t len) {
          dx_run(out, dy + o + i, x + o + i, relu ? &fr : nullptr, k, mean[c], len, batch_stats);
        });
      }
      if (stream) stream_fence();
    }
    return;
  }
  std::vector<double> sum_dy(C), sum_dy_xhat(C);
  batchnorm2d_backward_reduce(sum_dy.data(), sum_dy_xhat.data(), dy, x, mean, invstd, N, C, HW, layout, relu, gamma,
                              beta);
  for (int64_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = float(sum_dy[c]);
    if (dgamma) dgamma[c] = float(sum_dy_xhat[c]);
  }
  if (dx)
    batchnorm2d_backward_dx(dx, dy, x, mean, invstd, gamma, sum_dy.data(), sum_dy_xhat.data(), M, N, C, HW, layout,
                            batch_stats, relu, beta);
}

// ---------------------------------------------------------------- with a 2x2 max pool (NCHW)

namespace {
// One plane's y (H/2, W/2): the max over each 2x2 window (stride 2) of the
// normalised values (through the ReLU with relu), and arg, the max's place in
// its window (0-3, row by row), chosen as max_pool2d chooses (ties keep the
// first, a NaN wins). A last odd row or column is in no window.
template <bool Relu>
void normalize_pool_plane(float* y, int32_t* arg, const float* x, double m, ScaleShift ss, int64_t H, int64_t W) {
  const SplitMean sm(m);
  const float sc = ss.scale, sh = ss.shift;  // locals: loads through the lambda's captures kept it scalar
  const int64_t OW = W / 2;
  for (int64_t oh = 0; oh < H / 2; ++oh) {
    const float* __restrict r0 = x + 2 * oh * W;
    const float* __restrict r1 = r0 + W;
    float* __restrict yo = y + oh * OW;
    int32_t* __restrict ao = arg + oh * OW;
    detail::simd_for(OW, [&](int64_t ow) __attribute__((always_inline)) {
      float v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
      for (int j = 0; j < 4; ++j) {
        v[j] = bn_value(sm.centre(v[j]), sc, sh);
        if (Relu) v[j] = v[j] > 0 ? v[j] : 0.0f;
      }
      ao[ow] = max_of_window(v, yo[ow]);
    });
  }
}
void normalize_pool_plane(float* y, int32_t* arg, const float* x, double m, ScaleShift ss, int64_t H, int64_t W,
                          bool relu) {
  if (relu)
    normalize_pool_plane<true>(y, arg, x, m, ss, H, W);
  else
    normalize_pool_plane<false>(y, arg, x, m, ss, H, W);
}

// L windows of one row of the pool's backward (unpool_plane) in GCC vectors
// of L = 8 or 4: each window's four places get dy or 0 by selects, put back
// in order with shuffles; g0 and g1 are the window row's two rows of g.
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));
template <class F, class I>
inline void unpool_windows(float* g0, float* g1, const float* d, const int32_t* a) {
  constexpr int L = sizeof(F) / sizeof(float);
  const F v = detail::load_vector<F>(d) + 0.0f;  // 0 + dy, as an add into zeros: -0 becomes +0
  I k;
  std::memcpy(&k, a, sizeof k);
  const F z{}, p0 = k == 0 ? v : z, p1 = k == 1 ? v : z, p2 = k == 2 ? v : z, p3 = k == 3 ? v : z;
  F lo[2], hi[2];  // rows 0 and 1, windows 0 .. L/2 - 1 and L/2 .. L - 1
  if constexpr (L == 8) {
    lo[0] = __builtin_shufflevector(p0, p1, 0, 8, 1, 9, 2, 10, 3, 11);
    hi[0] = __builtin_shufflevector(p0, p1, 4, 12, 5, 13, 6, 14, 7, 15);
    lo[1] = __builtin_shufflevector(p2, p3, 0, 8, 1, 9, 2, 10, 3, 11);
    hi[1] = __builtin_shufflevector(p2, p3, 4, 12, 5, 13, 6, 14, 7, 15);
  } else {
    lo[0] = __builtin_shufflevector(p0, p1, 0, 4, 1, 5);
    hi[0] = __builtin_shufflevector(p0, p1, 2, 6, 3, 7);
    lo[1] = __builtin_shufflevector(p2, p3, 0, 4, 1, 5);
    hi[1] = __builtin_shufflevector(p2, p3, 2, 6, 3, 7);
  }
  detail::store_vector(g0, lo[0]);
  detail::store_vector(g0 + L, hi[0]);
  detail::store_vector(g1, lo[1]);
  detail::store_vector(g1 + L, hi[1]);
}
// The pool's backward for one plane: g (H, W) gets dy at each window's
// argmax and 0 elsewhere, as if added into zeros as max_pool2d's backward
// does, so the passes after it see the gradient the unfused BatchNorm would.
// A row of windows at a time, 8 then 4 windows at once (unpool_windows). The
// scalar scatter into a zeroed plane this replaced took the fused backward (2
// threads, two runs each) from 3.29 / 3.05 to 2.60 / 2.51 ms on (128, 32, 32,
// 32), 1.14 -> 0.81-0.90 on (128, 64, 16, 16), 0.60-0.66 -> 0.58 on (128,
// 128, 8, 8). (Written as a simd loop of selects, gcc's code was slower than
// the scatter.)
void unpool_plane(float* g, const float* dy, const int32_t* arg, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for (int64_t oh = 0; oh < H / 2; ++oh) {
    float* g0 = g + 2 * oh * W;
    float* g1 = g0 + W;
    const float* d = dy + oh * OW;
    const int32_t* a = arg + oh * OW;
    int64_t ow = 0;
    for (; ow + 8 <= OW; ow += 8) unpool_windows<f8, i8>(g0 + 2 * ow, g1 + 2 * ow, d + ow, a + ow);
    for (; ow + 4 <= OW; ow += 4) unpool_windows<f4, i4>(g0 + 2 * ow, g1 + 2 * ow, d + ow, a + ow);
    for (; ow < OW; ++ow) {
      g0[2 * ow] = g0[2 * ow + 1] = g1[2 * ow] = g1[2 * ow + 1] = 0.0f;
      g0[(a[ow] >> 1) * W + 2 * ow + (a[ow] & 1)] += d[ow];
    }
    if (W % 2) g0[W - 1] = g1[W - 1] = 0.0f;  // a last odd column is in no window
  }
  if (H % 2) std::fill_n(g + (H - 1) * W, W, 0.0f);  // nor a last odd row
}
}  // namespace

void batchnorm2d_pool_forward(float* y, int32_t* arg, const float* x, const double* mean, const double* invstd,
                              const float* gamma, const float* beta, int64_t N, int64_t C, int64_t H, int64_t W,
                              bool relu) {
  const int64_t HW = H * W, OHW = (H / 2) * (W / 2);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t p = 0; p < N * C; ++p) {
    const int64_t c = p % C;
    normalize_pool_plane(y + p * OHW, arg + p * OHW, x + p * HW, mean[c], scale_shift(invstd, gamma, beta, c), H, W,
                         relu);
  }
}

void batchnorm2d_pool_forward_train(float* y, int32_t* arg, double* mean, double* var, double* invstd, const float* x,
                                    const float* gamma, const float* beta, double eps, int64_t N, int64_t C, int64_t H,
                                    int64_t W, VarianceMethod method, bool relu) {
  // A channel at a time, as batchnorm2d_forward_train: the pool reads the
  // planes the statistics brought into L2, and only the pooled quarter (and
  // its argmax) goes out to memory.
  const int64_t HW = H * W, OHW = (H / 2) * (W / 2);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t c = 0; c < C; ++c) {
    nchw_channel_stats(mean[c], var[c], x, c, N, C, HW, method);
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    const ScaleShift ss = scale_shift(invstd, gamma, beta, c);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t p = n * C + c;
      normalize_pool_plane(y + p * OHW, arg + p * OHW, x + p * HW, mean[c], ss, H, W, relu);
    }
  }
}

void batchnorm2d_pool_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const int32_t* arg,
                               const float* x, const double* mean, const double* invstd, const float* gamma,
                               const float* beta, int64_t N, int64_t C, int64_t H, int64_t W, bool batch_stats,
                               bool relu) {
  // batchnorm2d_backward's channel-at-a-time passes, on each plane's dy
  // unpooled into a buffer of this thread's: the full-size gradient between
  // the pool and the BatchNorm is never written to memory. The sums pass
  // unpools the channel's planes, and the dx pass finds them there (in L2)
  // when they fit in kKeep floats; else it unpools each plane again.
  constexpr int64_t kKeep = int64_t(1) << 18;  // 1 MiB
  const int64_t HW = H * W, OHW = (H / 2) * (W / 2);
  const double M = double(N * HW);
  const bool stream = dx && streams(N * C * HW), keep = N * HW <= kKeep;
#pragma omp parallel if (N * C * HW >= (1 << 15))
  {
    // From the caching allocator: up to 1 MiB a thread each call, which a
    // fresh std::vector would fault in again every step.
    const CachedBuffer mem(size_t(keep ? N * HW : HW) * sizeof(float));
    float* const buf = static_cast<float*>(mem.data);
    auto unpooled = [&](int64_t c, int64_t n) {
      const int64_t p = n * C + c;
      float* g = buf + (keep ? n * HW : 0);
      unpool_plane(g, dy + p * OHW, arg + p * OHW, H, W);
      return g;
    };
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      const ScaleShift ss = scale_shift(invstd, gamma, beta, c);
      double sum_dy, sum_dy_xhat;
      auto planes = [&](int64_t n) { return std::pair<const float*, const float*>{unpooled(c, n), nullptr}; };
      nchw_grad_sums(sum_dy, sum_dy_xhat, planes, x, relu ? &ss : nullptr, mean[c], c, N, C, HW);
      sum_dy_xhat *= invstd[c];
      if (dbeta) dbeta[c] = float(sum_dy);
      if (dgamma) dgamma[c] = float(sum_dy_xhat);
      if (!dx) continue;
      const DxCoefficients k = dx_coefficients(invstd[c], gamma, c, sum_dy, sum_dy_xhat, M, batch_stats);
      for (int64_t n = N - 1; n >= 0; --n) {  // (last read first, as in batchnorm2d_backward)
        const int64_t o = (n * C + c) * HW;
        const float* g = keep ? buf + n * HW : unpooled(c, n);
        stream_run(dx + o, HW, stream, [&](float* out, int64_t i, int64_t len) {
          dx_run(out, g + i, x + o + i, relu ? &ss : nullptr, k, mean[c], len, batch_stats);
        });
      }
      if (stream) stream_fence();
    }
  }
}

// ---------------------------------------------------------------- the op

void check_batchnorm_enums(const char* op, Layout layout, VarianceMethod variance_method, SyncRule sync_rule) {
  if (layout != Layout::NCHW && layout != Layout::NHWC)
    fail("{}: unknown layout {} (not a Layout value)", op, int(layout));
  if (variance_method != VarianceMethod::two_pass && variance_method != VarianceMethod::one_pass)
    fail("{}: unknown variance_method {} (not a VarianceMethod value)", op, int(variance_method));
  if (sync_rule != SyncRule::global && sync_rule != SyncRule::replica_average)
    fail("{}: unknown sync_rule {} (not a SyncRule value)", op, int(sync_rule));
}

Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                    const Tensor& running_var, const BatchNormArgs& a) {
  if (!x.defined()) fail("batch_norm2d: input is an undefined tensor");
  check_batchnorm_enums("batch_norm2d", a.layout, a.variance_method, a.sync_rule);
  const char* layout_name = a.layout == Layout::NCHW ? "(N, C, H, W)" : "(N, H, W, C)";
  if (x.dim() != 4) fail("batch_norm2d: expected a 4-D input {}, got {}", layout_name, x.shape());
  const int64_t N = x.size(0), C = a.layout == Layout::NCHW ? x.size(1) : x.size(3);
  const int64_t HW = a.layout == Layout::NCHW ? x.size(2) * x.size(3) : x.size(1) * x.size(2);
  for (auto [t, what] : {std::pair{weight, "weight"}, {bias, "bias"}, {running_mean, "running_mean"},
                         {running_var, "running_var"}})
    if (t.defined() && t.shape() != Shape{C})
      fail("batch_norm2d: {} has shape {} but input {} has {} channels (layout {})", what, t.shape(), x.shape(), C,
           layout_name);
  if (!(a.eps > 0) || !std::isfinite(a.eps)) fail("batch_norm2d: eps must be positive and finite, got {}", a.eps);
  // Under the global sync rule the group's count matters: checked after the sync.
  const bool global_sync = a.process_group && a.sync_rule == SyncRule::global;
  if (a.use_batch_stats && N * HW <= 1 && !global_sync)
    fail("batch_norm2d: expected more than 1 value per channel when training, got input size {}", x.shape());
  if (!a.use_batch_stats && (!running_mean.defined() || !running_var.defined()))
    fail("batch_norm2d: running statistics are needed when not using batch statistics (input {})", x.shape());
  if (a.momentum >= 0 && (!running_mean.defined() || !running_var.defined()))
    fail("batch_norm2d: a running-statistics update needs running_mean and running_var (input {})", x.shape());
  std::vector<Tensor> inputs{x};  // what the gradient flows into
  if (a.affine_grad) inputs.insert(inputs.end(), {weight, bias});
  if (a.inplace && autograd::needs_grad(inputs))
    fail("batch_norm2d: inplace=true overwrites the input {}, so no gradient can flow through it "
         "(run inference under NoGradGuard, or set inplace=false)", x.shape());
  if (a.inplace && !x.is_contiguous())
    fail("batch_norm2d: inplace=true needs a contiguous input, got {} with strides {}", x.shape(), x.strides());
  if (a.pool) {
    if (a.layout != Layout::NCHW)
      fail("batch_norm2d: pool=true pools (N, C, H, W) planes, but the input {} is NHWC (N, H, W, C)", x.shape());
    if (a.process_group || a.inplace) {  // statistics synced between the passes, or y written over x: two ops
      BatchNormArgs b = a;
      b.pool = false;
      return max_pool2d(batch_norm2d(x, weight, bias, running_mean, running_var, b), 2);
    }
    pool2d_shape("max_pool2d", x.shape(), 2, std::nullopt, 0);  // max_pool2d's error for planes under 2x2
  }

  Tensor xc = x.contiguous();
  // mean and invstd in double, shared with the backward closure (they are
  // not tensors: float32 would round a large mean and lose the small deviations).
  auto mean = std::make_shared<std::vector<double>>(C), invstd = std::make_shared<std::vector<double>>(C);
  double M_stats = double(N * HW), M_backward = M_stats;  // values behind the statistics (SyncedCounts)
  Tensor wc = weight.defined() ? weight.contiguous() : Tensor();
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  const float *gamma = wc.defined() ? wc.data_ptr() : nullptr, *beta = bc.defined() ? bc.data_ptr() : nullptr;
  const int64_t H = x.size(2), W = x.size(3);  // with pool (NCHW)
  Tensor y = a.inplace ? x : a.pool ? empty({N, C, H / 2, W / 2}) : empty(x.shape());
  // The pool's argmax in each window, for the backward.
  auto arg = a.pool ? std::make_shared<CachedBuffer>(size_t(y.numel()) * sizeof(int32_t))
                    : std::shared_ptr<CachedBuffer>();
  int32_t* argp = arg ? static_cast<int32_t*>(arg->data) : nullptr;
  bool normalised = false;  // y written already (statistics and normalisation in one kernel)
  if (a.use_batch_stats) {
    std::vector<double> var(C);
    if (!a.process_group) {
      if (a.pool)
        batchnorm2d_pool_forward_train(y.data_ptr(), argp, mean->data(), var.data(), invstd->data(), xc.data_ptr(),
                                       gamma, beta, a.eps, N, C, H, W, a.variance_method, a.relu);
      else
        batchnorm2d_forward_train(y.data_ptr(), mean->data(), var.data(), invstd->data(), xc.data_ptr(), gamma,
                                  beta, a.eps, N, C, HW, a.layout, a.variance_method, a.relu);
      normalised = true;
    } else {
      batchnorm2d_stats(mean->data(), var.data(), xc.data_ptr(), N, C, HW, a.layout, a.variance_method);
      auto& pg = *a.process_group;
      const SyncedCounts n = batchnorm_sync_stats(mean->data(), var.data(), C, M_stats, pg, a.sync_rule,
                                                  a.variance_method);
      if (n.unbiased <= 1)
        fail("batch_norm2d: expected more than 1 value per channel when training, got {} over the process group "
             "of {} ranks (input {} on rank {})", n.unbiased, pg.size(), x.shape(), pg.rank());
      M_stats = n.unbiased;
      M_backward = n.backward;
      for (int64_t c = 0; c < C; ++c) (*invstd)[c] = 1.0 / std::sqrt(var[c] + a.eps);
    }
    if (a.momentum >= 0) {
      const double M = M_stats, p = a.momentum;
      const double correction = a.unbiased_running_var ? M / (M - 1) : 1.0;
      float* rm = running_mean.data_ptr();
      float* rv = running_var.data_ptr();
      for (int64_t c = 0; c < C; ++c) {
        rm[c] = float((1 - p) * rm[c] + p * (*mean)[c]);
        rv[c] = float((1 - p) * rv[c] + p * var[c] * correction);
      }
      running_mean.storage()->version++;
      running_var.storage()->version++;
    }
  } else {
    const float* rm = running_mean.data_ptr();
    const float* rv = running_var.data_ptr();
    for (int64_t c = 0; c < C; ++c) {
      (*mean)[c] = rm[c];
      (*invstd)[c] = 1.0 / std::sqrt(double(rv[c]) + a.eps);
    }
  }
  if (!normalised && a.pool)
    batchnorm2d_pool_forward(y.data_ptr(), argp, xc.data_ptr(), mean->data(), invstd->data(), gamma, beta, N, C, H, W,
                             a.relu);
  else if (!normalised)
    batchnorm2d_forward(y.data_ptr(), xc.data_ptr(), mean->data(), invstd->data(), gamma, beta, N, C, HW, a.layout,
                        a.relu);
  if (a.inplace) {  // no graph to record (checked above)
    x.storage()->version++;
    return y;
  }

  // The fused ReLU's backward recomputes the sign of its output from x, with gamma and beta as they were.
  const char* name = a.pool ? (a.relu ? "batch_norm2d_relu_pool" : "batch_norm2d_pool")
                             : (a.relu ? "batch_norm2d_relu" : "batch_norm2d");
  autograd::record(y, name, inputs, [x, weight, bias, xc, wc, bc, mean, invstd, arg, N, C, H, W, HW, M_backward,
                                     a](const Tensor& dy) {
    Tensor dyc = dy.contiguous();
    Tensor dx = x.requires_grad() ? empty(x.shape()) : Tensor();
    const bool affine_grads = a.affine_grad && (weight.requires_grad() || bias.requires_grad());
    Tensor dw = affine_grads ? empty({C}) : Tensor(), db = affine_grads ? empty({C}) : Tensor();
    const float* gamma = wc.defined() ? wc.data_ptr() : nullptr;
    const float* beta = bc.defined() ? bc.data_ptr() : nullptr;
    // dgamma and dbeta are this rank's share; the trainer averages them.
    if (a.pool) {
      batchnorm2d_pool_backward(dx.defined() ? dx.data_ptr() : nullptr, affine_grads ? dw.data_ptr() : nullptr,
                                affine_grads ? db.data_ptr() : nullptr, dyc.data_ptr(),
                                static_cast<const int32_t*>(arg->data), xc.data_ptr(), mean->data(), invstd->data(),
                                gamma, beta, N, C, H, W, a.use_batch_stats, a.relu);
    } else if (!(a.process_group && a.use_batch_stats)) {
      batchnorm2d_backward(dx.defined() ? dx.data_ptr() : nullptr, affine_grads ? dw.data_ptr() : nullptr,
                           affine_grads ? db.data_ptr() : nullptr, dyc.data_ptr(), xc.data_ptr(), mean->data(),
                           invstd->data(), gamma, N, C, HW, a.layout, a.use_batch_stats, a.relu, beta);
    } else {  // the two sums are all-reduced over the group between the halves
      std::vector<double> sum_dy(C), sum_dy_xhat(C);
      batchnorm2d_backward_reduce(sum_dy.data(), sum_dy_xhat.data(), dyc.data_ptr(), xc.data_ptr(), mean->data(),
                                  invstd->data(), N, C, HW, a.layout, a.relu, gamma, beta);
      for (int64_t c = 0; c < C && affine_grads; ++c) {
        db.data_ptr()[c] = float(sum_dy[c]);
        dw.data_ptr()[c] = float(sum_dy_xhat[c]);
      }
      if (dx.defined()) {  // every rank: x requires grad on all of them alike
        batchnorm_sync_grad_sums(sum_dy.data(), sum_dy_xhat.data(), C, *a.process_group);
        batchnorm2d_backward_dx(dx.data_ptr(), dyc.data_ptr(), xc.data_ptr(), mean->data(), invstd->data(), gamma,
                                sum_dy.data(), sum_dy_xhat.data(), M_backward, N, C, HW, a.layout, true, a.relu,
                                beta);
      }
    }
    autograd::accumulate(x, dx);
    if (affine_grads) {
      autograd::accumulate(weight, dw);
      autograd::accumulate(bias, db);
    }
  }, a.relu ? std::vector<Tensor>{xc, wc, bc} : std::vector<Tensor>{xc, wc});
  return y;
}

// ---------------------------------------------------------------- the module

BatchNorm2d::BatchNorm2d(const BatchNorm2dOptions& o) : options(o) {
  if (o.num_features_ < 0)
    fail("BatchNorm2d: num_features must be positive (or 0 for lazy), got {}", o.num_features_);
  if (!(o.eps_ > 0) || !std::isfinite(o.eps_)) fail("BatchNorm2d: eps must be positive and finite, got {}", o.eps_);
  const MomentumRule& m = o.momentum_;
  if (!(m.init_factor >= 0 && m.init_factor <= 1) || !(m.min_factor >= 0 && m.min_factor <= 1))
    fail("BatchNorm2d: momentum factors must lie in [0, 1], got init_factor {} and min_factor {}", m.init_factor,
         m.min_factor);
  if (o.freeze_ && !o.track_running_stats_)
    fail("BatchNorm2d: freeze=true needs track_running_stats=true (it normalises with the running statistics)");
  check_batchnorm_enums("BatchNorm2d", o.layout_, o.variance_method_, o.sync_rule_);
  if (o.num_features_ > 0) {
    options.num_features_ = 0;
    materialize(o.num_features_);
  }
}

void BatchNorm2d::materialize(int64_t C) {
  if (C <= 0) fail("BatchNorm2d: cannot materialize with {} channels", C);
  if (is_materialized()) {
    if (C != options.num_features_)
      fail("BatchNorm2d: already has {} channels, cannot materialize with {}", options.num_features_, C);
    return;
  }
  options.num_features_ = C;
  if (options.affine_) {
    weight = register_parameter("weight", empty({C}), !options.freeze_);
    bias = register_parameter("bias", empty({C}), !options.freeze_);
  }
  if (options.track_running_stats_) {
    running_mean = register_buffer("running_mean", zeros({C}));
    running_var = register_buffer("running_var", ones({C}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}));
  }
  if (!options.skip_init_) {
    reset_parameters();
    return;
  }
  NoGradGuard g;  // skip_init: NaN until a checkpoint is loaded
  for (Tensor* t : {&weight, &bias, &running_mean, &running_var})
    if (t->defined()) t->fill_(std::numeric_limits<float>::quiet_NaN());
}

void BatchNorm2d::reset_running_stats() {
  if (!options.track_running_stats_ || !is_materialized()) return;
  NoGradGuard g;
  running_mean.fill_(0.0f);
  running_var.fill_(1.0f);
  num_batches_tracked.fill_(0.0f);
}

void BatchNorm2d::reset_parameters() {
  reset_running_stats();
  if (!options.affine_ || !is_materialized()) return;
  NoGradGuard g;
  if (options.weight_init_) options.weight_init_(weight); else weight.fill_(1.0f);
  if (options.bias_init_) options.bias_init_(bias); else bias.fill_(0.0f);
}

Tensor BatchNorm2d::forward(const Tensor& x) { return forward_impl(x, false); }
Tensor BatchNorm2d::forward_relu(const Tensor& x) { return forward_impl(x, true); }

Tensor BatchNorm2d::forward_relu_pool(const Tensor& x) { return forward_impl(x, true, true); }

Tensor BatchNorm2d::forward_impl(const Tensor& x, bool relu, bool pool) {
  const BatchNorm2dOptions& o = options;
  if (!is_materialized() && x.defined() && x.dim() == 4) materialize(x.size(o.layout_ == Layout::NCHW ? 1 : 3));
  BatchNormArgs a;
  a.eps = o.eps_;
  a.layout = o.layout_;
  a.unbiased_running_var = o.unbiased_running_var_;
  a.variance_method = o.variance_method_;
  a.affine_grad = !o.freeze_;
  a.inplace = o.inplace_;
  a.relu = relu;
  a.pool = pool;
  if (is_training()) {  // statistics are synced in training only (PyTorch's SyncBatchNorm too)
    a.process_group = o.process_group_;
    a.sync_rule = o.sync_rule_;
  }
  a.use_batch_stats = !o.track_running_stats_ || (is_training() && !o.freeze_);
  // Not materialized here means x is not 4-D: the op reports it.
  const bool update = o.track_running_stats_ && is_training() && !o.freeze_ && is_materialized();
  // t counts this forward; the counter itself advances only after the op succeeded.
  if (update) a.momentum = o.momentum_.factor(int64_t(num_batches_tracked.item()) + 1);
  if (o.inplace_ && is_training())
    fail("BatchNorm2d: inplace=true is only allowed in eval mode (training needs the input for backward)");
  Tensor y = batch_norm2d(x, weight, bias, running_mean, running_var, a);
  if (update) {
    NoGradGuard g;
    num_batches_tracked.add_(1.0f);
  }
  return y;
}

bool BatchNorm2d::eval_affine(std::vector<float>& hi, std::vector<float>& lo, std::vector<float>& scale,
                              std::vector<float>& shift) const {
  const BatchNorm2dOptions& o = options;
  // forward_impl's use_batch_stats, negated; and batch_norm2d's eval branch.
  if (!o.track_running_stats_ || (is_training() && !o.freeze_) || o.layout_ != Layout::NCHW || !is_materialized() ||
      !running_mean.defined() || !running_var.defined())
    return false;
  const int64_t C = o.num_features_;
  hi.resize(C), lo.resize(C), scale.resize(C), shift.resize(C);
  const float *rm = running_mean.data_ptr(), *rv = running_var.data_ptr();
  const float* gamma = weight.defined() ? weight.data_ptr() : nullptr;
  const float* beta = bias.defined() ? bias.data_ptr() : nullptr;
  std::vector<double> invstd(C);  // as batch_norm2d's eval branch computes it
  for (int64_t c = 0; c < C; ++c) invstd[c] = 1.0 / std::sqrt(double(rv[c]) + o.eps_);
  for (int64_t c = 0; c < C; ++c) {  // rounded as the kernels round them
    const SplitMean sm(rm[c]);
    const ScaleShift ss = scale_shift(invstd.data(), gamma, beta, c);
    hi[c] = sm.hi, lo[c] = sm.lo, scale[c] = ss.scale, shift[c] = ss.shift;
  }
  return true;
}

std::string BatchNorm2d::extra_repr() const {
  const auto& o = options;
  // 6 digits: a decay 0.9 shows as PyTorch's 0.1, not 0.09999999999999998.
  std::string mom = o.momentum_.init_factor == 0 ? fmt::format("{:.6g}", o.momentum_.min_factor)
                    : o.momentum_.min_factor == 0 && o.momentum_.init_factor == 1
                        ? "None"
                        : fmt::format("max({:.6g}/t, {:.6g})", o.momentum_.init_factor, o.momentum_.min_factor);
  return fmt::format("{}, eps={}, momentum={}, affine={}, track_running_stats={}",
                     o.num_features_ > 0 ? fmt::format("{}", o.num_features_) : "lazy", o.eps_, mom,
                     o.affine_ ? "True" : "False", o.track_running_stats_ ? "True" : "False");
}

bool fuses_with_relu(const Module& bn, const Module& relu) {
  return typeid(bn) == typeid(BatchNorm2d) && typeid(relu) == typeid(ReLU);
}

bool fuses_with_relu_pool(const Module& bn, const Module& relu, const Module& pool) {
  if (!fuses_with_relu(bn, relu) || typeid(pool) != typeid(MaxPool2d)) return false;
  const auto& p = static_cast<const MaxPool2d&>(pool);
  return static_cast<const BatchNorm2d&>(bn).options.layout_ == Layout::NCHW && p.kernel_size.h == 2 &&
         p.kernel_size.w == 2 && p.stride.h == 2 && p.stride.w == 2 && p.padding.h == 0 && p.padding.w == 0;
}

}  // namespace norma::nn
