// LR schedulers: 30 steps of each against PyTorch 1.13 (lr per group, and
// OneCycleLR's momentum / beta1), chaining, state round trips, and every error.
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <memory>

#include "test_util.h"

#include <norma/optim/adam.h>
#include <norma/optim/lr_scheduler.h>
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

// Two groups as in the generator: lr 0.1 and 0.01; SGD with momentum 0.9 or Adam.
std::unique_ptr<Optimizer> two_groups(bool adam) {
  std::vector<ParamGroup> groups(2);
  groups[0].params = {zeros({2}).requires_grad_()};
  groups[1].params = {zeros({3}).requires_grad_()};
  groups[1].lr = 0.01;
  if (adam) return std::make_unique<Adam>(groups, 0.1);
  return std::make_unique<SGD>(groups, 0.1, 0.9);
}

using Sched = std::shared_ptr<LRScheduler>;
using Milestones = std::vector<int64_t>;

// The schedulers of scripts/gen_optim_fixtures.py's SCHEDULERS, built in the same order.
Sched build(const std::string& name, Optimizer& o) {
  if (name == "step") return std::make_shared<StepLR>(o, 7, 0.5);
  if (name == "multistep") return std::make_shared<MultiStepLR>(o, Milestones{5, 12, 12, 20}, 0.3);
  if (name == "linear") return std::make_shared<LinearLR>(o, 0.25, 1.0, 8);
  if (name == "linear_default") return std::make_shared<LinearLR>(o);
  if (name == "cosine") return std::make_shared<CosineAnnealingLR>(o, 10, 0.001);
  if (name == "onecycle") return std::make_shared<OneCycleLR>(o, std::vector<double>{0.5, 0.05}, 30);
  if (name == "onecycle_three_phase_linear")
    return std::make_shared<OneCycleLR>(
        o, 0.01, 30, OneCycleOptions{.pct_start = 0.25, .anneal_strategy = Anneal::Linear, .three_phase = true});
  if (name == "warmup_cosine")
    return std::make_shared<SequentialLR>(
        o, std::vector<Sched>{std::make_shared<LinearLR>(o, 0.1, 1.0, 5), std::make_shared<CosineAnnealingLR>(o, 25)},
        Milestones{5});
  if (name == "sequential_three")
    return std::make_shared<SequentialLR>(
        o,
        std::vector<Sched>{std::make_shared<LinearLR>(o, 0.5, 1.0, 5), std::make_shared<StepLR>(o, 4, 0.5),
                           std::make_shared<MultiStepLR>(o, Milestones{3, 6}, 0.5)},
        Milestones{10, 18});
  if (name == "cosine_then_linear")
    return std::make_shared<SequentialLR>(
        o, std::vector<Sched>{std::make_shared<CosineAnnealingLR>(o, 10), std::make_shared<LinearLR>(o, 0.5, 1.0, 5)},
        Milestones{12});
  if (name == "chained")
    return std::make_shared<ChainedScheduler>(
        std::vector<Sched>{std::make_shared<LinearLR>(o, 0.2, 1.0, 5), std::make_shared<StepLR>(o, 7, 0.5)});
  throw std::runtime_error("no scheduler named " + name);
}

bool uses_adam(const std::string& name) { return name == "onecycle_three_phase_linear"; }

std::vector<double> momenta(const Optimizer& o, bool beta1) {
  std::vector<double> m;
  for (const ParamGroup& g : o.param_groups()) m.push_back(beta1 ? *g.beta1 : *g.momentum);
  return m;
}

// Tracks the worst relative difference between computed and golden values.
struct Worst {
  double rel = 0;
  std::string where = "nowhere (all equal)";
  void add(const std::vector<double>& got, const json& want, const std::string& what, size_t step) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      const double w = want[i].get<double>();
      const double r = std::fabs(got[i] - w) / std::max(std::fabs(w), 1e-300);
      if (r > rel || std::isnan(got[i])) {
        rel = std::isnan(got[i]) ? INFINITY : r;
        where = fmt::format("{} at step {}, group {}: got {:.17g} want {:.17g}", what, step, i, got[i], w);
      }
    }
  }
};

}  // namespace

