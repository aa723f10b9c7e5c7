// Reductions (sum, mean, var, max, argmax) and matmul: each forward with its
// backward right after it, as in ops.cpp.
#include <cblas.h>

#include <cmath>
#include <limits>
#include <numeric>

#include "blas_threads.h"
#include "iter.h"
#include "ops.h"

namespace norma {

using autograd::accumulate;
using autograd::record;
using detail::check_defined;

// ---------------------------------------------------------------- reductions

namespace {

// A reduction viewed as `outer` independent blocks of `inner` contiguous values:
// the reduced dims are moved last and the tensor made contiguous.
struct Blocks {
  Tensor data;         // contiguous, reduced dims last
  int64_t outer = 1, inner = 1;
  Shape keep_shape;    // output shape with reduced dims kept as 1
  Shape out_shape;     // output shape as requested (keepdim or not)
  std::vector<int64_t> perm;  // permutation applied to the input
};

Blocks make_blocks(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, const char* op) {
  check_defined(x, op, "x");
  std::vector<bool> reduced(x.dim(), dims.empty());
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, x.dim(), op);
    if (reduced[w] && !dims.empty()) fail("{}: dim {} appears twice in the reduction dims of shape {}", op, d, x.shape());
    reduced[w] = true;
  }
  Blocks b;
  std::vector<int64_t> tail;
  for (int64_t d = 0; d < x.dim(); ++d) {
    (reduced[d] ? tail : b.perm).push_back(d);
    if (reduced[d]) {
      b.inner *= x.shape()[d];
      b.keep_shape.push_back(1);
      if (keepdim) b.out_shape.push_back(1);
    } else {
      b.outer *= x.shape()[d];
      b.keep_shape.push_back(x.shape()[d]);
      b.out_shape.push_back(x.shape()[d]);
    }
  }
  b.perm.insert(b.perm.end(), tail.begin(), tail.end());
  NoGradGuard g;
  b.data = x.dim() ? x.permute(b.perm).contiguous() : x.contiguous();
  return b;
}

// Runs f(block_pointer, out_index) for every block, in parallel when large.
template <class F>
Tensor reduce_kernel(const Blocks& b, F f) {
  Tensor out = empty(b.out_shape);
  const float* p = b.data.data_ptr();
  float* o = out.data_ptr();
#pragma omp parallel for schedule(static) if (b.outer > 1 && b.outer * b.inner >= detail::kParallelGrain)
  for (int64_t i = 0; i < b.outer; ++i) o[i] = f(p + i * b.inner);
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Blocks b = make_blocks(x, dims, keepdim, "sum");
  const int64_t n = b.inner;
  Tensor out = reduce_kernel(b, [n](const float* v) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += v[i];
    return float(s);
  });
  Shape keep = b.keep_shape;
  record(out, "sum", {x}, [x, keep](const Tensor& d) { accumulate(x, d.reshape(keep).expand(x.shape()).contiguous()); });
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Blocks b = make_blocks(x, dims, keepdim, "mean");
  const int64_t n = b.inner;
  Tensor out = reduce_kernel(b, [n](const float* v) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += v[i];
    return float(s / double(n));  // 0/0 -> nan for an empty reduction, as in PyTorch
  });
  Shape keep = b.keep_shape;
  record(out, "mean", {x}, [x, keep, n](const Tensor& d) {
    accumulate(x, (d.reshape(keep) / float(n)).expand(x.shape()).contiguous());
  });
  return out;
}

