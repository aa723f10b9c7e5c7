// Autograd: the graph, gradient accumulation, grad mode, retain_graph and
// retain_grad, the version counter, and a custom op built on autograd::record.
// Gradients are checked against derivatives worked out by hand.
#include "test_util.h"

#include <pthread.h>

using namespace norma;

TEST_CASE("autograd: leaves and non-leaves") {
  Tensor w = tensor({1, 2, 3}).requires_grad_();
  Tensor x = tensor({4, 5, 6});
  CHECK(w.is_leaf());
  CHECK(w.requires_grad());
  CHECK(w.grad_fn() == nullptr);
  CHECK_FALSE(x.requires_grad());

  Tensor y = w * x;
  CHECK_FALSE(y.is_leaf());
  CHECK(y.requires_grad());
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(y.grad_fn()->name == "mul");
  CHECK(y.grad_fn()->inputs.size() == 2);

  // Ops on tensors that do not require grad record nothing.
  Tensor z = x * 2.0f + x.exp();
  CHECK(z.is_leaf());
  CHECK_FALSE(z.requires_grad());

  Tensor loss = y.sum();
  CHECK(loss.grad_fn()->name == "sum");
  loss.backward();
  NORMA_CHECK_CLOSE(w.grad(), x, 0, 0);  // d sum(w*x) / dw = x
  CHECK_FALSE(x.grad().defined());      // no grad for a tensor that does not require it
  CHECK_FALSE(y.grad().defined());      // non-leaf gradients are not kept by default
  CHECK(w.grad().shape() == w.shape());
}

TEST_CASE("autograd: gradients accumulate across backward calls until zero_grad") {
  Tensor w = tensor({1, -2, 3}).requires_grad_();
  (w * w).sum().backward();  // 2w
  NORMA_CHECK_CLOSE(w.grad(), tensor({2, -4, 6}), 0, 0);
  (w * w).sum().backward();  // a second graph: += 2w
  NORMA_CHECK_CLOSE(w.grad(), tensor({4, -8, 12}), 0, 0);
  (w * 3.0f).sum().backward();  // += 3
  NORMA_CHECK_CLOSE(w.grad(), tensor({7, -5, 15}), 0, 0);
  w.zero_grad();
  CHECK_FALSE(w.grad().defined());
  (w * 3.0f).sum().backward();
  NORMA_CHECK_CLOSE(w.grad(), tensor({3, 3, 3}), 0, 0);
  w.set_grad(tensor({1, 1, 1}));
  (w * 3.0f).sum().backward();
  NORMA_CHECK_CLOSE(w.grad(), tensor({4, 4, 4}), 0, 0);
}

TEST_CASE("autograd: a tensor used twice gets both contributions") {
  Tensor x = tensor({1, -2, 0.5f}).requires_grad_();
  (x * x).sum().backward();  // 2x
  NORMA_CHECK_CLOSE(x.grad(), tensor({2, -4, 1}), 0, 0);
  x.zero_grad();
  (x + x).sum().backward();  // 2
  NORMA_CHECK_CLOSE(x.grad(), tensor({2, 2, 2}), 0, 0);
  x.zero_grad();
  // y = sum(x^3 / x) = sum(x^2): the quotient rule through div with x on both sides.
  (x.pow(3) / x).sum().backward();
  NORMA_CHECK_CLOSE(x.grad(), tensor({2, -4, 1}), 1e-6, 1e-6);

  // A square matrix times itself: d sum(X X) / dX = 1 X^T + X^T 1 (1 = ones).
  // X = [[1, 2], [3, 4]]: row sums of X [3, 7], column sums [4, 6];
  // (1 X^T)[i][j] = row sum j, (X^T 1)[i][j] = column sum i -> [[3+4, 7+4], [3+6, 7+6]].
  Tensor m = from_vector({1, 2, 3, 4}, {2, 2}).requires_grad_();
  matmul(m, m).sum().backward();
  NORMA_CHECK_CLOSE(m.grad(), tensor({7, 11, 9, 13}), 0, 0);
}

