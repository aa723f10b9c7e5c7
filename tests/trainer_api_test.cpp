// The trainer as an API for any model (apps/trainer.h): a model class of the
// test's own trained with its own optimizer, schedule and datasets, resumed
// exactly from a checkpoint; and the model registry (apps/models.h) that
// `norma train --model` and train(config) build from.
#include <catch2/catch.hpp>

#include <csignal>
#include <nlohmann/json.hpp>

#include <norma/apps/models.h>
#include <norma/apps/trainer.h>
#include <norma/norma.h>

#include "cifar_synth.h"
#include "cli.h"

using namespace norma;
using namespace norma::test;
using Catch::Contains;

namespace {

// conv 3->8 -> BatchNorm2d -> ReLU -> global average -> linear 8->10: small
// enough to train 20 steps in a second. `bn` as nn::make_model gives it.
class TinyNet : public nn::Module {
 public:
  explicit TinyNet(const std::function<nn::ModulePtr(int64_t)>& bn = nullptr) {
    conv = register_module("conv", std::make_shared<nn::Conv2d>(nn::Conv2dOptions(3, 8, 3).padding(1).bias(false)));
    norm = register_module("norm", bn ? bn(8) : std::make_shared<nn::BatchNorm2d>(8));
    fc = register_module("fc", std::make_shared<nn::Linear>(8, 10));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = relu(norm->forward(conv->forward(x)));  // (N, 8, 32, 32)
    return fc->forward(h.mean({2, 3}));                 // (N, 10)
  }
  std::string name() const override { return "TinyNet"; }

  std::shared_ptr<nn::Conv2d> conv;  // weight (8, 3, 3, 3)
  nn::ModulePtr norm;                // over 8 channels
  std::shared_ptr<nn::Linear> fc;    // weight (10, 8)
};

app::TrainConfig tiny_config(const TempDir& dir) {
  app::TrainConfig c;
  c.data = dir.str("data");
  c.epochs = 2;
  c.batch_size = 20;
  c.test_limit = 40;
  c.threads = 1;
  c.quiet = true;
  return c;
}

// The "extra"."run" settings a Norma checkpoint records.
nlohmann::json run_settings(const std::string& checkpoint) {
  const SafetensorsFile f = load_safetensors(checkpoint);
  return nlohmann::json::parse(f.metadata.at("norma"))["extra"]["run"];
}

}  // namespace

TEST_CASE("train: a custom model with its own optimizer, schedule and data resumes exactly") {
  TempDir dir("trainer_api_resume");
  write_learnable_cifar10(dir.str("data"), 40, 40);  // 200 training images: 10 steps per epoch
  app::TrainConfig c = tiny_config(dir);
  const auto train_set = std::make_shared<const data::CifarDataset>(
      data::CifarDataset::load(dir.str("data"), data::Split::train));
  const auto test_set = std::make_shared<const data::CifarDataset>(
      data::CifarDataset::load(dir.str("data"), data::Split::test, data::CifarKind::cifar10, 40));
  // Every run builds its parts afresh, as a new process would.
  auto parts_for = [&](TinyNet& model) {
    app::TrainParts p;
    p.optimizer = std::make_shared<optim::Adam>(model.parameters(), 0.01);
    p.lr_scheduler = [](optim::Optimizer& opt, int64_t total_steps) {
      return std::make_shared<optim::CosineAnnealingLR>(opt, total_steps);
    };
    p.train_dataset = train_set;
    p.test_dataset = test_set;
    return p;
  };

  std::vector<double> straight, resumed;
  manual_seed(3);
  TinyNet a;
  c.on_step = [&](int64_t, double loss) { straight.push_back(loss); };
  const app::TrainResult full = app::train(a, c, parts_for(a));
  REQUIRE(straight.size() == 20);
  CHECK(straight.back() < straight.front());  // it learns

  manual_seed(3);
  TinyNet b;
  c.checkpoint = dir.file("ck.safetensors");
  c.on_step = [&](int64_t step, double loss) {
    resumed.push_back(loss);
    if (step == 13) std::raise(SIGINT);  // mid-way through epoch 2
  };
  const app::TrainResult first = app::train(b, c, parts_for(b));
  CHECK(first.interrupted);
  CHECK(first.steps == 13);
  const nlohmann::json run = run_settings(c.checkpoint);
  CHECK(run["model"] == "TinyNet");  // the class's name, with no model_name given
  CHECK(run["optimizer"] == "Adam");
  CHECK(run["schedule"] == "custom");

  manual_seed(99);  // other initial weights: resuming must replace them all
  TinyNet r;
  c.resume = c.checkpoint;
  c.on_step = [&](int64_t, double loss) { resumed.push_back(loss); };
  const app::TrainResult second = app::train(r, c, parts_for(r));
  CHECK_FALSE(second.interrupted);
  CHECK(second.steps == 20);
  CHECK(resumed == straight);  // bit for bit
  CHECK(second.test_loss == full.test_loss);
  CHECK(second.train_loss == full.train_loss);
  const Tensor wa = a.fc->weight, wr = r.fc->weight;
  CHECK(wa.to_vector() == wr.to_vector());
}

