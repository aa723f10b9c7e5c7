// nn::init: fans and gains as torch.nn.init computes them, exact uniform
// bounds, moments of large draws, seeding, errors, and the default
// initialisation of Conv2d, Linear and BatchNorm2d (PyTorch's rules).
#include "test_util.h"

#include <algorithm>
#include <cmath>

#include <norma/layers/batchnorm2d.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/init.h>
#include <norma/layers/linear.h>

using namespace norma;
using namespace norma::nn;

namespace {

struct Moments {
  double mean = 0, std = 0, min = 0, max = 0, max_abs = 0;
  double within_one_std = 0;  // fraction of values with |v - mean| < std
};

Moments moments(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  Moments m;
  m.min = *std::min_element(v.begin(), v.end());
  m.max = *std::max_element(v.begin(), v.end());
  m.max_abs = std::max(-m.min, m.max);
  for (float x : v) m.mean += x;
  m.mean /= double(v.size());
  for (float x : v) m.std += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(m.std / double(v.size() - 1));
  for (float x : v) m.within_one_std += std::fabs(x - m.mean) < m.std;
  m.within_one_std /= double(v.size());
  return m;
}

// A U(-bound, bound) draw: every |w| <= bound, the extremes within 1% of it
// (n values miss the top 1% with probability 0.99^n), mean 0 and std bound/sqrt(3).
// n >= 4096 keeps the std within 3% (its relative standard error is below 0.5%).
void check_uniform(const Tensor& w, double bound) {
  Moments m = moments(w);
  const double n = double(w.numel());
  INFO("bound " << bound << " n " << n << " min " << m.min << " max " << m.max << " mean " << m.mean << " std "
                << m.std);
  CHECK(m.max_abs <= float(bound));
  CHECK(m.max > 0.99 * bound);
  CHECK(m.min < -0.99 * bound);
  CHECK(std::fabs(m.mean) < 5 * bound / std::sqrt(3.0 * n));
  CHECK(m.std == Approx(bound / std::sqrt(3.0)).epsilon(0.03));
  CHECK(m.within_one_std == Approx(1 / std::sqrt(3.0)).margin(0.02));  // flat, not bell-shaped
}

// A N(mean, std) draw: moments within 5 standard errors, and 68.3% within one std.
void check_normal(const Tensor& w, double mean, double std) {
  Moments m = moments(w);
  const double n = double(w.numel());
  INFO("want mean " << mean << " std " << std << ", got mean " << m.mean << " std " << m.std << " within 1 std "
                    << m.within_one_std);
  CHECK(std::fabs(m.mean - mean) < 5 * std / std::sqrt(n));
  CHECK(std::fabs(m.std - std) < 5 * std / std::sqrt(2 * n));
  CHECK(m.within_one_std == Approx(0.6827).margin(0.02));
}

std::pair<int64_t, int64_t> fans(const Shape& s) { return init::calculate_fan_in_and_fan_out(empty(s)); }

}  // namespace

TEST_CASE("init: fan_in and fan_out as PyTorch's _calculate_fan_in_and_fan_out") {
  using P = std::pair<int64_t, int64_t>;
  CHECK(fans({5, 3}) == P{3, 5});               // Linear(3, 5): weight (out, in)
  CHECK(fans({16, 3, 3, 3}) == P{27, 144});     // Conv2d(3, 16, 3)
  CHECK(fans({8, 4, 5, 3}) == P{60, 120});      // 5x3 kernel
  CHECK(fans({8, 2, 3, 3}) == P{18, 72});       // Conv2d(8, 8, 3, groups=4): size(1) = C/groups
  CHECK(fans({4, 2, 5}) == P{10, 20});          // Conv1d
  CHECK(fans({6, 2, 3, 3, 3}) == P{54, 162});   // Conv3d
  CHECK(fans({1, 1}) == P{1, 1});
  CHECK_THROWS_WITH(fans({5}), "init: fan in and fan out need a tensor with at least 2 dims, got shape (5,)");
  CHECK_THROWS_WITH(fans({}), "init: fan in and fan out need a tensor with at least 2 dims, got shape ()");
}