TEST_CASE("LR schedulers: 30 steps match PyTorch 1.13 (lr per group, OneCycleLR momentum and beta1)") {
  for (const auto& [name, rec] : golden()["schedulers"].items()) {
    DYNAMIC_SECTION(name) {
      auto opt = two_groups(uses_adam(name));
      Sched sched = build(name, *opt);
      const bool beta1 = uses_adam(name);
      const char* mkey = beta1 ? "beta1" : "momentum";
      Worst worst;
      worst.add(sched->get_last_lr(), rec["lr"][0], "lr", 0);
      if (rec.contains(mkey)) worst.add(momenta(*opt, beta1), rec[mkey][0], mkey, 0);
      for (size_t step = 1; step < rec["lr"].size(); ++step) {
        opt->step();
        sched->step();
        worst.add(sched->get_last_lr(), rec["lr"][step], "lr", step);
        std::vector<double> group_lrs;  // what the optimizer will use
        for (const ParamGroup& g : opt->param_groups()) group_lrs.push_back(*g.lr);
        worst.add(group_lrs, rec["lr"][step], "group lr", step);
        if (rec.contains(mkey)) worst.add(momenta(*opt, beta1), rec[mkey][step], mkey, step);
      }
      INFO(name << ": max relative diff " << worst.rel << ", " << worst.where);
      CHECK(worst.rel <= 1e-12);
    }
  }
}

TEST_CASE("LR schedulers: the optimizer steps with the scheduled lr") {
  Tensor p = zeros({1}).requires_grad_();
  SGD opt({p}, 1.0);
  StepLR sched(opt, 2, 0.5);
  std::vector<float> seen;
  for (int i = 0; i < 5; ++i) {
    p.set_grad(ones({1}));
    const float before = p.item();
    opt.step();
    seen.push_back(before - p.item());
    sched.step();
  }
  CHECK(seen == std::vector<float>{1.0f, 1.0f, 0.5f, 0.5f, 0.25f});
  CHECK(sched.last_epoch() == 5);
  CHECK(*opt.param_groups()[0].initial_lr == 1.0);
}

TEST_CASE("LR schedulers: OneCycleLR refuses to step past total_steps") {
  auto opt = two_groups(false);
  OneCycleLR sched(*opt, 0.5, 3);
  sched.step();
  sched.step();  // the last of the 3 steps (epochs 0, 1, 2) reaches min_lr
  CHECK(sched.get_last_lr()[0] == Approx(0.5 / 25 / 1e4));
  sched.step();  // epoch 3: PyTorch still allows it (extrapolating the cosine)
  CHECK_THROWS_WITH(sched.step(), "OneCycleLR: step 4 is past total_steps 3");
}

TEST_CASE("LR schedulers: state_dict round trip continues identically") {
  for (const char* name : {"warmup_cosine", "onecycle", "chained", "multistep"}) {
    DYNAMIC_SECTION(name) {
      auto straight_opt = two_groups(false);
      Sched straight = build(name, *straight_opt);
      std::vector<std::vector<double>> want;
      for (int i = 0; i < 20; ++i) {
        straight->step();
        if (i >= 9) want.push_back(straight->get_last_lr());
      }

      auto first_opt = two_groups(false);
      Sched first = build(name, *first_opt);
      for (int i = 0; i < 9; ++i) first->step();
      const json sched_state = json::parse(first->state_dict().dump());
      const StateDict opt_state = first_opt->state_dict();

      auto opt = two_groups(false);
      Sched resumed = build(name, *opt);  // building moves the lrs; loading puts them back
      opt->load_state_dict(opt_state);
      resumed->load_state_dict(sched_state);
      CHECK(resumed->last_epoch() == first->last_epoch());
      std::vector<std::vector<double>> got;
      for (int i = 9; i < 20; ++i) {
        resumed->step();
        got.push_back(resumed->get_last_lr());
      }
      CHECK(got == want);
      CHECK(momenta(*opt, false) == momenta(*straight_opt, false));
    }
  }
}

