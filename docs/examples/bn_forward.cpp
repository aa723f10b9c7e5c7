// docs/normalization 01 and 02: what BatchNorm2d computes, by hand and with
// Norma's layer, on a batch small enough to print. Checks every number against
// the formula in double and exits non-zero on a mismatch.
//   bn_forward by_hand   the statistics and y, computed in double
//   bn_forward layer     the same through nn::BatchNorm2d, the composite oracle, eval
//   bn_forward identity  gamma = sqrt(var + eps), beta = mean gives y = x back
#include <cmath>
#include <string>

#include <norma/norma.h>

using namespace norma;
using namespace norma::nn;

namespace {

int failures = 0;

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol, const char* what) {
  bool ok = got.size() == want.size();
  for (size_t i = 0; ok && i < got.size(); ++i) ok = std::fabs(got[i] - want[i]) <= tol * (1 + std::fabs(want[i]));
  if (!ok) {
    fmt::print("WRONG {}\n", what);
    ++failures;
  }
}

// The batch: N = 2 images, C = 2 channels, H = 1, W = 2, so M = N*H*W = 4 values per channel.
// Channel 0 holds 1..4, channel 1 holds 100..130: two very different scales.
Tensor batch() { return tensor({1, 2, 100, 110, 3, 4, 120, 130}).reshape({2, 2, 1, 2}); }
const std::vector<float> gamma_v{1.0f, 2.0f}, beta_v{0.0f, 0.5f};
const double eps = 1e-5;

// y for the batch, in double, straight from the formula.
std::vector<double> reference_y() {
  std::vector<float> x = batch().to_vector();
  std::vector<double> y(x.size());
  for (int c = 0; c < 2; ++c) {
    // values of channel c: x[n*4 + c*2 + w] for n, w in {0, 1}
    const int idx[4] = {c * 2, c * 2 + 1, 4 + c * 2, 4 + c * 2 + 1};
    double mean = 0, var = 0;
    for (int i : idx) mean += x[i] / 4.0;
    for (int i : idx) var += (x[i] - mean) * (x[i] - mean) / 4.0;
    for (int i : idx) y[i] = (x[i] - mean) / std::sqrt(var + eps) * gamma_v[c] + beta_v[c];
  }
  return y;
}

void by_hand() {
  std::vector<float> x = batch().to_vector();
  for (int c = 0; c < 2; ++c) {
    const int idx[4] = {c * 2, c * 2 + 1, 4 + c * 2, 4 + c * 2 + 1};
    double mean = 0, var = 0;
    for (int i : idx) mean += x[i] / 4.0;
    for (int i : idx) var += (x[i] - mean) * (x[i] - mean) / 4.0;
    const double invstd = 1.0 / std::sqrt(var + eps);
    fmt::print("channel {}: x = [{}, {}, {}, {}]\n", c, x[idx[0]], x[idx[1]], x[idx[2]], x[idx[3]]);
    fmt::print("  mean = {}, var = {} (biased, /M), invstd = {:.6f}\n", mean, var, invstd);
    std::string xhat, y;
    for (int i : idx) {
      xhat += fmt::format(" {:+.4f}", (x[i] - mean) * invstd);
      y += fmt::format(" {:+.4f}", (x[i] - mean) * invstd * gamma_v[c] + beta_v[c]);
    }
    fmt::print("  xhat ={}\n  y    ={}   (gamma = {}, beta = {})\n", xhat, y, gamma_v[c], beta_v[c]);
  }
}

void layer() {
  NoGradGuard g;  // no graph needed here (training mode is not grad mode)
  BatchNorm2d bn(2);  // PyTorch's defaults: eps 1e-5, momentum 0.1, gamma 1, beta 0
  bn.weight.copy_(from_vector(gamma_v, {2}));
  bn.bias.copy_(from_vector(beta_v, {2}));
  Tensor y = bn.forward(batch());  // training mode: this batch's statistics
  fmt::print("nn::BatchNorm2d, training:\n{}\n", y);
  expect_close(y.to_vector(), reference_y(), 1e-6, "fused layer");

  // The composite oracle: the same formula from mean, sub, mul, rsqrt.
  BatchNormArgs args;  // batch statistics, no running update
  Tensor y2 = batch_norm2d_composite(batch(), bn.weight, bn.bias, bn.running_mean, bn.running_var, args);
  float diff = 0;
  for (size_t i = 0; i < y2.to_vector().size(); ++i)
    diff = std::max(diff, std::fabs(y2.to_vector()[i] - y.to_vector()[i]));
  // Printed as the bound checked, so the page does not depend on the machine's last bits.
  fmt::print("composite (mean, sub, mul, rsqrt): max |difference| to the fused layer < 1e-5: {}\n", diff < 1e-5f);
  if (!(diff < 1e-5f)) ++failures;

  // The training forward also moved the running statistics one step (p = 0.1)
  // from running_mean 0 and running_var 1 toward the batch's mean and unbiased variance.
  fmt::print("running_mean = {}\nrunning_var  = {}\n", bn.running_mean, bn.running_var);
  expect_close(bn.running_mean.to_vector(), {0.25, 11.5}, 1e-6, "running_mean");
  expect_close(bn.running_var.to_vector(), {0.9 + 0.1 * 5.0 / 3, 0.9 + 0.1 * 500.0 / 3}, 1e-6, "running_var");

  // In eval the running statistics normalise: far from this batch's, so y is far from N(0, 1).
  bn.eval();
  Tensor ye = bn.forward(batch());
  fmt::print("nn::BatchNorm2d, eval (running statistics):\n{}\n", ye);
}

void identity() {
  // gamma = sqrt(var + eps) and beta = mean undo the normalisation: BatchNorm
  // takes nothing away from what the layer can express.
  BatchNorm2d bn(2);
  NoGradGuard g;
  bn.weight.copy_(from_vector({float(std::sqrt(1.25 + eps)), float(std::sqrt(125.0 + eps))}, {2}));
  bn.bias.copy_(from_vector({2.5f, 115.0f}, {2}));
  Tensor y = bn.forward(batch());
  fmt::print("x = {}\ny = {}\n", batch(), y);
  std::vector<double> x;
  for (float v : batch().to_vector()) x.push_back(v);
  expect_close(y.to_vector(), x, 1e-6, "identity");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "";
  if (part.empty() || part == "by_hand") by_hand();
  if (part.empty() || part == "layer") layer();
  if (part.empty() || part == "identity") identity();
  if (failures) fmt::print("{} check(s) failed\n", failures);
  return failures ? 1 : 0;
}