Tensor var(const Tensor& x, const std::vector<int64_t>& dims, bool unbiased, bool keepdim) {
  Blocks b = make_blocks(x, dims, keepdim, "var");
  const int64_t n = b.inner;
  const double denom = double(n) - (unbiased ? 1.0 : 0.0);  // <= 0 gives inf/nan, as in PyTorch
  // Two passes in double: exact enough when |mean| >> std.
  Tensor out = reduce_kernel(b, [n, denom](const float* v) {
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; ++i) m += v[i];
    m /= double(n);
    for (int64_t i = 0; i < n; ++i) s += (v[i] - m) * (v[i] - m);
    return float(s / denom);
  });
  Shape keep = b.keep_shape;
  record(out, "var", {x}, [x, keep, dims, denom](const Tensor& d) {
    // d var / dx_i = 2 (x_i - mean) / denom
    Tensor centered = sub(x, mean(x, dims, /*keepdim=*/true));
    accumulate(x, mul(d.reshape(keep), centered) * float(2.0 / denom));
  }, {x});
  return out;
}

namespace {
// Index of the first maximum of each block (NaN wins, as in PyTorch).
Tensor block_argmax(const Blocks& b, const char* op, const Shape& shape) {
  const int64_t n = b.inner;
  if (n == 0) fail("{}: cannot reduce over an empty dim of shape {}", op, shape);
  return reduce_kernel(b, [n](const float* v) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
      if (v[i] > v[best] || (std::isnan(v[i]) && !std::isnan(v[best]))) best = i;
    return float(best);
  });
}
}  // namespace

Tensor max(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Blocks b = make_blocks(x, dims, keepdim, "max");
  Tensor idx = block_argmax(b, "max", x.shape());
  Tensor out = empty(b.out_shape);
  for (int64_t i = 0; i < b.outer; ++i)
    out.data_ptr()[i] = b.data.data_ptr()[i * b.inner + int64_t(idx.data_ptr()[i])];
  // Backward: the gradient goes to the selected element of each block, then
  // the blocks are permuted back to x's layout.
  std::vector<int64_t> inverse(b.perm.size());
  for (size_t i = 0; i < b.perm.size(); ++i) inverse[b.perm[i]] = int64_t(i);
  Shape permuted = b.data.shape();
  const int64_t inner = b.inner;
  record(out, "max", {x}, [x, idx, inverse, permuted, inner](const Tensor& d) {
    Tensor g = zeros(permuted);
    Tensor dc = d.contiguous();
    const int64_t n = idx.numel();
    for (int64_t i = 0; i < n; ++i) g.data_ptr()[i * inner + int64_t(idx.data_ptr()[i])] = dc.data_ptr()[i];
    accumulate(x, x.dim() ? g.permute(inverse).contiguous() : g);
  });
  return out;
}

Tensor argmax(const Tensor& x) {
  check_defined(x, "argmax", "x");
  return block_argmax(make_blocks(x.reshape({-1}), {}, false, "argmax"), "argmax", x.shape());
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  check_defined(x, "argmax", "x");
  return block_argmax(make_blocks(x, {dim}, keepdim, "argmax"), "argmax", x.shape());
}

// Tensor method forms.
Tensor Tensor::sum(const std::vector<int64_t>& d, bool k) const { return norma::sum(*this, d, k); }
Tensor Tensor::mean(const std::vector<int64_t>& d, bool k) const { return norma::mean(*this, d, k); }
Tensor Tensor::var(const std::vector<int64_t>& d, bool u, bool k) const { return norma::var(*this, d, u, k); }
Tensor Tensor::max(const std::vector<int64_t>& d, bool k) const { return norma::max(*this, d, k); }
Tensor Tensor::argmax() const { return norma::argmax(*this); }
Tensor Tensor::argmax(int64_t d, bool k) const { return norma::argmax(*this, d, k); }
Tensor Tensor::exp() const { return norma::exp(*this); }
Tensor Tensor::log() const { return norma::log(*this); }
Tensor Tensor::sqrt() const { return norma::sqrt(*this); }
Tensor Tensor::rsqrt() const { return norma::rsqrt(*this); }
Tensor Tensor::abs() const { return norma::abs(*this); }
Tensor Tensor::relu() const { return norma::relu(*this); }
Tensor Tensor::pow(float e) const { return norma::pow(*this, e); }
Tensor Tensor::matmul(const Tensor& o) const { return norma::matmul(*this, o); }

