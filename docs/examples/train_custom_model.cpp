// A model of one's own trained by Norma's trainer (app::train, apps/trainer.h),
// for docs/custom_models.md: first with the command line's recipe, then with
// an optimizer and schedule of its own, interrupted (as by Ctrl-C) and resumed
// from the checkpoint, and last by name from the model registry. The data is a
// toy CIFAR-10 written to a temporary directory: each class has its own colour.
// Checks its own numbers and exits non-zero when one is wrong.
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>

#include <norma/apps/models.h>
#include <norma/apps/trainer.h>
#include <norma/norma.h>

using namespace norma;
namespace fs = std::filesystem;

// conv -> BatchNorm2d -> ReLU -> conv -> BatchNorm2d -> ReLU -> global average -> linear.
// `bn` makes each BatchNorm2d from its channel count (null: PyTorch's), so a
// --bn-preset and synchronised BatchNorm reach it when it is built by name.
class SmallNet : public nn::Module {
 public:
  explicit SmallNet(const std::function<nn::ModulePtr(int64_t)>& bn = nullptr) {
    auto norm = [&](int64_t c) { return bn ? bn(c) : std::make_shared<nn::BatchNorm2d>(c); };
    conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(nn::Conv2dOptions(3, 8, 3).padding(1).bias(false)));
    bn1 = register_module("bn1", norm(8));
    conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(
                                         nn::Conv2dOptions(8, 16, 3).stride(2).padding(1).bias(false)));
    bn2 = register_module("bn2", norm(16));
    fc = register_module("fc", std::make_shared<nn::Linear>(16, 10));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = relu(bn1->forward(conv1->forward(x)));  // (N, 8, 32, 32)
    h = relu(bn2->forward(conv2->forward(h)));         // (N, 16, 16, 16)
    return fc->forward(h.mean({2, 3}));                // (N, 10)
  }
  std::string name() const override { return "SmallNet"; }

  std::shared_ptr<nn::Conv2d> conv1, conv2;  // weights (8, 3, 3, 3), (16, 8, 3, 3)
  nn::ModulePtr bn1, bn2;                    // over 8 and 16 channels
  std::shared_ptr<nn::Linear> fc;            // weight (10, 16)
};

// `n` CIFAR-10 records (label, then 3x32x32 bytes) in `path`: label i % 10,
// pixels its class's colour plus noise in [-20, 20].
void write_records(const fs::path& path, int n, unsigned seed) {
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < n; ++i) {
    const int label = i % 10, base[3] = {25 * label, 255 - 25 * label, (label % 2) * 200 + 20};
    out.put(char(label));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) {
        seed = seed * 1103515245u + 12345u;
        out.put(char(std::clamp(base[c] + int((seed >> 16) % 41) - 20, 0, 255)));
      }
  }
}

int check(bool ok, const char* what) {
  fmt::print("{}: {}\n", what, ok ? "yes" : "NO");
  return ok ? 0 : 1;
}

int main() {
  const fs::path dir = fs::temp_directory_path() / fmt::format("norma_train_custom_{}", ::getpid());
  fs::create_directories(dir);
  for (int b = 1; b <= 5; ++b) write_records(dir / fmt::format("data_batch_{}.bin", b), 40, b);
  write_records(dir / "test_batch.bin", 50, 99);
  int failures = 0;

  // The command line's recipe for a model of one's own: what `norma train`
  // does, with the config's defaults (SGD, one-cycle lr, label smoothing, ...).
  app::TrainConfig config;
  config.data = dir.string();
  config.epochs = 2;
  config.batch_size = 20;  // 200 images: 10 steps per epoch
  config.threads = 1;
  config.quiet = true;     // no progress bar
  manual_seed(config.seed);
  SmallNet model;
  app::TrainResult r = app::train(model, config);
  failures += check(r.steps == 20 && r.test_acc > 0.5, "the CLI's recipe: 20 steps, test accuracy above 50%");

  // Parts of one's own: an optimizer over the model's parameters and a
  // schedule made for the run's total steps. A checkpoint after every epoch;
  // SIGINT (Ctrl-C) stops the run after the current step and saves it.
  auto parts_for = [](SmallNet& m) {
    app::TrainParts parts;
    parts.optimizer = std::make_shared<optim::AdamW>(m.parameters(), /*lr=*/0.01);
    parts.lr_scheduler = [](optim::Optimizer& opt, int64_t total_steps) {
      return std::make_shared<optim::CosineAnnealingLR>(opt, total_steps);
    };
    return parts;
  };
  std::vector<double> straight, resumed;
  manual_seed(1);
  SmallNet a;
  config.on_step = [&](int64_t, double loss) { straight.push_back(loss); };
  const app::TrainResult full = app::train(a, config, parts_for(a));

  config.checkpoint = (dir / "run.safetensors").string();
  config.on_step = [&](int64_t step, double loss) {
    resumed.push_back(loss);
    if (step == 13) std::raise(SIGINT);  // as if Ctrl-C were pressed in epoch 2
  };
  manual_seed(1);
  SmallNet b;
  r = app::train(b, config, parts_for(b));
  failures += check(r.interrupted && r.steps == 13, "interrupted after step 13, checkpoint written");

  // A new model and optimizer (as in a new process) continue from the checkpoint.
  config.resume = config.checkpoint;
  config.on_step = [&](int64_t, double loss) { resumed.push_back(loss); };
  SmallNet c;
  r = app::train(c, config, parts_for(c));
  failures += check(r.steps == 20 && resumed == straight && r.test_loss == full.test_loss,
                    "resumed: the same 20 losses and test loss as the run without interruption");

  // By name: a registered model is built by app::train(config), `norma eval`'s
  // app::evaluate_checkpoint, and the CLI's --model in a program of one's own.
  nn::register_model("small-net", [](const auto& bn) { return std::make_shared<SmallNet>(bn); });
  app::TrainConfig by_name;
  by_name.data = dir.string();
  by_name.model = "small-net";
  by_name.epochs = 1;
  by_name.batch_size = 20;
  by_name.threads = 1;
  by_name.quiet = true;
  by_name.checkpoint = (dir / "small-net.safetensors").string();
  r = app::train(by_name);
  app::EvalConfig eval;
  eval.data = dir.string();
  eval.checkpoint = by_name.checkpoint;  // it records the model's name, "small-net"
  const app::EvalResult e = app::evaluate_checkpoint(eval);
  failures += check(e.acc == r.test_acc, "by name: the checkpoint evaluates to the run's test accuracy");

  fs::remove_all(dir);
  return failures == 0 ? 0 : 1;
}
