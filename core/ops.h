// Differentiable tensor ops: elementwise with NumPy broadcasting, reductions,
// matmul. Each op validates its arguments (norma::Error naming the op and
// every shape), runs a kernel, and records an autograd node when an input
// requires grad. Forward and backward of each op sit side by side in the .cpp.
#pragma once
#include "autograd.h"
#include "tensor.h"

namespace norma {

// ---- elementwise, binary (broadcasting)
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  // gradient to a where a >= b, else to b
Tensor minimum(const Tensor& a, const Tensor& b);  // gradient to a where a <= b, else to b
// Comparisons give 0/1 masks and no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
// cond != 0 ? a : b, all three broadcast together; no gradient to cond.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// ---- elementwise, unary
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);   // gradient sign(x), 0 at 0
Tensor relu(const Tensor& x);  // gradient 1 where x > 0
Tensor pow(const Tensor& x, float exponent);

// ---- reductions (free-function forms of the Tensor methods)
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor var(const Tensor& x, const std::vector<int64_t>& dims = {}, bool unbiased = true,
           bool keepdim = false);
Tensor max(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Indices are returned as float32 values (Norma tensors are float32; exact below 2^24).
Tensor argmax(const Tensor& x);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);

// ---- linear algebra
// (n, k) @ (k, m) -> (n, m); (b, n, k) @ (b, k, m) -> (b, n, m); a 2-D side is
// shared by every batch. Transposed views go to sgemm without a copy.
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- operators
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, float b);
Tensor operator-(const Tensor& a, float b);
Tensor operator*(const Tensor& a, float b);
Tensor operator/(const Tensor& a, float b);
Tensor operator+(float a, const Tensor& b);
Tensor operator-(float a, const Tensor& b);
Tensor operator*(float a, const Tensor& b);
Tensor operator/(float a, const Tensor& b);

// ---- threading for Norma's own kernels (OpenBLAS keeps its own setting)
void set_num_threads(int n);
int get_num_threads();

}  // namespace norma
