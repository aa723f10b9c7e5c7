// Direct convolution for few input channels (the RGB input layer): stride 1,
// one group, C*kh*kw <= 64. There im2col's matrix product is only C*kh*kw
// (27) deep, too thin for sgemm to run at its rate on large products.
//
// Each padded input plane is laid out flat with row pitch Wp = W + 2 pw. The
// output (oh, ow) then sits at p = oh Wp + ow, and the tap t = (c, i, j) reads
//   xp[c][p + off(t)],   off(t) = i dh Wp + j dw
// for every p: each tap is one shifted contiguous run, and
//   yp[k][p] = sum over taps t of w[k][t] xp[c(t)][p + off(t)]
// is a loop over p with plain vector loads. The Wp - OW positions past each
// row's end are computed and dropped (2 of 34 on CIFAR-10). Where OW is a
// multiple of 32 (CIFAR-10's RGB layer) the forward runs over whole output rows
// instead and writes y directly (conv2d_direct_forward_rows).
// Backward, the same layout: dw[k][t] = sum over p of dyp[k][p] xp[c(t)][p + off(t)],
// with dyp zero at the dropped positions (or dy itself, read row after row,
// where its rows are whole vectors).
//
// Letters: N batch, C input and K output channels, H/W input size, OH/OW output
// size, R = C kh kw taps, Hp/Wp padded input size, L positions computed per plane.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../core/tensor.h"
#include "conv2d.h"
#include "kernels.h"
#include "simd.h"

namespace norma::nn::fast::NORMA_ISA {

namespace {

// 16 floats: GCC lowers it to one AVX-512 register, or to two AVX2 ones.
// Without AVX-512 GCC warns that returning one changes the ABI; these helpers
// are internal and inlined, so no call ever crosses that ABI.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v16 __attribute__((vector_size(64)));
inline v16 load(const float* p) { return load_vector<v16>(p); }
inline void store(float* p, v16 v) { store_vector(p, v); }

// Register blocks: forward KB output channels x NV vectors of positions,
// backward DKB output channels x DTB taps: 24 accumulators each of the 32
// vector registers, the rest for the operands.
constexpr int64_t KB = 8, NV = 3, DKB = 4, DTB = 6;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct Layout {
  int64_t Hp, Wp, L, pitch, R;  // pitch: floats per padded plane, slack included
  std::vector<int64_t> off;     // off[t] = c pitch + i dh Wp + j dw
  explicit Layout(const ConvShape& s, int64_t block)
      : Hp(s.H + 2 * s.ph), Wp(s.W + 2 * s.pw), L(round_up(s.OH * Wp, block)),
        // The last block reads up to L - 1 + the largest tap offset.
        pitch(round_up(L + (s.kh - 1) * s.dh * Wp + (s.kw - 1) * s.dw, 16)), R(s.C * s.kh * s.kw) {
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j) off.push_back(c * pitch + i * s.dh * Wp + j * s.dw);
  }
};

// Copies image x (C, H, W) into the interior of xp (C planes of pitch floats),
// whose padding was zeroed when it was allocated and is never written.
void pad_image(float* xp, const float* x, const ConvShape& s, const Layout& l) {
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t h = 0; h < s.H; ++h)
      std::copy_n(x + (c * s.H + h) * s.W, s.W, xp + c * l.pitch + (h + s.ph) * l.Wp + s.pw);
}

// Threads over images, each with its own buffers (zeroed here, once).
int threads_for(const ConvShape& s) { return int(std::min<int64_t>(omp_get_max_threads(), s.N)); }

