// nn::Module: dotted names exactly as PyTorch's named_parameters / named_buffers /
// named_modules / state_dict give them, parameters vs buffers, train/eval,
// zero_grad, apply, registration errors and the summary table.
#include "fixture_util.h"
#include "test_util.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include <norma/layers/activation.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/init.h>
#include <norma/layers/linear.h>
#include <norma/apps/models.h>

using namespace norma;
using namespace norma::nn;

using norma::test::keys;

namespace {


template <class Named>
std::vector<std::string> names(const Named& named) {
  std::vector<std::string> out;
  for (const auto& [k, m] : named) out.push_back(k);
  return out;
}

// A custom module with its own parameter and buffer, a nested Sequential and a
// named child. In PyTorch:
//   class Net(nn.Module):
//     def __init__(self):
//       super().__init__()
//       self.scale = nn.Parameter(torch.ones(1))
//       self.register_buffer("step", torch.zeros(()))
//       self.features = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
//       self.head = nn.Linear(4, 2)
struct Net : Module {
  Tensor scale;  // (1)
  Tensor step;   // () buffer
  std::shared_ptr<Sequential> features;
  std::shared_ptr<Linear> head;
  Net() {
    scale = register_parameter("scale", ones({1}));
    step = register_buffer("step", zeros({}));
    features = register_module("features", std::make_shared<Sequential>(std::initializer_list<ModulePtr>{
                                               std::make_shared<Conv2d>(Conv2dOptions(3, 4, 3).bias(false)),
                                               std::make_shared<BatchNorm2d>(4), std::make_shared<ReLU>()}));
    head = register_module("head", std::make_shared<Linear>(4, 2));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = features->forward(x).mean({2, 3});  // (N, 4)
    return head->forward(h) * scale;
  }
  std::string name() const override { return "Net"; }
};

// Exposes the protected register_* calls to provoke their errors.
struct Probe : Module {
  using Module::register_buffer;
  using Module::register_module;
  using Module::register_parameter;
  using Module::replace_tensor;
  std::string name() const override { return "Probe"; }
};

}  // namespace

TEST_CASE("module: named_parameters, named_buffers, named_modules and state_dict of a custom module") {
  Net net;
  CHECK(keys(net.named_parameters()) ==
        std::vector<std::string>{"scale", "features.0.weight", "features.1.weight", "features.1.bias",
                                 "head.weight", "head.bias"});
  CHECK(keys(net.named_parameters(/*recurse=*/false)) == std::vector<std::string>{"scale"});
  CHECK(keys(net.named_buffers()) == std::vector<std::string>{"step", "features.1.running_mean",
                                                              "features.1.running_var",
                                                              "features.1.num_batches_tracked"});
  CHECK(keys(net.named_buffers(false)) == std::vector<std::string>{"step"});
  // The root is "", every descendant depth first in registration order.
  CHECK(names(net.named_modules()) ==
        std::vector<std::string>{"", "features", "features.0", "features.1", "features.2", "head"});
  CHECK(names(net.named_children()) == std::vector<std::string>{"features", "head"});
  CHECK(keys(net.state_dict()) ==
        std::vector<std::string>{"scale", "step", "features.0.weight", "features.1.weight", "features.1.bias",
                                 "features.1.running_mean", "features.1.running_var",
                                 "features.1.num_batches_tracked", "head.weight", "head.bias"});
  // The named handles are the members themselves, not copies.
  auto params = net.named_parameters();
  CHECK(params[0].second.is_same(net.scale));
  CHECK(params[4].second.is_same(net.head->weight));
  CHECK(net.named_buffers()[0].second.is_same(net.step));
  auto modules = net.named_modules();
  CHECK(modules[0].second == &net);
  CHECK(modules[5].second == net.head.get());
  CHECK(modules[2].second == (*net.features)[0].get());
}

