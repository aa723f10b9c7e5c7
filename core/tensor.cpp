// Tensor metadata, storage, creation, in-place writes and printing. The random
// generator is in random.cpp, views and their backward in views.cpp, math ops
// in ops.cpp and reduce.cpp.
#include "tensor.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>

#include "allocator.h"
#include "autograd.h"
#include "iter.h"
#include "ops.h"

namespace norma {

int64_t Shape::numel(const char* op) const {
  if (std::find(begin(), end(), 0) != end()) return 0;  // whatever the other sizes
  int64_t n = 1;
  for (int64_t s : *this)
    if (__builtin_mul_overflow(n, s, &n)) fail("{}: shape {} has more than 2^63 - 1 elements", op, *this);
  return n;
}

Storage::Storage(int64_t n) : numel(n) {
  data = static_cast<float*>(cached_alloc(size_t(std::max<int64_t>(n, 1)) * sizeof(float)));
}
Storage::~Storage() { cached_free(data, size_t(std::max<int64_t>(numel, 1)) * sizeof(float)); }

std::string shape_str(const Shape& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = s;
    // The next dim's stride. A shape with a 0 has no elements but still has
    // strides: (0, 2^32, 2^32) needs 2^64, which int64 cannot hold.
    if (i > 0 && __builtin_mul_overflow(s, std::max<int64_t>(shape[i], 1), &s))
      fail("shape {} is too large: its row-major strides overflow int64", shape);
  }
  return st;
}

int64_t wrap_dim(int64_t dim, int64_t rank, const char* op) {
  int64_t r = std::max<int64_t>(rank, 1);  // a 0-d tensor accepts dim 0 / -1
  if (dim < -r || dim >= r)
    fail("{}: dim {} is out of range for a tensor of rank {} (expected {} to {})", op, dim, rank,
         -r, r - 1);
  return dim < 0 ? dim + r : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t x = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t y = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (x != y && x != 1 && y != 1)
      fail("{}: shapes {} and {} cannot be broadcast together (dim {}: {} vs {})", op, a, b, i, x, y);
    out[i] = x == 1 ? y : x;
  }
  return out;
}

// ---------------------------------------------------------------- metadata

void Tensor::check_defined(const char* what) const {
  if (!impl_) fail("{}: called on an undefined tensor", what);
}
const Shape& Tensor::shape() const { check_defined("shape"); return impl_->shape; }
const Shape& Tensor::strides() const { check_defined("strides"); return impl_->strides; }
int64_t Tensor::dim() const { check_defined("dim"); return int64_t(impl_->shape.size()); }
int64_t Tensor::numel() const { check_defined("numel"); return impl_->shape.numel(); }
int64_t Tensor::storage_offset() const { check_defined("storage_offset"); return impl_->offset; }
int64_t Tensor::size(int64_t d) const {
  check_defined("size");
  if (dim() == 0) fail("size: a 0-d tensor has no dim {}", d);
  return impl_->shape[wrap_dim(d, dim(), "size")];
}
int64_t Tensor::stride(int64_t d) const {
  check_defined("stride");
  if (dim() == 0) fail("stride: a 0-d tensor has no dim {}", d);
  return impl_->strides[wrap_dim(d, dim(), "stride")];
}
float* Tensor::data_ptr() const {
  check_defined("data_ptr");
  return impl_->storage->data + impl_->offset;
}
const std::shared_ptr<Storage>& Tensor::storage() const {
  check_defined("storage");
  return impl_->storage;
}
bool Tensor::is_contiguous() const {
  check_defined("is_contiguous");
  if (numel() == 0) return true;  // nothing to lay out (PyTorch's rule; a 0 size breaks the stride chain)
  int64_t expected = 1;
  for (size_t i = impl_->shape.size(); i-- > 0;) {
    if (impl_->shape[i] == 1) continue;
    if (impl_->strides[i] != expected) return false;
    expected *= impl_->shape[i];
  }
  return true;
}
float Tensor::item() const {
  check_defined("item");
  if (numel() != 1) fail("item: tensor of shape {} has {} elements, expected exactly 1", shape(), numel());
  return *data_ptr();
}
float Tensor::at(std::initializer_list<int64_t> index) const {
  check_defined("at");
  if (int64_t(index.size()) != dim())
    fail("at: {} indices given for a tensor of shape {}", index.size(), shape());
  int64_t off = impl_->offset, d = 0;
  for (int64_t i : index) {
    if (i < 0 || i >= impl_->shape[d])
      fail("at: index {} is out of range for dim {} of shape {}", i, d, shape());
    off += i * impl_->strides[d++];
  }
  return impl_->storage->data[off];
}
std::vector<float> Tensor::to_vector() const {
  Tensor c = contiguous();
  return std::vector<float>(c.data_ptr(), c.data_ptr() + c.numel());
}

