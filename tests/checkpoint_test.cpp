// Training checkpoints (apps/checkpoint.h): a run interrupted, saved and
// resumed in fresh objects gives bit for bit the uninterrupted run; metadata
// round trips; every promised error is provoked and leaves everything as it was.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include <norma/apps/models.h>
#include <norma/layers/activation.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/apps/checkpoint.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/dropout.h>
#include <norma/layers/linear.h>
#include <norma/layers/loss.h>
#include <norma/layers/pooling.h>
#include <norma/layers/sequential.h>

#include "temp_dir.h"
#include "test_util.h"

using namespace norma;
using nlohmann::json;
using Catch::Contains;
namespace fs = std::filesystem;

using norma::test::TempDir;

using norma::test::check_error;

namespace {


std::vector<uint32_t> bits(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  std::vector<uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * 4);
  return out;
}

std::vector<uint32_t> bits(const std::vector<float>& v) { return bits(tensor(v)); }

// Every tensor of `a` and `b` has the same name, shape and bits.
void check_identical(const NamedTensors& a, const NamedTensors& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("tensor " << a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.shape() == b[i].second.shape());
    CHECK(bits(a[i].second) == bits(b[i].second));
  }
}

NamedTensors snapshot(const NamedTensors& state) {
  NamedTensors out;
  for (const auto& [name, t] : state) out.emplace_back(name, t.clone());
  return out;
}


// conv -> BatchNorm2d (running stats, batch counter) -> ReLU -> pool -> Dropout
// (draws from the generator every step) -> Linear; input (8, 2, 4, 4), 3 classes.
std::shared_ptr<nn::Sequential> make_model(uint64_t seed, int64_t classes = 3) {
  manual_seed(seed);
  return std::make_shared<nn::Sequential>(std::initializer_list<nn::ModulePtr>{
      std::make_shared<nn::Conv2d>(2, 4, 3, 1, 1, 1, 1, false), std::make_shared<nn::BatchNorm2d>(4),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(),
      std::make_shared<nn::Dropout>(0.25), std::make_shared<nn::Linear>(16, classes)});
}

// An optimizer and its scheduler, built on a model.
struct Trainer {
  std::unique_ptr<optim::Optimizer> opt;
  std::unique_ptr<optim::LRScheduler> sched;
};
using MakeTrainer = std::function<Trainer(nn::Module&)>;

Trainer sgd_onecycle(nn::Module& m) {
  Trainer t;
  t.opt = std::make_unique<optim::SGD>(m.parameters(), 0.1, 0.9, 0, 1e-4, true);
  t.sched = std::make_unique<optim::OneCycleLR>(*t.opt, 0.5, 10);
  return t;
}

Trainer adam_steplr(nn::Module& m) {
  Trainer t;
  t.opt = std::make_unique<optim::Adam>(optim::decay_groups(m, 1e-3), 1e-2, std::pair{0.9, 0.99}, 1e-8, 0, true);
  t.sched = std::make_unique<optim::StepLR>(*t.opt, 3, 0.5);
  return t;
}

// One step on a batch drawn from the generator (as a shuffling loader would).
float train_step(nn::Module& model, Trainer& t) {
  Tensor x = randn({8, 2, 4, 4});
  std::vector<float> labels(8);
  for (float& l : labels) l = float(random_u32() % 3);
  t.opt->zero_grad();
  Tensor loss = nn::cross_entropy(model(x), tensor(labels));
  loss.backward();
  t.opt->step();
  t.sched->step();
  return loss.item();
}