TEST_CASE("LR schedulers: load_state_dict refuses another scheduler's state") {
  auto opt = two_groups(false);
  StepLR step(*opt, 3);
  LinearLR linear(*opt);
  CHECK_THROWS_WITH(linear.load_state_dict(step.state_dict()),
                    "LinearLR: load_state_dict: the state is from \"StepLR\", not LinearLR");
  json bad = step.state_dict();
  bad["base_lrs"] = json::array({0.1});
  CHECK_THROWS_WITH(step.load_state_dict(bad),
                    "StepLR: load_state_dict: the state is for 1 param groups, the optimizer has 2");
  bad = step.state_dict();
  bad.erase("last_epoch");
  CHECK_THROWS_WITH(step.load_state_dict(bad), Contains("StepLR: load_state_dict: malformed state ([json.exception"));
  auto a = std::make_shared<StepLR>(*opt, 3), b = std::make_shared<StepLR>(*opt, 5);
  SequentialLR seq(*opt, {a, b}, {4});
  json s = seq.state_dict();
  s["schedulers"].erase(1);
  CHECK_THROWS_WITH(seq.load_state_dict(s), "SequentialLR: load_state_dict: the state has 1 schedulers, this one has 2");
}

namespace {
// An optimizer with neither momentum nor betas: p -= lr * sign(g).
struct SignSGD : Optimizer {
  explicit SignSGD(std::vector<Tensor> params) : Optimizer("SignSGD", single_group(std::move(params)), options()) {
    validate_groups();
  }
  static ParamGroup options() {
    ParamGroup d;
    d.lr = 0.1;
    return d;
  }
  std::vector<std::string> state_names(const ParamGroup&) const override { return {}; }
  void update(const ParamGroup& g, const Tensor& p, const Tensor& grad, ParamState&, bool) override {
    for (int64_t i = 0; i < p.numel(); ++i)
      p.data_ptr()[i] -= float(*g.lr) * float((grad.data_ptr()[i] > 0) - (grad.data_ptr()[i] < 0));
  }
  void validate(const ParamGroup& g, const std::string& where) const override {
    check_nonnegative(where, "lr", *g.lr);
  }
};
}  // namespace

TEST_CASE("LR schedulers: OneCycleLR cycles an optimizer with neither momentum nor betas only without cycle_momentum") {
  Tensor p = scalar_tensor(0.0f).requires_grad_();
  SignSGD opt({p});
  CHECK_THROWS_WITH(OneCycleLR(opt, 1.0, 10),
                    "OneCycleLR: cycle_momentum needs an optimizer with momentum or betas; SignSGD has neither");
  OneCycleLR sched(opt, 1.0, 10, OneCycleOptions{.cycle_momentum = false});
  CHECK(sched.get_last_lr()[0] == Approx(1.0 / 25));
  p.set_grad(scalar_tensor(-3.0f));
  opt.step();
  CHECK(p.item() == Approx(1.0f / 25));
}

