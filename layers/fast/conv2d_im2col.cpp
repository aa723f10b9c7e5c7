// im2col + sgemm with the batch split over OpenMP threads: the reference's
// algorithm (layers/ref/conv2d.cpp), faster. Letters as in layers/conv2d.h;
// g group, Cg = C/groups and Kg = K/groups channels per group.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <optional>

#include "../../core/tensor.h"
#include "../../core/blas_threads.h"
#include "conv2d.h"

namespace norma::nn::fast::NORMA_ISA {

namespace {

// The outputs ow whose input column iw = ow*sw + off (off = j*dw - pw) falls
// inside [0, W): [lo, hi). Outside it the kernel tap reads padding. Computing
// the range once per tap turns the inner loops into plain copies and adds
// (im2col's per-element bounds test cost as much as the GEMM's packing).
struct ColSpan {
  int64_t off, lo, hi;
};
ColSpan col_span(const ConvShape& s, int64_t j) {
  const int64_t off = j * s.dw - s.pw;
  const int64_t lo = std::min(off >= 0 ? 0 : (-off + s.sw - 1) / s.sw, s.OW);
  const int64_t hi = s.W - 1 - off < 0 ? 0 : std::min((s.W - 1 - off) / s.sw + 1, s.OW);
  return {off, lo, std::max(lo, hi)};
}

// col (Cg*kh*kw, OH*OW) from the Cg channels of one image starting at x.
void im2col(float* col, const float* x, const ConvShape& s, int64_t Cg) {
  const int64_t L = s.OH * s.OW;
#pragma omp parallel for collapse(2) schedule(static) if (Cg * s.kh * s.kw * L >= (1 << 15))
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        float* row = col + ((c * s.kh + i) * s.kw + j) * L;
        const float* plane = x + c * s.H * s.W;
        const auto [off, lo, hi] = col_span(s, j);
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          const int64_t ih = oh * s.sh - s.ph + i * s.dh;
          float* out = row + oh * s.OW;
          if (ih < 0 || ih >= s.H) {
            std::fill_n(out, s.OW, 0.0f);
            continue;
          }
          const float* in = plane + ih * s.W;
          std::fill(out, out + lo, 0.0f);
          if (s.sw == 1)
            std::copy(in + lo + off, in + hi + off, out + lo);
          else
            for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * s.sw + off];
          std::fill(out + hi, out + s.OW, 0.0f);
        }
      }
}

// dx += col2im(col): the adjoint of im2col. Parallel over channels (each owns its plane).
void col2im_add(float* dx, const float* col, const ConvShape& s, int64_t Cg) {
  const int64_t L = s.OH * s.OW;
#pragma omp parallel for schedule(static) if (Cg * s.kh * s.kw * L >= (1 << 15))
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        const float* row = col + ((c * s.kh + i) * s.kw + j) * L;
        float* plane = dx + c * s.H * s.W;
        const auto [off, lo, hi] = col_span(s, j);
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          const int64_t ih = oh * s.sh - s.ph + i * s.dh;
          if (ih < 0 || ih >= s.H) continue;
          float* out = plane + ih * s.W;
          const float* in = row + oh * s.OW;
          if (s.sw == 1)
            for (int64_t ow = lo; ow < hi; ++ow) out[ow + off] += in[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) out[ow * s.sw + off] += in[ow];
        }
      }
}

// Images are independent, so the batch is split across OpenMP threads, each
// with its own col buffer and a single-threaded sgemm (see blas_threads.h). A
// batch smaller than the thread count keeps OpenBLAS's threads instead.
bool split_batch(const ConvShape& s) { return omp_get_max_threads() > 1 && s.N >= omp_get_max_threads(); }

}  // namespace

void conv2d_im2col_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, L = s.OH * s.OW, R = Cg * s.kh * s.kw;
  const bool split = split_batch(s);
  const int T = split ? omp_get_max_threads() : 1;
  Tensor col_buf = empty({T * R * L});  // the caching allocator hands the same memory back next call
  std::optional<BlasThreads> one_thread;
  if (split) one_thread.emplace(1);
#pragma omp parallel for schedule(static) if (split)
  for (int64_t n = 0; n < s.N; ++n) {
    float* col = col_buf.data_ptr() + (split ? omp_get_thread_num() : 0) * R * L;
    for (int64_t g = 0; g < s.groups; ++g) {
      im2col(col, x + (n * s.C + g * Cg) * s.H * s.W, s, Cg);
      float* yg = y + (n * s.K + g * Kg) * L;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Kg), int(L), int(R), 1.0f, w + g * Kg * R,
                  int(R), col, int(L), 0.0f, yg, int(L));
      if (b)
        for (int64_t k = 0; k < Kg; ++k) {
          const float bk = b[g * Kg + k];
          for (int64_t l = 0; l < L; ++l) yg[k * L + l] += bk;
        }
    }
  }
}

void conv2d_im2col_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                            const ConvShape& s) {
  if (!dx && !dw) return;
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, L = s.OH * s.OW, R = Cg * s.kh * s.kw;
  const bool split = split_batch(s);
  const int T = split ? omp_get_max_threads() : 1;
  Tensor col_buf = empty({T * R * L});
  // Each thread sums its images' dweight into its own slice; the slices are
  // added in thread order afterwards, so the result is the same every run.
  Tensor dw_buf = dw ? zeros({T * s.K * R}) : Tensor();
  if (dx) std::fill_n(dx, s.N * s.C * s.H * s.W, 0.0f);
  std::optional<BlasThreads> one_thread;
  if (split) one_thread.emplace(1);
#pragma omp parallel for schedule(static) if (split)
  for (int64_t n = 0; n < s.N; ++n) {
    const int t = split ? omp_get_thread_num() : 0;
    float* col = col_buf.data_ptr() + t * R * L;
    for (int64_t g = 0; g < s.groups; ++g) {
      const float* dyg = dy + (n * s.K + g * Kg) * L;
      if (dw) {
        im2col(col, x + (n * s.C + g * Cg) * s.H * s.W, s, Cg);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(Kg), int(R), int(L), 1.0f, dyg, int(L), col,
                    int(L), 1.0f, dw_buf.data_ptr() + t * s.K * R + g * Kg * R, int(R));
      }
      if (dx) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(R), int(L), int(Kg), 1.0f, w + g * Kg * R,
                    int(R), dyg, int(L), 0.0f, col, int(L));
        col2im_add(dx + (n * s.C + g * Cg) * s.H * s.W, col, s, Cg);
      }
    }
  }
  if (dw) {
    const float* parts = dw_buf.data_ptr();
    for (int64_t i = 0; i < s.K * R; ++i) {
      float acc = parts[i];
      for (int t = 1; t < T; ++t) acc += parts[t * s.K * R + i];
      dw[i] = acc;
    }
  }
}

}  // namespace norma::nn::fast::NORMA_ISA