// The forward where output rows are whole vectors of 16, twice over (the RGB
// layer's 32): each register block is KB output channels x one output row,
// computed straight into y with the bias, so neither the positions past each
// row's end nor a copy-out pass are paid.
void conv2d_direct_forward_rows(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                                const ConvEpilogue* e) {
  const Layout l(s, 16);
  const int64_t Kp = round_up(s.K, KB), OHW = s.OH * s.OW;
  std::vector<float> wt(l.R * Kp, 0.0f);  // wt[t][k] = w[k][t], as below
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t t = 0; t < l.R; ++t) wt[t * Kp + k] = w[k * l.R + t];
  const int T = threads_for(s);
  const int64_t xn = s.C * l.pitch;
  Tensor buf = zeros({T * xn});
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int64_t n = 0; n < s.N; ++n) {
    float* xp = buf.data_ptr() + omp_get_thread_num() * xn;
    pad_image(xp, x + n * s.C * s.H * s.W, s, l);
    for (int64_t k0 = 0; k0 < Kp; k0 += KB)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow0 = 0; ow0 < s.OW; ow0 += 32) {
          v16 acc[KB][2] = {};
          const float* xr = xp + oh * l.Wp + ow0;
          for (int64_t t = 0; t < l.R; ++t) {
            const float* xt = xr + l.off[t];
            const float* wk = wt.data() + t * Kp + k0;
            const v16 x0 = load(xt), x1 = load(xt + 16);
#pragma GCC unroll 8
            for (int kk = 0; kk < KB; ++kk) acc[kk][0] += wk[kk] * x0, acc[kk][1] += wk[kk] * x1;
          }
          for (int kk = 0; kk < KB && k0 + kk < s.K; ++kk) {
            const int64_t k = k0 + kk;
            const float bk = b ? b[k] : 0.0f;
            float* out = y + (n * s.K + k) * OHW + oh * s.OW + ow0;
            for (int v = 0; v < 2; ++v) {
              v16 o = acc[kk][v] + bk;
              if (e) {  // BatchNorm2d's arithmetic (normalize_run), then the ReLU
                o = ((o - e->hi[k]) - e->lo[k]) * e->scale[k] + e->shift[k];
                o = o > v16{} ? o : v16{};
              }
              store(out + 16 * v, o);
            }
          }
        }
  }
}

}  // namespace

void conv2d_direct_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                           const ConvEpilogue* e) {
  if (s.OW % 32 == 0) return conv2d_direct_forward_rows(y, x, w, b, s, e);
  if (e) fail_direct_epilogue(s.OW);
  const Layout l(s, NV * 16);
  const int64_t Kp = round_up(s.K, KB), OHW = s.OH * s.OW;
  // wt[t][k] = w[k][t], zero for the channels k >= K that fill the last block.
  std::vector<float> wt(l.R * Kp, 0.0f);
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t t = 0; t < l.R; ++t) wt[t * Kp + k] = w[k * l.R + t];
  const int T = threads_for(s);
  const int64_t xn = s.C * l.pitch, yn = Kp * l.L;
  Tensor buf = zeros({T * (xn + yn)});  // the caching allocator hands the same memory back next call
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int64_t n = 0; n < s.N; ++n) {
    float *xp = buf.data_ptr() + omp_get_thread_num() * (xn + yn), *yp = xp + xn;
    pad_image(xp, x + n * s.C * s.H * s.W, s, l);
    for (int64_t k0 = 0; k0 < Kp; k0 += KB)
      for (int64_t p0 = 0; p0 < l.L; p0 += NV * 16) {
        v16 acc[KB][NV] = {};
        for (int64_t t = 0; t < l.R; ++t) {
          const float* xt = xp + l.off[t] + p0;
          const float* wk = wt.data() + t * Kp + k0;
          v16 xv[NV];
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) xv[v] = load(xt + 16 * v);
#pragma GCC unroll 8
          for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[kk][v] += wk[kk] * xv[v];
        }
#pragma GCC unroll 8
        for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) store(yp + (k0 + kk) * l.L + p0 + 16 * v, acc[kk][v]);
      }
    for (int64_t k = 0; k < s.K; ++k) {  // keep the OW valid positions of each row
      const float bk = b ? b[k] : 0.0f;
      float* out = y + (n * s.K + k) * OHW;
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) out[oh * s.OW + ow] = yp[k * l.L + oh * l.Wp + ow] + bk;
    }
  }
}

