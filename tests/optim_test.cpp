// Optimizers: ten steps of SGD, Adam and AdamW against PyTorch 1.13
// (tests/fixtures/optim_golden.json from scripts/gen_optim_fixtures.py), the
// first-step rules, skipped parameters, no allocation after the first step,
// state_dict round trips and refusals, and every hyper-parameter error.
#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>

#include "test_util.h"

#include <norma/layers/batchnorm2d.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/linear.h>
#include <norma/optim/adam.h>
#include <norma/optim/sgd.h>

using namespace norma;
using namespace norma::optim;
using nlohmann::json;
using Catch::Matchers::Contains;

namespace {

const json& golden() {
  static const json doc = [] {
    const char* path = NORMA_SOURCE_DIR "/tests/fixtures/optim_golden.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error(std::string("cannot open ") + path);
    return json::parse(in);
  }();
  return doc;
}

Shape shape_of(const json& j) { return Shape(j.get<std::vector<int64_t>>()); }

std::vector<Tensor> initial_params() {
  std::vector<Tensor> params;
  for (size_t i = 0; i < golden()["params"].size(); ++i)
    params.push_back(
        from_vector(golden()["params"][i].get<std::vector<float>>(), shape_of(golden()["shapes"][i])).requires_grad_());
  return params;
}

// Gradients of golden step `step` (a null one leaves the parameter without a grad).
void set_grads(std::vector<Tensor>& params, size_t step) {
  const json& grads = golden()["grads"][step];
  for (size_t i = 0; i < params.size(); ++i) {
    if (grads[i].is_null())
      params[i].zero_grad();
    else
      params[i].set_grad(from_vector(grads[i].get<std::vector<float>>(), params[i].shape()));
  }
}

// Fills a group's options from a fixture's options object (PyTorch's names).
void set_options(ParamGroup& g, const json& opts) {
  for (const auto& [k, v] : opts.items()) {
    if (k == "params") continue;
    if (k == "lr") g.lr = v.get<double>();
    else if (k == "momentum") g.momentum = v.get<double>();
    else if (k == "dampening") g.dampening = v.get<double>();
    else if (k == "weight_decay") g.weight_decay = v.get<double>();
    else if (k == "nesterov") g.nesterov = v.get<bool>();
    else if (k == "amsgrad") g.amsgrad = v.get<bool>();
    else if (k == "betas") g.beta1 = v[0].get<double>(), g.beta2 = v[1].get<double>();
    else FAIL("unknown option in fixture: " << k);
  }
}

// The optimizer a fixture entry describes: its defaults are PyTorch's, then the options.
std::unique_ptr<Optimizer> make_optimizer(const json& entry, const std::vector<Tensor>& params) {
  std::vector<ParamGroup> groups;
  if (entry.contains("groups")) {
    for (const json& jg : entry["groups"]) {
      ParamGroup g;
      for (size_t i : jg["params"].get<std::vector<size_t>>()) g.params.push_back(params[i]);
      set_options(g, jg);
      groups.push_back(g);
    }
  } else {
    groups = single_group(params);
  }
  ParamGroup d;
  set_options(d, entry["options"]);
  const std::string kind = entry["class"];
  if (kind == "SGD")
    return std::make_unique<SGD>(groups, *d.lr, d.momentum.value_or(0), d.dampening.value_or(0),
                                 d.weight_decay.value_or(0), d.nesterov.value_or(false));
  std::pair<double, double> betas{d.beta1.value_or(0.9), d.beta2.value_or(0.999)};
  if (kind == "Adam")
    return std::make_unique<Adam>(groups, *d.lr, betas, 1e-8, d.weight_decay.value_or(0), d.amsgrad.value_or(false));
  if (kind == "AdamW")
    return std::make_unique<AdamW>(groups, *d.lr, betas, 1e-8, d.weight_decay.value_or(1e-2),
                                   d.amsgrad.value_or(false));
  throw std::runtime_error("unknown optimizer in fixture: " + kind);
}

// Runs the fixture's ten steps; checks every parameter after every step
// (|got - want| <= 1e-5 |want| + 1e-7) and reports the worst element seen.
void check_golden(const std::string& name) {
  const json& entry = golden()["optimizers"][name];
  std::vector<Tensor> params = initial_params();
  auto opt = make_optimizer(entry, params);
  double worst_abs = 0;
  std::string worst_where = "nowhere (all equal)";
  bool ok = true;
  for (size_t step = 0; step < entry["steps"].size(); ++step) {
    set_grads(params, step);
    opt->step();
    for (size_t i = 0; i < params.size(); ++i) {
      auto d = test::compare(params[i].to_vector(), entry["steps"][step][i].get<std::vector<float>>(), 1e-5, 1e-7);
      ok = ok && d.ok;
      if (d.max_abs > worst_abs || (!d.ok && worst_abs == 0)) {
        worst_abs = d.max_abs;
        worst_where = fmt::format("step {}, param {}, flat index {}: got {} want {}", step + 1, i, d.index, d.got,
                                  d.want);
      }
    }
  }
  INFO(name << ": max abs diff " << worst_abs << " at " << worst_where);
  CHECK(ok);
}

// A param and its grad as one-element tensors, for hand-computed steps.
Tensor scalar_param(float value, float grad) {
  Tensor p = tensor({value}).requires_grad_();
  p.set_grad(tensor({grad}));
  return p;
}

}  // namespace