TEST_CASE("autograd: shared subexpressions are differentiated once per use") {
  Tensor x = tensor({1, -2}).requires_grad_();
  Tensor h = x * 3.0f;
  Tensor y = (h * h + h).sum();  // dy/dx = (2h + 1) * 3; h = [3, -6] -> [21, -33]
  y.backward();
  NORMA_CHECK_CLOSE(x.grad(), tensor({21, -33}), 0, 0);

  // A diamond: a = exp(x); y = sum((2a) * (3a)) = sum(6 a^2); dy/dx = 12 a^2 = 12 e^(2x).
  Tensor u = tensor({0, 0.5f}).requires_grad_();
  Tensor a = u.exp();
  ((a * 2.0f) * (a * 3.0f)).sum().backward();
  NORMA_CHECK_CLOSE(u.grad(), tensor({12, 12 * 2.7182818f}), 1e-6, 1e-6);
}

TEST_CASE("autograd: gradients of broadcast inputs are summed back to their shapes") {
  Tensor a = zeros({2, 3}).requires_grad_();
  Tensor b = tensor({1, 2, 3}).requires_grad_();
  (a + b).sum().backward();
  CHECK(b.grad().shape() == Shape{3});
  NORMA_CHECK_CLOSE(b.grad(), tensor({2, 2, 2}), 0, 0);
  NORMA_CHECK_CLOSE(a.grad(), ones({2, 3}), 0, 0);

  // (2, 1) * (1, 3): du_i = sum_j v_j = 12, dv_j = sum_i u_i = 3.
  Tensor u = from_vector({1, 2}, {2, 1}).requires_grad_();
  Tensor v = from_vector({3, 4, 5}, {1, 3}).requires_grad_();
  (u * v).sum().backward();
  CHECK(u.grad().shape() == Shape{2, 1});
  CHECK(v.grad().shape() == Shape{1, 3});
  NORMA_CHECK_CLOSE(u.grad(), tensor({12, 12}), 0, 0);
  NORMA_CHECK_CLOSE(v.grad(), tensor({3, 3, 3}), 0, 0);

  // A 0-d scale: d sum(s x) / ds = sum(x); sub gives the negative.
  Tensor s = scalar_tensor(2).requires_grad_();
  Tensor x = tensor({1, 2, 3, 4});
  (s * x - s).sum().backward();  // sum(x) - 4 = 6
  CHECK(s.grad().dim() == 0);
  CHECK(s.grad().item() == 6);

  // With a non-uniform upstream gradient, each broadcast row gets its own weight.
  Tensor c = tensor({1, 1}).requires_grad_();
  (zeros({3, 2}) + c).backward(from_vector({1, 2, 3, 4, 5, 6}, {3, 2}));
  NORMA_CHECK_CLOSE(c.grad(), tensor({1 + 3 + 5, 2 + 4 + 6}), 0, 0);
}

TEST_CASE("autograd: backward with an explicit gradient for a non-scalar output") {
  Tensor x = tensor({1, 2, 3}).requires_grad_();
  Tensor y = x * x;
  y.backward(tensor({1, 10, 100}));  // dx = g * 2x
  NORMA_CHECK_CLOSE(x.grad(), tensor({2, 40, 600}), 0, 0);

  // A leaf root: the gradient is the one passed.
  Tensor w = from_vector({1, 2, 3, 4}, {2, 2}).requires_grad_();
  w.backward(from_vector({5, 6, 7, 8}, {2, 2}));
  NORMA_CHECK_CLOSE(w.grad(), tensor({5, 6, 7, 8}), 0, 0);
  // A one-element non-0-d output needs no gradient.
  Tensor p = tensor({3}).requires_grad_();
  (p * p).backward();
  NORMA_CHECK_CLOSE(p.grad(), tensor({6}), 0, 0);
}