// 10 steps straight vs 5 steps, save, fresh objects (another seed), load, 5 steps.
void check_exact_resume(const MakeTrainer& make_trainer) {
  TempDir dir("checkpoint");
  const std::string path = dir.file("run.safetensors");

  auto full_model = make_model(1);
  Trainer full = make_trainer(*full_model);
  std::vector<float> full_losses;
  for (int i = 0; i < 10; ++i) full_losses.push_back(train_step(*full_model, full));

  auto first = make_model(1);
  Trainer first_t = make_trainer(*first);
  std::vector<float> losses;
  const GeneratorState before_steps = get_rng_state();
  for (int i = 0; i < 5; ++i) losses.push_back(train_step(*first, first_t));
  REQUIRE(get_rng_state().draws > before_steps.draws);  // the batches and dropout draw
  nn::save_checkpoint(path, *first, first_t.opt.get(), first_t.sched.get(), {.epoch = 0, .step = 5, .extra = {}});
  const GeneratorState saved_rng = get_rng_state();
  const NamedTensors saved_params = snapshot(first->state_dict());

  auto model = make_model(2);
  Trainer t = make_trainer(*model);
  manual_seed(12345);  // a generator elsewhere than at the save
  REQUIRE(bits(model->state_dict()[0].second) != bits(saved_params[0].second));
  nn::TrainingState state = nn::load_checkpoint(path, *model, t.opt.get(), t.sched.get());
  CHECK(state.step == 5);
  CHECK(get_rng_state().seed == saved_rng.seed);
  CHECK(get_rng_state().draws == saved_rng.draws);
  check_identical(model->state_dict(), saved_params);
  CHECK(t.sched->state_dict() == first_t.sched->state_dict());
  CHECK(t.opt->state_dict().meta == first_t.opt->state_dict().meta);
  for (int i = 0; i < 5; ++i) losses.push_back(train_step(*model, t));

  INFO("uninterrupted losses " << json(full_losses).dump() << "\nresumed losses " << json(losses).dump());
  CHECK(bits(losses) == bits(full_losses));
  check_identical(model->state_dict(), full_model->state_dict());  // parameters and buffers
  check_identical(t.opt->state_dict().tensors, full.opt->state_dict().tensors);
  CHECK(t.opt->state_dict().meta == full.opt->state_dict().meta);
  CHECK(t.sched->state_dict() == full.sched->state_dict());
}

}  // namespace

TEST_CASE("checkpoint: SGD momentum + OneCycleLR resumes bit for bit") { check_exact_resume(sgd_onecycle); }

TEST_CASE("checkpoint: Adam (amsgrad, two groups) + StepLR resumes bit for bit") {
  check_exact_resume(adam_steplr);
}

TEST_CASE("checkpoint: the file holds the model, optimizer/ tensors and the norma metadata") {
  TempDir dir("checkpoint");
  const std::string path = dir.file("ckpt.safetensors");
  auto model = make_model(3);
  Trainer t = sgd_onecycle(*model);
  train_step(*model, t);
  manual_seed((uint64_t(1) << 63) + 5);  // a seed only an unsigned 64-bit number holds
  random_u32();
  const GeneratorState rng = get_rng_state();
  const json extra = {{"best_accuracy", 0.8125}, {"note", "warm restart"}, {"loader", {3, 1, 4}}};
  nn::save_checkpoint(path, *model, t.opt.get(), t.sched.get(), {.epoch = 7, .step = 1234, .extra = extra});

  SafetensorsFile file = load_safetensors(path);
  CHECK(file.metadata.at("format") == "pt");
  const json meta = json::parse(file.metadata.at("norma"));
  CHECK(meta["format"] == 1);
  CHECK(meta["rng"]["seed"].get<uint64_t>() == rng.seed);
  CHECK(meta["rng"]["draws"].get<uint64_t>() == rng.draws);
  CHECK(meta["optimizer"]["optimizer"] == "SGD");
  CHECK(meta["optimizer_params"] == json({"0.weight", "1.weight", "1.bias", "6.weight", "6.bias"}));
  CHECK(meta["scheduler"]["scheduler"] == "OneCycleLR");
  std::vector<std::string> names;
  for (const auto& [name, tensor] : file.tensors) names.push_back(name);
  for (const auto& [name, tensor] : model->state_dict()) CHECK(std::count(names.begin(), names.end(), name) == 1);
  CHECK(std::count(names.begin(), names.end(), "optimizer/state.0.momentum_buffer") == 1);
  CHECK(names.size() == model->state_dict().size() + 5);

  auto other = make_model(4);
  Trainer other_t = sgd_onecycle(*other);
  manual_seed(0);
  nn::TrainingState state = nn::load_checkpoint(path, *other, other_t.opt.get(), other_t.sched.get());
  CHECK(state.epoch == 7);
  CHECK(state.step == 1234);
  CHECK(state.extra == extra);
  CHECK(get_rng_state().seed == rng.seed);
  CHECK(get_rng_state().draws == rng.draws);
}