TEST_CASE("train: a model added with register_model trains by name, from the CLI's flags, and evaluates") {
  TempDir dir("trainer_api_registry");
  write_learnable_cifar10(dir.str("data"), 40, 40);
  nn::register_model("tiny-net", [](const auto& bn) { return std::make_shared<TinyNet>(bn); });
  const std::vector<std::string> names = nn::model_names();
  CHECK(names.back() == "tiny-net");
  CHECK(std::dynamic_pointer_cast<TinyNet>(nn::make_model("tiny-net")));

  // The CLI built after the registration accepts it, as it accepts the built-in ones.
  app::CliOptions opt;
  auto cli = app::make_cli(opt);
  const char* argv[] = {"norma", "train", "--model", "tiny-net"};
  REQUIRE_NOTHROW(cli->parse(4, argv));
  CHECK(opt.train.model == "tiny-net");

  app::TrainConfig c = tiny_config(dir);
  c.model = "tiny-net";
  c.epochs = 1;
  c.checkpoint = dir.file("ck.safetensors");
  const app::TrainResult r = app::train(c);
  CHECK(r.steps == 10);
  CHECK(run_settings(c.checkpoint)["model"] == "tiny-net");

  // norma eval's path builds the model the checkpoint names from the registry.
  app::EvalConfig e;
  e.data = c.data;
  e.checkpoint = c.checkpoint;
  e.limit = 40;
  e.model = "resnet8";  // the checkpoint's "tiny-net" wins over this
  const app::EvalResult ev = app::evaluate_checkpoint(e);
  CHECK(ev.loss == Approx(r.test_loss).epsilon(1e-6));
  CHECK(ev.acc == r.test_acc);
}

TEST_CASE("errors: register_model refuses an empty name, a null factory and a taken name") {
  auto factory = [](const auto& bn) { return std::make_shared<TinyNet>(bn); };
  CHECK_THAT(error_of([&] { nn::register_model("", factory); }),
             Contains("register_model: a model needs a non-empty name and a factory, got name '' and a factory"));
  CHECK_THAT(error_of([&] { nn::register_model("no-factory", nullptr); }),
             Contains("register_model: a model needs a non-empty name and a factory, got name 'no-factory' and a null "
                      "factory"));
  // The known models are listed, the built-in ones first (and any registered by a test before this one).
  CHECK_THAT(error_of([&] { nn::register_model("resnet8", factory); }),
             Contains("register_model: 'resnet8' is already registered; known models: cifar-small, cifar-small-class, "
                      "resnet8"));
  nn::register_model("tiny-net-2", factory);
  CHECK_THAT(error_of([&] { nn::register_model("tiny-net-2", factory); }),
             Contains("register_model: 'tiny-net-2' is already registered; known models: cifar-small, "
                      "cifar-small-class, resnet8, ") && Contains(", tiny-net-2"));
  CHECK_THAT(error_of([] { nn::make_model("vgg"); }),
             Contains("make_model: unknown model 'vgg'; accepted names: cifar-small, cifar-small-class, resnet8, ") &&
                 Contains(", tiny-net-2"));
}
