#include "module.h"

#include <set>

#include "../core/autograd.h"

namespace norma::nn {

Tensor Module::forward(const Tensor&) {
  fail("{}: this module has no single-tensor forward()", name());
}

void Module::check_new_name(const std::string& n, const char* what) const {
  if (n.empty() || n.find('.') != std::string::npos)
    fail("{}: {} name '{}' must be non-empty and contain no '.'", name(), what, n);
  auto taken = [&](const auto& list) {
    for (const auto& [k, v] : list)
      if (k == n) return true;
    return false;
  };
  if (taken(params_) || taken(buffers_) || taken(children_))
    fail("{}: cannot register {} '{}': the name is already taken", name(), what, n);
}

Tensor Module::register_parameter(std::string n, Tensor t, bool requires_grad) {
  check_new_name(n, "parameter");
  if (!t.defined()) fail("{}: parameter '{}' is an undefined tensor", name(), n);
  t.requires_grad_(requires_grad);
  params_.emplace_back(std::move(n), t);
  return t;
}

Tensor Module::register_buffer(std::string n, Tensor t) {
  check_new_name(n, "buffer");
  if (!t.defined()) fail("{}: buffer '{}' is an undefined tensor", name(), n);
  buffers_.emplace_back(std::move(n), t);
  return t;
}

void Module::add_child(std::string n, std::shared_ptr<Module> m) {
  check_new_name(n, "submodule");
  if (!m) fail("{}: submodule '{}' is null", name(), n);
  children_.emplace_back(std::move(n), std::move(m));
}

void Module::replace_tensor(const std::string& n, const Tensor& t) {
  for (auto* list : {&params_, &buffers_})
    for (auto& [k, v] : *list)
      if (k == n) {
        v = t;
        return;
      }
  fail("{}: no parameter or buffer named '{}' to replace", name(), n);
}

namespace {
// "features" + "0" -> "features.0"; either side may be empty (the root module).
std::string join(const std::string& prefix, const std::string& n) {
  if (prefix.empty()) return n;
  return n.empty() ? prefix : prefix + "." + n;
}
}  // namespace

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (auto& [n, c] : children_)
    for (auto& [sub, m] : c->named_modules()) out.emplace_back(join(n, sub), m);
  return out;
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out = params_;
  if (recurse)
    for (const auto& [n, c] : children_)
      for (auto& [k, t] : c->named_parameters()) out.emplace_back(join(n, k), t);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out = buffers_;
  if (recurse)
    for (const auto& [n, c] : children_)
      for (auto& [k, t] : c->named_buffers()) out.emplace_back(join(n, k), t);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& [n, c] : children_) out.push_back(c);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const { return children_; }

NamedTensors Module::state_dict() const {
  // PyTorch's order: a module's own parameters, then its buffers, then each child's.
  NamedTensors out = params_;
  out.insert(out.end(), buffers_.begin(), buffers_.end());
  for (const auto& [n, c] : children_)
    for (auto& [k, t] : c->state_dict()) out.emplace_back(join(n, k), t);
  return out;
}

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  NamedTensors mine = state_dict();
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> given;
  for (const auto& [k, t] : state) given.insert(k);
  std::vector<std::pair<Tensor, Tensor>> copies;  // validated first, copied only if all is well
  for (auto& [k, dst] : mine) {
    // [&k = k]: clang 14 cannot capture a structured binding implicitly (C++20 allows it).
    auto it = std::find_if(state.begin(), state.end(), [&k = k](const auto& kv) { return kv.first == k; });
    if (it == state.end()) {
      missing.push_back(k);
    } else if (!it->second.defined() || it->second.shape() != dst.shape()) {
      mismatched.push_back(fmt::format("{}: checkpoint has {}, model has {}", k,
                                       it->second.defined() ? shape_str(it->second.shape()) : "undefined",
                                       dst.shape()));
    } else {
      copies.emplace_back(dst, it->second);
    }
  }
  for (const auto& [k, t] : state) {
    bool known = std::any_of(mine.begin(), mine.end(), [&k = k](const auto& kv) { return kv.first == k; });
    if (!known) unexpected.push_back(k);
  }
  if (!mismatched.empty() || (strict && (!missing.empty() || !unexpected.empty()))) {
    std::string msg = fmt::format("load_state_dict: cannot load into {}:", name());
    for (auto& m : missing) msg += "\n  missing key: " + m;
    for (auto& u : unexpected) msg += "\n  unexpected key: " + u;
    for (auto& s : mismatched) msg += "\n  size mismatch for " + s;
    fail("{}", msg);
  }
  NoGradGuard g;
  for (auto& [dst, src] : copies) dst.copy_(src);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad() {
  for (Tensor& p : parameters()) p.zero_grad();
}

void Module::apply(const std::function<void(Module&)>& fn) {
  for (auto& [n, c] : children_) c->apply(fn);
  fn(*this);
}

std::string Module::repr() const {
  std::string s = name() + "(" + extra_repr();
  if (children_.empty()) return s + ")";
  s += "\n";
  for (const auto& [n, c] : children_) {
    std::string sub = c->repr();
    // Indent nested lines by two spaces.
    std::string ind;
    for (char ch : sub) {
      ind += ch;
      if (ch == '\n') ind += "  ";
    }
    s += "  (" + n + "): " + ind + "\n";
  }
  return s + ")";
}

}  // namespace norma::nn
