// kernels(): the one place that picks a copy of the fast kernels (kernels.h).
// Compiled once, for baseline x86-64, like the rest of Norma.
#include "kernels.h"

#include "../../core/error.h"

namespace norma::nn::fast {

const Kernels& kernels(Isa isa) {
  switch (isa == Isa::automatic ? cpu_isa() : isa) {
    case Isa::avx512: return avx512::table();
    case Isa::avx2: return avx2::table();
    default: return baseline::table();
  }
}

const Kernels& kernels() { return kernels(kernel_isa()); }

void fail_direct_epilogue(int64_t OW) {
  fail("conv2d_direct_forward: an epilogue needs output rows of whole 32s, got OW {}", OW);
}

}  // namespace norma::nn::fast