void conv2d_direct_backward_weight(float* dw, const float* dy, const float* x, const ConvShape& s) {
  const Layout l(s, 16);
  const int64_t Kp = round_up(s.K, DKB), Rp = round_up(l.R, DTB), OHW = s.OH * s.OW;
  std::vector<int64_t> off = l.off;
  off.resize(Rp, 0);  // the taps t >= R that fill the last block read plane 0; their sums are dropped
  const int T = threads_for(s);
  // With rows of whole vectors (and whole blocks of channels) dy is read in
  // place, row after row, with no positions dropped; else copied into dyp.
  const bool rows = s.OW % 16 == 0 && s.K % DKB == 0;
  // Per thread: xp, dyp (Kp planes of L floats, zero at the dropped positions
  // and in the channels k >= K) and the 16-lane partial sums of dw (Kp, Rp).
  const int64_t xn = s.C * l.pitch, dyn = rows ? 0 : Kp * l.L, an = Kp * Rp * 16;
  Tensor buf = zeros({T * (xn + dyn + an)});
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int64_t n = 0; n < s.N; ++n) {
    float *xp = buf.data_ptr() + omp_get_thread_num() * (xn + dyn + an), *dyp = xp + xn, *part = dyp + dyn;
    pad_image(xp, x + n * s.C * s.H * s.W, s, l);
    const float* dyi = dy + n * s.K * OHW;
    if (!rows)
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t oh = 0; oh < s.OH; ++oh)
          std::copy_n(dyi + k * OHW + oh * s.OW, s.OW, dyp + k * l.L + oh * l.Wp);
    // The first reads of dy wait on memory with nothing to do meanwhile: ask
    // for the next image's dy while this one computes, a cache line per step, into L2.
    const float* next = dy + (n + 1) * s.K * OHW;
    int64_t pf = n + 1 < s.N ? 0 : s.K * OHW;
    for (int64_t k0 = 0; k0 < Kp; k0 += DKB)
      for (int64_t t0 = 0; t0 < Rp; t0 += DTB) {
        v16 acc[DKB][DTB] = {};
        // Position q of dy's channel k is at dk + k plane + q, of the taps' runs at xp + off[t] + q + xo.
        const float* dk = rows ? dyi + k0 * OHW : dyp + k0 * l.L;
        const int64_t plane = rows ? OHW : l.L;
        for (int64_t p = 0; p < (rows ? OHW : l.L); p += 16) {
          if (pf < s.K * OHW) __builtin_prefetch(next + pf, 0, 2), pf += 16;
          const int64_t xo = rows ? p / s.OW * (l.Wp - s.OW) : 0;  // the padded row's extra columns
          v16 d[DKB];
#pragma GCC unroll 4
          for (int kk = 0; kk < DKB; ++kk) d[kk] = load(dk + kk * plane + p);
#pragma GCC unroll 8
          for (int tt = 0; tt < DTB; ++tt) {
            v16 xv = load(xp + off[t0 + tt] + p + xo);
            // Keep xv in a register: GCC would otherwise fold the load into each
            // of the DKB multiply-adds, and these unaligned loads, each split
            // over two cache lines, then bound the loop.
#if defined(__AVX512F__)
            asm("" : "+v"(xv));
#endif
#pragma GCC unroll 4
            for (int kk = 0; kk < DKB; ++kk) acc[kk][tt] += d[kk] * xv;
          }
        }
        for (int kk = 0; kk < DKB; ++kk)
          for (int tt = 0; tt < DTB; ++tt) {
            float* a = part + ((k0 + kk) * Rp + t0 + tt) * 16;
            store(a, load(a) + acc[kk][tt]);
          }
      }
  }
  // Lanes and threads added in a fixed order, in double: the same result every run.
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t t = 0; t < l.R; ++t) {
      double sum = 0;
      for (int th = 0; th < T; ++th) {
        const float* a = buf.data_ptr() + th * (xn + dyn + an) + xn + dyn + (k * Rp + t) * 16;
        for (int lane = 0; lane < 16; ++lane) sum += a[lane];
      }
      dw[k * l.R + t] = float(sum);
    }
}

}  // namespace norma::nn::fast::NORMA_ISA