TEST_CASE("SGD: ten steps match PyTorch 1.13 (plain, momentum, nesterov, weight decay, dampening)") {
  for (const char* name : {"sgd", "sgd_momentum", "sgd_nesterov", "sgd_weight_decay", "sgd_dampening"}) {
    DYNAMIC_SECTION(name) { check_golden(name); }
  }
}

TEST_CASE("Adam/AdamW: ten steps match PyTorch 1.13 (weight decay, amsgrad, param groups)") {
  for (const char* name :
       {"adam", "adam_weight_decay", "adamw", "adam_amsgrad", "adamw_amsgrad", "adamw_groups"}) {
    DYNAMIC_SECTION(name) { check_golden(name); }
  }
}

TEST_CASE("SGD: the first step copies the gradient into the momentum buffer, undamped") {
  Tensor p = scalar_param(1.0f, 2.0f);
  SGD opt({p}, 0.1, /*momentum=*/0.9, /*dampening=*/0.5);
  opt.step();  // buf = 2 (not 0.5 * 2), p = 1 - 0.1 * 2
  CHECK(opt.state(0).buffers[0].item() == 2.0f);
  CHECK(p.item() == Approx(0.8f).epsilon(1e-7));
  opt.step();  // buf = 0.9 * 2 + 0.5 * 2 = 2.8, p = 0.8 - 0.28
  CHECK(opt.state(0).buffers[0].item() == Approx(2.8f).epsilon(1e-7));
  CHECK(p.item() == Approx(0.52f).epsilon(1e-6));
  CHECK(opt.state(0).step == 2);
}

TEST_CASE("SGD: without momentum it keeps no state, nesterov looks ahead") {
  Tensor p = scalar_param(1.0f, 1.0f);
  SGD plain({p}, 0.5);
  plain.step();
  CHECK(plain.state(0).buffers.empty());
  CHECK(p.item() == 0.5f);

  Tensor q = scalar_param(0.0f, 1.0f);
  SGD nesterov({q}, 1.0, 0.5, 0, 0, true);
  nesterov.step();  // buf = 1, d = 1 + 0.5 * 1
  CHECK(q.item() == -1.5f);
}

