// Define-by-run reverse-mode autograd.
//
// An op whose inputs require grad records one Node on its output: the inputs
// (the graph's edges), the tensors backward reads (with their version, to
// catch in-place writes), and one backward closure. During backward the
// closure receives the gradient of the node's output and accumulates (+=)
// into the inputs that require grad through autograd::accumulate; it does
// nothing for the others. Tensor::backward walks a topological order built
// once by DFS, then frees the graph unless retain_graph is set.
//
// A custom op is a forward computed on raw data plus a call to record():
//
//   Tensor square(const Tensor& x) {
//     Tensor y = empty(x.shape());            // forward: y = x^2
//     ... fill y from x.contiguous().data_ptr() ...
//     autograd::record(y, "square", {x}, [x](const Tensor& dy) {
//       autograd::accumulate(x, dy * x * 2.0f);  // dx += dy * 2x
//     }, /*saved=*/{x});
//     return y;
//   }
//
// Closures run with grad mode off, so they may use any Norma op.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "anomaly_mode.h"
#include "tensor.h"

namespace norma {

using BackwardFn = std::function<void(const Tensor& dout)>;

struct Node {
  std::string name;                 // the op, for error messages ("mul", "conv2d")
  std::vector<Tensor> inputs;       // edges: backward continues into their grad_fn
  struct Saved {
    Tensor tensor;
    uint64_t version;               // storage version when recorded
  };
  std::vector<Saved> saved;         // tensors the closure reads
  BackwardFn backward;              // accumulates into inputs
  Tensor grad;                      // gradient of this node's output, summed during a backward pass
  std::weak_ptr<TensorImpl> output; // only to serve retain_grad()
  Shape output_shape;
  bool freed = false;               // set by a backward without retain_graph
  ~Node();                          // frees a chain of nodes iteratively (deep graphs)
};

// Whether ops record nodes. Thread-local, on by default.
bool grad_mode_enabled();
void set_grad_mode(bool enabled);

// RAII: no graph is recorded while one is alive (like torch::NoGradGuard).
struct NoGradGuard {
  NoGradGuard() : prev_(grad_mode_enabled()) { set_grad_mode(false); }
  ~NoGradGuard() { set_grad_mode(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

namespace autograd {

// True when grad mode is on and any of `inputs` requires grad.
bool needs_grad(std::initializer_list<Tensor> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Makes `out` a non-leaf that requires grad, with a node holding `inputs`,
// `saved` and `backward`, when needs_grad(inputs); otherwise does nothing.
// With anomaly detection on (anomaly_mode.h) `out` is first checked for NaN/Inf.
void record(Tensor& out, std::string name, std::vector<Tensor> inputs, BackwardFn backward,
            std::vector<Tensor> saved = {});

// Inside a backward closure: adds `g` to the gradient flowing into `input`.
// No-op when `input` does not require grad. `g` must have input's shape.
// With anomaly detection on `g` is first checked for NaN/Inf.
void accumulate(const Tensor& input, const Tensor& g);

// Runs backward from `root` seeded with `grad` (ones for a one-element root).
void backward(const Tensor& root, const Tensor& grad, bool retain_graph);

}  // namespace autograd

// Sums a broadcast gradient back down to `shape` (the inverse of broadcast_to).
Tensor sum_to(const Tensor& g, const Shape& shape);

}  // namespace norma
