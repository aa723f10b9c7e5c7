// The fast BatchNorm2d kernels with a 2x2, stride-2 max pool fused after the
// normalisation (and the ReLU), NCHW: each plane is pooled as it is
// normalised, and the backward unpools dy a plane at a time into a buffer of
// its own thread's, so the full-size tensor between the two never exists.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "../../core/allocator.h"
#include "../ref/pool2d.h"
#include "batchnorm2d.h"
#include "batchnorm2d_passes.h"

namespace norma::nn::fast::NORMA_ISA {

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
    simd_for(OW, [&](int64_t ow) __attribute__((always_inline)) {
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
template <class F, class I>
inline void unpool_windows(float* g0, float* g1, const float* d, const int32_t* a) {
  constexpr int L = sizeof(F) / sizeof(float);
  const F v = load_vector<F>(d) + 0.0f;  // 0 + dy, as an add into zeros: -0 becomes +0
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
  store_vector(g0, lo[0]);
  store_vector(g0 + L, hi[0]);
  store_vector(g1, lo[1]);
  store_vector(g1 + L, hi[1]);
}
// The pool's backward for one plane: g (H, W) gets dy at each window's
// argmax and 0 elsewhere, as if added into zeros as max_pool2d's backward
// does, so the passes after it see the gradient the unfused BatchNorm would.
// A row of windows at a time, 8 then 4 windows at once (unpool_windows), in
// place of a scalar scatter into a zeroed plane, which was slower. (Written as
// a simd loop of selects, gcc's code was slower than the scatter.)
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

}  // namespace norma::nn::fast::NORMA_ISA