TEST_CASE("Adam: the first step moves every parameter by about lr against its gradient") {
  Tensor p = from_vector({1.0f, 1.0f, 1.0f}, {3}).requires_grad_();
  p.set_grad(from_vector({1e-3f, -5.0f, 200.0f}, {3}));
  Adam opt({p}, 0.01);
  opt.step();  // m_hat = g, v_hat = g^2: the step is lr * g / (|g| + eps)
  auto v = p.to_vector();
  CHECK(v[0] == Approx(0.99).epsilon(1e-4));
  CHECK(v[1] == Approx(1.01).epsilon(1e-6));
  CHECK(v[2] == Approx(0.99).epsilon(1e-6));
  CHECK(opt.state(0).step == 1);
  CHECK(opt.state(0).buffers.size() == 2);
}

TEST_CASE("AdamW: decays the parameter by lr * weight_decay before the Adam step") {
  Tensor p = scalar_param(2.0f, 0.0f);  // zero gradient: only the decay moves it
  AdamW opt({p}, 0.1, {0.9, 0.999}, 1e-8, 0.5);
  opt.step();
  CHECK(p.item() == Approx(2.0f * (1 - 0.1 * 0.5)).epsilon(1e-7));
}

TEST_CASE("optim: parameters without a gradient are skipped and keep their step count") {
  Tensor a = scalar_param(1.0f, 1.0f), b = tensor({3.0f}).requires_grad_();
  Adam opt({a, b}, 0.1);
  opt.step();
  opt.step();
  CHECK(opt.state(0).step == 2);
  CHECK(opt.state(1).step == 0);
  CHECK(opt.state(1).buffers.empty());  // no state until its first step
  CHECK(b.item() == 3.0f);
  b.set_grad(tensor({1.0f}));
  opt.step();
  CHECK(opt.state(1).step == 1);
  CHECK(b.item() == Approx(2.9f).epsilon(1e-6));  // a first step: bias correction from step 1
}

TEST_CASE("optim: zero_grad drops every gradient") {
  Tensor a = scalar_param(1.0f, 1.0f), b = scalar_param(2.0f, 2.0f);
  SGD opt({{.params = {a}}, {.params = {b}}}, 0.1);
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
  opt.step();  // nothing to do
  CHECK(a.item() == 1.0f);
  CHECK(opt.state(0).step == 0);
}

TEST_CASE("optim: a param group's lr can be changed between steps") {
  Tensor a = scalar_param(1.0f, 1.0f), b = scalar_param(1.0f, 1.0f);
  SGD opt({{.params = {a}}, {.params = {b}, .lr = 0.5}}, 0.1);
  REQUIRE(opt.param_groups().size() == 2);
  CHECK(*opt.param_groups()[0].lr == 0.1);
  CHECK(*opt.param_groups()[1].lr == 0.5);
  CHECK(*opt.param_groups()[1].momentum == 0.0);  // completed from the defaults
  opt.param_groups()[0].lr = 0.25;
  opt.step();
  CHECK(a.item() == 0.75f);
  CHECK(b.item() == 0.5f);
}

TEST_CASE("optim: decay_groups puts 1-D parameters (biases, BatchNorm) in a group without weight decay") {
  struct Net : nn::Module {
    std::shared_ptr<nn::Conv2d> conv;
    std::shared_ptr<nn::BatchNorm2d> bn;
    std::shared_ptr<nn::Linear> fc;
    Net() {
      conv = register_module("conv", std::make_shared<nn::Conv2d>(1, 2, 3));
      bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(2));
      fc = register_module("fc", std::make_shared<nn::Linear>(4, 3));
    }
  } net;
  auto groups = decay_groups(net, 5e-4);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].params.size() == 2);  // conv.weight, fc.weight
  CHECK(groups[1].params.size() == 4);  // conv.bias, bn.weight, bn.bias, fc.bias
  CHECK(groups[0].params[0].is_same(net.conv->weight));
  CHECK(groups[0].params[1].is_same(net.fc->weight));
  for (const Tensor& p : groups[1].params) CHECK(p.dim() == 1);

  SGD opt(groups, 0.1, 0.9, 0, /*weight_decay=*/0.1);
  CHECK(*opt.param_groups()[0].weight_decay == 5e-4);
  CHECK(*opt.param_groups()[1].weight_decay == 0.0);
  // With zero gradients only weight decay moves a parameter.
  std::vector<std::vector<float>> before;
  for (const ParamGroup& g : opt.param_groups())
    for (Tensor p : g.params) {
      p.set_grad(zeros_like(p));
      before.push_back(p.to_vector());
    }
  opt.step();
  CHECK(net.fc->weight.to_vector() != before[1]);
  CHECK(net.bn->weight.to_vector() == before[3]);
  CHECK(net.fc->bias.to_vector() == before[5]);
}

