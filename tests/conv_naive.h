// The test oracle for the convolution kernels: seven plain loops (the forward
// summed in double), sharing nothing with the library's kernels but ConvShape.
// ref::conv2d_forward / backward are held to these; the fast kernels to those.
#pragma once
#include <algorithm>

#include <norma/layers/conv2d.h>

namespace norma::test {

inline void conv2d_forward_naive(float* y, const float* x, const float* w, const float* b, const nn::ConvShape& s) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          double acc = b ? b[k] : 0.0;
          const int64_t g = k / Kg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t j = 0; j < s.kw; ++j) {
                int64_t ih = oh * s.sh - s.ph + i * s.dh, iw = ow * s.sw - s.pw + j * s.dw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                acc += double(x[((n * s.C + g * Cg + c) * s.H + ih) * s.W + iw]) *
                       w[((k * Cg + c) * s.kh + i) * s.kw + j];
              }
          y[((n * s.K + k) * s.OH + oh) * s.OW + ow] = float(acc);
        }
}

// dx, dw, db may each be null; each is overwritten.
inline void conv2d_backward_naive(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                                  const nn::ConvShape& s) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
  if (dx) std::fill_n(dx, s.N * s.C * s.H * s.W, 0.0f);
  if (dw) std::fill_n(dw, s.K * Cg * s.kh * s.kw, 0.0f);
  if (db) std::fill_n(db, s.K, 0.0f);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const float d = dy[((n * s.K + k) * s.OH + oh) * s.OW + ow];
          const int64_t g = k / Kg;
          if (db) db[k] += d;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t j = 0; j < s.kw; ++j) {
                int64_t ih = oh * s.sh - s.ph + i * s.dh, iw = ow * s.sw - s.pw + j * s.dw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                int64_t xi = ((n * s.C + g * Cg + c) * s.H + ih) * s.W + iw;
                int64_t wi = ((k * Cg + c) * s.kh + i) * s.kw + j;
                if (dx) dx[xi] += d * w[wi];
                if (dw) dw[wi] += d * x[xi];
              }
        }
}

}  // namespace norma::test
