// docs/normalization 07: folding an eval-mode BatchNorm2d into the Conv2d
// before it. Checks the folded weights against the formula and the folded
// model against the unfused one; exits non-zero on a mismatch.
//   bn_fuse one     one Conv2d + BatchNorm2d, the formula channel by channel
//   bn_fuse model   cifar-small folded with fuse_conv_bn_eval
#include <cmath>
#include <string>

#include <norma/norma.h>
#include <norma/apps/models.h>

using namespace norma;
using namespace norma::nn;

namespace {

int failures = 0;

// max |a - b| / (1 + max |b|): a relative difference that ignores the scale of the outputs.
double rel_diff(const Tensor& a, const Tensor& b) {
  auto av = a.to_vector(), bv = b.to_vector();
  double d = 0, scale = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    d = std::max(d, double(std::fabs(av[i] - bv[i])));
    scale = std::max(scale, double(std::fabs(bv[i])));
  }
  return d / (1 + scale);
}

void one() {
  manual_seed(21);
  Conv2d conv(Conv2dOptions(3, 4, 3).padding(1).bias(false));
  BatchNorm2d bn(4);
  {
    NoGradGuard g;
    bn.weight.copy_(tensor({0.5f, 1.0f, 1.5f, 2.0f}));
    bn.bias.copy_(tensor({0.1f, 0.0f, -0.1f, 0.2f}));
    for (int t = 0; t < 20; ++t) bn.forward(conv.forward(randn({8, 3, 8, 8}) + 1.0f));  // running statistics
  }
  bn.eval();
  std::shared_ptr<Conv2d> fused = fuse_conv_bn(conv, bn);

  // s_k = gamma_k / sqrt(running_var_k + eps);  W'_k = s_k W_k;  b'_k = (0 - running_mean_k) s_k + beta_k
  auto g = bn.weight.to_vector(), be = bn.bias.to_vector();
  auto rm = bn.running_mean.to_vector(), rv = bn.running_var.to_vector();
  auto w = conv.weight.to_vector(), wf = fused->weight.to_vector(), bf = fused->bias.to_vector();
  const size_t per_filter = w.size() / 4;
  fmt::print("{:>2} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}\n", "k", "gamma", "r_mean", "r_var", "s", "b' (fused)",
             "W'/W");
  for (size_t k = 0; k < 4; ++k) {
    const double s = g[k] / std::sqrt(double(rv[k]) + 1e-5), b = -rm[k] * s + be[k];
    fmt::print("{:>2} {:>8.3f} {:>8.3f} {:>8.3f} {:>9.4f} {:>9.4f} {:>9.4f}\n", k, g[k], rm[k], rv[k], s, bf[k],
               wf[k * per_filter] / w[k * per_filter]);
    if (std::fabs(bf[k] - b) > 1e-5 * (1 + std::fabs(b))) ++failures;
    for (size_t j = 0; j < per_filter; ++j)
      if (std::fabs(wf[k * per_filter + j] - s * w[k * per_filter + j]) > 1e-6 * (1 + std::fabs(s))) ++failures;
  }
  NoGradGuard ng;
  Tensor x = randn({2, 3, 8, 8});
  const double d = rel_diff(fused->forward(x), bn.forward(conv.forward(x)));
  fmt::print("fused(x) vs bn(conv(x)): relative max |diff| < 1e-5: {}\n", d < 1e-5);
  if (!(d < 1e-5)) ++failures;
}

void model() {
  manual_seed(22);
  auto net = cifar_small();
  {  // a few training forwards so the running statistics are not the fresh 0 and 1
    NoGradGuard g;
    for (int t = 0; t < 3; ++t) net->forward(randn({8, 3, 32, 32}));
  }
  net->eval();
  auto folded = fuse_conv_bn_eval(*net);
  NoGradGuard g;
  Tensor x = randn({2, 3, 32, 32});
  const double d = rel_diff(folded->forward(x), net->forward(x));
  fmt::print("cifar-small: {} layers, folded: {} layers ({} BatchNorm2d folded away)\n", net->named_children().size(),
             folded->named_children().size(), net->named_children().size() - folded->named_children().size());
  fmt::print("logits of the folded model vs the original: relative max |diff| < 1e-5: {}\n", d < 1e-5);
  if (!(d < 1e-5)) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "";
  if (part.empty() || part == "one") one();
  if (part.empty() || part == "model") model();
  if (failures) fmt::print("{} check(s) failed\n", failures);
  return failures ? 1 : 0;
}
