// docs/normalization 04: the running statistics of the five conventions.
// Exits non-zero when a number disagrees with issue 4 or with the formula.
//   bn_conventions worked   x = [1, 2, 3, 4], one training step from fresh buffers, every preset
//   bn_conventions rules    the weight p_t of the new batch at step t, per preset
//   bn_conventions agree    conventions that must give bit-identical buffers do
#include <cmath>
#include <string>

#include <norma/norma.h>

using namespace norma;
using namespace norma::nn;
namespace presets = norma::nn::bn_presets;

namespace {

int failures = 0;

struct Preset {
  const char* name;
  BatchNorm2dOptions options;
  const char *issue_mean, *issue_var;  // issue 4's digits
};

std::vector<Preset> all_presets() {
  return {{"pytorch", presets::pytorch(1), "0.25", "1.0666667"},
          {"r_torch", presets::r_torch(1), "0.25", "1.0666667"},
          {"megengine", presets::megengine(1), "0.25", "1.0666667"},
          {"brainpy_2_7", presets::brainpy_2_7(1), "0.025", "1.0025"},
          {"brainpy_2_8", presets::brainpy_2_8(1), "0.025", "1.0066667"},
          {"numpy_ml", presets::numpy_ml(), "0.25", "1.025"},  // lazy: one channel, from the input
          {"puzzlelib", presets::puzzlelib(1), "2.5", "1.6666667"}};
}

void worked() {
  // The batch: mean 2.5, biased variance 1.25, unbiased 1.25 * 4/3 = 5/3.
  const double mean = 2.5, biased = 1.25, unbiased = 5.0 / 3;
  fmt::print("{:<12} {:>5} {:>13} {:>12}   {}\n", "preset", "p_1", "running_mean", "running_var",
             "running_var = (1 - p) * 1 + p * stat, exactly");
  for (Preset& pr : all_presets()) {
    BatchNorm2d bn(pr.options);
    bn.forward(tensor({1, 2, 3, 4}).reshape({4, 1, 1, 1}));  // (N, C, H, W) and (N, H, W, C) alike
    const double p = pr.options.momentum_.factor(1);
    const bool unb = pr.options.unbiased_running_var_;
    const double want_mean = p * mean, want_var = (1 - p) * 1 + p * (unb ? unbiased : biased);
    const float got_mean = bn.running_mean.item(), got_var = bn.running_var.item();
    // float32 buffers: each must be the float nearest the exact value, and the
    // exact value to 8 significant digits must be issue 4's number.
    if (got_mean != float(want_mean) || got_var != float(want_var) ||
        fmt::format("{:.8g}", want_mean) != pr.issue_mean || fmt::format("{:.8g}", want_var) != pr.issue_var) {
      fmt::print("WRONG {}: got {}/{}, issue 4 says {}/{}\n", pr.name, got_mean, got_var, pr.issue_mean,
                 pr.issue_var);
      ++failures;
    }
    fmt::print("{:<12} {:>5.6g} {:>13} {:>12}   {:.6g} * 1 + {:.6g} * {} = {:.8g}\n", pr.name, p, got_mean, got_var,
               1 - p, p,
               unb ? "5/3" : "1.25", want_var);
  }
}

void rules() {
  fmt::print("{:<12}", "t");
  for (int t = 1; t <= 12; ++t) fmt::print(" {:>6}", t);
  fmt::print("\n");
  for (const char* name : {"pytorch", "megengine", "brainpy_2_7", "numpy_ml", "puzzlelib"}) {
    const MomentumRule rule = presets::preset_by_name(name, 1).momentum_;
    fmt::print("{:<12}", name);
    for (int t = 1; t <= 12; ++t) fmt::print(" {:>6.4g}", rule.factor(t));
    fmt::print("\n");
  }
  const MomentumRule none = presets::pytorch(1, std::nullopt).momentum_;
  fmt::print("{:<12}", "pytorch None");
  for (int t = 1; t <= 12; ++t) fmt::print(" {:>6.4g}", none.factor(t));
  fmt::print("\n");
  fmt::print("MegEngine momentum 0.9  -> PyTorch momentum {:.6g}\n", presets::pytorch_momentum_from_decay(0.9));
  fmt::print("BrainPy momentum 0.99   -> PyTorch momentum {:.6g}\n", presets::pytorch_momentum_from_decay(0.99));
  fmt::print("PyTorch momentum 0.1    -> decay {:.6g} (MegEngine, numpy-ml)\n", presets::decay_from_pytorch_momentum(0.1));
}

// Runs `steps` training forwards of the same random batches through a and b;
// true when their running statistics are bit-identical after every step.
bool same_buffers(BatchNorm2dOptions a_options, BatchNorm2dOptions b_options, int steps) {
  manual_seed(7);
  BatchNorm2d a(a_options), b(b_options);
  const Shape shape = a_options.layout_ == Layout::NCHW ? Shape{8, 3, 4, 4} : Shape{8, 4, 4, 3};
  for (int t = 0; t < steps; ++t) {
    Tensor x = randn(shape) * 2.0f + float(t);
    a.forward(x);
    b.forward(x);
    if (a.running_mean.to_vector() != b.running_mean.to_vector() ||
        a.running_var.to_vector() != b.running_var.to_vector())
      return false;
  }
  return true;
}

void agree() {
  struct Case {
    const char* what;
    BatchNorm2dOptions a, b;
    int steps;
    bool expect;
  };
  std::vector<Case> cases{
      {"megengine(momentum 0.9) == pytorch(momentum 0.1), 12 steps", presets::megengine(3),
       presets::pytorch(3, 0.1), 12, true},
      {"puzzlelib == pytorch(momentum None), steps 1-10", presets::puzzlelib(3), presets::pytorch(3, std::nullopt),
       10, true},
      {"puzzlelib == pytorch(momentum None), steps 1-11", presets::puzzlelib(3), presets::pytorch(3, std::nullopt),
       11, false},
      {"brainpy_2_8 == pytorch(momentum 0.01, NHWC, one-pass variance), 12 steps",
       presets::brainpy_2_8(3),
       presets::pytorch(3, 0.01).layout(Layout::NHWC).variance_method(VarianceMethod::one_pass), 12, true},
  };
  for (Case& c : cases) {
    const bool same = same_buffers(c.a, c.b, c.steps);
    fmt::print("{}: {}\n", c.what, same ? "identical" : "different");
    if (same != c.expect) ++failures;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "";
  if (part.empty() || part == "worked") worked();
  if (part.empty() || part == "rules") rules();
  if (part.empty() || part == "agree") agree();
  if (failures) fmt::print("{} check(s) failed\n", failures);
  return failures ? 1 : 0;
}
