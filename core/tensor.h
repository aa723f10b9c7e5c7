// Tensor: a float32 N-d view (shape, strides, offset) into shared,
// reference-counted storage, plus what autograd needs (requires_grad, grad,
// grad_fn). Views share storage and its version counter; ops live in ops.h.
//
// A Tensor is a handle: copying it copies a reference, like torch::Tensor.
#pragma once
#include <fmt/format.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "error.h"

namespace norma {

// Sizes of a tensor, outermost first. A vector with a fmt formatter: "(8, 3, 32, 32)".
struct Shape : std::vector<int64_t> {
  using std::vector<int64_t>::vector;
  Shape() = default;
  Shape(const std::vector<int64_t>& v) : std::vector<int64_t>(v) {}
  // The product of the sizes (0 when any is 0). Fails, naming `op`, when it
  // does not fit in int64 (sizes come from users and from files).
  int64_t numel(const char* op = "numel") const;
};

// Contiguous float32 memory from the caching allocator. `version` counts
// in-place writes so autograd can detect a saved tensor modified before backward.
struct Storage {
  explicit Storage(int64_t numel);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  float* data;
  int64_t numel;
  uint64_t version = 0;
};

struct Node;
struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (like torch::Tensor())
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  // --- metadata
  const Shape& shape() const;
  const Shape& sizes() const { return shape(); }
  const Shape& strides() const;
  int64_t size(int64_t dim) const;    // negative dims count from the end
  int64_t stride(int64_t dim) const;
  int64_t dim() const;
  int64_t numel() const;
  int64_t storage_offset() const;
  bool is_contiguous() const;
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  // Pointer to element 0 of this view (honours the offset). Writes through it bypass the version counter.
  float* data_ptr() const;
  const std::shared_ptr<Storage>& storage() const;
  // Value of a one-element tensor.
  float item() const;
  // Element at a multi-index (slow; for tests and printing).
  float at(std::initializer_list<int64_t> index) const;
  std::vector<float> to_vector() const;  // values in row-major order

  // --- views (share storage; see ops.cpp)
  Tensor view(const Shape& shape) const;     // one dim may be -1; needs compatible strides
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor t() const;  // 2-D transpose
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& shape) const;  // -1 keeps a size
  Tensor broadcast_to(const Shape& shape) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;

  // --- reductions (dims may be negative; an empty list reduces everything)
  Tensor sum(const std::vector<int64_t>& dims = {}, bool keepdim = false) const;
  Tensor mean(const std::vector<int64_t>& dims = {}, bool keepdim = false) const;
  Tensor var(const std::vector<int64_t>& dims = {}, bool unbiased = true, bool keepdim = false) const;
  Tensor max(const std::vector<int64_t>& dims = {}, bool keepdim = false) const;
  Tensor argmax() const;  // index into the flattened tensor
  Tensor argmax(int64_t dim, bool keepdim = false) const;

  // --- elementwise shorthands
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor abs() const;
  Tensor relu() const;
  Tensor pow(float exponent) const;
  Tensor matmul(const Tensor& other) const;

  // --- in place (bump the version counter; refused on tensors that require
  // grad while grad mode is on, since Norma does not record in-place ops)
  Tensor& add_(const Tensor& other, float alpha = 1.0f);
  Tensor& add_(float value);
  Tensor& sub_(const Tensor& other);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(float value);
  Tensor& div_(float value);
  Tensor& zero_();
  Tensor& fill_(float value);
  Tensor& copy_(const Tensor& src);  // src broadcast to this tensor's shape
  // A Tensor is a handle, so these also write through a const one (as
  // libtorch's do): `for (const Tensor& p : model.parameters()) p.zero_();`.
  const Tensor& zero_() const { return const_cast<Tensor&>(*this).zero_(); }
  const Tensor& fill_(float value) const { return const_cast<Tensor&>(*this).fill_(value); }
  const Tensor& copy_(const Tensor& src) const { return const_cast<Tensor&>(*this).copy_(src); }

  // --- autograd
  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const;
  // Accumulated gradient (undefined until a backward reaches this tensor):
  // contiguous and this tensor's own, so it may be written in place.
  Tensor grad() const;
  Tensor& mutable_grad();  // the stored gradient itself, e.g. for optimizers
  void set_grad(const Tensor& g);
  void zero_grad();  // drops the gradient (like PyTorch's set_to_none)
  void retain_grad();  // keep the gradient of a non-leaf tensor after backward
  const std::shared_ptr<Node>& grad_fn() const;
  // Same storage, cut from the graph.
  Tensor detach() const;
  void backward(const Tensor& grad_output = Tensor(), bool retain_graph = false) const;

 private:
  void check_defined(const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

// Named tensors in order: a state_dict, a checkpoint's contents.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;
  bool requires_grad = false;
  bool retains_grad = false;
  Tensor grad;                    // same shape as the tensor
  std::shared_ptr<Node> grad_fn;  // null for leaves
};

// ---- creation (every random value comes from the generator seeded by manual_seed)
Tensor empty(const Shape& shape);
Tensor zeros(const Shape& shape);
Tensor ones(const Shape& shape);
Tensor full(const Shape& shape, float value);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor empty_like(const Tensor& t);
Tensor scalar_tensor(float value);  // 0-d
Tensor arange(float end);
Tensor arange(float start, float end, float step = 1.0f);
Tensor from_vector(const std::vector<float>& values, const Shape& shape);
Tensor tensor(std::initializer_list<float> values);  // 1-d
Tensor tensor(const std::vector<float>& values);     // 1-d
Tensor rand(const Shape& shape);                     // uniform [0, 1)
Tensor randn(const Shape& shape);                    // standard normal
Tensor uniform(const Shape& shape, float low, float high);
Tensor normal(const Shape& shape, float mean, float std);

// ---- random generator
void manual_seed(uint64_t seed);
// The generator's full state, to save in checkpoints and restore exactly.
struct GeneratorState {
  uint64_t seed;
  uint64_t draws;  // 32-bit words drawn since seeding
};
GeneratorState get_rng_state();
void set_rng_state(const GeneratorState& s);
uint32_t random_u32();
float random_uniform();  // [0, 1)
float random_normal();   // N(0, 1)

// ---- shapes
std::string shape_str(const Shape& s);  // "(8, 3)"
Shape contiguous_strides(const Shape& shape);
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Normalises a possibly negative dim for a tensor of rank `rank`; names `op` on error.
int64_t wrap_dim(int64_t dim, int64_t rank, const char* op);

}  // namespace norma

template <>
struct fmt::formatter<norma::Shape> : fmt::formatter<std::string_view> {
  auto format(const norma::Shape& s, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(norma::shape_str(s), ctx);
  }
};

namespace norma {
// "tensor([[1, 2], [3, 4]], shape=(2, 2))"; large dims are elided in the middle.
std::string to_string(const Tensor& t);
}

template <>
struct fmt::formatter<norma::Tensor> : fmt::formatter<std::string_view> {
  auto format(const norma::Tensor& t, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(norma::to_string(t), ctx);
  }
};
