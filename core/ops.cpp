// Elementwise ops with broadcasting: each forward with its backward right
// after it (reductions and matmul: reduce.cpp). Backward closures use these same ops (grad
// mode is off inside them), so gradients of broadcast inputs are summed back
// with sum_to().
#include "ops.h"

#include <cblas.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <optional>

#include "blas_threads.h"
#include "iter.h"

namespace norma {

using autograd::accumulate;
using autograd::record;

void detail::check_defined(const Tensor& t, const char* op, const char* arg) {
  if (!t.defined()) fail("{}: argument '{}' is an undefined tensor", op, arg);
}

namespace {

using detail::check_defined;

// out = f(a, b) over the broadcast shape of a and b.
template <class F>
Tensor binary_kernel(const Tensor& a, const Tensor& b, const char* op, F f) {
  check_defined(a, op, "a");
  check_defined(b, op, "b");
  Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor out = empty(shape);
  float* o = out.data_ptr();
  const float* pa = a.storage()->data + a.storage_offset();
  const float* pb = b.storage()->data + b.storage_offset();
  detail::for_each_row<3>(shape, {out.strides(), detail::broadcast_strides(a, shape), detail::broadcast_strides(b, shape)},
                          [&](auto off, int64_t n, auto st) {
                            float* r = o + off[0];
                            const float *x = pa + off[1], *y = pb + off[2];
                            if (st[1] == 1 && st[2] == 1)
                              for (int64_t i = 0; i < n; ++i) r[i] = f(x[i], y[i]);
                            else
                              for (int64_t i = 0; i < n; ++i) r[i] = f(x[i * st[1]], y[i * st[2]]);
                          });
  return out;
}

// out = f(x), same shape.
template <class F>
Tensor unary_kernel(const Tensor& x, const char* op, F f) {
  check_defined(x, op, "x");
  Tensor out = empty(x.shape());
  float* o = out.data_ptr();
  const float* px = x.storage()->data + x.storage_offset();
  if (x.is_contiguous()) {  // the common case: one flat loop over both cores
    const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n >= detail::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = f(px[i]);
    return out;
  }
  detail::for_each_row<2>(x.shape(), {out.strides(), x.strides()}, [&](auto off, int64_t n, auto st) {
    float* r = o + off[0];
    const float* v = px + off[1];
    if (st[1] == 1)
      for (int64_t i = 0; i < n; ++i) r[i] = f(v[i]);
    else
      for (int64_t i = 0; i < n; ++i) r[i] = f(v[i * st[1]]);
  });
  return out;
}

}  // namespace

// ---------------------------------------------------------------- binary

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "add", [](float x, float y) { return x + y; });
  record(out, "add", {a, b}, [a, b](const Tensor& d) {
    accumulate(a, sum_to(d, a.shape()));
    accumulate(b, sum_to(d, b.shape()));
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "sub", [](float x, float y) { return x - y; });
  record(out, "sub", {a, b}, [a, b](const Tensor& d) {
    accumulate(a, sum_to(d, a.shape()));
    if (b.requires_grad()) accumulate(b, sum_to(neg(d), b.shape()));
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "mul", [](float x, float y) { return x * y; });
  record(out, "mul", {a, b}, [a, b](const Tensor& d) {
    if (a.requires_grad()) accumulate(a, sum_to(mul(d, b), a.shape()));
    if (b.requires_grad()) accumulate(b, sum_to(mul(d, a), b.shape()));
  }, {a, b});
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "div", [](float x, float y) { return x / y; });
  record(out, "div", {a, b}, [a, b](const Tensor& d) {
    if (a.requires_grad()) accumulate(a, sum_to(div(d, b), a.shape()));
    // d(a/b)/db = -a / b^2
    if (b.requires_grad()) accumulate(b, sum_to(neg(div(mul(d, a), mul(b, b))), b.shape()));
  }, {a, b});
  return out;
}

Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "maximum", [](float x, float y) { return x >= y ? x : y; });
  record(out, "maximum", {a, b}, [a, b](const Tensor& d) {
    Tensor to_a = ge(a, b);  // ties go to a
    if (a.requires_grad()) accumulate(a, sum_to(mul(d, to_a), a.shape()));
    if (b.requires_grad()) accumulate(b, sum_to(mul(d, 1.0f - to_a), b.shape()));
  }, {a, b});
  return out;
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "minimum", [](float x, float y) { return x <= y ? x : y; });
  record(out, "minimum", {a, b}, [a, b](const Tensor& d) {
    Tensor to_a = le(a, b);  // ties go to a
    if (a.requires_grad()) accumulate(a, sum_to(mul(d, to_a), a.shape()));
    if (b.requires_grad()) accumulate(b, sum_to(mul(d, 1.0f - to_a), b.shape()));
  }, {a, b});
  return out;
}

