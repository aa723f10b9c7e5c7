// The fast BatchNorm2d kernels' NHWC bodies: a channel is every C-th float,
// so each pass sweeps the rows (n*HW + i)*C in order, each thread its own
// contiguous rows, and the loop over a row's C channels is the vector loop.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "batchnorm2d_passes.h"

namespace norma::nn::fast::NORMA_ISA {

namespace {

// Per-channel sums over an NHWC tensor: rows of C values, split across threads
// with a private accumulator each, then combined (no atomics, deterministic for
// a thread count). add_rows(acc, r, rows) adds rows [r, r + rows) into
// acc[0, width), rows a std::integral_constant: 4, or 1 for the last few. Its
// loop over a row's channels is the one that vectorises; four rows to a call
// it loads and stores the accumulators a quarter as often (one row at a time,
// those loads and stores bound the pass).
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

}  // namespace

void nhwc_stats(double* mean, double* var, const float* x, int64_t N, int64_t C, int64_t HW, VarianceMethod method) {
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

void nhwc_forward(float* y, const float* x, const double* mean, const double* invstd, const float* gamma,
                  const float* beta, int64_t N, int64_t C, int64_t HW, bool relu) {
  const RowCoefficients rc(mean, invstd, gamma, beta, C);
  const float *__restrict hi = rc.v.data(), *__restrict lo = hi + C, *__restrict sc = lo + C, *__restrict sh = sc + C;
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

void nhwc_backward_reduce(double* sum_dy, double* sum_dy_xhat, const float* dy, const float* x, const double* mean,
                          const double* invstd, int64_t N, int64_t C, int64_t HW, bool relu, const float* gamma,
                          const float* beta) {
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

void nhwc_backward_dx(float* dx, const float* dy, const float* x, const double* mean, const double* invstd,
                      const float* gamma, const double* sum_dy, const double* sum_dy_xhat, double M, int64_t N,
                      int64_t C, int64_t HW, bool batch_stats, bool relu, const float* beta) {
  // dx = k (dy - mean_dy - (x - mean) q) (dx_coefficients), the coefficients
  // (and the split mean) as arrays, so the loop over a row's channels reads
  // each with contiguous vector loads.
  std::vector<float> coef(3 * C);
  float *__restrict kp = coef.data(), *__restrict mp = kp + C, *__restrict qp = mp + C;
  for (int64_t c = 0; c < C; ++c) {
    const DxCoefficients k = dx_coefficients(invstd[c], gamma, c, sum_dy[c], sum_dy_xhat[c], M, batch_stats);
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

}  // namespace norma::nn::fast::NORMA_ISA
