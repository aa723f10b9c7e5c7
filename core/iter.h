// Strided iteration over N operands that share one (broadcast) shape.
// Internal to core/: the loop every elementwise kernel and copy is built on.
// Dims that are contiguous in every operand are merged, then the work is split
// into rows of the innermost dim; rows run in parallel when there are many.
#pragma once
#include <array>
#include <cstring>

#include "tensor.h"

namespace norma::detail {

// Strides of `t` seen through `shape` (broadcast dims get stride 0). The
// caller has checked that t's shape broadcasts to `shape`.
Shape broadcast_strides(const Tensor& t, const Shape& shape);

// Fails, naming op and the argument, when t is undefined.
void check_defined(const Tensor& t, const char* op, const char* arg);

// Minimum number of elements before a loop is split across threads.
constexpr int64_t kParallelGrain = 1 << 15;

// Asks for floats [p, p + n) to be brought into L2, a cache line at a time,
// for reading or (Write) for writing. For data the hardware prefetchers miss:
// they stop at 4 KiB pages and follow only a few streams at once.
template <bool Write = false>
inline void prefetch_floats(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, Write ? 1 : 0, 2);
}

// An unaligned load or store of V, a GCC vector of floats
// (`typedef float V __attribute__((vector_size(...)))`), for kernels written
// in vectors where the vectoriser does badly (conv2d_direct, conv2d_winograd).
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

// f(i) for i in [0, n) as one vector loop (f an always_inline lambda). A row
// shorter than the 8 or 16 lanes the compiler picks would run entirely in its
// scalar remainder loop, where selects become branches: vectors of 4 lanes
// for those (the 4-wide rows of cifar-small's 8x8 layers).
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

// Calls row(offsets, n, inner_strides) for every row of the innermost merged
// dim, where offsets[k] is operand k's element offset at the row's start.
template <size_t N, class Row>
void for_each_row(const Shape& shape, std::array<Shape, N> strides, Row&& row) {
  // Merge dim d into d+1 when every operand steps over d as one block of d+1.
  Shape sh;
  std::array<Shape, N> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;  // size-1 dims never move the offsets
    bool merge = !sh.empty();
    for (size_t k = 0; k < N && merge; ++k)
      merge = st[k].back() == strides[k][d] * shape[d];
    if (merge) {
      sh.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) st[k].back() = strides[k][d];
    } else {
      sh.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) st[k].push_back(strides[k][d]);
    }
  }
  if (sh.empty()) {  // a single element
    sh.push_back(1);
    for (size_t k = 0; k < N; ++k) st[k].push_back(1);
  }
  for (int64_t s : shape)
    if (s == 0) return;
  const int64_t inner = sh.back();
  std::array<int64_t, N> inner_st;
  for (size_t k = 0; k < N; ++k) inner_st[k] = st[k].back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < sh.size(); ++d) rows *= sh[d];
  const int64_t outer_dims = int64_t(sh.size()) - 1;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * inner >= kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    std::array<int64_t, N> off{};
    int64_t rem = r;
    for (int64_t d = outer_dims - 1; d >= 0; --d) {
      int64_t i = rem % sh[d];
      rem /= sh[d];
      for (size_t k = 0; k < N; ++k) off[k] += i * st[k][d];
    }
    row(off, inner, inner_st);
  }
}

// dst[i] = src[i] over dst's shape; src broadcast to it. Any strides on either side.
void copy_into(const Tensor& dst, const Tensor& src);

}  // namespace norma::detail
