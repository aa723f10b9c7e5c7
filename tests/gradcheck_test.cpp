// Finite differences against every differentiable op's backward (norma::gradcheck),
// with broadcasting, non-contiguous inputs, inputs kept away from kinks and
// domain edges, and a deliberately wrong backward that gradcheck must catch.
#include "test_util.h"

#include <algorithm>

using namespace norma;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs gradcheck and reports its message (worst element, values) on failure.
#define CHECK_GRAD(fn, ...)                              \
  do {                                                   \
    GradcheckResult r_ = gradcheck((fn), __VA_ARGS__);   \
    INFO(r_.message);                                    \
    CHECK(r_.ok);                                        \
  } while (0)

Tensor leaf(Tensor t) { return t.requires_grad_(); }

// Values with |v| in [0.3, 1.3): far from the kinks of relu and abs at 0
// compared with gradcheck's step of 0.01.
Tensor away_from_zero(const Shape& s) {
  Tensor t = uniform(s, 0.3f, 1.3f);
  float* p = t.data_ptr();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (random_u32() & 1) p[i] = -p[i];
  return t;
}

// Distinct values 0.1 apart in random order: max and argmax have no ties,
// and a step of 0.01 never changes which element wins.
Tensor distinct(const Shape& s) {
  std::vector<float> v(size_t(s.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.1f * float(i) - 0.05f * float(v.size());
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[random_u32() % i]);
  return from_vector(v, s);
}

}  // namespace