TEST_CASE("init: calculate_gain as PyTorch's, by enum and by name") {
  using init::Nonlinearity;
  CHECK(init::calculate_gain(Nonlinearity::linear) == 1.0);
  CHECK(init::calculate_gain(Nonlinearity::sigmoid) == 1.0);
  CHECK(init::calculate_gain(Nonlinearity::tanh) == Approx(5.0 / 3.0));
  CHECK(init::calculate_gain(Nonlinearity::relu) == Approx(std::sqrt(2.0)));
  CHECK(init::calculate_gain(Nonlinearity::leaky_relu) == Approx(std::sqrt(2.0 / (1 + 0.01 * 0.01))));
  CHECK(init::calculate_gain(Nonlinearity::leaky_relu, 0.2) == Approx(std::sqrt(2.0 / 1.04)));
  CHECK(init::calculate_gain(Nonlinearity::leaky_relu, std::sqrt(5.0)) == Approx(std::sqrt(1.0 / 3.0)));
  CHECK(init::calculate_gain(Nonlinearity::selu) == 0.75);
  for (const char* n : {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d", "sigmoid"}) {
    CAPTURE(n);
    CHECK(init::calculate_gain(n) == 1.0);
  }
  CHECK(init::calculate_gain("tanh") == Approx(5.0 / 3.0));
  CHECK(init::calculate_gain("relu") == Approx(std::sqrt(2.0)));
  CHECK(init::calculate_gain("leaky_relu", 0.2) == Approx(std::sqrt(2.0 / 1.04)));
  CHECK(init::calculate_gain("selu") == 0.75);
  CHECK_THROWS_WITH(init::calculate_gain("gelu"),
                    "calculate_gain: unknown nonlinearity 'gelu'; accepted: linear, conv1d, conv2d, conv3d, "
                    "conv_transpose1d, conv_transpose2d, conv_transpose3d, sigmoid, tanh, relu, leaky_relu, selu");
  CHECK_THROWS_WITH(init::calculate_gain(static_cast<Nonlinearity>(42)),
                    "calculate_gain: unknown nonlinearity 42 (not a Nonlinearity value)");
}

TEST_CASE("init: uniform inits stay within their exact bounds and fill them") {
  manual_seed(21);
  Tensor w = empty({256, 32, 3, 3});  // fan_in 288, fan_out 2304, 73728 values
  init::kaiming_uniform_(w);          // a = 0, leaky_relu: gain sqrt(2)
  check_uniform(w, std::sqrt(2.0) * std::sqrt(3.0 / 288));
  init::kaiming_uniform_(w, std::sqrt(5.0));  // PyTorch's layer default: 1/sqrt(fan_in)
  check_uniform(w, 1.0 / std::sqrt(288.0));
  init::kaiming_uniform_(w, 0.0, init::FanMode::fan_out, init::Nonlinearity::relu);
  check_uniform(w, std::sqrt(2.0) * std::sqrt(3.0 / 2304));
  init::kaiming_uniform_(w, 0.0, init::FanMode::fan_in, init::Nonlinearity::tanh);
  check_uniform(w, 5.0 / 3.0 * std::sqrt(3.0 / 288));
  init::xavier_uniform_(w);
  check_uniform(w, std::sqrt(6.0 / (288 + 2304)));
  init::xavier_uniform_(w, 2.5);
  check_uniform(w, 2.5 * std::sqrt(6.0 / (288 + 2304)));
  Tensor lin = empty({100, 300});  // a Linear weight
  init::xavier_uniform_(lin);
  check_uniform(lin, std::sqrt(6.0 / 400));
  init::kaiming_uniform_(lin, std::sqrt(5.0));
  check_uniform(lin, 1.0 / std::sqrt(300.0));
  // uniform_(low, high): an interval not centred on 0.
  Tensor u = empty({20000});
  init::uniform_(u, -0.3, 0.7);
  Moments m = moments(u);
  CHECK(m.min >= -0.3f);
  CHECK(m.max <= 0.7f);
  CHECK(m.min < -0.29);
  CHECK(m.max > 0.69);
  CHECK(m.mean == Approx(0.2).margin(5 * 1.0 / std::sqrt(12.0 * 20000)));
  CHECK(m.std == Approx(1.0 / std::sqrt(12.0)).epsilon(0.03));
}

TEST_CASE("init: normal inits have the std PyTorch's formulas give") {
  manual_seed(22);
  Tensor w = empty({128, 64, 3, 3});  // fan_in 576, fan_out 1152, 73728 values
  init::kaiming_normal_(w);
  check_normal(w, 0, std::sqrt(2.0 / 576));
  init::kaiming_normal_(w, 0.0, init::FanMode::fan_out, init::Nonlinearity::relu);
  check_normal(w, 0, std::sqrt(2.0 / 1152));
  init::kaiming_normal_(w, 0.1, init::FanMode::fan_in, init::Nonlinearity::leaky_relu);
  check_normal(w, 0, std::sqrt(2.0 / 1.01) / std::sqrt(576.0));
  init::xavier_normal_(w);
  check_normal(w, 0, std::sqrt(2.0 / (576 + 1152)));
  init::xavier_normal_(w, 3.0);
  check_normal(w, 0, 3.0 * std::sqrt(2.0 / (576 + 1152)));
  init::normal_(w, 2.0, 0.5);
  check_normal(w, 2.0, 0.5);
  init::normal_(w);
  check_normal(w, 0.0, 1.0);
}

TEST_CASE("init: constant_, zeros_ and ones_ write exact values without recording a graph") {
  Tensor p = randn({3, 4}).requires_grad_();
  init::constant_(p, -1.25);
  for (float v : p.to_vector()) CHECK(v == -1.25f);
  init::zeros_(p);
  for (float v : p.to_vector()) CHECK(v == 0.0f);
  init::ones_(p);
  for (float v : p.to_vector()) CHECK(v == 1.0f);
  // Still a leaf that requires grad (init runs without grad mode), for every init.
  init::kaiming_uniform_(p);
  init::xavier_normal_(p);
  init::uniform_(p, -1, 1);
  CHECK(p.requires_grad());
  CHECK(p.is_leaf());
  CHECK_FALSE(p.grad_fn());
  // A view is written through to its base.
  Tensor base = zeros({2, 6});
  Tensor row = base.narrow(0, 1, 1);
  init::constant_(row, 3.0);
  CHECK(base.to_vector() == std::vector<float>{0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3});
}

TEST_CASE("init: the same seed gives the same weights") {
  auto draw = [](uint64_t seed) {
    manual_seed(seed);
    Tensor a = empty({16, 8, 3, 3}), b = empty({10, 20});
    init::kaiming_uniform_(a, std::sqrt(5.0));
    init::kaiming_normal_(b);
    std::vector<float> v = a.to_vector(), w = b.to_vector();
    v.insert(v.end(), w.begin(), w.end());
    return v;
  };
  CHECK(draw(5) == draw(5));
  CHECK(draw(5) != draw(6));
  // Layers draw from the same generator: a seeded model is reproducible.
  manual_seed(9);
  Conv2d c1(3, 8, 3);
  Linear l1(8, 4);
  manual_seed(9);
  Conv2d c2(3, 8, 3);
  Linear l2(8, 4);
  CHECK(c1.weight.to_vector() == c2.weight.to_vector());
  CHECK(c1.bias.to_vector() == c2.bias.to_vector());
  CHECK(l1.weight.to_vector() == l2.weight.to_vector());
  CHECK(l1.bias.to_vector() == l2.bias.to_vector());
  CHECK(c1.weight.to_vector() != Conv2d(3, 8, 3).weight.to_vector());
}

TEST_CASE("init: errors name the function and the bad value") {
  Tensor v = empty({5});
  const std::string rank = "init: fan in and fan out need a tensor with at least 2 dims, got shape (5,)";
  CHECK_THROWS_WITH(init::kaiming_uniform_(v), rank);
  CHECK_THROWS_WITH(init::kaiming_normal_(v), rank);
  CHECK_THROWS_WITH(init::xavier_uniform_(v), rank);
  CHECK_THROWS_WITH(init::xavier_normal_(v), rank);
  Tensor no_in = empty({4, 0, 3, 3});
  CHECK_THROWS_WITH(init::kaiming_uniform_(no_in),
                    "init: cannot initialise a tensor of shape (4, 0, 3, 3) with a zero fan");
  CHECK_THROWS_WITH(init::kaiming_normal_(no_in, 0, init::FanMode::fan_in),
                    "init: cannot initialise a tensor of shape (4, 0, 3, 3) with a zero fan");
  Tensor none = empty({0, 0});
  CHECK_THROWS_WITH(init::xavier_uniform_(none), "init: cannot initialise a tensor of shape (0, 0) with a zero fan");
  CHECK_THROWS_WITH(init::xavier_normal_(none), "init: cannot initialise a tensor of shape (0, 0) with a zero fan");
  Tensor t = zeros({3});
  CHECK_THROWS_WITH(init::uniform_(t, 1.0, 0.0), "uniform: need finite low <= high, got low 1 and high 0");
  CHECK_THROWS_WITH(init::normal_(t, 0.0, -1.0), "normal: need a finite mean and std >= 0, got mean 0 and std -1");
  CHECK(t.to_vector() == std::vector<float>{0, 0, 0});  // a failed init leaves the tensor alone
  // Non-finite arguments and unknown enum values are named before anything is drawn.
  Tensor w = zeros({4, 3});
  CHECK_THROWS_WITH(init::kaiming_uniform_(w, NAN), Catch::Contains("kaiming_uniform_: negative slope a must be finite, got nan"));
  CHECK_THROWS_WITH(init::kaiming_normal_(w, INFINITY), Catch::Contains("kaiming_normal_: negative slope a must be finite, got inf"));
  CHECK_THROWS_WITH(init::kaiming_uniform_(w, 0, init::FanMode(7)),
                    Catch::Contains("kaiming_uniform_: unknown mode 7 (not a FanMode value)"));
  CHECK_THROWS_WITH(init::kaiming_normal_(w, 0, init::FanMode(-2)),
                    Catch::Contains("kaiming_normal_: unknown mode -2 (not a FanMode value)"));
  CHECK_THROWS_WITH(init::xavier_uniform_(w, NAN), Catch::Contains("xavier_uniform_: gain must be finite, got nan"));
  CHECK_THROWS_WITH(init::xavier_normal_(w, -INFINITY), Catch::Contains("xavier_normal_: gain must be finite, got -inf"));
  CHECK_THROWS_WITH(init::calculate_gain(init::Nonlinearity::leaky_relu, NAN),
                    Catch::Contains("calculate_gain: leaky_relu's negative slope must be finite, got nan"));
  CHECK_THROWS_WITH(init::calculate_gain(init::Nonlinearity(9)),
                    Catch::Contains("calculate_gain: unknown nonlinearity 9 (not a Nonlinearity value)"));
  CHECK_THROWS_WITH(init::calculate_gain("gelu"), Catch::Contains("calculate_gain: unknown nonlinearity 'gelu'; accepted: linear"));
  CHECK(w.to_vector() == std::vector<float>(12, 0.0f));
  Tensor u;
  CHECK_THROWS_WITH(init::uniform_(u), Catch::Contains("uniform_: called on an undefined tensor"));
  CHECK_THROWS_WITH(init::normal_(u), Catch::Contains("normal_: called on an undefined tensor"));
  CHECK_THROWS_WITH(init::zeros_(u), Catch::Contains("constant_: called on an undefined tensor"));
  CHECK_THROWS_WITH(init::kaiming_uniform_(u), Catch::Contains("kaiming_uniform_: called on an undefined tensor"));
  CHECK_THROWS_WITH(init::xavier_normal_(u), Catch::Contains("xavier_normal_: called on an undefined tensor"));
  CHECK_THROWS_WITH(init::calculate_fan_in_and_fan_out(u), Catch::Contains("calculate_fan_in_and_fan_out: called on an undefined tensor"));
}

TEST_CASE("init: Conv2d, Linear and BatchNorm2d start as PyTorch's defaults") {
  manual_seed(31);
  // Conv2d: kaiming_uniform_(a = sqrt(5)) = U(+-1/sqrt(fan_in)), then bias U(+-1/sqrt(fan_in)).
  Conv2d conv(64, 32, 3);  // fan_in 576, 18432 weights
  check_uniform(conv.weight, 1.0 / 24.0);
  for (float b : conv.bias.to_vector()) CHECK(std::fabs(b) <= 1.0f / 24.0f);
  CHECK(conv.bias.abs().max().item() > 0.5f / 24.0f);
  // Exactly those two draws, in that order.
  manual_seed(32);
  Conv2d c(8, 16, 3, 1, 1, 1, /*groups=*/4);  // fan_in = (8 / 4) * 9 = 18
  manual_seed(32);
  Tensor w = empty({16, 2, 3, 3}), b = empty({16});
  init::kaiming_uniform_(w, std::sqrt(5.0));
  init::uniform_(b, -1 / std::sqrt(18.0), 1 / std::sqrt(18.0));
  CHECK(c.weight.to_vector() == w.to_vector());
  CHECK(c.bias.to_vector() == b.to_vector());
  CHECK(c.weight.abs().max().item() <= float(1 / std::sqrt(18.0)));
  CHECK(c.weight.abs().max().item() > 0.9f * float(1 / std::sqrt(18.0)));  // 288 draws
  // Linear: the same rule with fan_in = in_features.
  manual_seed(33);
  Linear lin(300, 64);  // 19200 weights
  check_uniform(lin.weight, 1.0 / std::sqrt(300.0));
  for (float v : lin.bias.to_vector()) CHECK(std::fabs(v) <= float(1 / std::sqrt(300.0)));
  CHECK(lin.bias.abs().max().item() > 0.8f / std::sqrt(300.0f));  // 64 draws
  manual_seed(34);
  Linear l2(7, 3);
  manual_seed(34);
  Tensor lw = empty({3, 7}), lb = empty({3});
  init::kaiming_uniform_(lw, std::sqrt(5.0));
  init::uniform_(lb, -1 / std::sqrt(7.0), 1 / std::sqrt(7.0));
  CHECK(l2.weight.to_vector() == lw.to_vector());
  CHECK(l2.bias.to_vector() == lb.to_vector());
  // BatchNorm2d: weight 1, bias 0, running_mean 0, running_var 1, no batches.
  BatchNorm2d bn(5);
  CHECK(bn.weight.to_vector() == std::vector<float>(5, 1.0f));
  CHECK(bn.bias.to_vector() == std::vector<float>(5, 0.0f));
  CHECK(bn.running_mean.to_vector() == std::vector<float>(5, 0.0f));
  CHECK(bn.running_var.to_vector() == std::vector<float>(5, 1.0f));
  CHECK(bn.num_batches_tracked.item() == 0.0f);
  CHECK(bn.weight.requires_grad());
  CHECK_FALSE(bn.running_var.requires_grad());
}