TEST_CASE("optim: after the first step, steps allocate no memory") {
  for (const char* kind : {"SGD", "Adam"}) {
    DYNAMIC_SECTION(kind) {
      std::vector<Tensor> params = {randn({64, 32}).requires_grad_(), randn({32}).requires_grad_()};
      for (Tensor& p : params) p.set_grad(randn(p.shape()));
      std::unique_ptr<Optimizer> opt;
      if (std::string(kind) == "SGD")
        opt = std::make_unique<SGD>(params, 0.1, 0.9, 0, 1e-4, true);
      else
        opt = std::make_unique<AdamW>(params, 1e-3, std::pair{0.9, 0.999}, 1e-8, 1e-2, true);
      opt->step();  // allocates the state
      const AllocatorStats before = allocator_stats();
      for (int i = 0; i < 5; ++i) opt->step();
      const AllocatorStats after = allocator_stats();
      CHECK(after.fresh_allocs == before.fresh_allocs);
      CHECK(after.cached_allocs == before.cached_allocs);
      CHECK(after.bytes_in_use == before.bytes_in_use);
    }
  }
}

TEST_CASE("optim: a step is an in-place write that autograd notices") {
  Tensor p = tensor({2.0f}).requires_grad_();
  Tensor y = (p * p).sum();
  p.set_grad(tensor({1.0f}));
  SGD opt({p}, 0.1);
  opt.step();
  CHECK_THROWS_WITH(y.backward(), Contains("modified"));
}

namespace {
// Runs golden steps first_step .. first_step + steps - 1.
void run_steps(Optimizer& opt, std::vector<Tensor>& params, size_t first_step, size_t steps) {
  for (size_t s = first_step; s < first_step + steps; ++s) {
    set_grads(params, s);
    opt.step();
  }
}
}  // namespace

TEST_CASE("optim: state_dict round trip continues identically") {
  for (const char* name : {"sgd_momentum", "adam_amsgrad", "adamw_groups"}) {
    DYNAMIC_SECTION(name) {
      const json& entry = golden()["optimizers"][name];
      // Straight through: ten steps.
      std::vector<Tensor> straight = initial_params();
      auto a = make_optimizer(entry, straight);
      run_steps(*a, straight, 0, 10);

      // Five steps, save (cloned: the state shares storage), then a fresh
      // optimizer on copies of the parameters loads it and does five more.
      std::vector<Tensor> first = initial_params();
      auto b = make_optimizer(entry, first);
      run_steps(*b, first, 0, 5);
      StateDict saved = b->state_dict();
      for (auto& [k, t] : saved.tensors) t = t.clone();
      saved.meta = json::parse(saved.meta.dump());  // through text, as a checkpoint would be
      std::vector<Tensor> resumed;
      for (const Tensor& p : first) resumed.push_back(p.detach().clone().requires_grad_());
      b.reset();
      auto d = make_optimizer(entry, resumed);
      d->load_state_dict(saved);
      run_steps(*d, resumed, 5, 5);
      for (size_t i = 0; i < straight.size(); ++i) CHECK(resumed[i].to_vector() == straight[i].to_vector());
      CHECK(d->state(1).step == a->state(1).step);
    }
  }
}