// ---------------------------------------------------------------- autograd accessors

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }
Tensor& Tensor::requires_grad_(bool r) {
  check_defined("requires_grad_");
  if (impl_->grad_fn && !r)
    fail("requires_grad_: cannot turn off requires_grad of a non-leaf tensor of shape {}; use detach()", shape());
  impl_->requires_grad = r;
  return *this;
}
bool Tensor::is_leaf() const { check_defined("is_leaf"); return impl_->grad_fn == nullptr; }
Tensor Tensor::grad() const { check_defined("grad"); return impl_->grad; }
Tensor& Tensor::mutable_grad() { check_defined("mutable_grad"); return impl_->grad; }
void Tensor::set_grad(const Tensor& g) {
  check_defined("set_grad");
  if (g.defined() && g.shape() != shape())
    fail("set_grad: gradient of shape {} does not match tensor of shape {}", g.shape(), shape());
  impl_->grad = g;
}
void Tensor::zero_grad() { check_defined("zero_grad"); impl_->grad = Tensor(); }
void Tensor::retain_grad() {
  check_defined("retain_grad");
  if (!impl_->requires_grad) fail("retain_grad: tensor of shape {} does not require grad", shape());
  impl_->retains_grad = true;
}
const std::shared_ptr<Node>& Tensor::grad_fn() const { check_defined("grad_fn"); return impl_->grad_fn; }
Tensor Tensor::detach() const {
  check_defined("detach");
  auto d = std::make_shared<TensorImpl>();
  d->storage = impl_->storage;
  d->shape = impl_->shape;
  d->strides = impl_->strides;
  d->offset = impl_->offset;
  return Tensor(d);
}
void Tensor::backward(const Tensor& grad_output, bool retain_graph) const {
  check_defined("backward");
  autograd::backward(*this, grad_output, retain_graph);
}

// ---------------------------------------------------------------- creation

constexpr int64_t kMaxNumel = int64_t(1) << 60;  // 4 EiB of float32: no allocation can be larger

Tensor empty(const Shape& shape) {
  for (int64_t s : shape)
    if (s < 0) fail("empty: negative size in shape {}", shape);
  // The element count must not overflow (a wrapped count would allocate too little).
  int64_t n = 1;
  const bool zero = std::find(shape.begin(), shape.end(), 0) != shape.end();
  for (int64_t s : shape)
    if (!zero && (__builtin_mul_overflow(n, s, &n) || n > kMaxNumel))
      fail("empty: shape {} has more than 2^60 elements", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape.numel());
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  return Tensor(impl);
}
Tensor full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  std::fill_n(t.data_ptr(), t.numel(), value);
  return t;
}
Tensor zeros(const Shape& shape) { return full(shape, 0.0f); }
Tensor ones(const Shape& shape) { return full(shape, 1.0f); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape()); }
Tensor empty_like(const Tensor& t) { return empty(t.shape()); }
Tensor scalar_tensor(float v) { return full(Shape{}, v); }

Tensor arange(float end) { return arange(0.0f, end, 1.0f); }
Tensor arange(float start, float end, float step) {
  if (step == 0 || !std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step))
    fail("arange: start {}, end {} and step {} must be finite with a non-zero step", start, end, step);
  double n = std::ceil((double(end) - start) / step);
  if (n > double(kMaxNumel))
    fail("arange: start {}, end {} and step {} give {} elements, more than the 2^60 a tensor can hold", start, end,
         step, n);
  Tensor t = empty({int64_t(std::max(n, 0.0))});
  float* p = t.data_ptr();
  for (int64_t i = 0, m = t.numel(); i < m; ++i) p[i] = float(start + double(i) * step);
  return t;
}
Tensor from_vector(const std::vector<float>& values, const Shape& shape) {
  if (int64_t(values.size()) != shape.numel())
    fail("from_vector: {} values cannot fill shape {} ({} elements)", values.size(), shape, shape.numel());
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.data_ptr());
  return t;
}
Tensor tensor(std::initializer_list<float> values) { return tensor(std::vector<float>(values)); }
Tensor tensor(const std::vector<float>& values) { return from_vector(values, {int64_t(values.size())}); }

// ---------------------------------------------------------------- in place