TEST_CASE("autograd: retain_graph allows a second backward, without it the graph is freed") {
  Tensor x = tensor({1, 2}).requires_grad_();
  Tensor y = (x * x).sum();
  y.backward(Tensor(), /*retain_graph=*/true);
  NORMA_CHECK_CLOSE(x.grad(), tensor({2, 4}), 0, 0);
  y.backward();  // graph kept by the first call; this one frees it
  NORMA_CHECK_CLOSE(x.grad(), tensor({4, 8}), 0, 0);
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("backward: trying to backward through the graph a second time") &&
                                      Catch::Contains("'sum'"));
  NORMA_CHECK_CLOSE(x.grad(), tensor({4, 8}), 0, 0);  // unchanged by the failed call

  // Freed interior nodes are caught too, from a new root sharing them.
  Tensor h = x * 2.0f;
  h.sum().backward();
  CHECK_THROWS_WITH((h + 1.0f).sum().backward(), Catch::Contains("second time") && Catch::Contains("'mul'"));
}

TEST_CASE("autograd: detach cuts the graph and shares storage") {
  Tensor w = tensor({1, 2}).requires_grad_();
  Tensor x = tensor({3, 4}).requires_grad_();
  Tensor y = w * 2.0f;
  Tensor d = y.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  CHECK(d.storage() == y.storage());
  (d * x).sum().backward();
  NORMA_CHECK_CLOSE(x.grad(), tensor({2, 4}), 0, 0);
  CHECK_FALSE(w.grad().defined());  // nothing flowed through the detached path
}

TEST_CASE("autograd: NoGradGuard stops recording and restores the previous mode") {
  Tensor w = tensor({1, 2}).requires_grad_();
  CHECK(grad_mode_enabled());
  {
    NoGradGuard g;
    CHECK_FALSE(grad_mode_enabled());
    Tensor y = w * 2.0f;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
    NORMA_CHECK_CLOSE(y, tensor({2, 4}), 0, 0);
    {
      NoGradGuard inner;
      CHECK_FALSE(grad_mode_enabled());
    }
    CHECK_FALSE(grad_mode_enabled());  // the inner guard restored "off", not "on"
  }
  CHECK(grad_mode_enabled());
  CHECK((w * 2.0f).requires_grad());
  set_grad_mode(false);
  CHECK_FALSE(autograd::needs_grad({w}));
  set_grad_mode(true);
  CHECK(autograd::needs_grad({w}));
  CHECK_FALSE(autograd::needs_grad({tensor({1})}));
}

TEST_CASE("autograd: retain_grad keeps a non-leaf's gradient") {
  Tensor x = tensor({1, -3}).requires_grad_();
  Tensor h = x * 2.0f;  // [2, -6]
  Tensor k = x * 5.0f;  // not retained
  h.retain_grad();
  ((h * h).sum() + k.sum()).backward();
  NORMA_CHECK_CLOSE(h.grad(), tensor({4, -12}), 0, 0);  // 2h
  NORMA_CHECK_CLOSE(x.grad(), tensor({8 + 5, -24 + 5}), 0, 0);
  CHECK_FALSE(k.grad().defined());

  // A retained output that is also the root gets the seed.
  Tensor r = x * 1.0f;
  r.retain_grad();
  r.backward(tensor({7, 8}));
  NORMA_CHECK_CLOSE(r.grad(), tensor({7, 8}), 0, 0);
}