TEST_CASE("optim: state_dict names the state like PyTorch and records options and steps") {
  std::vector<Tensor> params = initial_params();
  Adam opt(params, 0.01, {0.9, 0.999}, 1e-8, 0, true);
  run_steps(opt, params, 0, 4);  // parameter 1 has no gradient at step 4
  StateDict sd = opt.state_dict();
  std::vector<std::string> names;
  for (const auto& [k, t] : sd.tensors) names.push_back(k);
  CHECK(names == std::vector<std::string>{"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.max_exp_avg_sq",
                                          "state.1.exp_avg", "state.1.exp_avg_sq", "state.1.max_exp_avg_sq",
                                          "state.2.exp_avg", "state.2.exp_avg_sq", "state.2.max_exp_avg_sq"});
  CHECK(sd.meta["optimizer"] == "Adam");
  CHECK(sd.meta["steps"] == json::array({4, 3, 4}));
  CHECK(sd.meta["param_groups"][0]["lr"] == 0.01);
  CHECK(sd.meta["param_groups"][0]["amsgrad"] == true);
  CHECK(sd.meta["param_groups"][0]["params"] == json::array({0, 1, 2}));
}

TEST_CASE("optim: load_state_dict refuses a state that does not fit, naming what differs") {
  std::vector<Tensor> params = initial_params();
  Adam opt(params, 0.01);
  run_steps(opt, params, 0, 2);
  const StateDict good = opt.state_dict();
  auto refuses = [&](const StateDict& sd, const std::string& what) {
    Adam other(initial_params(), 0.01);
    CHECK_THROWS_WITH(other.load_state_dict(sd), Contains(what));
    CHECK(other.state(0).step == 0);  // nothing applied
  };
  {
    SGD sgd(initial_params(), 0.1, 0.9);
    CHECK_THROWS_WITH(sgd.load_state_dict(good), Contains("SGD: load_state_dict: the state is from \"Adam\", not SGD"));
  }
  {
    Adam two({{.params = {params[0]}}, {.params = {params[1], params[2]}}}, 0.01);
    CHECK_THROWS_WITH(two.load_state_dict(good), Contains("the state has 1 param groups, this optimizer has 2"));
  }
  {
    Adam fewer({params[0], params[1]}, 0.01);
    CHECK_THROWS_WITH(fewer.load_state_dict(good), Contains("the state has steps for 3 parameters, this optimizer has 2"));
  }
  StateDict sd = good;
  sd.meta = json::array({1, 2});
  refuses(sd, "Adam: load_state_dict: meta must be an object with optimizer, param_groups and steps");
  sd = good;
  sd.meta.erase("steps");
  refuses(sd, "Adam: load_state_dict: meta must be an object with optimizer, param_groups and steps");
  sd = good;
  sd.meta["param_groups"][0]["params"] = json::array({0, 1});
  sd.meta["steps"] = json::array({2, 2, 2});
  refuses(sd, "param group 0 of the state has 2 parameters, this optimizer's has 3");

  sd = good;
  sd.tensors[1].second = zeros({7});
  refuses(sd, "size mismatch for state.0.exp_avg_sq: the state has (7,), the parameter has (2, 3)");

  sd = good;
  sd.tensors.erase(sd.tensors.begin());
  refuses(sd, "missing tensor: state.0.exp_avg");

  sd = good;
  sd.tensors.emplace_back("state.0.momentum_buffer", zeros({2, 3}));
  sd.tensors.emplace_back("state.9.exp_avg", zeros({2, 3}));
  sd.tensors.emplace_back("exp_avg", zeros({2, 3}));
  refuses(sd, "unexpected tensor: state.0.momentum_buffer\n  unexpected tensor: state.9.exp_avg\n"
              "  unexpected tensor: exp_avg");

  sd = good;
  sd.meta["steps"][2] = 0;
  refuses(sd, "unexpected tensor: state.2.exp_avg (parameter 2 has not stepped)");

  sd = good;
  sd.meta["steps"][2] = -1;
  refuses(sd, "step count -1 of parameter 2 is not a non-negative integer");

  sd = good;
  sd.meta["param_groups"][0]["beta2"] = 1.5;
  refuses(sd, "Adam: param group 0: beta2 1.5 is outside [0, 1)");

  sd = good;
  sd.meta["param_groups"][0].erase("eps");
  refuses(sd, "param group 0 of the state lacks eps");

  sd = good;
  sd.meta["param_groups"][0].erase("amsgrad");
  refuses(sd, "param group 0 of the state lacks amsgrad");

  sd = good;
  sd.meta["param_groups"][0]["amsgrad"] = 1;
  refuses(sd, "param group 0: amsgrad must be true or false, got 1");

  sd = good;
  sd.meta["param_groups"][0]["params"] = json::array({0, 2, 1});
  refuses(sd, "param group 0 lists parameter 2 where 1 was expected");

  sd = good;
  sd.meta["param_groups"][0]["momentum"] = 0.9;
  refuses(sd, "param group 0 of the state sets momentum, which Adam does not have");

  sd = good;
  sd.meta["param_groups"][0]["nesterov"] = false;
  refuses(sd, "param group 0 of the state sets nesterov, which Adam does not have");

  sd = good;
  sd.meta["param_groups"][0]["lr"] = "fast";
  refuses(sd, "param group 0: lr must be a number, got \"fast\"");

  sd = good;
  sd.meta["param_groups"][0]["colour"] = 1;
  refuses(sd, "param group 0 of the state has an unknown option colour");

  sd = good;
  sd.meta["param_groups"][0] = 3;
  refuses(sd, "param group 0 of the state is not an object: 3");

  sd = good;
  sd.meta = json::object();
  refuses(sd, "meta must be an object with optimizer, param_groups and steps");
}

