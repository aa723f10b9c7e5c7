// nn::Sequential: children run in order; unnamed children are called "0", "1", ...
// exactly as in PyTorch, so state_dict names match ("3.weight").
#pragma once
#include <initializer_list>

#include "batchnorm2d.h"
#include "module.h"

namespace norma::nn {

class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<ModulePtr> modules) {
    for (const ModulePtr& m : modules) push_back(m);
  }
  // Appends under the next index name.
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    return push_back(std::to_string(modules_.size()), std::move(m));
  }
  // Appends under a chosen name (PyTorch's OrderedDict form).
  template <class M>
  std::shared_ptr<M> push_back(const std::string& name, std::shared_ptr<M> m) {
    register_module(name, m);
    modules_.push_back(m);
    return m;
  }
  // A BatchNorm2d followed by a ReLU runs as one op (fuses_with_relu): one
  // pass over the activations each way instead of two; so does such a pair
  // followed by a 2x2 MaxPool2d (fuses_with_relu_pool), whose full-size
  // output is then never written. For inference (no gradient to record, the
  // BatchNorm2d on running statistics) a Conv2d before them joins in
  // (conv_bn_relu_eval): its output is never written either.
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    const size_t n = modules_.size();
    for (size_t i = 0; i < n; ++i) {
      if (i + 2 < n) {
        const Module* pool = i + 3 < n ? modules_[i + 3].get() : nullptr;
        if (pool && !fuses_with_relu_pool(*modules_[i + 1], *modules_[i + 2], *pool)) pool = nullptr;
        Tensor y = conv_bn_relu_eval(*modules_[i], *modules_[i + 1], *modules_[i + 2], pool, h);
        if (y.defined()) {
          h = y, i += pool ? 3 : 2;
          continue;
        }
      }
      if (i + 2 < n && fuses_with_relu_pool(*modules_[i], *modules_[i + 1], *modules_[i + 2]))
        h = static_cast<BatchNorm2d&>(*modules_[i]).forward_relu_pool(h), i += 2;
      else if (i + 1 < n && fuses_with_relu(*modules_[i], *modules_[i + 1]))
        h = static_cast<BatchNorm2d&>(*modules_[i++]).forward_relu(h);
      else
        h = modules_[i]->forward(h);
    }
    return h;
  }
  size_t size() const { return modules_.size(); }
  const ModulePtr& operator[](size_t i) const {
    if (i >= modules_.size()) fail("Sequential: index {} is out of range for {} modules", i, modules_.size());
    return modules_[i];
  }
  std::string name() const override { return "Sequential"; }

 private:
  std::vector<ModulePtr> modules_;
};

}  // namespace norma::nn
