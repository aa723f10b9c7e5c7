// View ops: new shape/strides/offset over the same storage, each with its
// backward right after it. Also contiguous(), clone() and the strided copy.
#include <algorithm>
#include <numeric>
#include <optional>

#include "autograd.h"
#include "iter.h"
#include "ops.h"

namespace norma {
namespace detail {

Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  size_t lead = shape.size() - t.shape().size();
  for (size_t i = 0; i < t.shape().size(); ++i)
    st[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  return st;
}

void copy_into(const Tensor& dst, const Tensor& src) {
  float* d = dst.storage()->data + dst.storage_offset();
  const float* s = src.storage()->data + src.storage_offset();
  for_each_row<2>(dst.shape(), {dst.strides(), broadcast_strides(src, dst.shape())},
                  [&](auto off, int64_t n, auto st) {
                    float* o = d + off[0];
                    const float* x = s + off[1];
                    if (st[0] == 1 && st[1] == 1)
                      std::copy(x, x + n, o);
                    else
                      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = x[i * st[1]];
                  });
}

}  // namespace detail

namespace {

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  return Tensor(impl);
}

// Replaces one -1 in `shape` so that it holds `numel` elements.
Shape infer_shape(Shape shape, int64_t numel, const Shape& from, const char* op) {
  int64_t infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) fail("{}: only one dim can be -1 in {}", op, shape);
      infer = int64_t(i);
    } else if (shape[i] < 0) {
      fail("{}: invalid size {} in {}", op, shape[i], shape);
    }
  }
  if (infer >= 0) {
    Shape rest = shape;
    rest[size_t(infer)] = 1;
    const int64_t known = rest.numel(op);
    if (known == 0 || numel % known != 0)
      fail("{}: shape {} is invalid for input of shape {} ({} elements)", op, shape, from, numel);
    shape[infer] = numel / known;
  }
  if (shape.numel(op) != numel)
    fail("{}: shape {} is invalid for input of shape {} ({} elements)", op, shape, from, numel);
  return shape;
}

