// Conv2d, Linear and BatchNorm2d against PyTorch (tests/fixtures/conv_bn_golden.json,
// written by scripts/gen_conv_bn_fixtures.py): forward and every gradient.
#include "fixture_util.h"
#include "test_util.h"

#include <norma/core/kernel_policy.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/linear.h>

using namespace norma;
using namespace norma::nn;
using norma::test::json_tensor;

// float32 sums of up to ~150 terms: PyTorch and Norma round differently.
constexpr double kRtol = 1e-4, kAtol = 1e-5;

TEST_CASE("golden: conv2d and linear match PyTorch") {
  auto fx = norma::test::load_json_fixture("conv_bn_golden.json");
  int checked = 0;
  for (auto& [name, c] : fx.items()) {
    const bool is_conv = name.rfind("conv", 0) == 0, is_linear = name.rfind("linear", 0) == 0;
    if (!is_conv && !is_linear) continue;
    CAPTURE(name);
    auto cfg = c.at("config");
    Tensor x = json_tensor(c.at("input")).requires_grad_();
    Tensor w = json_tensor(c.at("weight")).requires_grad_();
    Tensor b = cfg.at("bias").get<bool>() ? json_tensor(c.at("bias")).requires_grad_() : Tensor();
    Tensor y;
    if (is_conv) {
      auto pair = [&](const char* k) { return Size2(cfg.at(k)[0].get<int64_t>(), cfg.at(k)[1].get<int64_t>()); };
      y = conv2d(x, w, b, pair("stride"), pair("padding"), pair("dilation"), cfg.at("groups").get<int64_t>());
    } else {
      y = linear(x, w, b);
    }
    y.backward(json_tensor(c.at("grad_output")));
    // The "winograd" cases must really take that path (same tolerances) where the fast kernels run.
    if (name.find("winograd") != std::string::npos && kernel_policy().fast)
      CHECK(conv2d_winograd_applies(conv2d_shape(x.shape(), w.shape(), 1, {cfg.at("padding")[0].get<int64_t>(),
                                                 cfg.at("padding")[1].get<int64_t>()}, 1, 1)));
    NORMA_CHECK_CLOSE(y, json_tensor(c.at("output")), kRtol, kAtol);
    NORMA_CHECK_CLOSE(x.grad(), json_tensor(c.at("grad_input")), kRtol, kAtol);
    NORMA_CHECK_CLOSE(w.grad(), json_tensor(c.at("grad_weight")), kRtol, kAtol);
    if (b.defined()) NORMA_CHECK_CLOSE(b.grad(), json_tensor(c.at("grad_bias")), kRtol, kAtol);
    ++checked;
  }
  CHECK(checked == 10);
}

TEST_CASE("golden: BatchNorm2d matches PyTorch over warm-up steps, then train or eval") {
  auto fx = norma::test::load_json_fixture("conv_bn_golden.json");
  int checked = 0;
  for (auto& [name, c] : fx.items()) {
    if (name.rfind("bn", 0) != 0) continue;
    CAPTURE(name);
    auto cfg = c.at("config");
    const bool affine = cfg.at("affine").get<bool>();
    Tensor x = json_tensor(c.at("input")).requires_grad_();
    BatchNorm2dOptions o(x.size(1));
    o.affine(affine).momentum(cfg.at("momentum").is_null() ? MomentumRule::cumulative()
                                                            : MomentumRule::pytorch(cfg.at("momentum").get<double>()));
    BatchNorm2d bn(o);
    if (affine) {
      NoGradGuard g;
      bn.weight.copy_(json_tensor(c.at("weight")));
      bn.bias.copy_(json_tensor(c.at("bias")));
    }
    {
      NoGradGuard g;
      for (auto& w : c.at("warmup")) bn.forward(json_tensor(w));
    }
    bn.train(cfg.at("training").get<bool>());
    Tensor y = bn.forward(x);
    y.backward(json_tensor(c.at("grad_output")));
    NORMA_CHECK_CLOSE(y, json_tensor(c.at("output")), kRtol, kAtol);
    NORMA_CHECK_CLOSE(x.grad(), json_tensor(c.at("grad_input")), kRtol, kAtol);
    NORMA_CHECK_CLOSE(bn.running_mean, json_tensor(c.at("running_mean")), 1e-5, 1e-6);
    NORMA_CHECK_CLOSE(bn.running_var, json_tensor(c.at("running_var")), 1e-5, 1e-6);
    CHECK(bn.num_batches_tracked.item() == c.at("num_batches_tracked").get<float>());
    if (affine) {
      NORMA_CHECK_CLOSE(bn.weight.grad(), json_tensor(c.at("grad_weight")), kRtol, kAtol);
      NORMA_CHECK_CLOSE(bn.bias.grad(), json_tensor(c.at("grad_bias")), kRtol, kAtol);
    }
    ++checked;
  }
  CHECK(checked == 4);
}
