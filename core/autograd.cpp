// The backward engine: record nodes, order them once, run their closures.
#include "autograd.h"

#include <unordered_set>

#include "ops.h"

namespace norma {

namespace {
thread_local bool g_grad_mode = true;
// The node whose backward closure is running, and the gradient it received:
// what anomaly detection names when a gradient is not finite.
thread_local const Node* g_running = nullptr;
thread_local const Tensor* g_running_dout = nullptr;
}
bool grad_mode_enabled() { return g_grad_mode; }
void set_grad_mode(bool enabled) { g_grad_mode = enabled; }

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  // Sum the leading dims g has and `shape` lacks, and the dims `shape` holds as 1.
  const size_t lead = g.dim() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < size_t(g.dim()); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(int64_t(i));
  Tensor s = dims.empty() ? g : g.sum(dims, /*keepdim=*/true);
  return s.reshape(shape);
}

// Dropping the last reference to a deep graph would otherwise recurse once per
// node (node -> input tensor -> its node ...) and overflow the stack. Nodes
// only this one owns are detached from their tensors and released in a loop.
Node::~Node() {
  std::vector<std::shared_ptr<Node>> pending;
  auto take_inputs = [&pending](Node& n) {
    n.backward = nullptr;  // its captures hold the inputs too
    n.saved.clear();
    for (Tensor& t : n.inputs)
      if (t.defined() && t.impl_ptr().use_count() == 1 && t.impl()->grad_fn.use_count() == 1)
        pending.push_back(std::move(t.impl()->grad_fn));
    n.inputs.clear();
  };
  take_inputs(*this);
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    take_inputs(*n);  // n is then destroyed with nothing left to recurse into
  }
}

namespace autograd {

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_mode_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.requires_grad()) return true;
  return false;
}
bool needs_grad(std::initializer_list<Tensor> inputs) { return needs_grad(std::vector<Tensor>(inputs)); }

void record(Tensor& out, std::string name, std::vector<Tensor> inputs, BackwardFn backward,
            std::vector<Tensor> saved) {
  // Inside a backward closure the gradient the closure hands to accumulate is
  // checked instead, so the error names the node, not the op it computes with.
  if (is_anomaly_enabled() && !g_running) detail::check_forward(out, name, inputs);
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = std::move(name);
  node->inputs = std::move(inputs);
  for (Tensor& t : saved)
    if (t.defined()) node->saved.push_back({t, t.storage()->version});  // optional tensors may be undefined
  node->backward = std::move(backward);
  node->output = out.impl_ptr();
  node->output_shape = out.shape();
  out.impl()->grad_fn = node;
  out.impl()->requires_grad = true;
}

namespace {
// A gradient stored on a tensor (a leaf's, or a retained one) is that tensor's
// own contiguous memory: optimizers write it in place and read it through
// data_ptr(). One that someone else may hold (the upstream gradient handed to
// several inputs, the caller's grad_output) or a strided view is copied.
Tensor owned(const Tensor& g) {
  const bool sole = g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1;
  return sole && g.is_contiguous() ? g : g.clone();
}
}  // namespace

void accumulate(const Tensor& input, const Tensor& g) {
  if (!input.requires_grad()) return;
  if (!g.defined() || g.shape() != input.shape())
    fail("autograd::accumulate: gradient of shape {} does not match input of shape {}",
         g.defined() ? shape_str(g.shape()) : "undefined", input.shape());
  if (is_anomaly_enabled()) detail::check_backward(g, input, g_running, g_running_dout ? *g_running_dout : g);
  if (input.grad_fn()) {  // a non-leaf: summed on its node for the backward pass
    Tensor& ng = input.grad_fn()->grad;
    ng = ng.defined() ? add(ng, g) : g;
    return;
  }
  Tensor& grad = input.impl()->grad;  // out of place, so an alias of the old gradient stays intact
  grad = grad.defined() ? add(grad, g) : owned(g);
}

namespace {

// Nodes reachable from `root`, each after every node that consumes its output
// (reverse post-order of an iterative DFS, so deep graphs do not overflow the stack).
std::vector<Node*> topological_order(Node* root) {
  std::vector<Node*> post;
  std::unordered_set<Node*> seen{root};
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      const Tensor& in = node->inputs[next++];
      Node* child = in.defined() ? in.grad_fn().get() : nullptr;
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      post.push_back(node);
      stack.pop_back();
    }
  }
  return {post.rbegin(), post.rend()};
}

void check_saved(const Node& node) {
  for (const Node::Saved& s : node.saved)
    if (s.tensor.storage()->version != s.version)
      fail("backward: a tensor of shape {} saved by '{}' for its backward was modified in place "
           "(version {}, saved at version {}); clone it before modifying it",
           s.tensor.shape(), node.name, s.tensor.storage()->version, s.version);
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  if (!root.requires_grad())
    fail("backward: tensor of shape {} does not require grad and has no grad_fn", root.shape());
  Tensor seed = grad;
  if (!seed.defined()) {
    if (root.numel() != 1)
      fail("backward: grad can be implicitly created only for one-element outputs, got shape {}; "
           "pass a gradient of that shape",
           root.shape());
    seed = ones(root.shape());
  } else if (seed.shape() != root.shape()) {
    fail("backward: gradient of shape {} does not match the output's shape {}", seed.shape(), root.shape());
  }
  NoGradGuard no_grad;
  if (is_anomaly_enabled()) detail::check_backward(seed, root, nullptr, seed);
  if (root.is_leaf()) {
    accumulate(root, seed);
    return;
  }
  std::vector<Node*> order = topological_order(root.grad_fn().get());
  for (Node* n : order)
    if (n->freed)
      fail("backward: trying to backward through the graph a second time (node '{}' was freed by "
           "the first backward); call backward with retain_graph=true the first time",
           n->name);
  for (Node* n : order) check_saved(*n);
  root.grad_fn()->grad = seed;
  for (Node* n : order) {
    Tensor g = std::move(n->grad);
    n->grad = Tensor();
    if (g.defined()) {
      NORMA_CHECK(g.shape() == n->output_shape);
      struct Running {  // reset also when the closure throws
        Running(const Node* n, const Tensor* g) { g_running = n, g_running_dout = g; }
        ~Running() { g_running = nullptr, g_running_dout = nullptr; }
      } running(n, &g);
      n->backward(g);
      if (auto out = n->output.lock(); out && out->retains_grad)
        out->grad = out->grad.defined() ? add(out->grad, g) : owned(g);
    }
    if (!retain_graph) {
      n->backward = nullptr;  // releases the closure's saved tensors
      n->saved.clear();
      n->freed = true;
    }
  }
}

}  // namespace autograd
}  // namespace norma