TEST_CASE("gradcheck: binary ops, same shapes and broadcast") {
  manual_seed(10);
  const std::pair<Shape, Shape> shapes[] = {
      {{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{2, 1}, {1, 3}}, {{2, 3, 4}, {3, 1}}, {{}, {2, 2}}, {{4}, {}}};
  for (const auto& [sa, sb] : shapes) {
    CAPTURE(shape_str(sa), shape_str(sb));
    Tensor a = leaf(randn(sa)), b = leaf(randn(sb));
    Tensor denom = leaf(away_from_zero(sb));
    CHECK_GRAD([](auto& in) { return add(in[0], in[1]); }, {a, b});
    CHECK_GRAD([](auto& in) { return sub(in[0], in[1]); }, {a, b});
    CHECK_GRAD([](auto& in) { return mul(in[0], in[1]); }, {a, b});
    CHECK_GRAD([](auto& in) { return div(in[0], in[1]); }, {a, denom});
    // maximum/minimum: a shifted copy of a is 0.3 or more away from it everywhere: no ties.
    Tensor shifted = leaf((a.detach() + away_from_zero(sa)).detach());
    CHECK_GRAD([](auto& in) { return maximum(in[0], in[1]); }, {shifted, leaf(a.detach().clone())});
    CHECK_GRAD([](auto& in) { return minimum(in[0], in[1]); }, {shifted, leaf(a.detach().clone())});
  }
  // Only one input requiring grad: the other is passed through untouched.
  Tensor a = leaf(randn({3, 2})), k = randn({2});
  CHECK_GRAD([](auto& in) { return mul(in[0], in[1]); }, {a, k});
  CHECK_GRAD([](auto& in) { return div(in[1], in[0] * in[0] + 1.0f); }, {a, k});
  // Scalar-operand forms.
  CHECK_GRAD([](auto& in) { return 2.0f - in[0] * 3.0f + in[0] / 4.0f - 1.5f / (in[0] * in[0] + 1.0f); }, {a});
}

TEST_CASE("gradcheck: maximum and minimum with broadcasting, and where") {
  manual_seed(11);
  // a (2, 3) against b (3,): each b_j is kept 0.3 or more from every a_ij.
  Tensor a = from_vector({0.1f, 2.0f, -1.0f, 1.5f, -0.5f, 0.6f}, {2, 3});
  Tensor b = tensor({0.8f, 0.7f, -0.2f});
  CHECK_GRAD([](auto& in) { return maximum(in[0], in[1]); }, {leaf(a), leaf(b)});
  CHECK_GRAD([](auto& in) { return minimum(in[0], in[1]); }, {leaf(a), leaf(b)});
  CHECK_GRAD([](auto& in) { return maximum(in[1], in[0]); }, {leaf(a), leaf(b)});
  CHECK_GRAD([](auto& in) { return minimum(in[1], in[0]); }, {leaf(a), leaf(b)});

  // where: cond (2, 1) broadcast against a (2, 3) and b (3,).
  Tensor cond = from_vector({1, 0}, {2, 1});
  CHECK_GRAD([](auto& in) { return where(in[0], in[1], in[2]); }, {cond, leaf(randn({2, 3})), leaf(randn({3}))});
  CHECK_GRAD([](auto& in) { return where(in[0], in[1], in[2]); },
             {from_vector({1, 0, 0, 1, 1, 0}, {2, 3}), leaf(randn({})), leaf(randn({2, 3}))});
}

TEST_CASE("gradcheck: unary ops away from kinks and domain edges") {
  manual_seed(12);
  Tensor x = leaf(randn({3, 4}));
  Tensor pos = leaf(uniform({3, 4}, 0.5f, 2.0f));  // log, sqrt, rsqrt, fractional pow: x > 0
  Tensor nz = leaf(away_from_zero({3, 4}));        // relu and abs: |x| >= 0.3
  CHECK_GRAD([](auto& in) { return neg(in[0]); }, {x});
  CHECK_GRAD([](auto& in) { return -in[0]; }, {x});
  CHECK_GRAD([](auto& in) { return exp(in[0]); }, {x});
  CHECK_GRAD([](auto& in) { return log(in[0]); }, {pos});
  CHECK_GRAD([](auto& in) { return sqrt(in[0]); }, {pos});
  CHECK_GRAD([](auto& in) { return rsqrt(in[0]); }, {pos});
  CHECK_GRAD([](auto& in) { return abs(in[0]); }, {nz});
  CHECK_GRAD([](auto& in) { return relu(in[0]); }, {nz});
  CHECK_GRAD([](auto& in) { return in[0].pow(2); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].pow(3); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].pow(-1); }, {nz});
  CHECK_GRAD([](auto& in) { return in[0].pow(0.5f); }, {pos});
  CHECK_GRAD([](auto& in) { return in[0].pow(-1.5f); }, {pos});
  // The method forms, on a transposed (non-contiguous) input.
  CHECK_GRAD([](auto& in) { return in[0].t().exp() + in[0].t().abs() + in[0].t().relu(); }, {nz});
  CHECK_GRAD([](auto& in) { return in[0].t().log() * in[0].t().sqrt() + in[0].t().rsqrt(); }, {pos});
}

TEST_CASE("gradcheck: reductions over all, some and negative dims, with keepdim") {
  manual_seed(13);
  Tensor x = leaf(randn({2, 3, 4}));
  const std::vector<std::vector<int64_t>> dims_list = {{}, {0}, {1}, {-1}, {0, 2}, {2, 1}, {0, 1, 2}};
  for (const auto& dims : dims_list) {
    for (bool keepdim : {false, true}) {
      CAPTURE(dims, keepdim);
      CHECK_GRAD([&](auto& in) { return sum(in[0], dims, keepdim); }, {x});
      CHECK_GRAD([&](auto& in) { return mean(in[0], dims, keepdim); }, {x});
      CHECK_GRAD([&](auto& in) { return var(in[0], dims, /*unbiased=*/true, keepdim); }, {x});
      CHECK_GRAD([&](auto& in) { return var(in[0], dims, /*unbiased=*/false, keepdim); }, {x});
      CHECK_GRAD([&](auto& in) { return max(in[0], dims, keepdim); }, {leaf(distinct({2, 3, 4}))});
    }
  }
  // Reductions of a permuted input, and of a 0-d one.
  CHECK_GRAD([](auto& in) { return in[0].permute({2, 0, 1}).max({0, 2}); }, {leaf(distinct({2, 3, 4}))});
  CHECK_GRAD([](auto& in) { return in[0].transpose(0, 2).var({1}); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].sum() + in[0].mean() + in[0].max(); }, {leaf(randn({}))});
}

