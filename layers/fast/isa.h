// Every file of layers/fast/ is compiled once per x86-64 ISA level (baseline,
// AVX2, AVX-512; layers/fast/CMakeLists.txt), each copy with that level's
// flags and inside namespace norma::nn::fast::NORMA_ISA (baseline, avx2 or
// avx512). The rest of Norma reaches them through kernels.h only.
#pragma once
#ifndef NORMA_ISA
#error "layers/fast/ is compiled per ISA level (NORMA_ISA); outside it include layers/fast/kernels.h"
#endif