TEST_CASE("autograd: each stored gradient is its own contiguous tensor") {
  // add hands the same upstream gradient to both inputs; changing one stored
  // gradient in place (as an optimizer or gradient clipping does) must not change the other.
  Tensor a = tensor({1, 2}).requires_grad_();
  Tensor b = tensor({3, 4}).requires_grad_();
  (a + b).sum().backward();
  CHECK(a.grad().storage() != b.grad().storage());
  a.mutable_grad().mul_(10.0f);
  NORMA_CHECK_CLOSE(a.grad(), tensor({10, 10}), 0, 0);
  NORMA_CHECK_CLOSE(b.grad(), tensor({1, 1}), 0, 0);

  // The gradient passed to backward stays the caller's.
  Tensor g = tensor({1, 2});
  Tensor c = tensor({0, 0}).requires_grad_();
  (c + 1.0f).backward(g);
  CHECK(c.grad().storage() != g.storage());
  g.fill_(100);
  NORMA_CHECK_CLOSE(c.grad(), tensor({1, 2}), 0, 0);

  // A parameter used through a transposed view (as Linear uses its weight)
  // gets a row-major gradient, readable through data_ptr().
  Tensor w = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  Tensor x = from_vector({1, 10}, {1, 2});
  matmul(x, w).sum().backward();  // dW[i][j] = x[i]: [[1, 1, 1], [10, 10, 10]]
  Tensor v = from_vector({1, 10, 100}, {1, 3});
  Tensor wt = from_vector({1, 2, 3, 4, 5, 6}, {3, 2}).requires_grad_();
  matmul(v, wt).t().sum().backward();  // dWt[i][j] = v[i]
  CHECK(wt.grad().is_contiguous());
  const float* p = wt.grad().data_ptr();
  CHECK(std::vector<float>(p, p + 6) == std::vector<float>{1, 1, 10, 10, 100, 100});
  Tensor lin = from_vector({1, 2, 3, 4, 5, 6}, {3, 2}).requires_grad_();  // (out, in)
  matmul(from_vector({1, 10}, {1, 2}), lin.t()).backward(from_vector({1, 2, 3}, {1, 3}));
  CHECK(lin.grad().is_contiguous());  // dW[o][i] = g[o] x[i]
  const float* q = lin.grad().data_ptr();
  CHECK(std::vector<float>(q, q + 6) == std::vector<float>{1, 10, 2, 20, 3, 30});
}

TEST_CASE("autograd: a saved tensor modified in place makes backward throw") {
  Tensor w = tensor({1, 2}).requires_grad_();
  Tensor c = tensor({3, 4});
  Tensor y = (w * c).sum();  // mul saves c for dw = dy * c
  c.add_(1.0f);
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("saved by 'mul'") && Catch::Contains("modified in place") &&
                                      Catch::Contains("(2,)") && Catch::Contains("version 1, saved at version 0"));
  CHECK_FALSE(w.grad().defined());

  // Through a view: the version lives in the shared storage.
  Tensor base = tensor({3, 4, 5});
  Tensor y2 = (w * base.narrow(0, 0, 2)).sum();
  base.select(0, 2).fill_(0);  // touches an element the product never read, but the storage changed
  CHECK_THROWS_WITH(y2.backward(), Catch::Contains("saved by 'mul'"));

  // A saved output (exp saves its result) written under NoGradGuard.
  Tensor e = w.exp();
  {
    NoGradGuard g;
    e.mul_(2.0f);
  }
  CHECK_THROWS_WITH(e.sum().backward(), Catch::Contains("saved by 'exp'"));

  // Ops that save nothing (add) do not care; cloning before the write keeps mul's copy intact.
  Tensor d = tensor({3, 4});
  Tensor y3 = (w + d).sum();
  d.add_(1.0f);
  y3.backward();
  NORMA_CHECK_CLOSE(w.grad(), tensor({1, 1}), 0, 0);
  Tensor f = tensor({3, 4});
  Tensor y4 = (w * f.clone()).sum();
  f.add_(1.0f);
  y4.backward();
  NORMA_CHECK_CLOSE(w.grad(), tensor({4, 5}), 0, 0);
}