TEST_CASE("LR schedulers: arguments are validated, naming the scheduler, argument and value") {
  auto opt = two_groups(false);
  Optimizer& o = *opt;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(StepLR(o, 0), "StepLR: step_size 0 must be >= 1");
  CHECK_THROWS_WITH(StepLR(o, 3, -0.5), "StepLR: gamma -0.5 must be finite and >= 0");
  CHECK_THROWS_WITH(MultiStepLR(o, {2, 4}, nan), "MultiStepLR: gamma nan must be finite and >= 0");
  CHECK_THROWS_WITH(LinearLR(o, 0.0), "LinearLR: start_factor 0 is outside (0, 1]");
  CHECK_THROWS_WITH(LinearLR(o, 1.5), "LinearLR: start_factor 1.5 is outside (0, 1]");
  CHECK_THROWS_WITH(LinearLR(o, 0.5, -0.1), "LinearLR: end_factor -0.1 is outside [0, 1]");
  CHECK_THROWS_WITH(LinearLR(o, 0.5, 1.0, 0), "LinearLR: total_iters 0 must be >= 1");
  CHECK_THROWS_WITH(CosineAnnealingLR(o, 0), "CosineAnnealingLR: T_max 0 must be >= 1");
  CHECK_THROWS_WITH(CosineAnnealingLR(o, 10, inf), "CosineAnnealingLR: eta_min inf must be finite");
  CHECK_THROWS_WITH(OneCycleLR(o, 0.1, 0), "OneCycleLR: total_steps 0 must be >= 1");
  CHECK_THROWS_WITH(OneCycleLR(o, 0.1, 10, {.pct_start = 1.5}), "OneCycleLR: pct_start 1.5 is outside [0, 1]");
  CHECK_THROWS_WITH(OneCycleLR(o, std::vector<double>{0.1}, 10), "OneCycleLR: got 1 max_lrs for 2 param groups");
  CHECK_THROWS_WITH(OneCycleLR(o, 0.1, 10, {.div_factor = 0}),
                    "OneCycleLR: div_factor 0 and final_div_factor 10000 must be finite and > 0");
  CHECK_THROWS_WITH(OneCycleLR(o, 0.1, 10, {.final_div_factor = inf}),
                    "OneCycleLR: div_factor 25 and final_div_factor inf must be finite and > 0");
  CHECK_THROWS_WITH(OneCycleLR(o, nan, 10), "OneCycleLR: max_lr nan of param group 0 must be finite and >= 0");
  CHECK_THROWS_WITH(OneCycleLR(o, std::vector<double>{0.1, -1}, 10),
                    "OneCycleLR: max_lr -1 of param group 1 must be finite and >= 0");
  CHECK_THROWS_WITH(OneCycleLR(o, 0.1, 10, {.anneal_strategy = Anneal(7)}),
                    "OneCycleLR: unknown anneal_strategy 7 (not an Anneal value)");
  CHECK_THROWS_WITH(OneCycleLR(o, 0.1, 10, {.base_momentum = nan}),
                    "OneCycleLR: base_momentum nan and max_momentum 0.95 must be finite and >= 0");
  CHECK_THROWS_WITH(OneCycleLR(o, 0.1, 10, {.pct_start = nan}), "OneCycleLR: pct_start nan is outside [0, 1]");
  auto adam = two_groups(true);
  CHECK_THROWS_WITH(OneCycleLR(*adam, 0.1, 10, {.max_momentum = 1.0}),
                    "OneCycleLR: base_momentum 0.85 and max_momentum 1 must lie in [0, 1) to cycle Adam's beta1");
  OneCycleLR sgd_momentum_above_one(o, 0.1, 10, {.max_momentum = 1.0});  // SGD's momentum may exceed 1

  auto a = std::make_shared<StepLR>(o, 3);
  auto b = std::make_shared<StepLR>(o, 5);
  auto other_opt = two_groups(false);
  auto elsewhere = std::make_shared<StepLR>(*other_opt, 3);
  CHECK_THROWS_WITH(SequentialLR(o, {}, {}), "SequentialLR: needs at least one scheduler");
  CHECK_THROWS_WITH(SequentialLR(o, {a, nullptr}, {3}), "SequentialLR: scheduler 1 is null");
  CHECK_THROWS_WITH(SequentialLR(o, {a, elsewhere}, {3}),
                    "SequentialLR: scheduler 1 (StepLR) belongs to another optimizer");
  CHECK_THROWS_WITH(SequentialLR(o, {a, b}, {3, 6}), "SequentialLR: 2 schedulers need 1 milestones, got 2");
  CHECK_THROWS_WITH(SequentialLR(o, {a, b, a}, {6, 6}), "SequentialLR: milestones must increase, got 6 after 6");
  CHECK_THROWS_WITH(ChainedScheduler({}), "ChainedScheduler: needs at least one scheduler");
  CHECK_THROWS_WITH(ChainedScheduler({a, elsewhere}),
                    "ChainedScheduler: scheduler 1 (StepLR) belongs to another optimizer");
}
