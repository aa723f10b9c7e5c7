// What the fast kernels share below the arithmetic: each thread's rows,
// streaming stores for large outputs, the fused ReLU's backward as a bit mask,
// GCC vector types, and core/iter.h's vector helpers again.
#pragma once
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <utility>

#include "../../core/kernel_policy.h"
#include "isa.h"

namespace norma::nn::fast::NORMA_ISA {

// prefetch_floats, load_vector, store_vector and simd_for as in core/iter.h
// (which documents them), but in this ISA level's namespace: a template of
// core's instantiated here would be compiled with this level's flags under the
// same name as in the other copies and in core, and the linker keeps any one
// of them for all callers (an AVX-512 one for a CPU without it: SIGILL).
// Vectors wider than the level's registers pass through them, and GCC warns
// that this changes the ABI: only where they are inlined, so no call crosses it.
#pragma GCC diagnostic ignored "-Wpsabi"
template <bool Write = false>
inline void prefetch_floats(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, Write ? 1 : 0, 2);
}
template <class V>
inline V load_vector(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
inline void store_vector(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
template <class F>
inline void simd_for(int64_t n, F f) {
  if (n >= 8) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) f(i);
  } else {
#pragma omp simd simdlen(4)
    for (int64_t i = 0; i < n; ++i) f(i);
  }
}

// This thread's share of rows [0, n) inside a parallel region: contiguous,
// as schedule(static) would give.
inline std::pair<int64_t, int64_t> thread_rows(int64_t n) {
  const int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
  return {n * t / T, n * (t + 1) / T};
}

// out(buf, i, len) writes values [i, i + len) of a run of n floats to buf.
// stream_run sends them on to y with streaming stores, a chunk at a time
// through an L1 buffer: an ordinary store first reads y's cache line from
// memory, so writing a tensor that the next layer reads from memory anyway
// moves its bytes twice; a streaming store writes the line without reading it.
// Only for tensors of 16 MiB and more (a first version that streamed every
// size was slower on small ones, which the next layer could have found in
// cache) and where AVX-512 is there; else out writes y. stream_fence() after
// the last run a thread writes makes them visible to the others.
constexpr int64_t kStreamChunk = 256, kStreamMinBytes = int64_t(16) << 20;
inline bool streams(int64_t numel) {
  // KernelPolicy::stream_stores off (NORMA_STREAM_STORES=0): to measure what they buy.
  return kernel_policy().stream_stores && numel * int64_t(sizeof(float)) >= kStreamMinBytes;
}
// y[0, n) = buf[0, n): ordinary stores up to y's first 64-byte boundary and
// after its last (a streaming store writes a whole aligned line), streaming
// ones between.
inline void stream_copy(float* y, const float* buf, int64_t n) {
#if defined(__AVX512F__)
  int64_t j = 0;
  for (; j < n && reinterpret_cast<uintptr_t>(y + j) % 64 != 0; ++j) y[j] = buf[j];
  for (; j + 16 <= n; j += 16) _mm512_stream_ps(y + j, _mm512_loadu_ps(buf + j));
  for (; j < n; ++j) y[j] = buf[j];
#else
  std::memcpy(y, buf, size_t(n) * sizeof(float));
#endif
}
template <class Out>
void stream_run(float* y, int64_t n, [[maybe_unused]] bool stream, Out out) {
#if defined(__AVX512F__)
  if (stream) {
    alignas(64) float buf[kStreamChunk];
    for (int64_t i = 0; i < n; i += kStreamChunk) {
      const int64_t len = std::min(kStreamChunk, n - i);
      out(buf, i, len);
      stream_copy(y + i, buf, len);
    }
    return;
  }
#endif
  out(y, 0, n);
}
// The NHWC form: rows [r0, r1) of C floats, row(out, r) writing row r to out;
// as many whole rows per chunk as fit kStreamChunk (rows wider than that are
// written directly).
template <class Row>
void stream_rows(float* y, int64_t r0, int64_t r1, int64_t C, [[maybe_unused]] bool stream, Row row) {
#if defined(__AVX512F__)
  if (stream && C <= kStreamChunk) {
    alignas(64) float buf[kStreamChunk];
    const int64_t k = kStreamChunk / C;
    for (int64_t r = r0; r < r1; r += k) {
      const int64_t n = std::min(k, r1 - r);
      for (int64_t j = 0; j < n; ++j) row(buf + j * C, r + j);
      stream_copy(y + r * C, buf, n * C);
    }
    return;
  }
#endif
  for (int64_t r = r0; r < r1; ++r) row(y + r * C, r);
}
inline void stream_fence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

// g where the fused ReLU's output r is positive, else 0 (0 also for a NaN g, as
// ReLU's backward gives): a bit mask, since a select (r > 0 ? g : 0) kept the
// loops around it from vectorising ("control flow in loop"). The same bits as
// the reference kernels' select.
inline float relu_masked(float g, float r) {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(g) & -uint32_t(r > 0));
}

// GCC vectors of 8 and 4 floats, and of as many int32 (the pool's backward).
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));

}  // namespace norma::nn::fast::NORMA_ISA