TEST_CASE("checkpoint: its model keys load with nn::load, and without optimizer or scheduler") {
  TempDir dir("checkpoint");
  const std::string path = dir.file("ckpt.safetensors");
  auto model = make_model(5);
  Trainer t = adam_steplr(*model);
  train_step(*model, t);
  nn::save_checkpoint(path, *model, t.opt.get(), t.sched.get(), {});

  auto fresh = make_model(6);
  nn::load(*fresh, path);  // strict: the optimizer/ tensors are skipped
  check_identical(fresh->state_dict(), model->state_dict());

  auto weights_only = make_model(7);
  manual_seed(99);
  nn::load_checkpoint(path, *weights_only, nullptr, nullptr);
  check_identical(weights_only->state_dict(), model->state_dict());
}

TEST_CASE("checkpoint: a weights-only file (no norma metadata) loads into the model alone") {
  TempDir dir("checkpoint");
  const std::string path = dir.file("weights.safetensors");
  auto model = make_model(8);
  nn::save(*model, path, {{"format", "pt"}});  // as PyTorch's tools write it

  auto fresh = make_model(9);
  const GeneratorState rng = get_rng_state();
  nn::TrainingState state = nn::load_checkpoint(path, *fresh, nullptr, nullptr);
  check_identical(fresh->state_dict(), model->state_dict());
  CHECK(state.epoch == 0);
  CHECK(state.step == 0);
  CHECK(get_rng_state().draws == rng.draws);  // no generator state to restore

  Trainer t = sgd_onecycle(*fresh);
  check_error([&] { nn::load_checkpoint(path, *fresh, t.opt.get(), nullptr); },
              {path, "has no \"norma\" metadata", "no optimizer state to load"});
}

