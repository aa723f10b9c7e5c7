// The 2x2 stride-2 max pool without the general loop's bounds and branches:
// the same choice (ties keep the first maximum, a NaN wins) as selects the
// compiler can vectorise (omp simd). The argmax is kept as its place in the
// window (0-3), an int32: half the bytes of the reference's int64 offset to
// write and read back. (As bytes the loop no longer vectorised.)
// N batch, C channels, H/W input size, OH/OW output size; P = N*C planes.
#include "maxpool2x2.h"

#include <algorithm>

#include "../ref/pool2d.h"
#include "simd.h"

namespace norma::nn::fast::NORMA_ISA {

using ref::kParallelGrain;

void maxpool2x2_forward(float* y, int32_t* arg, const float* x, const PoolShape& s) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p)
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const float* __restrict r0 = x + (p * s.H + 2 * oh) * s.W;
      const float* __restrict r1 = r0 + s.W;
      float* __restrict yo = y + (p * s.OH + oh) * s.OW;
      int32_t* __restrict ao = arg + (p * s.OH + oh) * s.OW;
      auto window = [&](int64_t ow) __attribute__((always_inline)) {
        const float v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
        ao[ow] = max_of_window(v, yo[ow]);
      };
      // simd_for: rows of 4 (cifar-small's last pool, 8 -> 4) would run in the
      // scalar remainder loop of a plain vectorised one.
      simd_for(s.OW, window);
    }
}

// Its backward: each window's dy goes to its argmax (dx zeroed first, a plane
// at a time while it is in cache, as the general backward does; writing each
// window's four values straight out, as selects, ran slower).
void maxpool2x2_backward(float* dx, const float* dy, const int32_t* arg, const PoolShape& s) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    float* dxp = dx + p * s.H * s.W;
    std::fill_n(dxp, s.H * s.W, 0.0f);
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const float* g = dy + (p * s.OH + oh) * s.OW;
      const int32_t* a = arg + (p * s.OH + oh) * s.OW;
      float* row = dxp + 2 * oh * s.W;
      for (int64_t ow = 0; ow < s.OW; ++ow) row[(a[ow] >> 1) * s.W + 2 * ow + (a[ow] & 1)] += g[ow];
    }
  }
}

bool maxpool2x2_applies(const PoolShape& s) {
  return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0;
}

}  // namespace norma::nn::fast::NORMA_ISA