TEST_CASE("gradcheck: matmul 2-D, batched 3-D, a shared 2-D side and transposed operands") {
  manual_seed(14);
  auto mm = [](auto& in) { return matmul(in[0], in[1]); };
  CHECK_GRAD(mm, {leaf(randn({3, 4})), leaf(randn({4, 5}))});
  CHECK_GRAD(mm, {leaf(randn({2, 3, 4})), leaf(randn({2, 4, 5}))});
  CHECK_GRAD(mm, {leaf(randn({2, 3, 4})), leaf(randn({4, 5}))});  // shared right side
  CHECK_GRAD(mm, {leaf(randn({3, 4})), leaf(randn({2, 4, 5}))});  // shared left side
  CHECK_GRAD(mm, {leaf(randn({1, 4})), leaf(randn({4, 1}))});
  CHECK_GRAD(mm, {randn({3, 4}), leaf(randn({4, 5}))});  // only one side requires grad
  CHECK_GRAD([](auto& in) { return matmul(in[0].t(), in[1].t()); }, {leaf(randn({4, 3})), leaf(randn({5, 4}))});
  CHECK_GRAD([](auto& in) { return matmul(in[0].transpose(1, 2), in[1]); }, {leaf(randn({2, 4, 3})), leaf(randn({4, 5}))});
  // The Linear pattern: x @ W^T + b.
  CHECK_GRAD([](auto& in) { return matmul(in[0], in[1].t()) + in[2]; },
             {leaf(randn({5, 3})), leaf(randn({4, 3})), leaf(randn({4}))});
}

TEST_CASE("gradcheck: views and copies") {
  manual_seed(15);
  Tensor x = leaf(randn({2, 3, 4}));
  CHECK_GRAD([](auto& in) { return in[0].permute({2, 0, 1}); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].transpose(0, 2); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].select(1, 1).t(); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].narrow(2, 1, 2); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].narrow(0, 1, 1).select(2, -1); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].select(0, 0); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].unsqueeze(1); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].narrow(1, 0, 1).squeeze(); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].narrow(1, 0, 1).squeeze(1); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].flatten(); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].flatten(1); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].reshape({4, 6}); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].transpose(1, 2).reshape({-1}); }, {x});  // the copying path
  CHECK_GRAD([](auto& in) { return in[0].view({6, -1}); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].clone(); }, {x});
  CHECK_GRAD([](auto& in) { return in[0].contiguous(); }, {x});  // already contiguous: itself
  CHECK_GRAD([](auto& in) { return in[0].permute({1, 2, 0}).contiguous(); }, {x});
  // expand and broadcast_to: the gradient is summed over the expanded dims.
  Tensor r = leaf(randn({3, 1}));
  CHECK_GRAD([](auto& in) { return in[0].expand({2, 3, 4}); }, {r});
  CHECK_GRAD([](auto& in) { return in[0].broadcast_to({5, 3, 2}); }, {r});
  CHECK_GRAD([](auto& in) { return in[0].t().expand({3, 3}); }, {r});
  CHECK_GRAD([](auto& in) { return in[0].unsqueeze(0).expand({2, -1, -1}); }, {leaf(randn({3, 4}))});
}