namespace {
// In-place writes are not recorded in the graph, so a tensor that requires
// grad may only be written with grad mode off (e.g. an optimizer step).
void check_inplace(const Tensor& t, const char* op) {
  if (!t.defined()) fail("{}: called on an undefined tensor", op);
  if (t.requires_grad() && grad_mode_enabled())
    fail("{}: in-place operation on a tensor of shape {} that requires grad; "
         "wrap it in NoGradGuard (as optimizers do) or use the out-of-place op",
         op, t.shape());
}
void bump(const Tensor& t) { t.storage()->version++; }
// `other` must broadcast to t's shape; checked up front so the error names the in-place op.
void check_other(const Tensor& t, const Tensor& other, const char* op) {
  if (!other.defined()) fail("{}: other is an undefined tensor", op);
  const Shape &a = other.shape(), &b = t.shape();
  bool ok = a.size() <= b.size();
  for (size_t i = 1; ok && i <= a.size(); ++i) ok = a[a.size() - i] == 1 || a[a.size() - i] == b[b.size() - i];
  if (!ok) fail("{}: other of shape {} cannot be broadcast to shape {}", op, a, b);
}
}  // namespace

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  if (!src.defined()) fail("copy_: source is an undefined tensor");
  Shape b = broadcast_shapes(src.shape(), shape(), "copy_");
  if (b != shape()) fail("copy_: source of shape {} cannot be broadcast to destination shape {}", src.shape(), shape());
  // A source that overlaps the destination is copied out first.
  Tensor s = src.storage() == storage() ? src.clone() : src;
  detail::copy_into(*this, s);
  bump(*this);
  return *this;
}
Tensor& Tensor::fill_(float value) {
  check_inplace(*this, "fill_");
  float* base = impl_->storage->data;
  detail::for_each_row<1>(shape(), {strides()}, [&](auto off, int64_t n, auto st) {
    float* o = base + impl_->offset + off[0];
    for (int64_t i = 0; i < n; ++i) o[i * st[0]] = value;
  });
  bump(*this);
  return *this;
}
Tensor& Tensor::zero_() { return fill_(0.0f); }
Tensor& Tensor::add_(const Tensor& other, float alpha) {
  check_inplace(*this, "add_");
  check_other(*this, other, "add_");
  Tensor r;
  {
    NoGradGuard g;
    r = alpha == 1.0f ? add(*this, other) : add(*this, mul(other, scalar_tensor(alpha)));
  }
  detail::copy_into(*this, r);
  bump(*this);
  return *this;
}
Tensor& Tensor::sub_(const Tensor& other) {
  check_inplace(*this, "sub_");  // named here, not as add_
  check_other(*this, other, "sub_");
  return add_(other, -1.0f);
}
Tensor& Tensor::mul_(const Tensor& other) {
  check_inplace(*this, "mul_");
  check_other(*this, other, "mul_");
  Tensor r;
  {
    NoGradGuard g;
    r = mul(*this, other);
  }
  detail::copy_into(*this, r);
  bump(*this);
  return *this;
}
Tensor& Tensor::add_(float v) { return add_(scalar_tensor(v)); }
Tensor& Tensor::mul_(float v) { return mul_(scalar_tensor(v)); }
Tensor& Tensor::div_(float v) {
  check_inplace(*this, "div_");
  return mul_(scalar_tensor(1.0f / v));
}

// ---------------------------------------------------------------- printing

namespace {
void print_rec(std::string& out, const Tensor& t, int64_t d, int64_t off) {
  const int64_t n = t.shape()[d], st = t.strides()[d];
  const int64_t edge = 3;
  const bool elide = n > 2 * edge + 1 && t.numel() > 1000;
  out += '[';
  for (int64_t i = 0; i < n; ++i) {
    if (elide && i == edge) {
      out += "..., ";
      i = n - edge - 1;
      continue;
    }
    if (d + 1 == t.dim())
      out += fmt::format("{:.4g}", t.storage()->data[off + i * st]);
    else
      print_rec(out, t, d + 1, off + i * st);
    if (i + 1 < n) out += ", ";
  }
  out += ']';
}
}  // namespace

std::string to_string(const Tensor& t) {
  if (!t.defined()) return "tensor(undefined)";
  std::string s = "tensor(";
  if (t.dim() == 0)
    s += fmt::format("{:.4g}", t.item());
  else
    print_rec(s, t, 0, t.storage_offset());
  s += fmt::format(", shape={}", t.shape());
  if (t.requires_grad()) s += t.is_leaf() ? ", requires_grad" : fmt::format(", grad_fn={}", t.grad_fn()->name);
  return s + ")";
}

}  // namespace norma