TEST_CASE("module: nested names have no stray dots at any depth") {
  // outer: Sequential{ [0] Sequential{ [0] ReLU, [1] Linear }, ["block"] custom{ "bn": BatchNorm2d } }
  struct Block : Module {
    std::shared_ptr<BatchNorm2d> bn;
    Block() { bn = register_module("bn", std::make_shared<BatchNorm2d>(2)); }
  };
  Sequential outer;
  auto inner = outer.push_back(std::make_shared<Sequential>(
      std::initializer_list<ModulePtr>{std::make_shared<ReLU>(), std::make_shared<Linear>(2, 3)}));
  outer.push_back("block", std::make_shared<Block>());
  CHECK(names(outer.named_modules()) ==
        std::vector<std::string>{"", "0", "0.0", "0.1", "block", "block.bn"});
  CHECK(names(inner->named_modules()) == std::vector<std::string>{"", "0", "1"});
  CHECK(keys(outer.state_dict()) ==
        std::vector<std::string>{"0.1.weight", "0.1.bias", "block.bn.weight", "block.bn.bias",
                                 "block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked"});
  for (const auto& [n, m] : outer.named_modules()) {
    CAPTURE(n);
    CHECK(n.find("..") == std::string::npos);
    CHECK((n.empty() || (n.front() != '.' && n.back() != '.')));
  }
}

TEST_CASE("module: cifar_small state_dict keys are PyTorch's, in PyTorch's order") {
  // list(cifar_small_in_pytorch.state_dict().keys()), from the model in the issue.
  const std::vector<std::string> pytorch{
      "0.weight",  "1.weight",  "1.bias",  "1.running_mean",  "1.running_var",  "1.num_batches_tracked",
      "3.weight",  "4.weight",  "4.bias",  "4.running_mean",  "4.running_var",  "4.num_batches_tracked",
      "7.weight",  "8.weight",  "8.bias",  "8.running_mean",  "8.running_var",  "8.num_batches_tracked",
      "10.weight", "11.weight", "11.bias", "11.running_mean", "11.running_var", "11.num_batches_tracked",
      "14.weight", "15.weight", "15.bias", "15.running_mean", "15.running_var", "15.num_batches_tracked",
      "19.weight", "19.bias"};
  auto model = cifar_small();
  NamedTensors sd = model->state_dict();
  CHECK(keys(sd) == pytorch);
  // Shapes of a few, as PyTorch has them.
  CHECK(sd[0].second.shape() == Shape{32, 3, 3, 3});
  CHECK(sd[5].second.shape() == Shape{});  // num_batches_tracked is 0-d
  CHECK(sd[24].second.shape() == Shape{128, 64, 3, 3});
  CHECK(sd[30].second.shape() == Shape{10, 2048});
  // The PyTorch-written checkpoint holds exactly these names (plus the test's input and target).
  std::set<std::string> in_file;
  for (const auto& [k, t] : load_safetensors(test::fixture_path("cifar_small_in.safetensors")).tensors)
    if (k != "input" && k != "target") in_file.insert(k);
  CHECK(in_file == std::set<std::string>(pytorch.begin(), pytorch.end()));
}

TEST_CASE("module: parameters() holds what the optimizer trains and never a buffer") {
  auto model = cifar_small();
  std::vector<Tensor> params = model->parameters(), bufs = model->buffers();
  CHECK(params.size() == 5 + 5 * 2 + 2);  // conv weights, BN weight and bias, Linear weight and bias
  CHECK(bufs.size() == 5 * 3);            // running_mean, running_var, num_batches_tracked per BN
  for (const Tensor& b : bufs) {
    CHECK_FALSE(b.requires_grad());
    for (const Tensor& p : params) CHECK_FALSE(p.is_same(b));
  }
  for (const Tensor& p : params) CHECK(p.requires_grad());
  for (const auto& [k, p] : model->named_parameters()) {
    CAPTURE(k);
    CHECK(k.find("running") == std::string::npos);
    CHECK(k.find("num_batches") == std::string::npos);
  }
  int64_t n = 0;
  for (const Tensor& p : params) n += p.numel();
  CHECK(n == 160234);  // counted by hand in the summary test below
}

