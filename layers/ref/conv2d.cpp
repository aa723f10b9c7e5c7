// The reference convolution (conv2d.h): im2col with a bounds test per entry,
// then sgemm, one image and group at a time.
// N batch, C input and K output channels, g group, Cg = C/groups and Kg =
// K/groups channels per group, R = Cg kh kw rows of col, L = OH OW positions.
#include "conv2d.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

namespace norma::nn::ref {

namespace {

// col (R, L) from the Cg channels of one image starting at x: row (c, i, j)
// holds, for each output (oh, ow), the input that tap (i, j) of channel c
// reads there, or 0 where it reads padding.
void im2col(float* col, const float* x, const ConvShape& s, int64_t Cg) {
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j)
        for (int64_t oh = 0; oh < s.OH; ++oh)
          for (int64_t ow = 0; ow < s.OW; ++ow) {
            const int64_t ih = oh * s.sh - s.ph + i * s.dh, iw = ow * s.sw - s.pw + j * s.dw;
            const bool inside = ih >= 0 && ih < s.H && iw >= 0 && iw < s.W;
            *col++ = inside ? x[(c * s.H + ih) * s.W + iw] : 0.0f;
          }
}

// dx += col2im(col), the adjoint of im2col: each entry of col is added back
// to the input it was read from (padding takes nothing).
void col2im_add(float* dx, const float* col, const ConvShape& s, int64_t Cg) {
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j)
        for (int64_t oh = 0; oh < s.OH; ++oh)
          for (int64_t ow = 0; ow < s.OW; ++ow, ++col) {
            const int64_t ih = oh * s.sh - s.ph + i * s.dh, iw = ow * s.sw - s.pw + j * s.dw;
            if (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W) dx[(c * s.H + ih) * s.W + iw] += *col;
          }
}

}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, R = Cg * s.kh * s.kw, L = s.OH * s.OW;
  std::vector<float> col(size_t(R * L));
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t g = 0; g < s.groups; ++g) {
      im2col(col.data(), x + (n * s.C + g * Cg) * s.H * s.W, s, Cg);
      float* yg = y + (n * s.K + g * Kg) * L;
      // y[n, g] (Kg, L) = W_g (Kg, R) @ col (R, L)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Kg), int(L), int(R), 1.0f, w + g * Kg * R,
                  int(R), col.data(), int(L), 0.0f, yg, int(L));
      if (b)
        for (int64_t k = 0; k < Kg; ++k)
          for (int64_t l = 0; l < L; ++l) yg[k * L + l] += b[g * Kg + k];
    }
}

void conv2d_backward_bias(float* db, const float* dy, const ConvShape& s) {
  const int64_t L = s.OH * s.OW;
  for (int64_t k = 0; k < s.K; ++k) {
    double acc = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t l = 0; l < L; ++l) acc += dy[(n * s.K + k) * L + l];
    db[k] = float(acc);
  }
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvShape& s) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, R = Cg * s.kh * s.kw, L = s.OH * s.OW;
  if (db) conv2d_backward_bias(db, dy, s);
  if (dx) std::fill_n(dx, s.N * s.C * s.H * s.W, 0.0f);
  if (dw) std::fill_n(dw, s.K * R, 0.0f);
  std::vector<float> col(size_t(R * L));
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t g = 0; g < s.groups; ++g) {
      const float* dyg = dy + (n * s.K + g * Kg) * L;
      if (dw) {
        // dW_g (Kg, R) += dy[n, g] (Kg, L) @ col^T (L, R)
        im2col(col.data(), x + (n * s.C + g * Cg) * s.H * s.W, s, Cg);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(Kg), int(R), int(L), 1.0f, dyg, int(L),
                    col.data(), int(L), 1.0f, dw + g * Kg * R, int(R));
      }
      if (dx) {
        // dcol (R, L) = W_g^T (R, Kg) @ dy[n, g] (Kg, L), then back onto dx[n, g]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(R), int(L), int(Kg), 1.0f, w + g * Kg * R,
                    int(R), dyg, int(L), 0.0f, col.data(), int(L));
        col2im_add(dx + (n * s.C + g * Cg) * s.H * s.W, col.data(), s, Cg);
      }
    }
}

}  // namespace norma::nn::ref
