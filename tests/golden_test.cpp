// Golden values from PyTorch: each TEST_CASE rebuilds one expression of
// scripts/gen_fixtures.py with Norma's ops and compares the forward value and
// the gradient of every input with tests/fixtures/core_golden.json.
// Regenerate the fixture with `/usr/bin/python3 scripts/gen_fixtures.py`; this
// test itself never needs Python.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <norma/norma.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>

using namespace norma;
using nlohmann::json;

namespace {

// An element passes when |got - want| <= kAbs + kRel * |want|.
// Both sides run the same float32 expression, so they differ only by rounding:
// libm vs PyTorch's vectorised exp/log/pow (1-2 ulp each), summation order
// (Norma accumulates in double, PyTorch in float), and sgemm blocking. Over
// ~10 chained ops that stays within a few dozen ulp, below kRel (~80 ulp).
// kAbs covers values near zero produced by cancellation (e.g. the gradient of
// the max in log_softmax, which is exactly 0 in real arithmetic), where a
// relative bound means nothing. A real bug (a wrong broadcast reduction, n vs
// n - 1, a sign) moves values by 1e-2 or more, far outside this band.
constexpr double kRel = 1e-5;
constexpr double kAbs = 1e-6;

const json& fixtures() {
  static const json doc = [] {
    const char* path = NORMA_SOURCE_DIR "/tests/fixtures/core_golden.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error(fmt::format("golden: cannot open {}", path));
    return json::parse(in);
  }();
  return doc;
}

Tensor from_json(const json& j) {
  return from_vector(j.at("data").get<std::vector<float>>(), j.at("shape").get<std::vector<int64_t>>());
}

// Multi-index "(1, 0, 2)" of flat (row-major) index i in `shape`.
std::string index_str(int64_t i, const Shape& shape) {
  Shape idx(shape.size());
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  return shape_str(idx);
}

// Compares `got` with the fixture tensor `want_json` element by element; on
// failure reports the max abs diff, where it happened, and the max rel diff.
void expect_close(const std::string& what, const Tensor& got, const json& want_json) {
  INFO(what);
  REQUIRE(got.defined());
  Tensor want = from_json(want_json);
  REQUIRE(shape_str(got.shape()) == shape_str(want.shape()));
  std::vector<float> g = got.to_vector(), w = want.to_vector();
  if (g.empty()) return;
  double max_abs = 0, max_rel = 0, worst_ratio = 0;  // worst_ratio: diff / allowed diff
  int64_t at = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    double diff = std::fabs(double(g[i]) - double(w[i]));
    if (std::isnan(diff)) diff = std::numeric_limits<double>::infinity();
    if (diff > max_abs) max_abs = diff, at = int64_t(i);
    if (w[i] != 0) max_rel = std::max(max_rel, diff / std::fabs(double(w[i])));
    worst_ratio = std::max(worst_ratio, diff / (kAbs + kRel * std::fabs(double(w[i]))));
  }
  INFO(fmt::format("max abs diff {:.3g} at {} (got {:.9g}, want {:.9g}); max rel diff {:.3g}; "
                   "{:.3g} of the tolerance used",
                   max_abs, index_str(at, want.shape()), g[at], w[at], max_rel, worst_ratio));
  CHECK(worst_ratio <= 1.0);
}

// One fixture case: its inputs as leaf tensors that require grad.
class GoldenCase {
 public:
  explicit GoldenCase(const std::string& name) : name_(name), case_(fixtures().at("cases").at(name)) {
    for (const auto& [input, value] : case_.at("inputs").items())
      inputs_[input] = from_json(value).requires_grad_();
  }

  Tensor operator[](const std::string& input) const {
    auto it = inputs_.find(input);
    if (it == inputs_.end())
      throw std::runtime_error(fmt::format("golden: case '{}' has no input '{}'", name_, input));
    return it->second;
  }