TEST_CASE("module: train and eval reach every submodule") {
  Net net;
  auto all = [&](bool want) {
    for (const auto& [n, m] : net.named_modules()) {
      CAPTURE(n);
      CHECK(m->is_training() == want);
    }
  };
  all(true);  // modules start in training mode, like PyTorch
  net.eval();
  all(false);
  net.train();
  all(true);
  net.train(false);
  all(false);
  // Submodule mode changes behaviour: eval BatchNorm leaves its statistics alone.
  auto bn = std::dynamic_pointer_cast<BatchNorm2d>((*net.features)[1]);
  REQUIRE(bn);
  manual_seed(3);
  Tensor x = randn({2, 3, 5, 5});
  net.forward(x);
  CHECK(bn->num_batches_tracked.item() == 0.0f);
  net.train();
  net.forward(x);
  CHECK(bn->num_batches_tracked.item() == 1.0f);
  // A child switched alone does not switch its parent or siblings.
  net.head->eval();
  CHECK(net.is_training());
  CHECK(net.features->is_training());
  CHECK_FALSE(net.head->is_training());
}

TEST_CASE("module: zero_grad clears every parameter gradient") {
  manual_seed(4);
  Net net;
  net.forward(randn({2, 3, 5, 5})).sum().backward();
  for (const auto& [k, p] : net.named_parameters()) {
    CAPTURE(k);
    CHECK(p.grad().defined());
  }
  net.zero_grad();
  for (const auto& [k, p] : net.named_parameters()) {
    CAPTURE(k);
    CHECK_FALSE(p.grad().defined());  // set_to_none, PyTorch's default
  }
  // Gradients accumulate until cleared: two backwards give twice one.
  Tensor x = randn({2, 3, 5, 5});
  net.eval();  // fixed statistics: the same function twice
  net.forward(x).sum().backward();
  std::vector<float> once = net.head->weight.grad().to_vector();
  net.forward(x).sum().backward();
  std::vector<float> twice = net.head->weight.grad().to_vector();
  for (size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == Approx(2 * once[i]));
  net.zero_grad();
  CHECK_FALSE(net.head->weight.grad().defined());
}

TEST_CASE("module: apply visits every module once, children before their parent") {
  Net net;
  std::vector<Module*> visited;
  net.apply([&](Module& m) { visited.push_back(&m); });
  auto modules = net.named_modules();
  REQUIRE(visited.size() == modules.size());
  std::set<Module*> unique(visited.begin(), visited.end());
  CHECK(unique.size() == modules.size());
  // PyTorch's order: features.0, features.1, features.2, features, head, "".
  auto find = [&](const std::string& n) {
    for (auto& [k, m] : modules)
      if (k == n) return m;
    return static_cast<Module*>(nullptr);
  };
  const std::vector<std::string> order{"features.0", "features.1", "features.2", "features", "head", ""};
  for (size_t i = 0; i < order.size(); ++i) {
    CAPTURE(order[i]);
    CHECK(visited[i] == find(order[i]));
  }
  // The usual use: custom initialisation by type.
  net.apply([](Module& m) {
    if (auto* c = dynamic_cast<Conv2d*>(&m)) init::constant_(c->weight, 0.5);
    if (auto* l = dynamic_cast<Linear*>(&m)) init::zeros_(l->bias);
  });
  for (float v : net.features->named_parameters()[0].second.to_vector()) CHECK(v == 0.5f);
  for (float v : net.head->bias.to_vector()) CHECK(v == 0.0f);
  CHECK(net.features->named_parameters()[0].second.requires_grad());  // init does not change requires_grad
}