// Comparisons: masks carry no gradient.
Tensor eq(const Tensor& a, const Tensor& b) { return binary_kernel(a, b, "eq", [](float x, float y) { return float(x == y); }); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary_kernel(a, b, "ne", [](float x, float y) { return float(x != y); }); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary_kernel(a, b, "lt", [](float x, float y) { return float(x < y); }); }
Tensor le(const Tensor& a, const Tensor& b) { return binary_kernel(a, b, "le", [](float x, float y) { return float(x <= y); }); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary_kernel(a, b, "gt", [](float x, float y) { return float(x > y); }); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary_kernel(a, b, "ge", [](float x, float y) { return float(x >= y); }); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined(cond, "where", "cond");
  check_defined(a, "where", "a");
  check_defined(b, "where", "b");
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = empty(shape);
  float* o = out.data_ptr();
  const float* pc = cond.storage()->data + cond.storage_offset();
  const float* pa = a.storage()->data + a.storage_offset();
  const float* pb = b.storage()->data + b.storage_offset();
  detail::for_each_row<4>(shape, {out.strides(), detail::broadcast_strides(cond, shape),
                                  detail::broadcast_strides(a, shape), detail::broadcast_strides(b, shape)},
                          [&](auto off, int64_t n, auto st) {
                            for (int64_t i = 0; i < n; ++i)
                              o[off[0] + i * st[0]] = pc[off[1] + i * st[1]] != 0.0f ? pa[off[2] + i * st[2]]
                                                                                   : pb[off[3] + i * st[3]];
                          });
  record(out, "where", {a, b}, [cond, a, b](const Tensor& d) {
    Tensor z = zeros({});
    if (a.requires_grad()) accumulate(a, sum_to(where(cond, d, z), a.shape()));
    if (b.requires_grad()) accumulate(b, sum_to(where(cond, z, d), b.shape()));
  }, {cond});
  return out;
}

// ---------------------------------------------------------------- unary

Tensor neg(const Tensor& x) {
  Tensor out = unary_kernel(x, "neg", [](float v) { return -v; });
  record(out, "neg", {x}, [x](const Tensor& d) { accumulate(x, neg(d)); });
  return out;
}

Tensor exp(const Tensor& x) {
  Tensor out = unary_kernel(x, "exp", [](float v) { return std::exp(v); });
  Tensor y = out.detach();  // saved output; detached so the node does not own its own output
  record(out, "exp", {x}, [x, y](const Tensor& d) { accumulate(x, mul(d, y)); }, {y});
  return out;
}

Tensor log(const Tensor& x) {
  Tensor out = unary_kernel(x, "log", [](float v) { return std::log(v); });
  record(out, "log", {x}, [x](const Tensor& d) { accumulate(x, div(d, x)); }, {x});
  return out;
}

Tensor sqrt(const Tensor& x) {
  Tensor out = unary_kernel(x, "sqrt", [](float v) { return std::sqrt(v); });
  Tensor y = out.detach();
  record(out, "sqrt", {x}, [x, y](const Tensor& d) { accumulate(x, div(d * 0.5f, y)); }, {y});
  return out;
}

Tensor rsqrt(const Tensor& x) {
  Tensor out = unary_kernel(x, "rsqrt", [](float v) { return 1.0f / std::sqrt(v); });
  Tensor y = out.detach();
  // d(x^-1/2)/dx = -1/2 x^-3/2 = -1/2 y^3
  record(out, "rsqrt", {x}, [x, y](const Tensor& d) { accumulate(x, mul(d, mul(mul(y, y), y) * -0.5f)); }, {y});
  return out;
}

Tensor abs(const Tensor& x) {
  Tensor out = unary_kernel(x, "abs", [](float v) { return std::fabs(v); });
  record(out, "abs", {x}, [x](const Tensor& d) {
    accumulate(x, mul(d, unary_kernel(x, "abs", [](float v) { return float((v > 0) - (v < 0)); })));
  }, {x});
  return out;
}

Tensor relu(const Tensor& x) {
  Tensor out = unary_kernel(x, "relu", [](float v) { return v > 0 ? v : 0.0f; });
  Tensor y = out.detach();
  record(out, "relu", {x}, [x, y](const Tensor& d) {
    // dx = d where y > 0, else 0 (0 also for a NaN or infinite d there, as
    // PyTorch's threshold_backward): one pass, where a mask and a mul took two.
    Tensor dc = d.contiguous(), dx = empty(y.shape());
    const float *g = dc.data_ptr(), *py = y.data_ptr();
    float* o = dx.data_ptr();
    const int64_t n = dx.numel();
#pragma omp parallel for simd schedule(static) if (n >= detail::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = py[i] > 0 ? g[i] : 0.0f;
    accumulate(x, dx);
  }, {y});
  return out;
}

Tensor pow(const Tensor& x, float p) {
  if (!std::isfinite(p)) fail("pow: exponent must be finite, got {}", p);
  Tensor out = unary_kernel(x, "pow", [p](float v) { return std::pow(v, p); });
  record(out, "pow", {x}, [x, p](const Tensor& d) {
    accumulate(x, mul(d, unary_kernel(x, "pow", [p](float v) { return p * std::pow(v, p - 1.0f); })));
  }, {x});
  return out;
}

// ---------------------------------------------------------------- operators

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, float b) { return add(a, scalar_tensor(b)); }
Tensor operator-(const Tensor& a, float b) { return sub(a, scalar_tensor(b)); }
Tensor operator*(const Tensor& a, float b) { return mul(a, scalar_tensor(b)); }
Tensor operator/(const Tensor& a, float b) { return div(a, scalar_tensor(b)); }
Tensor operator+(float a, const Tensor& b) { return add(scalar_tensor(a), b); }
Tensor operator-(float a, const Tensor& b) { return sub(scalar_tensor(a), b); }
Tensor operator*(float a, const Tensor& b) { return mul(scalar_tensor(a), b); }
Tensor operator/(float a, const Tensor& b) { return div(scalar_tensor(a), b); }

void set_num_threads(int n) {
  if (n < 1) fail("set_num_threads: need at least 1 thread, got {}", n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}
int get_num_threads() { return omp_get_max_threads(); }

}  // namespace norma
