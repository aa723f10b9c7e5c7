// Winograd convolution's driver (winograd.h has the algebra): the work cut
// into blocks of tile rows, one per thread at a time, each transformed, multiplied
// (one sgemm per tile position) and transformed back; forward, dx and dw.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <omp.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "../../core/tensor.h"
#include "../../core/blas_threads.h"
#include "../../core/kernel_policy.h"
#include "conv2d.h"
#include "winograd.h"

namespace norma::nn::fast::NORMA_ISA {

using namespace winograd;

namespace {

// Work is split into blocks of whole tile rows (n, ty) whose V (xi C P floats)
// and M (xi K P floats) together fit in this many bytes, the L2 of one core on
// the machines this was tuned on (1 MiB per core on Zen 4/5 and Skylake-X), so
// each xi's sgemm reads and writes L2, not L3. P is also rounded down to a
// multiple of 64: OpenBLAS's kernels run slower on other column counts.
// Larger and smaller blocks measured no better (docs/performance.md).
constexpr int64_t kBlockBytes = int64_t(1) << 20;

int64_t block_tiles(const Geom& g) {
  const int64_t fit = kBlockBytes / (g.xi() * (g.C + g.K) * int64_t(sizeof(float)));
  return std::max<int64_t>(64, fit / 64 * 64);
}

// The blocks of tile rows: block i is rows [i * rows_per_block, ...).
struct Blocks {
  int64_t rows, per_block, count, max_tiles;
  explicit Blocks(const Geom& g)
      : rows(g.N * g.TH),
        per_block(std::max<int64_t>(1, block_tiles(g) / g.TW)),
        count((rows + per_block - 1) / per_block),
        max_tiles(std::min(rows, per_block) * g.TW) {}
  int64_t begin(int64_t i) const { return i * per_block; }
  int64_t end(int64_t i) const { return std::min(rows, (i + 1) * per_block); }
};

// Threads over blocks, each with its own buffers and a single-threaded sgemm.
int threads_for(const Blocks& b) { return int(std::min<int64_t>(omp_get_max_threads(), b.count)); }

// Each thread's buffers: V (xi planes of C x P), M (xi of K x P) or dM (24 of P x K),
// input_transform's t (zeroed here, once) and 8 TW K floats of scratch. From
// the caching allocator, which hands the same memory back next call.
struct Workspace {
  int64_t Vn, Mn, tn, per_thread;
  Tensor buf;
  Workspace(const Geom& g, const Blocks& b, int T)
      : Vn(g.xi() * plane_stride(g.C, b.max_tiles)),
        Mn(g.xi() * plane_stride(g.K, b.max_tiles)),
        tn(t_floats(g, std::min(b.rows, b.per_block))),
        per_thread(Vn + Mn + tn + 8 * g.TW * g.K),
        buf(empty({T * per_thread})) {
    for (int i = 0; i < T; ++i) std::fill_n(t(i), tn, 0.0f);
  }
  float* V(int t) const { return buf.data_ptr() + t * per_thread; }
  float* M(int t) const { return V(t) + Vn; }
  float* t(int i) const { return M(i) + Mn; }
  float* scratch(int i) const { return t(i) + tn; }
};

// y = the convolution of x with the transformed filters U (xi, K, C), + bias
// (and the epilogue e, if not null).
void winograd_conv(float* y, const float* x, const float* U, const float* bias, const Geom& g,
                   const ConvEpilogue* e = nullptr) {
  const Blocks blocks(g);
  const int T = threads_for(blocks);
  const Workspace ws(g, blocks, T);
  std::optional<BlasThreads> one_thread;
  if (T > 1) one_thread.emplace(1);
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int64_t i = 0; i < blocks.count; ++i) {
    const int t = omp_get_thread_num();
    float *V = ws.V(t), *M = ws.M(t);
    const int64_t r0 = blocks.begin(i), r1 = blocks.end(i), P = (r1 - r0) * g.TW;
    const int64_t ldV = plane_stride(g.C, P), ldM = plane_stride(g.K, P);
    input_transform(V, x, g, r0, r1, ws.t(t));
    for (int xi = 0; xi < g.xi(); ++xi)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(g.K), int(P), int(g.C), 1.0f, U + xi * g.K * g.C,
                  int(g.C), V + xi * ldV, int(P), 0.0f, M + xi * ldM, int(P));
    output_transform(y, M, bias, g, r0, r1, e);
  }
}

}  // namespace

int winograd_row_tile(int64_t summed) { return summed <= kernel_policy().winograd_f44_channels ? 4 : 2; }

void conv2d_winograd_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                             const ConvEpilogue* e) {
  const Geom g = geom(s.N, s.C, s.K, s.H, s.W, s.ph, s.pw, e && e->pool ? 2 : winograd_row_tile(s.C));
  Tensor U = empty({g.xi() * s.K * s.C});
  filter_transform(U.data_ptr(), w, s.K, s.C, false, g.tw);
  winograd_conv(y, x, U.data_ptr(), b, g, e);
}

void conv2d_winograd_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                              const ConvShape& s) {
  if (dx) {  // dx = dy convolved with the flipped, channel-swapped filters, padding 2 - p
    const Geom gx = geom(s.N, s.K, s.C, s.OH, s.OW, 2 - s.ph, 2 - s.pw, winograd_row_tile(s.K));
    Tensor U = empty({gx.xi() * s.C * s.K});
    filter_transform(U.data_ptr(), w, s.K, s.C, true, gx.tw);
    winograd_conv(dx, dy, U.data_ptr(), nullptr, gx);
  }
  if (!dw) return;
  const Geom g = geom(s.N, s.C, s.K, s.H, s.W, s.ph, s.pw, 2);
  const Blocks blocks(g);
  const int T = threads_for(blocks);
  const int64_t KC = g.xi() * g.K * g.C;
  const Workspace ws(g, blocks, T);
  // Each thread sums its blocks' dU into its own slice, the first block's
  // product written over it (so the slices need no zeroing); the slices are
  // added in thread order in filter_transform_backward.
  Tensor dU = empty({T * KC});
  std::vector<char> started(size_t(T), 0);
  std::optional<BlasThreads> one_thread;
  if (T > 1) one_thread.emplace(1);
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int64_t i = 0; i < blocks.count; ++i) {
    const int t = omp_get_thread_num();
    float *V = ws.V(t), *dM = ws.M(t), *s = ws.scratch(t), *dUt = dU.data_ptr() + t * KC;
    const int64_t r0 = blocks.begin(i), r1 = blocks.end(i), P = (r1 - r0) * g.TW;
    const int64_t ldV = plane_stride(g.C, P), ldM = plane_stride(g.K, P);
    input_transform(V, x, g, r0, r1, ws.t(t));
    output_transform_backward(dM, dy, g, r0, r1, s);
    const float beta = started[t] ? 1.0f : 0.0f;
    started[t] = 1;
    for (int xi = 0; xi < g.xi(); ++xi)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(g.C), int(g.K), int(P), 1.0f, V + xi * ldV,
                  int(P), dM + xi * ldM, int(g.K), beta, dUt + xi * g.C * g.K, int(g.K));
  }
  for (int t = 0; t < T; ++t)  // a thread the runtime did not give (with dynamic teams): no blocks, zero
    if (!started[t]) std::fill_n(dU.data_ptr() + t * KC, KC, 0.0f);
  filter_transform_backward(dw, dU.data_ptr(), T, g.K, g.C);
}

}  // namespace norma::nn::fast::NORMA_ISA
