// The `norma` command line. Subcommands grow with the project; `demo` fits a
// small model with nothing but the tensor core and autograd.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>

#include <norma/norma.h>

using namespace norma;

namespace {

// Fits y = sin(3x) on [-1, 1] with a 1-64-64-1 MLP and plain gradient descent,
// printing the loss as it falls. Returns the final mean squared error.
float run_demo(int steps, float lr, uint64_t seed) {
  manual_seed(seed);
  Tensor x = arange(-1.0f, 1.0f, 2.0f / 256).reshape({256, 1});
  std::vector<float> ys;
  for (float v : x.to_vector()) ys.push_back(std::sin(3.0f * v));
  Tensor y = from_vector(ys, x.shape());
  auto param = [](Shape s, float fan_in) { return uniform(s, -1 / std::sqrt(fan_in), 1 / std::sqrt(fan_in)).requires_grad_(); };
  Tensor w1 = param({1, 64}, 1), b1 = param({64}, 1);
  Tensor w2 = param({64, 64}, 64), b2 = param({64}, 64);
  Tensor w3 = param({64, 1}, 64), b3 = param({1}, 64);
  std::vector<Tensor> params{w1, b1, w2, b2, w3, b3};
  float loss_value = 0;
  for (int step = 1; step <= steps; ++step) {
    Tensor h = relu(matmul(x, w1) + b1);
    h = relu(matmul(h, w2) + b2);
    Tensor loss = (matmul(h, w3) + b3 - y).pow(2).mean();
    loss.backward();
    {
      NoGradGuard g;
      for (Tensor& p : params) {
        p.sub_(p.grad() * lr);
        p.zero_grad();
      }
    }
    loss_value = loss.item();
    if (step == 1 || step % (steps / 10 > 0 ? steps / 10 : 1) == 0)
      fmt::print("step {:5d}  mse {:.6f}\n", step, loss_value);
  }
  return loss_value;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"norma: a minimal, fast and readable deep-learning framework"};
  app.require_subcommand(1);

  auto* demo = app.add_subcommand("demo", "fit y = sin(3x) with a small MLP using the autograd");
  int steps = 2000;
  float lr = 0.1f;
  uint64_t seed = 0;
  demo->add_option("--steps", steps, "gradient steps")->check(CLI::PositiveNumber);
  demo->add_option("--lr", lr, "learning rate")->check(CLI::PositiveNumber);
  demo->add_option("--seed", seed, "random seed");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*demo) {
      float mse = run_demo(steps, lr, seed);
      fmt::print("final mse {:.6f}\n", mse);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "norma: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
