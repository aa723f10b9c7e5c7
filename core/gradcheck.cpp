#include "gradcheck.h"

#include <cmath>

#include "autograd.h"
#include "ops.h"

namespace norma {

namespace {
// sum(out * r) in double.
double weighted_sum(const Tensor& out, const std::vector<float>& r) {
  std::vector<float> v = out.to_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += double(v[i]) * double(r[i]);
  return s;
}
}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  if (!(opt.eps > 0) || !(opt.atol >= 0) || !(opt.rtol >= 0))
    fail("gradcheck: need eps > 0, atol >= 0 and rtol >= 0, got eps {}, atol {}, rtol {}", opt.eps, opt.atol, opt.rtol);
  // Fresh contiguous leaves, so perturbing them cannot touch the caller's tensors.
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    if (!t.defined()) fail("gradcheck: input {} is an undefined tensor", xs.size());
    Tensor c = t.detach().clone();
    if (t.requires_grad()) c.requires_grad_();
    xs.push_back(c);
  }
  Tensor out = fn(xs);
  if (!out.defined() || !out.requires_grad())
    fail("gradcheck: the function's output does not require grad (did it use the inputs?)");
  // Upstream gradient: uniform in [-1, 1) from a local SplitMix64 stream.
  std::vector<float> r(size_t(out.numel()));
  uint64_t state = opt.seed;
  for (float& v : r) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    v = float((z ^ (z >> 31)) >> 40) / float(1 << 24) * 2.0f - 1.0f;
  }
  out.backward(from_vector(r, out.shape()));

  GradcheckResult res;
  double worst_ratio = -1;
  NoGradGuard no_grad;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].requires_grad()) continue;
    std::vector<float> analytic = xs[i].grad().defined() ? xs[i].grad().to_vector()
                                                         : std::vector<float>(size_t(xs[i].numel()), 0.0f);
    float* p = xs[i].data_ptr();
    for (int64_t j = 0; j < xs[i].numel(); ++j) {
      const float x0 = p[j];
      const float xp = float(x0 + opt.eps), xm = float(x0 - opt.eps);
      p[j] = xp;
      double lp = weighted_sum(fn(xs), r);
      p[j] = xm;
      double lm = weighted_sum(fn(xs), r);
      p[j] = x0;
      double numeric = (lp - lm) / (double(xp) - double(xm));
      double err = std::fabs(double(analytic[size_t(j)]) - numeric);
      double ratio = err / (opt.atol + opt.rtol * std::fabs(numeric));
      if (std::isnan(err)) ratio = INFINITY;
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (ratio > worst_ratio) {
        worst_ratio = ratio;
        res.input = int64_t(i);
        res.index = j;
        res.analytic = analytic[size_t(j)];
        res.numeric = numeric;
      }
    }
  }
  res.ok = worst_ratio <= 1.0;
  res.message = fmt::format(
      "gradcheck {}: worst element is input {} (shape {}) flat index {}: analytic {:.7g} vs numeric {:.7g} "
      "(max abs error {:.3g}, atol {}, rtol {})",
      res.ok ? "passed" : "FAILED", res.input, res.input >= 0 ? xs[size_t(res.input)].shape() : Shape{},
      res.index, res.analytic, res.numeric, res.max_abs_error, opt.atol, opt.rtol);
  return res;
}

}  // namespace norma
