// The reference pooling kernels (pool2d.h): a loop over each output's window.
// N batch, C channels, H/W input size, OH/OW output size; P = N*C planes, each
// pooled on its own (the OpenMP loop runs over planes).
#include "pool2d.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace norma::nn::ref {

// ---------------------------------------------------------------- max

void maxpool2d_forward(float* y, int64_t* indices, const float* x, const PoolShape& s) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    const float* xp = x + p * s.H * s.W;
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const int64_t h0 = std::max<int64_t>(oh * s.sh - s.ph, 0), h1 = std::min(oh * s.sh - s.ph + s.kh, s.H);
        const int64_t w0 = std::max<int64_t>(ow * s.sw - s.pw, 0), w1 = std::min(ow * s.sw - s.pw + s.kw, s.W);
        float best = -std::numeric_limits<float>::infinity();
        int64_t arg = h0 * s.W + w0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const float v = xp[h * s.W + w];
            if (v > best || std::isnan(v)) {  // strict: ties keep the first maximum
              best = v;
              arg = h * s.W + w;
            }
          }
        const int64_t o = (p * s.OH + oh) * s.OW + ow;
        y[o] = best;
        indices[o] = arg;
      }
  }
}

void maxpool2d_backward(float* dx, const float* dy, const int64_t* indices, const PoolShape& s) {
  const int64_t P = s.N * s.C, L = s.OH * s.OW;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    float* dxp = dx + p * s.H * s.W;
    std::fill_n(dxp, s.H * s.W, 0.0f);
    for (int64_t l = 0; l < L; ++l) dxp[indices[p * L + l]] += dy[p * L + l];
  }
}

// ---------------------------------------------------------------- average

namespace {
// Calls f(h0, h1, w0, w1, divisor) for the in-bounds window of output (oh, ow).
template <class F>
void avg_window(const PoolShape& s, bool count_include_pad, int64_t oh, int64_t ow, F f) {
  int64_t h0 = oh * s.sh - s.ph, w0 = ow * s.sw - s.pw;
  int64_t h1 = std::min(h0 + s.kh, s.H + s.ph), w1 = std::min(w0 + s.kw, s.W + s.pw);
  const int64_t padded_count = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0), w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, s.H), w1 = std::min(w1, s.W);
  f(h0, h1, w0, w1, double(count_include_pad ? padded_count : (h1 - h0) * (w1 - w0)));
}
}  // namespace

void avgpool2d_forward(float* y, const float* x, const PoolShape& s, bool count_include_pad) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    const float* xp = x + p * s.H * s.W;
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow)
        avg_window(s, count_include_pad, oh, ow, [&](int64_t h0, int64_t h1, int64_t w0, int64_t w1, double div) {
          double acc = 0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) acc += xp[h * s.W + w];
          y[(p * s.OH + oh) * s.OW + ow] = float(acc / div);
        });
  }
}

void avgpool2d_backward(float* dx, const float* dy, const PoolShape& s, bool count_include_pad) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    float* dxp = dx + p * s.H * s.W;
    std::fill_n(dxp, s.H * s.W, 0.0f);
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow)
        avg_window(s, count_include_pad, oh, ow, [&](int64_t h0, int64_t h1, int64_t w0, int64_t w1, double div) {
          const float g = float(dy[(p * s.OH + oh) * s.OW + ow] / div);
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) dxp[h * s.W + w] += g;
        });
  }
}

// ---------------------------------------------------------------- adaptive average

namespace {
// Adaptive windows: [floor(o * in / out), ceil((o + 1) * in / out)).
int64_t window_start(int64_t o, int64_t in, int64_t out) { return o * in / out; }
int64_t window_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }
}  // namespace

void adaptive_avgpool2d_forward(float* y, const float* x, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW) {
#pragma omp parallel for schedule(static) if (P > 1 && P * H * W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    const float* xp = x + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t h0 = window_start(oh, H, OH), h1 = window_end(oh, H, OH);
        const int64_t w0 = window_start(ow, W, OW), w1 = window_end(ow, W, OW);
        double acc = 0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) acc += xp[h * W + w];
        y[(p * OH + oh) * OW + ow] = float(acc / double((h1 - h0) * (w1 - w0)));
      }
  }
}

void adaptive_avgpool2d_backward(float* dx, const float* dy, int64_t P, int64_t H, int64_t W, int64_t OH,
                                 int64_t OW) {
#pragma omp parallel for schedule(static) if (P > 1 && P * H * W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    float* dxp = dx + p * H * W;
    std::fill_n(dxp, H * W, 0.0f);
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t h0 = window_start(oh, H, OH), h1 = window_end(oh, H, OH);
        const int64_t w0 = window_start(ow, W, OW), w1 = window_end(ow, W, OW);
        const float g = float(dy[(p * OH + oh) * OW + ow] / double((h1 - h0) * (w1 - w0)));
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) dxp[h * W + w] += g;
      }
  }
}

}  // namespace norma::nn::ref
