// Anomaly detection, as torch.autograd.set_detect_anomaly: finds the first op
// whose output, or whose backward's gradient, holds NaN or Inf, and names it.
// Off by default; off, it costs one flag check per op and per gradient.
//
//   autograd::DetectAnomalyGuard anomaly;  // on until the end of the scope
//   Tensor y = log(x);                     // x holds -1 at [2]
//   -> norma::Error "detect_anomaly: 'log' produced an output of shape (3) with 1
//      non-finite value (of 3), the first at [2] = nan; its inputs held none, so 'log' made it"
//
// When on:
//  - forward: autograd::record scans the output of every op that goes through
//    it (with or without grad mode, so an evaluation under NoGradGuard is
//    checked too) and, when it holds NaN or Inf, throws norma::Error naming the
//    op, the output shape, how many values are not finite, the first one's
//    index and value, and which of the op's inputs already held non-finite values;
//  - backward: each gradient a node's backward hands to autograd::accumulate
//    is scanned the same way, and the error names the node, the input it was
//    for, and whether the gradient the node received was already non-finite.
// The first error stops the forward (or the backward) where it happened.
// Scanning reads every value, so a training step runs slower; turn it on to
// find a NaN, not for every run.
#pragma once
#include <vector>

#include "tensor.h"

namespace norma {
struct Node;
}

namespace norma::autograd {

// Process-wide, like PyTorch's (every thread records into the same graphs).
void set_detect_anomaly(bool enabled);
bool is_anomaly_enabled();

// RAII: anomaly detection is on while one is alive, then back to what it was
// (torch::autograd::DetectAnomalyGuard).
struct DetectAnomalyGuard {
  DetectAnomalyGuard() : prev_(is_anomaly_enabled()) { set_detect_anomaly(true); }
  ~DetectAnomalyGuard() { set_detect_anomaly(prev_); }
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool prev_;
};

namespace detail {
// The hooks autograd.cpp calls while anomaly detection is on; each throws on
// the first non-finite value.
void check_forward(const Tensor& out, const std::string& op, const std::vector<Tensor>& inputs);
// `g` is what `node` (null: none, the seed of backward()) computed for `input`;
// `dout` the gradient it received.
void check_backward(const Tensor& g, const Tensor& input, const Node* node, const Tensor& dout);
}  // namespace detail

}  // namespace norma::autograd