TEST_CASE("module: register errors name the module and the bad name") {
  Probe p;
  p.register_parameter("weight", zeros({2}));
  p.register_buffer("stat", zeros({2}));
  p.register_module("child", std::make_shared<ReLU>());
  CHECK_THROWS_WITH(p.register_parameter("weight", zeros({2})),
                    "Probe: cannot register parameter 'weight': the name is already taken");
  CHECK_THROWS_WITH(p.register_buffer("weight", zeros({2})),
                    "Probe: cannot register buffer 'weight': the name is already taken");
  CHECK_THROWS_WITH(p.register_parameter("stat", zeros({2})),
                    "Probe: cannot register parameter 'stat': the name is already taken");
  CHECK_THROWS_WITH(p.register_module("stat", std::make_shared<ReLU>()),
                    "Probe: cannot register submodule 'stat': the name is already taken");
  CHECK_THROWS_WITH(p.register_buffer("child", zeros({1})),
                    "Probe: cannot register buffer 'child': the name is already taken");
  CHECK_THROWS_WITH(p.register_parameter("", zeros({2})),
                    "Probe: parameter name '' must be non-empty and contain no '.'");
  CHECK_THROWS_WITH(p.register_buffer("running.mean", zeros({2})),
                    "Probe: buffer name 'running.mean' must be non-empty and contain no '.'");
  CHECK_THROWS_WITH(p.register_module("a.b", std::make_shared<ReLU>()),
                    "Probe: submodule name 'a.b' must be non-empty and contain no '.'");
  CHECK_THROWS_WITH(p.register_parameter("w2", Tensor()), "Probe: parameter 'w2' is an undefined tensor");
  CHECK_THROWS_WITH(p.register_buffer("b2", Tensor()), "Probe: buffer 'b2' is an undefined tensor");
  CHECK_THROWS_WITH(p.register_module("m2", ModulePtr()), "Probe: submodule 'm2' is null");
  CHECK_THROWS_WITH(p.replace_tensor("nothing", zeros({1})), "Probe: no parameter or buffer named 'nothing' to replace");
  // Every failed registration left the module as it was.
  CHECK(keys(p.state_dict()) == std::vector<std::string>{"weight", "stat"});
  CHECK(names(p.named_modules()) == std::vector<std::string>{"", "child"});
  // Sequential's named children go through the same checks.
  Sequential s;
  s.push_back("conv", std::make_shared<ReLU>());
  CHECK_THROWS_WITH(s.push_back("conv", std::make_shared<ReLU>()),
                    "Sequential: cannot register submodule 'conv': the name is already taken");
  CHECK_THROWS_WITH(s.push_back("a.b", std::make_shared<ReLU>()),
                    "Sequential: submodule name 'a.b' must be non-empty and contain no '.'");
  CHECK(s.size() == 1);
  CHECK_THROWS_WITH(s[1], "Sequential: index 1 is out of range for 1 modules");
  CHECK_THROWS_AS(p.register_parameter("weight", zeros({2})), norma::Error);
}

