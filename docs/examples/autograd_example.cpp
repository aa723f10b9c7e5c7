// The worked example of docs/autograd.md: a small graph, its gradients, and the
// rules around them (accumulation, retain_graph, in-place checks, NoGradGuard).
// Checks every number against the hand derivation; exits non-zero on a mismatch.
#include <algorithm>
#include <cmath>
#include <string>

#include <norma/norma.h>

using namespace norma;

namespace {

int failures = 0;

// Compares t with the hand-derived values.
void expect(const Tensor& t, std::vector<float> want, const char* what) {
  std::vector<float> got = t.to_vector();
  bool ok = got.size() == want.size();
  for (size_t i = 0; ok && i < got.size(); ++i) ok = std::fabs(got[i] - want[i]) <= 1e-5f;
  if (!ok) {
    fmt::print("WRONG {}: got {}\n", what, t);
    ++failures;
  }
}

// Prints the graph behind t: one line per node, its inputs indented below it.
// `names` labels the tensors the reader knows; a node reached twice is shown once.
void print_graph(const Tensor& t, const std::vector<std::pair<Tensor, std::string>>& names,
                 std::vector<const Node*>& shown, int depth = 0) {
  std::string label;
  for (const auto& [named, name] : names)
    if (named.is_same(t)) label = name + " ";
  std::string indent(size_t(2 * depth), ' ');
  if (!t.requires_grad()) {
    fmt::print("{}{}{}: constant\n", indent, label, t.shape());
  } else if (t.is_leaf()) {
    fmt::print("{}{}{}: leaf, requires grad\n", indent, label, t.shape());
  } else if (std::find(shown.begin(), shown.end(), t.grad_fn().get()) != shown.end()) {
    fmt::print("{}{}{}: node '{}', shown above\n", indent, label, t.shape(), t.grad_fn()->name);
  } else {
    fmt::print("{}{}{}: node '{}'\n", indent, label, t.shape(), t.grad_fn()->name);
    shown.push_back(t.grad_fn().get());
    for (const Tensor& in : t.grad_fn()->inputs) print_graph(in, names, shown, depth + 1);
  }
}

}  // namespace

int main() {
  // 1. Forward records the graph: y = mean((w * x + b)^2).
  Tensor x = tensor({1, 2, 3});                   // data: no gradient wanted
  Tensor w = tensor({0.5f, -1, 2}).requires_grad_();
  Tensor b = scalar_tensor(1).requires_grad_();  // broadcast over x
  Tensor h = w * x + b;                           // (1.5, -1, 7)
  h.retain_grad();                                // keep dy/dh, h is not a leaf
  Tensor y = (h * h).mean();                      // 52.25 / 3
  fmt::print("y = {}\n", y);
  std::vector<const Node*> shown;
  print_graph(y, {{x, "x"}, {w, "w"}, {b, "b"}, {h, "h"}, {y, "y"}}, shown);

  // 2. Backward: dy/dh = 2h/3, dy/dw = dy/dh * x, dy/db = sum(dy/dh).
  y.backward(Tensor(), /*retain_graph=*/true);
  fmt::print("dy/dh = {}\ndy/dw = {}\ndy/db = {}\n", h.grad(), w.grad(), b.grad());
  expect(y, {52.25f / 3}, "y");
  expect(h.grad(), {1, -2.0f / 3, 14.0f / 3}, "dy/dh");
  expect(w.grad(), {1, -4.0f / 3, 14}, "dy/dw");
  expect(b.grad(), {5}, "dy/db");

  // 3. Gradients accumulate: a second backward (allowed by retain_graph) adds to them.
  y.backward();
  fmt::print("after a second backward, dy/dw = {}\n", w.grad());
  expect(w.grad(), {2, -8.0f / 3, 28}, "dy/dw twice");

  // 4. That backward freed the graph; a third one is an error.
  try {
    y.backward();
    fmt::print("WRONG: a third backward succeeded\n");
    ++failures;
  } catch (const Error& e) {
    fmt::print("error: {}\n", e.what());
  }

  // 5. An optimizer step: in-place updates of parameters, with no graph recorded.
  {
    NoGradGuard no_grad;
    w.sub_(w.grad() * 0.25f);
    w.zero_grad();
    b.zero_grad();
  }
  fmt::print("w after one step = {}, w.grad() defined: {}\n", w, w.grad().defined());
  expect(w, {0, -1.0f / 3, -5}, "w after the step");
  try {  // outside the guard the same update is refused: the graph would not see it
    w.sub_(zeros_like(w));
    fmt::print("WRONG: an in-place update of w with grad mode on succeeded\n");
    ++failures;
  } catch (const Error& e) {
    fmt::print("error: {}\n", e.what());
  }

  // 6. The version counter: mul saved x for its backward; changing x in place
  //    before backward would give wrong gradients, so backward refuses.
  Tensor z = (w * x).sum();
  x.mul_(2.0f);
  try {
    z.backward();
    fmt::print("WRONG: backward through a modified saved tensor succeeded\n");
    ++failures;
  } catch (const Error& e) {
    fmt::print("error: {}\n", e.what());
  }

  fmt::print("{}\n", failures == 0 ? "all values match the hand derivation" : "MISMATCH");
  return failures == 0 ? 0 : 1;
}