TEST_CASE("optim: load_state_dict restores the options and reuses the state's memory") {
  std::vector<Tensor> params = initial_params();
  SGD opt(params, 0.1, 0.9);
  run_steps(opt, params, 0, 2);
  StateDict sd = opt.state_dict();
  for (auto& [k, t] : sd.tensors) t = t.clone();
  sd.meta["param_groups"][0]["lr"] = 0.05;
  std::vector<Tensor> other_params = initial_params();
  SGD other(other_params, 0.1, 0.9);
  run_steps(other, other_params, 0, 1);  // has its own buffers already
  REQUIRE(other.state(0).buffers.size() == 1);
  const float* buffer = other.state(0).buffers[0].data_ptr();
  other.load_state_dict(sd);
  CHECK(*other.param_groups()[0].lr == 0.05);
  CHECK(other.state(0).buffers[0].data_ptr() == buffer);
  CHECK(other.state(0).buffers[0].to_vector() == sd.tensors[0].second.to_vector());
  CHECK(other.state(0).step == 2);
}

TEST_CASE("optim: hyper-parameters are validated in the constructor, naming optimizer, option and value") {
  auto p = [] { return std::vector<Tensor>{tensor({1.0f}).requires_grad_()}; };
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(SGD(p(), -0.1), "SGD: lr -0.1 must be finite and >= 0");
  CHECK_THROWS_WITH(SGD(p(), inf), "SGD: lr inf must be finite and >= 0");
  CHECK_THROWS_WITH(SGD(p(), nan), "SGD: lr nan must be finite and >= 0");
  CHECK_THROWS_WITH(SGD(p(), 0.1, -0.9), "SGD: momentum -0.9 must be finite and >= 0");
  CHECK_THROWS_WITH(SGD(p(), 0.1, 0.9, nan), "SGD: dampening nan must be finite");
  CHECK_THROWS_WITH(SGD(p(), 0.1, 0, 0, -1e-4), "SGD: weight_decay -0.0001 must be finite and >= 0");
  CHECK_THROWS_WITH(SGD(p(), 0.1, 0, 0, 0, true),
                    "SGD: nesterov needs momentum > 0 and dampening 0, got momentum 0 and dampening 0");
  CHECK_THROWS_WITH(SGD(p(), 0.1, 0.9, 0.1, 0, true),
                    "SGD: nesterov needs momentum > 0 and dampening 0, got momentum 0.9 and dampening 0.1");
  CHECK_THROWS_WITH(Adam(p(), -1e-3), "Adam: lr -0.001 must be finite and >= 0");
  CHECK_THROWS_WITH(Adam(p(), 1e-3, {-0.1, 0.999}), "Adam: beta1 -0.1 is outside [0, 1)");
  CHECK_THROWS_WITH(Adam(p(), 1e-3, {1.0, 0.999}), "Adam: beta1 1 is outside [0, 1)");
  CHECK_THROWS_WITH(Adam(p(), 1e-3, {0.9, 1.5}), "Adam: beta2 1.5 is outside [0, 1)");
  CHECK_THROWS_WITH(Adam(p(), 1e-3, {0.9, nan}), "Adam: beta2 nan is outside [0, 1)");
  CHECK_THROWS_WITH(Adam(p(), 1e-3, {0.9, 0.999}, -1e-8), "Adam: eps -1e-08 must be finite and >= 0");
  CHECK_THROWS_WITH(Adam(p(), 1e-3, {0.9, 0.999}, 1e-8, -0.1), "Adam: weight_decay -0.1 must be finite and >= 0");
  CHECK_THROWS_WITH(AdamW(p(), 1e-3, {0.9, 0.999}, 1e-8, -0.1), "AdamW: weight_decay -0.1 must be finite and >= 0");
  CHECK_THROWS_WITH(AdamW(p(), 1e-3, {0.9, 2.0}), "AdamW: beta2 2 is outside [0, 1)");

  // A group's own options are checked too, naming the group.
  std::vector<ParamGroup> groups(2);
  groups[0].params = p();
  groups[1].params = p();
  groups[1].lr = -1.0;
  CHECK_THROWS_WITH(SGD(groups, 0.1), "SGD: param group 1: lr -1 must be finite and >= 0");
  groups[1].lr.reset();
  groups[1].beta2 = 1.0;
  CHECK_THROWS_WITH(Adam(groups), "Adam: param group 1: beta2 1 is outside [0, 1)");
  CHECK_THROWS_WITH(SGD(groups, 0.1), "SGD: param group 1 sets beta2, which SGD does not have");
  groups[1].beta2.reset();
  groups[1].momentum = 0.9;
  CHECK_THROWS_WITH(Adam(groups), "Adam: param group 1 sets momentum, which Adam does not have");
  groups[1].momentum.reset();
  groups[1].amsgrad = true;
  CHECK_THROWS_WITH(SGD(groups, 0.1), "SGD: param group 1 sets amsgrad, which SGD does not have");
}