// ---------------------------------------------------------------- matmul

namespace {

// How sgemm reads the last two dims of a tensor: as stored, or transposed.
struct BlasOperand {
  const float* data;
  CBLAS_TRANSPOSE trans;
  int ld;
  int64_t batch_stride;
  Tensor keep;  // owns a contiguous copy when one was needed
};

BlasOperand blas_operand(const Tensor& t) {
  const int64_t r = t.size(-2), c = t.size(-1), rs = t.stride(-2), cs = t.stride(-1);
  const int64_t bs = t.dim() == 3 ? t.stride(0) : 0;
  const float* p = t.data_ptr();
  if ((cs == 1 || c == 1) && (r == 1 || rs >= std::max<int64_t>(c, 1)))
    return {p, CblasNoTrans, int(r == 1 ? std::max<int64_t>(c, 1) : rs), bs, t};
  if ((rs == 1 || r == 1) && (c == 1 || cs >= std::max<int64_t>(r, 1)))
    return {p, CblasTrans, int(c == 1 ? std::max<int64_t>(r, 1) : cs), bs, t};
  Tensor cc = t.contiguous();
  return {cc.data_ptr(), CblasNoTrans, int(std::max<int64_t>(c, 1)), t.dim() == 3 ? r * c : 0, cc};
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_defined(a, "matmul", "a");
  check_defined(b, "matmul", "b");
  if (a.dim() < 2 || a.dim() > 3 || b.dim() < 2 || b.dim() > 3)
    fail("matmul: expects 2-D or 3-D tensors, got {} and {}", a.shape(), b.shape());
  const int64_t n = a.size(-2), k = a.size(-1), k2 = b.size(-2), m = b.size(-1);
  if (k != k2)
    fail("matmul: cannot multiply {} by {}: inner dimensions {} and {} differ", a.shape(), b.shape(), k, k2);
  const int64_t batch = std::max(a.dim() == 3 ? a.size(0) : 1, b.dim() == 3 ? b.size(0) : 1);
  if ((a.dim() == 3 && a.size(0) != batch) || (b.dim() == 3 && b.size(0) != batch))
    fail("matmul: batch sizes of {} and {} differ", a.shape(), b.shape());
  const bool batched = a.dim() == 3 || b.dim() == 3;
  Tensor out = batched ? empty({batch, n, m}) : empty({n, m});
  if (k == 0) {
    std::fill_n(out.data_ptr(), out.numel(), 0.0f);  // an empty sum
  } else if (n > 0 && m > 0) {
    BlasOperand A = blas_operand(a), B = blas_operand(b);
    // A small product (a classifier head) runs on one thread: OpenBLAS's
    // threads gain nothing there, and after a threaded call they spin for a
    // while, taking cores from the OpenMP kernels that come next (cifar-small's
    // first conv ran up to 4x slower after the linear layer's backward).
    std::optional<BlasThreads> one_thread;
    if (batch * n * m * k < (int64_t(1) << 22)) one_thread.emplace(1);
    for (int64_t i = 0; i < batch; ++i)
      cblas_sgemm(CblasRowMajor, A.trans, B.trans, int(n), int(m), int(k), 1.0f, A.data + i * A.batch_stride, A.ld,
                  B.data + i * B.batch_stride, B.ld, 0.0f, out.data_ptr() + i * n * m, int(m));
  }
  // dA = dC @ B^T, dB = A^T @ dC; a 2-D operand shared across the batch sums its batch gradients.
  record(out, "matmul", {a, b}, [a, b](const Tensor& d) {
    if (a.requires_grad()) accumulate(a, sum_to(matmul(d, b.transpose(-1, -2)), a.shape()));
    if (b.requires_grad()) accumulate(b, sum_to(matmul(a.transpose(-1, -2), d), b.shape()));
  }, {a, b});
  return out;
}

}  // namespace norma