  // Checks the forward value `out`, backpropagates the fixture's upstream
  // gradient (1 for a scalar), and checks the gradient of every input.
  void check(const Tensor& out) const {
    expect_close(name_ + ": forward", out, case_.at("output"));
    if (case_.contains("grad_output"))
      out.backward(from_json(case_.at("grad_output")));
    else
      out.backward();
    for (const auto& [input, grad] : case_.at("grads").items())
      expect_close(name_ + ": grad of " + input, inputs_.at(input).grad(), grad);
  }

 private:
  std::string name_;
  const json& case_;
  std::map<std::string, Tensor> inputs_;
};

}  // namespace

TEST_CASE("golden core: broadcasting chain sum(exp(a*b + c) / (1 + d^2))") {
  GoldenCase g("broadcast_chain");
  Tensor a = g["a"], b = g["b"], c = g["c"], d = g["d"];  // (2,3,4), (3,1), (4,), (2,1,4)
  g.check((exp(a * b + c) / (1.0f + pow(d, 2))).sum());
}

TEST_CASE("golden core: 2-layer MLP, mean squared error") {
  GoldenCase g("mlp");
  Tensor x = g["x"], w1 = g["w1"], b1 = g["b1"], w2 = g["w2"], b2 = g["b2"], y = g["y"];
  Tensor hidden = relu(matmul(x, w1) + b1);      // (4, 5)
  Tensor pred = matmul(hidden, w2) + b2;         // (4, 2)
  g.check(pow(pred - y, 2).mean());
}

TEST_CASE("golden core: stable log_softmax from max, exp, sum and log") {
  GoldenCase g("log_softmax");
  Tensor x = g["x"];  // (3, 5), values near 100: exp(x) alone would overflow
  Tensor m = x.max({1}, /*keepdim=*/true);
  Tensor lse = m + log(exp(x - m).sum({1}, /*keepdim=*/true));
  g.check(x - lse);
}

TEST_CASE("golden core: batchnorm composed from mean, var and rsqrt") {
  GoldenCase g("batchnorm_composed");
  Tensor x = g["x"], gamma = g["gamma"], beta = g["beta"];  // (N, C, H, W) = (2, 3, 2, 2), (C), (C)
  Tensor mean = x.mean({0, 2, 3}, /*keepdim=*/true);
  Tensor var = x.var({0, 2, 3}, /*unbiased=*/false, /*keepdim=*/true);
  Tensor xhat = (x - mean) * rsqrt(var + 1e-5f);
  g.check(xhat * gamma.view({1, 3, 1, 1}) + beta.view({1, 3, 1, 1}));
}

TEST_CASE("golden core: batched matmul of transposed operands and a shared 2-D weight") {
  GoldenCase g("batched_matmul");
  Tensor a = g["a"], b = g["b"], w = g["w"];  // (2,4,3), (2,5,4), (5,2)
  Tensor y = matmul(matmul(a.transpose(1, 2), b.transpose(1, 2)), w);  // (2,3,4) @ (2,4,5) @ (5,2)
  g.check(pow(y, 2));
}

TEST_CASE("golden core: where, maximum, minimum, abs, sqrt, pow and div") {
  GoldenCase g("elementwise_mix");
  Tensor p = g["p"], q = g["q"], s = g["s"];  // (3,4), (3,4), (4,)
  Tensor sel = where(gt(p, q), sqrt(abs(p)), pow(abs(q), 1.5f));
  g.check(sel * maximum(p, q) / (abs(minimum(p, s)) + 0.5f));
}

TEST_CASE("golden core: var and max over lists of dims with keepdim") {
  GoldenCase g("reductions");
  Tensor x = g["x"];  // (2,3,4,2)
  Tensor v = x.var({0, 2}, /*unbiased=*/true, /*keepdim=*/true);  // (1,3,1,2)
  Tensor m = x.max({1, 3}, /*keepdim=*/true);                     // (2,1,4,1)
  g.check(v + m);
}
