// Pooling ops and losses against PyTorch (tests/fixtures/layers_golden.json,
// written by scripts/gen_layer_fixtures.py): forward and input gradient.
#include "fixture_util.h"
#include "test_util.h"

#include <norma/layers/loss.h>
#include <norma/layers/pooling.h>

using namespace norma;
using namespace norma::nn;
using norma::test::json_tensor;

namespace {
// float32 sums of a few dozen terms: PyTorch and Norma round differently.
constexpr double kRtol = 1e-5, kAtol = 1e-6;

Size2 size2(const nlohmann::json& p, const char* key) { return {p.at(key)[0].get<int64_t>(), p.at(key)[1].get<int64_t>()}; }

Reduction reduction(const nlohmann::json& p) {
  const std::string r = p.at("reduction").get<std::string>();
  if (r == "none") return Reduction::none;
  if (r == "sum") return Reduction::sum;
  REQUIRE(r == "mean");
  return Reduction::mean;
}

// Runs every case whose params.op is `op`; returns how many ran.
int run_cases(const std::string& op) {
  auto fx = norma::test::load_json_fixture("layers_golden.json");
  int checked = 0;
  for (auto& [name, c] : fx.items()) {
    const auto& p = c.at("params");
    if (p.at("op") != op) continue;
    CAPTURE(name);
    Tensor x = json_tensor(c.at("input")).requires_grad_();
    Tensor t = c.contains("target") ? json_tensor(c.at("target")) : Tensor();
    if (c.contains("grad_target")) t.requires_grad_();
    Tensor y;
    if (op == "max_pool2d") y = max_pool2d(x, size2(p, "kernel"), size2(p, "stride"), size2(p, "padding"));
    if (op == "avg_pool2d")
      y = avg_pool2d(x, size2(p, "kernel"), size2(p, "stride"), size2(p, "padding"), p.at("count_include_pad").get<bool>());
    if (op == "adaptive_avg_pool2d") y = adaptive_avg_pool2d(x, size2(p, "output_size"));
    if (op == "cross_entropy") y = cross_entropy(x, t, reduction(p), p.at("label_smoothing").get<double>());
    if (op == "nll_loss") y = nll_loss(x, t, reduction(p));
    if (op == "mse_loss") y = mse_loss(x, t, reduction(p));
    REQUIRE(y.defined());
    y.backward(json_tensor(c.at("grad_output")));
    NORMA_CHECK_CLOSE(y, json_tensor(c.at("output")), kRtol, kAtol);
    CHECK(y.shape() == json_tensor(c.at("output")).shape());
    NORMA_CHECK_CLOSE(x.grad(), json_tensor(c.at("grad_input")), kRtol, kAtol);
    if (c.contains("grad_target")) NORMA_CHECK_CLOSE(t.grad(), json_tensor(c.at("grad_target")), kRtol, kAtol);
    ++checked;
  }
  return checked;
}
}  // namespace

// The counts guard against a fixture that silently lost its cases.
TEST_CASE("golden: max_pool2d matches PyTorch") { CHECK(run_cases("max_pool2d") == 7); }
TEST_CASE("golden: avg_pool2d matches PyTorch") { CHECK(run_cases("avg_pool2d") == 11); }
TEST_CASE("golden: adaptive_avg_pool2d matches PyTorch") { CHECK(run_cases("adaptive_avg_pool2d") == 4); }
TEST_CASE("golden: cross_entropy matches PyTorch") { CHECK(run_cases("cross_entropy") == 8); }
TEST_CASE("golden: nll_loss matches PyTorch") { CHECK(run_cases("nll_loss") == 3); }
TEST_CASE("golden: mse_loss matches PyTorch") { CHECK(run_cases("mse_loss") == 3); }
