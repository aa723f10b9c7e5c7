#include "models.h"

#include <fmt/ranges.h>

#include <mutex>
#include <utility>

#include <norma/core/autograd.h>
#include <norma/layers/activation.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/fusion.h>
#include <norma/layers/linear.h>
#include <norma/layers/pooling.h>
#include <norma/layers/residual.h>

namespace norma::nn {

std::shared_ptr<Sequential> cifar_small(const std::function<ModulePtr(int64_t)>& bn) {
  auto norm = [&](int64_t c) { return bn ? bn(c) : std::make_shared<BatchNorm2d>(c); };
  auto m = std::make_shared<Sequential>();
  auto block = [&](int64_t in, int64_t out) {
    m->push_back(std::make_shared<Conv2d>(Conv2dOptions(in, out, 3).padding(1).bias(false)));
    m->push_back(norm(out));
    m->push_back(std::make_shared<ReLU>(true));
  };
  block(3, 32);
  block(32, 32);
  m->push_back(std::make_shared<MaxPool2d>(2));
  block(32, 64);
  block(64, 64);
  m->push_back(std::make_shared<MaxPool2d>(2));
  block(64, 128);
  m->push_back(std::make_shared<MaxPool2d>(2));
  m->push_back(std::make_shared<Flatten>());
  m->push_back(std::make_shared<Linear>(2048, 10));
  return m;
}

CifarSmall::CifarSmall(const std::function<ModulePtr(int64_t)>& bn) {
  auto conv = [&](const char* name, int64_t in, int64_t out) {
    return register_module(name, std::make_shared<Conv2d>(Conv2dOptions(in, out, 3).padding(1).bias(false)));
  };
  auto norm = [&](const char* name, int64_t c) {
    auto m = std::dynamic_pointer_cast<BatchNorm2d>(bn ? bn(c) : std::make_shared<BatchNorm2d>(c));
    if (!m) fail("CifarSmall: the norm factory must make a BatchNorm2d (for {} channels)", c);
    return register_module(name, m);
  };
  conv1 = conv("conv1", 3, 32), bn1 = norm("bn1", 32);
  conv2 = conv("conv2", 32, 32), bn2 = norm("bn2", 32);
  conv3 = conv("conv3", 32, 64), bn3 = norm("bn3", 64);
  conv4 = conv("conv4", 64, 64), bn4 = norm("bn4", 64);
  conv5 = conv("conv5", 64, 128), bn5 = norm("bn5", 128);
  fc = register_module("fc", std::make_shared<Linear>(2048, 10));
}

Tensor CifarSmall::forward(const Tensor& x) {
  Tensor h = conv_bn_relu(*conv1, *bn1, x);            // (N, 32, 32, 32)
  h = conv_bn_relu(*conv2, *bn2, h, /*pool=*/true);    // (N, 32, 16, 16)
  h = conv_bn_relu(*conv3, *bn3, h);                   // (N, 64, 16, 16)
  h = conv_bn_relu(*conv4, *bn4, h, /*pool=*/true);    // (N, 64, 8, 8)
  h = conv_bn_relu(*conv5, *bn5, h, /*pool=*/true);    // (N, 128, 4, 4)
  return fc->forward(h.flatten(1));
}

std::shared_ptr<Sequential> resnet8(const std::function<ModulePtr(int64_t)>& bn) {
  auto m = std::make_shared<Sequential>();
  m->push_back(std::make_shared<Conv2d>(Conv2dOptions(3, 16, 3).padding(1).bias(false)));
  m->push_back(bn ? bn(16) : std::make_shared<BatchNorm2d>(16));
  m->push_back(std::make_shared<ReLU>(true));
  m->push_back(std::make_shared<BasicBlock>(16, 16, 1, bn));
  m->push_back(std::make_shared<BasicBlock>(16, 32, 2, bn));
  m->push_back(std::make_shared<BasicBlock>(32, 64, 2, bn));
  m->push_back(std::make_shared<AdaptiveAvgPool2d>(1));
  m->push_back(std::make_shared<Flatten>());
  m->push_back(std::make_shared<Linear>(64, 10));
  return m;
}

namespace {

// The registry: names in the order they were added, each with its factory; the
// built-in models first. Guarded by registry_mutex().
std::vector<std::pair<std::string, ModelFactory>>& registry() {
  static std::vector<std::pair<std::string, ModelFactory>> models{
      {"cifar-small", [](const auto& bn) { return cifar_small(bn); }},
      {"cifar-small-class", [](const auto& bn) { return std::make_shared<CifarSmall>(bn); }},
      {"resnet8", [](const auto& bn) { return resnet8(bn); }}};
  return models;
}
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

std::vector<std::string> names_locked() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

}  // namespace

std::vector<std::string> model_names() {
  std::lock_guard lock(registry_mutex());
  return names_locked();
}

void register_model(const std::string& name, ModelFactory factory) {
  std::lock_guard lock(registry_mutex());
  if (name.empty() || !factory)
    fail("register_model: a model needs a non-empty name and a factory, got name '{}' and {} factory", name,
         factory ? "a" : "a null");
  for (const auto& [known, f] : registry())
    if (known == name)
      fail("register_model: '{}' is already registered; known models: {}", name, fmt::join(names_locked(), ", "));
  registry().emplace_back(name, std::move(factory));
}

std::shared_ptr<Module> make_model(const std::string& name, const std::function<ModulePtr(int64_t)>& bn) {
  ModelFactory factory;
  {
    std::lock_guard lock(registry_mutex());
    for (const auto& [known, f] : registry())
      if (known == name) factory = f;
    if (!factory) fail("make_model: unknown model '{}'; accepted names: {}", name, fmt::join(names_locked(), ", "));
  }
  return factory(bn);  // outside the lock: a factory may build another model by name
}

namespace {
int64_t count(const std::vector<Tensor>& ts) {
  int64_t n = 0;
  for (const Tensor& t : ts) n += t.numel();
  return n;
}
}  // namespace

std::string summary(Module& model, const Shape& input_shape) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard g;
  std::string out = fmt::format("{:<24}{:<16}{:<22}{:>12}\n", "Layer", "Type", "Output shape", "Params");
  out += std::string(74, '-') + "\n";
  Tensor x = zeros(input_shape);
  auto row = [&](const std::string& name, Module& m, const Tensor& y) {
    out += fmt::format("{:<24}{:<16}{:<22}{:>12}\n", name, m.name(), shape_str(y.shape()),
                       count(m.parameters()));
  };
  try {
    if (auto* seq = dynamic_cast<Sequential*>(&model)) {
      auto children = seq->named_children();
      for (auto& [name, child] : children) {
        x = child->forward(x);
        row(name, *child, x);
      }
    } else {
      x = model.forward(x);
      row(model.name(), model, x);
    }
  } catch (...) {
    model.train(was_training);
    throw;
  }
  model.train(was_training);
  const int64_t total = count(model.parameters()), trainable = [&] {
    int64_t n = 0;
    for (const Tensor& p : model.parameters()) n += p.requires_grad() ? p.numel() : 0;
    return n;
  }();
  out += std::string(74, '-') + "\n";
  out += fmt::format("Total params: {}\nTrainable params: {}\nBuffers: {} values\nInput {} -> output {}\n", total,
                     trainable, count(model.buffers()), shape_str(input_shape), shape_str(x.shape()));
  return out;
}

}  // namespace norma::nn
