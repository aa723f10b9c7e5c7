#include "init.h"

#include <fmt/ranges.h>

#include <cmath>
#include <vector>

#include "../core/autograd.h"

namespace norma::nn::init {

namespace {
void check_defined(const char* op, const Tensor& t) {
  if (!t.defined()) fail("{}: called on an undefined tensor", op);
}
}  // namespace

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& w) {
  check_defined("calculate_fan_in_and_fan_out", w);
  if (w.dim() < 2)
    fail("init: fan in and fan out need a tensor with at least 2 dims, got shape {}", w.shape());
  int64_t receptive = 1;
  for (int64_t d = 2; d < w.dim(); ++d) receptive *= w.size(d);
  return {w.size(1) * receptive, w.size(0) * receptive};
}

double calculate_gain(Nonlinearity nl, double param) {
  switch (nl) {
    case Nonlinearity::linear:
    case Nonlinearity::sigmoid: return 1.0;
    case Nonlinearity::tanh: return 5.0 / 3.0;
    case Nonlinearity::relu: return std::sqrt(2.0);
    case Nonlinearity::leaky_relu:
      if (!std::isfinite(param)) fail("calculate_gain: leaky_relu's negative slope must be finite, got {}", param);
      return std::sqrt(2.0 / (1.0 + param * param));
    case Nonlinearity::selu: return 0.75;
  }
  fail("calculate_gain: unknown nonlinearity {} (not a Nonlinearity value)", int(nl));
}

double calculate_gain(const std::string& nonlinearity, double param) {
  static const std::vector<std::string> linear{"linear",           "conv1d",           "conv2d",
                                               "conv3d",           "conv_transpose1d", "conv_transpose2d",
                                               "conv_transpose3d", "sigmoid"};
  for (const std::string& n : linear)
    if (n == nonlinearity) return 1.0;
  if (nonlinearity == "tanh") return calculate_gain(Nonlinearity::tanh);
  if (nonlinearity == "relu") return calculate_gain(Nonlinearity::relu);
  if (nonlinearity == "leaky_relu") return calculate_gain(Nonlinearity::leaky_relu, param);
  if (nonlinearity == "selu") return calculate_gain(Nonlinearity::selu);
  fail("calculate_gain: unknown nonlinearity '{}'; accepted: {}, tanh, relu, leaky_relu, selu", nonlinearity,
       fmt::join(linear, ", "));
}

namespace {
// Writes with grad mode off: initialisation is not part of any graph.
Tensor& fill_from(Tensor& t, const Tensor& values) {
  NoGradGuard g;
  t.copy_(values);
  return t;
}
double fan(const Tensor& t, FanMode mode) {
  auto [in, out] = calculate_fan_in_and_fan_out(t);
  int64_t f = mode == FanMode::fan_in ? in : out;
  if (f == 0) fail("init: cannot initialise a tensor of shape {} with a zero fan", t.shape());
  return double(f);
}
void check_kaiming(const char* op, const Tensor& t, double a, FanMode mode) {
  check_defined(op, t);
  if (!std::isfinite(a)) fail("{}: negative slope a must be finite, got {}", op, a);
  if (mode != FanMode::fan_in && mode != FanMode::fan_out)
    fail("{}: unknown mode {} (not a FanMode value)", op, int(mode));
}
std::pair<int64_t, int64_t> xavier_fans(const char* op, const Tensor& t, double gain) {
  check_defined(op, t);
  if (!std::isfinite(gain)) fail("{}: gain must be finite, got {}", op, gain);
  auto fans = calculate_fan_in_and_fan_out(t);
  if (fans.first + fans.second == 0) fail("init: cannot initialise a tensor of shape {} with a zero fan", t.shape());
  return fans;
}
}  // namespace

Tensor& uniform_(Tensor& t, double low, double high) {
  check_defined("uniform_", t);
  return fill_from(t, uniform(t.shape(), float(low), float(high)));
}
Tensor& normal_(Tensor& t, double mean, double std) {
  check_defined("normal_", t);
  return fill_from(t, normal(t.shape(), float(mean), float(std)));
}
Tensor& constant_(Tensor& t, double value) {
  check_defined("constant_", t);
  NoGradGuard g;
  t.fill_(float(value));
  return t;
}
Tensor& zeros_(Tensor& t) { return constant_(t, 0.0); }
Tensor& ones_(Tensor& t) { return constant_(t, 1.0); }

Tensor& kaiming_uniform_(Tensor& t, double a, FanMode mode, Nonlinearity nl) {
  check_kaiming("kaiming_uniform_", t, a, mode);
  double bound = std::sqrt(3.0) * calculate_gain(nl, a) / std::sqrt(fan(t, mode));
  return uniform_(t, -bound, bound);
}
Tensor& kaiming_normal_(Tensor& t, double a, FanMode mode, Nonlinearity nl) {
  check_kaiming("kaiming_normal_", t, a, mode);
  return normal_(t, 0.0, calculate_gain(nl, a) / std::sqrt(fan(t, mode)));
}
Tensor& xavier_uniform_(Tensor& t, double gain) {
  auto [in, out] = xavier_fans("xavier_uniform_", t, gain);
  double bound = gain * std::sqrt(6.0 / double(in + out));
  return uniform_(t, -bound, bound);
}
Tensor& xavier_normal_(Tensor& t, double gain) {
  auto [in, out] = xavier_fans("xavier_normal_", t, gain);
  return normal_(t, 0.0, gain * std::sqrt(2.0 / double(in + out)));
}

}  // namespace norma::nn::init
