// Dropout (Srivastava et al., 2014), "inverted" as in PyTorch: in training
// each element is zeroed with probability p and the survivors are scaled by
// 1 / (1 - p), so the expected value is unchanged; in eval it is the identity.
//   y = x * mask,  mask_i = (u_i >= p) / (1 - p),  u_i ~ U[0, 1) from norma's seeded generator
// Backward multiplies by the same mask (mul's backward): dx = dy * mask.
#pragma once
#include "module.h"

namespace norma::nn {

// Kernel: fills mask (n) with 0 or 1 / (1 - p), drawing n uniforms in order (none when p is 0 or 1).
void dropout_mask(float* mask, int64_t n, double p);

// Functional form. p in [0, 1]: p = 0 (or training = false) returns x itself,
// p = 1 gives zeros (and zero gradients).
Tensor dropout(const Tensor& x, double p = 0.5, bool training = true);

// Printed like PyTorch: "Dropout(p=0.5, inplace=False)". Follows train()/eval().
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override { return dropout(x, p, is_training()); }
  std::string name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  double p;
};

}  // namespace norma::nn