TEST_CASE("autograd: every op whose backward reads a tensor guards it with the version counter") {
  using Op = Tensor (*)(const Tensor&, const Tensor&);
  // (op, name): the op's backward reads x; x is written in place (under NoGradGuard) after the forward.
  const std::pair<Op, const char*> ops[] = {
      {[](const Tensor& x, const Tensor& w) { return mul(x, w); }, "mul"},
      {[](const Tensor& x, const Tensor& w) { return div(w, x); }, "div"},
      {[](const Tensor& x, const Tensor& w) { return maximum(x, w); }, "maximum"},
      {[](const Tensor& x, const Tensor& w) { return minimum(x, w); }, "minimum"},
      {[](const Tensor& x, const Tensor& w) { return log(x) * w; }, "log"},
      {[](const Tensor& x, const Tensor& w) { return abs(x) * w; }, "abs"},
      {[](const Tensor& x, const Tensor& w) { return pow(x, 3) * w; }, "pow"},
      {[](const Tensor& x, const Tensor& w) { return var(x) * w; }, "var"},
      {[](const Tensor& x, const Tensor& w) { return matmul(x.unsqueeze(0), w.unsqueeze(1)); }, "matmul"},
      {[](const Tensor& x, const Tensor& w) { return where(x, w, w * 2.0f); }, "where"},
  };
  for (const auto& [op, name] : ops) {
    CAPTURE(name);
    Tensor x = tensor({1, 2, 3}).requires_grad_();
    Tensor w = tensor({0.5f, 3, 1}).requires_grad_();
    Tensor y = op(x, w).sum();
    {
      NoGradGuard g;
      x.mul_(2.0f);
    }
    CHECK_THROWS_WITH(y.backward(), Catch::Contains(fmt::format("saved by '{}'", name)));
  }
  // Ops that save their output: written under NoGradGuard.
  using Unary = Tensor (*)(const Tensor&);
  const std::pair<Unary, const char*> unary[] = {
      {[](const Tensor& x) { return exp(x); }, "exp"},
      {[](const Tensor& x) { return sqrt(x); }, "sqrt"},
      {[](const Tensor& x) { return rsqrt(x); }, "rsqrt"},
      {[](const Tensor& x) { return relu(x); }, "relu"},
  };
  for (const auto& [op, name] : unary) {
    CAPTURE(name);
    Tensor w = tensor({0.5f, 3, 1}).requires_grad_();
    Tensor y = op(w);
    {
      NoGradGuard g;
      y.add_(1.0f);
    }
    CHECK_THROWS_WITH(y.sum().backward(), Catch::Contains(fmt::format("saved by '{}'", name)));
  }
}

TEST_CASE("autograd: in-place ops on tensors that require grad need NoGradGuard") {
  Tensor w = tensor({1, 2}).requires_grad_();
  CHECK_THROWS_WITH(w.add_(1.0f), Catch::Contains("add_: in-place operation on a tensor of shape (2,) that requires grad"));
  CHECK_THROWS_WITH(w.mul_(2.0f), Catch::Contains("mul_: in-place"));
  CHECK_THROWS_WITH(w.sub_(tensor({1, 1})), Catch::Contains("sub_: in-place"));
  CHECK_THROWS_WITH(w.div_(2.0f), Catch::Contains("div_: in-place"));
  CHECK_THROWS_WITH(w.zero_(), Catch::Contains("fill_: in-place"));
  CHECK_THROWS_WITH(w.copy_(tensor({0, 0})), Catch::Contains("copy_: in-place"));
  Tensor h = w * 2.0f;  // a non-leaf requires grad too
  CHECK_THROWS_WITH(h.fill_(0), Catch::Contains("fill_: in-place"));
  NORMA_CHECK_CLOSE(w, tensor({1, 2}), 0, 0);  // nothing was written

  {
    NoGradGuard g;
    w.add_(1.0f);
    w.mul_(tensor({2, 3}));
    w.sub_(tensor({1, 1}));
  }
  NORMA_CHECK_CLOSE(w, tensor({3, 8}), 0, 0);  // ((1+1)*2-1, (2+1)*3-1)
  CHECK(w.requires_grad());
  CHECK(w.is_leaf());
  // A detached alias can be written with grad mode on.
  w.detach().fill_(1);
  NORMA_CHECK_CLOSE(w, tensor({1, 1}), 0, 0);
}