// Strides for viewing `t` as `shape` without a copy, or empty if impossible
// (the same chunking rule as PyTorch's computeStride).
std::optional<Shape> view_strides(const Tensor& t, const Shape& shape) {
  const Shape& os = t.shape();
  const Shape& ost = t.strides();
  Shape st(shape.size());
  if (t.numel() == 0 || os.empty()) return contiguous_strides(shape);
  int64_t view_d = int64_t(shape.size()) - 1;
  int64_t chunk_base = ost.back(), tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    if (d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        st[view_d] = view_numel * chunk_base;
        view_numel *= shape[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base = ost[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return st;
}

// Backward of every reshaping view: reshape the gradient back.
void record_reshape(Tensor& out, const Tensor& x, const char* name) {
  Shape in = x.shape();
  autograd::record(out, name, {x}, [x, in](const Tensor& d) { autograd::accumulate(x, d.reshape(in)); });
}

}  // namespace

Tensor Tensor::view(const Shape& s) const {
  check_defined("view");
  Shape shape = infer_shape(s, numel(), this->shape(), "view");
  auto st = view_strides(*this, shape);
  if (!st)
    fail("view: cannot view a tensor of shape {} and strides {} as {}; use reshape() (which copies)",
         this->shape(), strides(), shape);
  Tensor out = make_view(*this, shape, *st, storage_offset());
  record_reshape(out, *this, "view");
  return out;
}

Tensor Tensor::reshape(const Shape& s) const {
  check_defined("reshape");
  Shape shape = infer_shape(s, numel(), this->shape(), "reshape");
  if (view_strides(*this, shape)) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  check_defined("permute");
  if (int64_t(dims.size()) != dim())
    fail("permute: {} dims given for a tensor of shape {}", dims.size(), shape());
  Shape sh(dims.size()), st(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    if (inverse[d] != -1) fail("permute: dim {} repeated in the permutation of shape {}", d, shape());
    inverse[d] = int64_t(i);
    sh[i] = shape()[d];
    st[i] = strides()[d];
  }
  Tensor out = make_view(*this, sh, st, storage_offset());
  Tensor x = *this;
  autograd::record(out, "permute", {x}, [x, inverse](const Tensor& d) {
    autograd::accumulate(x, d.permute(inverse));
  });
  return out;
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  check_defined("transpose");
  std::vector<int64_t> p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[wrap_dim(a, dim(), "transpose")], p[wrap_dim(b, dim(), "transpose")]);
  return permute(p);
}

Tensor Tensor::t() const {
  check_defined("t");
  if (dim() != 2) fail("t: expects a 2-D tensor, got shape {}", shape());
  return transpose(0, 1);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  check_defined("narrow");
  if (dim() == 0) fail("narrow: cannot narrow a 0-d tensor");
  d = wrap_dim(d, dim(), "narrow");
  if (start < 0 || length < 0 || start + length > shape()[d])
    fail("narrow: start {} and length {} are out of range for dim {} of size {} (shape {})", start,
         length, d, shape()[d], shape());
  Shape sh = shape();
  sh[d] = length;
  Tensor out = make_view(*this, sh, strides(), storage_offset() + start * strides()[d]);
  Tensor x = *this;
  autograd::record(out, "narrow", {x}, [x, d, start, length](const Tensor& g) {
    Tensor dx = zeros(x.shape());
    dx.narrow(d, start, length).copy_(g);
    autograd::accumulate(x, dx);
  });
  return out;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  check_defined("select");
  if (dim() == 0) fail("select: cannot select from a 0-d tensor");
  d = wrap_dim(d, dim(), "select");
  if (index < -shape()[d] || index >= shape()[d])
    fail("select: index {} is out of range for dim {} of size {} (shape {})", index, d, shape()[d], shape());
  if (index < 0) index += shape()[d];
  Shape sh = shape(), st = strides();
  sh.erase(sh.begin() + d);
  st.erase(st.begin() + d);
  Tensor out = make_view(*this, sh, st, storage_offset() + index * strides()[d]);
  Tensor x = *this;
  autograd::record(out, "select", {x}, [x, d, index](const Tensor& gr) {
    Tensor dx = zeros(x.shape());
    dx.select(d, index).copy_(gr);
    autograd::accumulate(x, dx);
  });
  return out;
}

Tensor Tensor::expand(const Shape& s) const {
  check_defined("expand");
  if (s.size() < shape().size())
    fail("expand: target shape {} has fewer dims than the tensor's shape {}", s, shape());
  size_t lead = s.size() - shape().size();
  Shape sh(s.size()), st(s.size(), 0);
  for (size_t i = 0; i < s.size(); ++i) {
    if (i < lead) {
      if (s[i] < 0) fail("expand: size -1 is not allowed for the new leading dim {} of {}", i, s);
      sh[i] = s[i];
      continue;
    }
    int64_t have = shape()[i - lead];
    int64_t want = s[i] == -1 ? have : s[i];
    if (have != want && have != 1)
      fail("expand: the size {} at dim {} of shape {} cannot be expanded to {} (target {})", have,
           i - lead, shape(), want, s);
    sh[i] = want;
    st[i] = have == want ? strides()[i - lead] : 0;
  }
  Tensor out = make_view(*this, sh, st, storage_offset());
  Tensor x = *this;
  autograd::record(out, "expand", {x}, [x](const Tensor& d) { autograd::accumulate(x, sum_to(d, x.shape())); });
  return out;
}

Tensor Tensor::broadcast_to(const Shape& s) const {
  check_defined("broadcast_to");
  for (int64_t v : s)
    if (v < 0) fail("broadcast_to: invalid size {} in target shape {}", v, s);
  return expand(s);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  check_defined("unsqueeze");
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape sh = shape();
  sh.insert(sh.begin() + d, 1);
  return view(sh);
}

Tensor Tensor::squeeze() const {
  check_defined("squeeze");
  Shape sh;
  for (int64_t s : shape())
    if (s != 1) sh.push_back(s);
  return view(sh);
}

Tensor Tensor::squeeze(int64_t d) const {
  check_defined("squeeze");
  if (dim() == 0) return view(Shape{});
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[d] != 1) return view(shape());
  Shape sh = shape();
  sh.erase(sh.begin() + d);
  return view(sh);
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  check_defined("flatten");
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  if (start > end) fail("flatten: start_dim {} comes after end_dim {} (shape {})", start, end, shape());
  Shape sh(shape().begin(), shape().begin() + start);
  int64_t n = 1;
  for (int64_t i = start; i <= end; ++i) n *= shape()[i];
  sh.push_back(n);
  sh.insert(sh.end(), shape().begin() + end + 1, shape().end());
  return reshape(sh);
}

Tensor Tensor::contiguous() const {
  check_defined("contiguous");
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  check_defined("clone");
  Tensor out = empty(shape());
  detail::copy_into(out, *this);
  Tensor x = *this;
  autograd::record(out, "clone", {x}, [x](const Tensor& d) { autograd::accumulate(x, d); });
  return out;
}

}  // namespace norma