TEST_CASE("checkpoint: corrupt, missing or mismatched state is refused and nothing changes") {
  TempDir dir("checkpoint");
  auto saved = make_model(10);
  Trainer saved_t = sgd_onecycle(*saved);
  train_step(*saved, saved_t);
  const std::string good = dir.file("good.safetensors");
  nn::save_checkpoint(good, *saved, saved_t.opt.get(), saved_t.sched.get(), {.epoch = 1, .step = 1, .extra = {}});
  const json good_meta = json::parse(load_safetensors(good).metadata.at("norma"));

  // The target: trained one step on other data, so every piece of its state is set.
  auto model = make_model(11);
  Trainer t = sgd_onecycle(*model);
  train_step(*model, t);
  const NamedTensors model_before = snapshot(model->state_dict());
  const NamedTensors opt_before = snapshot(t.opt->state_dict().tensors);
  const json opt_meta_before = t.opt->state_dict().meta, sched_before = t.sched->state_dict();
  auto unchanged = [&] {
    check_identical(model->state_dict(), model_before);
    check_identical(t.opt->state_dict().tensors, opt_before);
    CHECK(t.opt->state_dict().meta == opt_meta_before);
    CHECK(t.sched->state_dict() == sched_before);
  };
  // `meta` as the "norma" metadata of the saved model's tensors.
  auto with_meta = [&](const std::string& name, const std::string& meta) {
    const std::string path = dir.file(name);
    save_safetensors(path, load_safetensors(good).tensors, {{"norma", meta}});
    return path;
  };
  auto refused = [&](const std::string& path, std::vector<std::string> pieces) {
    const GeneratorState rng = get_rng_state();
    pieces.push_back(path);
    check_error([&] { nn::load_checkpoint(path, *model, t.opt.get(), t.sched.get()); }, pieces);
    unchanged();
    CHECK(get_rng_state().draws == rng.draws);
  };

  SECTION("metadata that is not JSON") {
    refused(with_meta("corrupt.safetensors", R"({"format": 1, "epoch": )"),
            {"the \"norma\" metadata is not valid JSON"});
  }
  SECTION("metadata that is not an object") {
    refused(with_meta("array.safetensors", "[1, 2]"), {"must be a JSON object, got array"});
  }
  SECTION("another format version") {
    json meta = good_meta;
    meta["format"] = 2;
    refused(with_meta("v2.safetensors", meta.dump()), {"checkpoint format 2 is not supported", "reads format 1"});
  }
  SECTION("a malformed field") {
    json meta = good_meta;
    meta["step"] = "five";
    refused(with_meta("step.safetensors", meta.dump()), {"step must be an integer, got \"five\""});
    meta = good_meta;
    meta["rng"]["draws"] = -3;
    refused(with_meta("rng.safetensors", meta.dump()), {"rng must be", "-3"});
  }
  SECTION("no optimizer state when one is asked for") {
    const std::string path = dir.file("no_opt.safetensors");
    nn::save_checkpoint(path, *saved, nullptr, nullptr, {});
    refused(path, {"holds no optimizer state (it was saved without an optimizer)"});
  }
  SECTION("no scheduler state when one is asked for") {
    const std::string path = dir.file("no_sched.safetensors");
    nn::save_checkpoint(path, *saved, saved_t.opt.get(), nullptr, {});
    refused(path, {"holds no scheduler state"});
  }
  SECTION("a model of another shape") {
    const std::string path = dir.file("wide.safetensors");
    auto wide = make_model(12, 5);
    nn::save_checkpoint(path, *wide, nullptr, nullptr, {});
    check_error([&] { nn::load_checkpoint(path, *model, nullptr, nullptr); },
                {path, "size mismatch for 6.weight: checkpoint has (5, 16), model has (3, 16)",
                 "size mismatch for 6.bias: checkpoint has (5,), model has (3,)"});
    unchanged();
  }
  SECTION("the model loads but the optimizer does not: the model is rolled back") {
    const std::string path = dir.file("adam.safetensors");
    auto other = make_model(13);
    Trainer adam = adam_steplr(*other);
    train_step(*other, adam);
    nn::save_checkpoint(path, *other, adam.opt.get(), nullptr, {});
    check_error([&] { nn::load_checkpoint(path, *model, t.opt.get(), nullptr); },
                {path, "the state is from \"Adam\", not SGD"});
    unchanged();
  }
  SECTION("model and optimizer load but the scheduler does not: both are rolled back") {
    json meta = good_meta;
    meta["scheduler"]["scheduler"] = "StepLR";
    refused(with_meta("steplr.safetensors", meta.dump()), {"OneCycleLR: load_state_dict: the state is from \"StepLR\""});
  }
  SECTION("an optimizer over other parameters") {
    const std::string path = dir.file("renamed.safetensors");
    auto other = make_model(14);
    std::vector<Tensor> reversed = other->parameters();
    std::reverse(reversed.begin(), reversed.end());
    optim::SGD opt(reversed, 0.1, 0.9);
    nn::save_checkpoint(path, *other, &opt, nullptr, {});
    refused(path, {"the optimizer's parameters are not the ones saved",
                   "optimizer parameter 0 is \"6.bias\" in the file but \"0.weight\" here"});
  }
  SECTION("a scheduler of another optimizer") {
    optim::SGD other_opt(make_model(15)->parameters(), 0.1);
    check_error([&] { nn::save_checkpoint(dir.file("x.safetensors"), *model, &other_opt, t.sched.get(), {}); },
                {"save_checkpoint", "the scheduler (OneCycleLR) belongs to another optimizer"});
    check_error([&] { nn::load_checkpoint(good, *model, nullptr, t.sched.get()); },
                {"load_checkpoint", good, "the scheduler (OneCycleLR) needs its optimizer, which was not given"});
    unchanged();
  }
}