TEST_CASE("gradcheck: composite functions") {
  manual_seed(16);
  // log-softmax over the last dim with the max subtracted for stability.
  CHECK_GRAD(
      [](auto& in) {
        Tensor z = in[0] - in[0].max({-1}, true).detach();
        return z - z.exp().sum({-1}, true).log();
      },
      {leaf(randn({3, 5}))});
  // A hand-built batch norm over dim 0: (x - mean) * rsqrt(var + eps) * gamma + beta.
  CHECK_GRAD(
      [](auto& in) {
        Tensor m = in[0].mean({0}, true);
        Tensor v = in[0].var({0}, false, true);
        return (in[0] - m) * (v + 1e-5f).rsqrt() * in[1] + in[2];
      },
      {leaf(randn({6, 3})), leaf(randn({3})), leaf(randn({3}))});
  // A two-layer MLP with a mean squared error.
  CHECK_GRAD(
      [](auto& in) { return (matmul(relu(matmul(in[0], in[1])), in[2]) - 1.0f).pow(2).mean(); },
      {randn({4, 3}), leaf(away_from_zero({3, 5}) * 0.5f), leaf(randn({5, 2}))});
}

namespace {

// Like square(x), but the backward adds a spurious 0.5 at flat index 2.
Tensor bad_square(const Tensor& x) {
  Tensor y = empty(x.shape());
  Tensor xc = x.contiguous();
  for (int64_t i = 0; i < x.numel(); ++i) y.data_ptr()[i] = xc.data_ptr()[i] * xc.data_ptr()[i];
  autograd::record(y, "bad_square", {x}, [x](const Tensor& dy) {
    Tensor wrong = zeros(x.shape());
    wrong.data_ptr()[2] = 0.5f;
    autograd::accumulate(x, dy * x * 2.0f + wrong);
  }, {x});
  return y;
}

}  // namespace

TEST_CASE("gradcheck: a wrong backward fails and is reported with input, index and values") {
  manual_seed(17);
  Tensor a = leaf(randn({4}));
  Tensor b = leaf(tensor({0.5f, -1, 1.5f, 2, -0.25f}));
  const std::vector<float> b_before = b.to_vector();
  GradcheckResult r = gradcheck([](auto& in) { return in[0].sum() + bad_square(in[1]); }, {a, b});
  INFO(r.message);
  CHECK_FALSE(r.ok);
  CHECK(r.input == 1);
  CHECK(r.index == 2);
  CHECK(r.analytic - r.numeric == Approx(0.5).margin(1e-3));
  CHECK(r.max_abs_error == Approx(0.5).margin(1e-3));
  CHECK_THAT(r.message, Catch::Contains("gradcheck FAILED") && Catch::Contains("input 1 (shape (5,)) flat index 2") &&
                            Catch::Contains(fmt::format("analytic {:.7g}", r.analytic)) &&
                            Catch::Contains(fmt::format("numeric {:.7g}", r.numeric)));

  // The same function with a correct backward passes, and says so.
  GradcheckResult ok = gradcheck([](auto& in) { return in[0].sum() + in[1] * in[1]; }, {a, b});
  INFO(ok.message);
  CHECK(ok.ok);
  CHECK(ok.max_abs_error < 1e-3);
  CHECK_THAT(ok.message, Catch::Contains("gradcheck passed"));

  // A backward that forgets an input entirely: its analytic gradient is all zeros.
  GradcheckResult missing = gradcheck(
      [](auto& in) {
        Tensor y = in[0] * 1.0f;
        Tensor out = empty(y.shape());
        std::copy(y.data_ptr(), y.data_ptr() + y.numel(), out.data_ptr());
        autograd::record(out, "dropped", {y}, [](const Tensor&) {});
        return out;
      },
      {leaf(tensor({1, 2, 3}))});
  INFO(missing.message);
  CHECK_FALSE(missing.ok);
  CHECK(missing.analytic == 0);
  CHECK(std::fabs(missing.numeric) > 0.01);

  // The caller's inputs are neither perturbed nor given gradients.
  CHECK(b.to_vector() == b_before);
  CHECK_FALSE(b.grad().defined());
}