TEST_CASE("module: summary of cifar_small lists each layer, its output shape and parameter count") {
  auto model = cifar_small();
  model->train();
  const std::string s = summary(*model, {2, 3, 32, 32});
  CHECK(model->is_training());  // restored after the eval-mode forward
  auto row = [](const std::string& n, const std::string& type, const std::string& shape, int64_t params) {
    return fmt::format("{:<24}{:<16}{:<22}{:>12}\n", n, type, shape, params);
  };
  // Parameter counts by hand: conv C_out*C_in*9, BatchNorm 2*C, Linear 2048*10 + 10.
  std::string want = fmt::format("{:<24}{:<16}{:<22}{:>12}\n", "Layer", "Type", "Output shape", "Params");
  want += std::string(74, '-') + "\n";
  want += row("0", "Conv2d", "(2, 32, 32, 32)", 32 * 3 * 9);
  want += row("1", "BatchNorm2d", "(2, 32, 32, 32)", 64);
  want += row("2", "ReLU", "(2, 32, 32, 32)", 0);
  want += row("3", "Conv2d", "(2, 32, 32, 32)", 32 * 32 * 9);
  want += row("4", "BatchNorm2d", "(2, 32, 32, 32)", 64);
  want += row("5", "ReLU", "(2, 32, 32, 32)", 0);
  want += row("6", "MaxPool2d", "(2, 32, 16, 16)", 0);
  want += row("7", "Conv2d", "(2, 64, 16, 16)", 64 * 32 * 9);
  want += row("8", "BatchNorm2d", "(2, 64, 16, 16)", 128);
  want += row("9", "ReLU", "(2, 64, 16, 16)", 0);
  want += row("10", "Conv2d", "(2, 64, 16, 16)", 64 * 64 * 9);
  want += row("11", "BatchNorm2d", "(2, 64, 16, 16)", 128);
  want += row("12", "ReLU", "(2, 64, 16, 16)", 0);
  want += row("13", "MaxPool2d", "(2, 64, 8, 8)", 0);
  want += row("14", "Conv2d", "(2, 128, 8, 8)", 128 * 64 * 9);
  want += row("15", "BatchNorm2d", "(2, 128, 8, 8)", 256);
  want += row("16", "ReLU", "(2, 128, 8, 8)", 0);
  want += row("17", "MaxPool2d", "(2, 128, 4, 4)", 0);
  want += row("18", "Flatten", "(2, 2048)", 0);
  want += row("19", "Linear", "(2, 10)", 20490);
  want += std::string(74, '-') + "\n";
  // 864 + 64 + 9216 + 64 + 18432 + 128 + 36864 + 128 + 73728 + 256 + 20490 = 160,234 (0.16M).
  // Buffers: running_mean + running_var = 2 * (32 + 32 + 64 + 64 + 128) = 640, plus 5 counters.
  want += "Total params: 160234\nTrainable params: 160234\nBuffers: 645 values\n"
          "Input (2, 3, 32, 32) -> output (2, 10)\n";
  CHECK(s == want);
  // The summary's forward ran in eval mode: no BatchNorm counted a batch.
  for (const auto& [k, b] : model->named_buffers())
    if (k.find("num_batches_tracked") != std::string::npos) CHECK(b.item() == 0.0f);
  // A wrong input shape is conv2d's error, and the training flag is still restored.
  CHECK_THROWS_WITH(summary(*model, {2, 4, 32, 32}), Catch::Contains("conv2d: input (2, 4, 32, 32) has 4 channels"));
  CHECK(model->is_training());
}

TEST_CASE("ReLU(inplace): writes max(x, 0) over its input under NoGradGuard, on the parallel path too") {
  manual_seed(3);
  for (int64_t n : {int64_t(7), int64_t(1) << 17}) {
    CAPTURE(n);
    Tensor x = randn({n});
    const Tensor expected = relu(x);  // out of place
    ReLU r(/*inplace=*/true);
    NoGradGuard g;
    Tensor y = r.forward(x);
    CHECK(y.data_ptr() == x.data_ptr());
    NORMA_CHECK_CLOSE(y, expected, 0, 0);
  }
}

TEST_CASE("relu backward: the gradient passes where the output is positive and is 0 elsewhere, NaN included") {
  // As PyTorch's threshold_backward: where(y > 0, dy, 0), so a NaN gradient
  // reaching a zeroed unit stops there. Also on the parallel path.
  for (int64_t n : {int64_t(4), int64_t(1) << 16}) {
    CAPTURE(n);
    std::vector<float> xv(static_cast<size_t>(n)), gv(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      xv[size_t(i)] = i % 4 == 0 ? 2.0f : i % 4 == 1 ? -1.0f : i % 4 == 2 ? 0.0f : 3.0f;
      gv[size_t(i)] = i % 4 == 3 ? NAN : float(i % 7) + 1.0f;
    }
    gv[1] = NAN;  // at a negative input: must not come through
    Tensor x = from_vector(xv, {n}).requires_grad_();
    relu(x).backward(from_vector(gv, {n}));
    const std::vector<float> dx = x.grad().to_vector();
    int64_t wrong = 0;
    for (size_t i = 0; i < size_t(n); ++i) {
      const bool ok = xv[i] > 0 ? (std::isnan(gv[i]) ? std::isnan(dx[i]) : dx[i] == gv[i]) : dx[i] == 0.0f;
      wrong += !ok;
    }
    CHECK(wrong == 0);
  }
}
