// nn::Module: the base of every layer and model, after libtorch's C++ frontend.
//
// A module owns named parameters (what the optimizer trains), named buffers
// (state saved in checkpoints but never trained: BatchNorm's running
// statistics) and named submodules. Names are collected recursively with dots,
// exactly as PyTorch's state_dict() names them ("features.0.weight",
// "3.running_mean"), so checkpoints move between Norma and PyTorch.
//
// Writing a model: derive from Module, register members in the constructor,
// implement forward():
//
//   struct Block : nn::Module {
//     std::shared_ptr<nn::Conv2d> conv;
//     Block() { conv = register_module("conv", std::make_shared<nn::Conv2d>(8, 8, 3, 1, 1)); }
//     Tensor forward(const Tensor& x) override { return relu(conv->forward(x)) + x; }
//   };
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.h"

namespace norma::nn {

using norma::NamedTensors;

class Module {
 public:
  virtual ~Module() = default;

  // The computation. Modules with one input and one output override this.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // The class name ("Conv2d") and its arguments ("3, 32, kernel_size=3") for printing.
  virtual std::string name() const { return "Module"; }
  virtual std::string extra_repr() const { return ""; }

  // --- members, recursively with dotted names
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  // This module (name "") and every descendant, depth first, in registration order.
  std::vector<std::pair<std::string, Module*>> named_modules();

  // Parameters then buffers per module, in PyTorch's state_dict order.
  NamedTensors state_dict() const;
  // Copies values into the registered tensors (shapes must match). Strict mode
  // reports every missing key, unexpected key and shape mismatch in one error;
  // non-strict ignores missing and unexpected keys but never a shape mismatch.
  void load_state_dict(const NamedTensors& state, bool strict = true);

  // --- mode
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  void zero_grad();
  // Calls fn on this module and every descendant (depth first, children first
  // like PyTorch's Module.apply), e.g. for custom initialisation.
  void apply(const std::function<void(Module&)>& fn);

  // "Sequential(\n  (0): Conv2d(3, 32, ...)\n ...)" like PyTorch's print(model).
  std::string repr() const;

 protected:
  // Return the registered handle (it shares storage with the stored one).
  Tensor register_parameter(std::string name, Tensor t, bool requires_grad = true);
  Tensor register_buffer(std::string name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> m) {
    add_child(std::move(name), m);
    return m;
  }
  // Replaces a registered parameter or buffer by name (e.g. a layer that
  // re-initialises a tensor of another shape). The member handle must be updated too.
  void replace_tensor(const std::string& name, const Tensor& t);

 private:
  void add_child(std::string name, std::shared_ptr<Module> m);
  void check_new_name(const std::string& name, const char* what) const;

  bool training_ = true;
  NamedTensors params_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

using ModulePtr = std::shared_ptr<Module>;

}  // namespace norma::nn