TEST_CASE("optim: the parameters are checked in the constructor") {
  CHECK_THROWS_WITH(SGD(std::vector<Tensor>{}, 0.1), "SGD: got an empty parameter list");
  CHECK_THROWS_WITH(Adam(std::vector<ParamGroup>(2)), "Adam: got an empty parameter list");
  Tensor a = zeros({2, 3}).requires_grad_();
  CHECK_THROWS_WITH(SGD({a, a}, 0.1), "SGD: parameter 1 of shape (2, 3) appears more than once in the param groups");
  CHECK_THROWS_WITH(Adam({{.params = {a}}, {.params = {a}}}),
                    "Adam: parameter 1 of shape (2, 3) appears more than once in the param groups");
  CHECK_THROWS_WITH(SGD({a, Tensor()}, 0.1), "SGD: parameter 1 (param group 0) is an undefined tensor");
  Tensor w = zeros({3, 2}).requires_grad_();
  Tensor wt;
  {
    NoGradGuard no_grad;  // a view that is still a leaf
    wt = w.t();
  }
  CHECK_THROWS_WITH(SGD({wt}, 0.1), Contains("SGD: parameter 0 of shape (2, 3) (strides (1, 2)) is not contiguous"));
  CHECK_THROWS_WITH(SGD({a * 2.0f}, 0.1), Contains("SGD: parameter 0 of shape (2, 3) is not a leaf tensor (it was computed by "
                                                   "mul); optimize the tensors you created"));
}
