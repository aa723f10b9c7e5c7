// Anomaly detection: scan outputs and gradients for NaN/Inf, name the op.
#include "anomaly_mode.h"

#include <atomic>
#include <cmath>

#include <fmt/ranges.h>

#include "autograd.h"

namespace norma::autograd {

namespace {

std::atomic<bool> g_anomaly{false};

// The non-finite values of a tensor, in row-major order.
struct Scan {
  int64_t count = 0;
  int64_t first = -1;  // row-major index of the first one
  float value = 0;
};

// Reads through the strides instead of calling contiguous(): this runs inside
// autograd::record, where an op would record (and be checked) in turn.
Scan scan(const Tensor& t) {
  Scan s;
  if (!t.defined() || t.numel() == 0) return s;
  const float* p = t.data_ptr();
  if (t.is_contiguous()) {  // the common case, a plain loop
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
      if (!std::isfinite(p[i]) && s.count++ == 0) s.first = i, s.value = p[i];
    return s;
  }
  const Shape& shape = t.shape();
  const Shape& strides = t.strides();
  const size_t D = shape.size();
  std::vector<int64_t> idx(D, 0);
  int64_t offset = 0;
  for (int64_t i = 0, n = t.numel(); i < n; ++i) {
    const float v = p[offset];
    if (!std::isfinite(v) && s.count++ == 0) s.first = i, s.value = v;
    for (size_t d = D; d-- > 0;) {  // next index, last dim fastest
      offset += strides[d];
      if (++idx[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
  return s;
}

// "1 non-finite value (of 3), the first at [0, 2] = nan"
std::string describe(const Scan& s, const Tensor& t) {
  std::vector<int64_t> idx(t.shape().size());  // the row-major position as an index
  for (int64_t d = int64_t(idx.size()) - 1, flat = s.first; d >= 0; --d) {
    idx[d] = flat % t.shape()[d];
    flat /= t.shape()[d];
  }
  return fmt::format("{} non-finite value{} (of {}), the first at [{}] = {}", s.count, s.count == 1 ? "" : "s",
                     t.numel(), fmt::join(idx, ", "), std::isnan(s.value) ? "nan" : fmt::format("{}", s.value));  // not "-nan"
}

}  // namespace

void set_detect_anomaly(bool enabled) { g_anomaly.store(enabled, std::memory_order_relaxed); }
bool is_anomaly_enabled() { return g_anomaly.load(std::memory_order_relaxed); }

namespace detail {

void check_forward(const Tensor& out, const std::string& op, const std::vector<Tensor>& inputs) {
  const Scan s = scan(out);
  if (s.count == 0) return;
  // Whether the op made the value or passed on one it was given (a parameter
  // an optimizer step made infinite, a NaN in the data).
  std::string origin;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (const Scan in = scan(inputs[i]); in.count > 0)
      origin += fmt::format("; its input {} of shape {} already held {}", i, inputs[i].shape(), describe(in, inputs[i]));
  if (origin.empty()) origin = fmt::format("; its inputs held none, so '{}' made it", op);
  fail("detect_anomaly: '{}' produced an output of shape {} with {}{}", op, out.shape(), describe(s, out), origin);
}

void check_backward(const Tensor& g, const Tensor& input, const Node* node, const Tensor& dout) {
  const Scan s = scan(g);
  if (s.count == 0) return;
  if (!node) fail("detect_anomaly: the gradient passed to backward(), of shape {}, holds {}", g.shape(), describe(s, g));
  size_t which = 0;
  while (which < node->inputs.size() && node->inputs[which].impl() != input.impl()) ++which;
  const Scan d = scan(dout);
  fail("detect_anomaly: the backward of '{}' computed a gradient of shape {} for its input {} with {}; {}", node->name,
       g.shape(), which, describe(s, g),
       d.count == 0 ? fmt::format("the gradient it received was finite, so the backward of '{}' made it", node->name)
                    : fmt::format("the gradient it received, of shape {}, already held {}", dout.shape(), describe(d, dout)));
}

}  // namespace detail
}  // namespace norma::autograd
