// Losses with PyTorch semantics: cross_entropy (one fused node), nll_loss
// (one node) and mse_loss (composed from sub, mul and a reduction).
//
// Letters: N batch, C classes. Targets are class indices stored as float
// (Norma tensors are float32); each must be an integer in [0, C).
//
// cross_entropy with label smoothing eps (PyTorch's formula):
//   logp_ic = z_ic - lse_i,   lse_i = m_i + log(sum_c exp(z_ic - m_i)),  m_i = max_c z_ic (stable)
//   loss_i  = (1 - eps) * (-logp_{i,t_i}) + eps * mean_c(-logp_ic)
//   dz_ic   = g_i * (softmax_ic - ((1 - eps) [c == t_i] + eps / C))
// where g_i is the upstream gradient of loss_i (dy / N for mean, dy for sum).
// nll_loss: loss_i = -x_{i,t_i};  dx_{i,t_i} = -g_i.
// mse_loss: loss = (input - target)^2, elementwise, then reduced; both inputs get gradients.
#pragma once
#include "module.h"

namespace norma::nn {

// none keeps one loss per sample (N,); mean and sum give a 0-d tensor.
enum class Reduction { none, mean, sum };

// ---- kernels on raw contiguous pointers. target (N) holds validated class
// indices, loss (N) one loss per sample, dloss (N) the g_i; gradients are overwritten.
// lse (N) is saved for the backward, in double so softmax = exp(z - lse) stays
// accurate for logits in the thousands.
void cross_entropy_forward(float* loss, double* lse, const float* logits, const int64_t* target, int64_t N,
                           int64_t C, double label_smoothing);
void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const double* lse,
                            const int64_t* target, int64_t N, int64_t C, double label_smoothing);
void nll_loss_forward(float* loss, const float* log_probs, const int64_t* target, int64_t N, int64_t C);
void nll_loss_backward(float* dlog_probs, const float* dloss, const int64_t* target, int64_t N, int64_t C);

// ---- ops
// logits (N, C), target (N) -> (N) for none, else 0-d.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::mean,
                     double label_smoothing = 0.0);
// log_probs (N, C), target (N) -> (N) for none, else 0-d.
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction = Reduction::mean);
// input and target of the same shape -> that shape for none, else 0-d.
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);

// ---- modules: loss(input, target). Printed like PyTorch: "CrossEntropyLoss()".
class CrossEntropyLoss : public Module {
 public:
  explicit CrossEntropyLoss(Reduction reduction = Reduction::mean, double label_smoothing = 0.0);
  using Module::forward;
  Tensor forward(const Tensor& logits, const Tensor& target) const {
    return cross_entropy(logits, target, reduction, label_smoothing);
  }
  Tensor operator()(const Tensor& logits, const Tensor& target) const { return forward(logits, target); }
  std::string name() const override { return "CrossEntropyLoss"; }
  Reduction reduction;
  double label_smoothing;
};

class NLLLoss : public Module {
 public:
  explicit NLLLoss(Reduction reduction = Reduction::mean) : reduction(reduction) {}
  using Module::forward;
  Tensor forward(const Tensor& log_probs, const Tensor& target) const { return nll_loss(log_probs, target, reduction); }
  Tensor operator()(const Tensor& log_probs, const Tensor& target) const { return forward(log_probs, target); }
  std::string name() const override { return "NLLLoss"; }
  Reduction reduction;
};

class MSELoss : public Module {
 public:
  explicit MSELoss(Reduction reduction = Reduction::mean) : reduction(reduction) {}
  using Module::forward;
  Tensor forward(const Tensor& input, const Tensor& target) const { return mse_loss(input, target, reduction); }
  Tensor operator()(const Tensor& input, const Tensor& target) const { return forward(input, target); }
  std::string name() const override { return "MSELoss"; }
  Reduction reduction;
};

}  // namespace norma::nn