namespace {

// The custom op of autograd.h's comment: y = x^2 on raw data, dx += dy * 2x.
Tensor square(const Tensor& x) {
  Tensor y = empty(x.shape());
  Tensor xc = x.contiguous();
  for (int64_t i = 0; i < x.numel(); ++i) y.data_ptr()[i] = xc.data_ptr()[i] * xc.data_ptr()[i];
  autograd::record(y, "square", {x}, [x](const Tensor& dy) {
    autograd::accumulate(x, dy * x * 2.0f);
  }, /*saved=*/{x});
  return y;
}

}  // namespace

TEST_CASE("autograd: a custom op defined with autograd::record") {
  Tensor x = tensor({1, -2, 3}).requires_grad_();
  Tensor y = square(x);
  NORMA_CHECK_CLOSE(y, tensor({1, 4, 9}), 0, 0);
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(y.grad_fn()->name == "square");
  CHECK(y.grad_fn()->saved.size() == 1);
  y.backward(tensor({1, 2, 3}));  // dx = g * 2x
  NORMA_CHECK_CLOSE(x.grad(), tensor({2, -8, 18}), 0, 0);

  // Composes with built-in ops, on a transposed (non-contiguous) input.
  Tensor m = from_vector({1, 2, 3, 4}, {2, 2}).requires_grad_();
  (square(m.t()) * 0.5f).sum().backward();  // d sum(m^2 / 2) = m
  NORMA_CHECK_CLOSE(m.grad(), tensor({1, 2, 3, 4}), 0, 0);

  GradcheckResult r = gradcheck([](const std::vector<Tensor>& in) { return square(in[0]); },
                                {tensor({0.5f, -1.5f, 2}).requires_grad_()});
  INFO(r.message);
  CHECK(r.ok);

  // record does nothing when no input requires grad or grad mode is off.
  CHECK_FALSE(square(tensor({1, 2})).requires_grad());
  {
    NoGradGuard g;
    CHECK(square(x).grad_fn() == nullptr);
  }
  // The saved input is version-checked like a built-in's.
  Tensor z = tensor({1, 2}).requires_grad_();
  Tensor q = square(z);
  {
    NoGradGuard g;
    z.add_(1.0f);
  }
  CHECK_THROWS_WITH(q.sum().backward(), Catch::Contains("saved by 'square'"));
}

namespace {
// Runs f on a thread with a 256 KiB stack, where recursing once per graph node
// overflows within a few thousand nodes.
void run_on_small_stack(void (*f)()) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t th;
  REQUIRE(pthread_create(&th, &attr, [](void* arg) -> void* { reinterpret_cast<void (*)()>(arg)(); return nullptr; },
                         reinterpret_cast<void*>(f)) == 0);
  pthread_join(th, nullptr);
  pthread_attr_destroy(&attr);
}
float deep_grad = 0, deep_value = 0;
}  // namespace

TEST_CASE("autograd: deep graphs are walked and freed without recursion") {
  run_on_small_stack([] {
    Tensor x = tensor({1}).requires_grad_();
    Tensor y = x;
    for (int i = 0; i < 20000; ++i) y = y * 1.0f + 1.0f;
    y.backward();  // the topological order is built without recursion ...
    deep_grad = x.grad().item();
    deep_value = y.item();
    Tensor z = x;
    for (int i = 0; i < 20000; ++i) z = z + 1.0f;
    // ... and both graphs (one freed by backward, one never run) are released without it.
  });
  CHECK(deep_grad == 1);
  CHECK(deep_value == 20001);
}
