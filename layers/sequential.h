// nn::Sequential: children run in order; unnamed children are called "0", "1", ...
// exactly as in PyTorch, so state_dict names match ("3.weight").
#pragma once
#include <initializer_list>

#include "fusion.h"
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
    plan_ = plan_fusion(modules_);
    return m;
  }
  // The children in order, some runs of them as one fused op (fusion.h).
  Tensor forward(const Tensor& x) override { return run_fused(modules_, plan_, x); }
  size_t size() const { return modules_.size(); }
  const ModulePtr& operator[](size_t i) const {
    if (i >= modules_.size()) fail("Sequential: index {} is out of range for {} modules", i, modules_.size());
    return modules_[i];
  }
  std::string name() const override { return "Sequential"; }

 private:
  std::vector<ModulePtr> modules_;
  std::vector<FusedStep> plan_;  // how forward runs modules_
};

}  // namespace norma::nn
