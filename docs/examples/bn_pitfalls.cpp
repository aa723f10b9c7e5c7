// docs/normalization 05: train vs eval pitfalls, measured. Every number is
// checked against what the page says about it; exits non-zero otherwise.
//   bn_pitfalls small_batch   how much one sample's output depends on its batch-mates
//   bn_pitfalls early_eval    running statistics after a few steps, p = 0.1 vs PuzzleLib's schedule
//   bn_pitfalls modes         eval, freeze, track_running_stats = false
//   bn_pitfalls m1            one value per channel in training
#include <cmath>
#include <string>

#include <norma/norma.h>

using namespace norma;
using namespace norma::nn;
namespace presets = norma::nn::bn_presets;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    fmt::print("WRONG: {}\n", what);
    ++failures;
  }
}

// The data: one channel, values N(3, 2^2). In eval with the true statistics
// the sample x0 = 5 normalises to (5 - 3) / 2 = 1.
void small_batch() {
  manual_seed(3);
  BatchNorm2d bn(BatchNorm2dOptions(1).track_running_stats(false));  // batch statistics only
  fmt::print("{:>4} {:>10} {:>10}   y(5) over 2000 batches: x0 = 5 plus m - 1 draws of N(3, 4)\n", "m",
             "mean", "std");
  double std_at_2 = 0, std_at_256 = 0;
  for (int64_t m : {2, 4, 16, 64, 256}) {
    double s = 0, s2 = 0;
    const int batches = 2000;
    for (int b = 0; b < batches; ++b) {
      Tensor x = randn({m, 1, 1, 1}) * 2.0f + 3.0f;
      x.data_ptr()[0] = 5.0f;  // the sample we follow
      const double y0 = bn.forward(x).to_vector()[0];
      s += y0;
      s2 += y0 * y0;
    }
    const double mean = s / batches, sd = std::sqrt(std::max(0.0, s2 / batches - mean * mean));
    fmt::print("{:>4} {:>10.2f} {:>10.2f}\n", m, mean, sd);
    if (m == 2) std_at_2 = sd;
    if (m == 256) std_at_256 = sd;
  }
  // With m = 2 the two values normalise to -1 and +1 whatever they are.
  Tensor y = bn.forward(tensor({5.0f, 1000.0f}).reshape({2, 1, 1, 1}));
  fmt::print("m = 2, x = [5, 1000]: y = {}\n", y);
  expect(std::fabs(y.to_vector()[0] + 1) < 1e-6 && std::fabs(y.to_vector()[1] - 1) < 1e-6, "m = 2 gives -1, +1");
  expect(std_at_2 > 0.5 && std_at_256 < 0.1, "the spread of y(5) shrinks with m");
}

void early_eval() {
  manual_seed(4);
  BatchNorm2d fixed(presets::pytorch(1));   // p = 0.1 from running_mean 0, running_var 1
  BatchNorm2d sched(presets::puzzlelib(1));  // p_t = max(1/t, 0.1)
  fmt::print("{:>5} {:>22} {:>22}\n", "steps", "p = 0.1: mean / var", "PuzzleLib: mean / var");
  for (int t = 1; t <= 50; ++t) {
    Tensor x = randn({32, 1, 4, 4}) * 2.0f + 3.0f;  // 512 values per batch, mean 3, var 4
    fixed.forward(x);
    sched.forward(x);
    if (t == 1 || t == 5 || t == 10 || t == 20 || t == 50)
      fmt::print("{:>5} {:>22} {:>22}\n", t,
                 fmt::format("{:.2f} / {:.2f}", fixed.running_mean.item(), fixed.running_var.item()),
                 fmt::format("{:.2f} / {:.2f}", sched.running_mean.item(), sched.running_var.item()));
    if (t == 5) {
      // p = 0.1 keeps 0.9^5 = 59% of the initial 0 and 1: the mean is near 3 * (1 - 0.9^5) = 1.23.
      expect(std::fabs(fixed.running_mean.item() - 3 * (1 - std::pow(0.9, 5))) < 0.1, "p = 0.1 after 5 steps");
      expect(std::fabs(sched.running_mean.item() - 3) < 0.1, "the schedule after 5 steps");
    }
  }
  // What eval of x = 5 gives after 5 steps with p = 0.1 (recomputed from a fresh layer).
  manual_seed(4);
  BatchNorm2d early(presets::pytorch(1));
  for (int t = 1; t <= 5; ++t) early.forward(randn({32, 1, 4, 4}) * 2.0f + 3.0f);
  early.eval();
  const float y5 = early.forward(tensor({5.0f}).reshape({1, 1, 1, 1})).item();
  fmt::print("eval after 5 steps with p = 0.1: y(5) = {:.2f} (the true statistics give 1.00)\n", y5);
  expect(y5 > 1.5f, "eval too early is off");
}

