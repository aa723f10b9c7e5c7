#include "dropout.h"

#include <algorithm>

#include "../core/ops.h"

namespace norma::nn {

namespace {
void check_p(const char* op, double p) {
  if (!(p >= 0.0 && p <= 1.0)) fail("{}: probability p must be in [0, 1], got {}", op, p);
}
}  // namespace

void dropout_mask(float* mask, int64_t n, double p) {
  if (p <= 0.0 || p >= 1.0) {  // all kept or all dropped: no draws
    std::fill_n(mask, n, p <= 0.0 ? 1.0f : 0.0f);
    return;
  }
  const float scale = float(1.0 / (1.0 - p));
  for (int64_t i = 0; i < n; ++i) mask[i] = double(random_uniform()) >= p ? scale : 0.0f;
}

Tensor dropout(const Tensor& x, double p, bool training) {
  if (!x.defined()) fail("dropout: input is an undefined tensor");
  check_p("dropout", p);
  if (!training || p == 0.0) return x;
  Tensor mask = empty(x.shape());  // no grad: only x receives dy * mask
  dropout_mask(mask.data_ptr(), mask.numel(), p);
  return mul(x, mask);
}

Dropout::Dropout(double p) : p(p) { check_p("Dropout", p); }

std::string Dropout::extra_repr() const {
  // Python prints floats with a decimal point: p=0.0, p=1.0.
  std::string v = fmt::format("{}", p);
  if (v.find_first_of(".e") == std::string::npos) v += ".0";
  return fmt::format("p={}, inplace=False", v);
}

}  // namespace norma::nn