void modes() {
  manual_seed(5);
  Tensor data = randn({16, 2, 3, 3}) * 2.0f + 3.0f;
  BatchNorm2d bn(presets::megengine(2));
  for (int t = 0; t < 30; ++t) bn.forward(randn({16, 2, 3, 3}) * 2.0f + 3.0f);

  // 1. Training mode: the output of one image depends on the rest of the batch.
  Tensor img = data.narrow(0, 0, 1);
  Tensor a = bn.forward(data).narrow(0, 0, 1), b = bn.forward(data.narrow(0, 0, 4)).narrow(0, 0, 1);
  const bool same_train = a.to_vector() == b.to_vector();
  bn.eval();
  Tensor c = bn.forward(data).narrow(0, 0, 1), d = bn.forward(img);
  const bool same_eval = c.to_vector() == d.to_vector();
  fmt::print("image 0 alone vs in its batch of 16, same output?  training: {}   eval: {}\n", same_train, same_eval);
  expect(!same_train && same_eval, "train depends on the batch, eval does not");

  // 2. freeze (MegEngine): running statistics in training mode too, never updated, no gradient for gamma, beta.
  BatchNorm2d frozen(presets::megengine(2, /*freeze=*/true));
  frozen.load_state_dict(bn.state_dict());
  frozen.train();
  const std::vector<float> before = frozen.running_mean.to_vector();
  Tensor x = data.clone().requires_grad_();
  Tensor y = frozen.forward(x);
  y.sum().backward();
  fmt::print("freeze: output equals eval's: {}; running_mean unchanged: {}; weight.grad defined: {}\n",
             y.to_vector() == bn.forward(data).to_vector(), frozen.running_mean.to_vector() == before,
             frozen.weight.grad().defined());
  expect(y.to_vector() == bn.forward(data).to_vector() && frozen.running_mean.to_vector() == before &&
             !frozen.weight.grad().defined(), "freeze");

  // 3. track_running_stats = false: no buffers, batch statistics in eval too.
  BatchNorm2d untracked(BatchNorm2dOptions(2).track_running_stats(false));
  untracked.eval();
  Tensor ye = untracked.forward(data);
  untracked.train();
  Tensor yt = untracked.forward(data);
  fmt::print("track_running_stats = false: {} buffers; eval output equals training output: {}\n",
             untracked.buffers().size(), ye.to_vector() == yt.to_vector());
  expect(untracked.buffers().empty() && ye.to_vector() == yt.to_vector(), "untracked");
}

void m1() {
  BatchNorm2d bn(3);
  try {
    bn.forward(zeros({1, 3, 1, 1}));
    expect(false, "m = 1 in training must fail");
  } catch (const Error& e) {
    fmt::print("{}\n", e.what());
  }
  bn.forward(randn({1, 3, 2, 2}));  // one image, 4 positions: m = 4, allowed
  bn.eval();
  Tensor y = bn.forward(zeros({1, 3, 1, 1}));  // running statistics: any batch size
  fmt::print("one image of 2x2 in training: allowed (m = 4); a (1, 3, 1, 1) batch in eval: allowed\n");
  expect(y.numel() == 3, "eval m = 1");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "";
  if (part.empty() || part == "small_batch") small_batch();
  if (part.empty() || part == "early_eval") early_eval();
  if (part.empty() || part == "modes") modes();
  if (part.empty() || part == "m1") m1();
  if (failures) fmt::print("{} check(s) failed\n", failures);
  return failures ? 1 : 0;
}
