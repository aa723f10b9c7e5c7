// BatchNorm2d presets and convention conversions (see batchnorm_presets.h).
#include "batchnorm_presets.h"

#include <fmt/ranges.h>

#include <cmath>
#include <map>
#include <set>

#include "init.h"

namespace norma::nn::bn_presets {

namespace {

void check_decay(const char* preset, double d) {
  if (!(d >= 0 && d <= 1)) fail("bn_presets::{}: momentum (a decay) must lie in [0, 1], got {}", preset, d);
}

}  // namespace

BatchNorm2dOptions pytorch(int64_t num_features, std::optional<double> momentum) {
  return BatchNorm2dOptions(num_features)
      .momentum(momentum ? MomentumRule::pytorch(*momentum) : MomentumRule::cumulative());
}

BatchNorm2dOptions r_torch(int64_t num_features, std::optional<double> momentum) {
  return pytorch(num_features, momentum);
}

BatchNorm2dOptions megengine(int64_t num_features, bool freeze, double momentum) {
  check_decay("megengine", momentum);
  return BatchNorm2dOptions(num_features).momentum(MomentumRule::decay(momentum)).freeze(freeze);
}

BatchNorm2dOptions brainpy(int64_t num_features, BrainPyVersion version, double momentum) {
  check_decay("brainpy", momentum);
  if (version != BrainPyVersion::v2_7 && version != BrainPyVersion::v2_8)
    fail("bn_presets::brainpy: unknown version {} (not a BrainPyVersion value)", int(version));
  return BatchNorm2dOptions(num_features)
      .layout(Layout::NHWC)
      .momentum(MomentumRule::decay(momentum))
      .variance_method(VarianceMethod::one_pass)
      .unbiased_running_var(version == BrainPyVersion::v2_8);
}

BatchNorm2dOptions numpy_ml(int64_t num_features, double momentum) {
  check_decay("numpy_ml", momentum);
  BatchNorm2dOptions o(num_features);
  o.layout(Layout::NHWC).momentum(MomentumRule::decay(momentum)).unbiased_running_var(false);
  o.weight_init_ = [](Tensor& w) { init::uniform_(w, 0.0, 1.0); };
  return o;
}

BatchNorm2dOptions puzzlelib(int64_t maps, const PuzzleLibOptions& p) {
  if (!(p.sscale() >= 0) || !std::isfinite(p.sscale()))
    fail("bn_presets::puzzlelib: sscale must be finite and >= 0, got {}", p.sscale());
  BatchNorm2dOptions o(maps);
  o.momentum(MomentumRule::schedule(p.init_factor(), p.min_factor())).affine(p.affine()).inplace(p.inplace());
  o.skip_init(p.empty());
  o.weight_init_ = [sscale = p.sscale()](Tensor& w) { init::normal_(w, 1.0, sscale); };
  return o;
}

BatchNorm2dOptions puzzlelib(int64_t maps, double init_factor, double min_factor, double sscale, bool affine,
                             bool inplace, bool empty) {
  return puzzlelib(maps, PuzzleLibOptions()
                             .init_factor(init_factor)
                             .min_factor(min_factor)
                             .sscale(sscale)
                             .affine(affine)
                             .inplace(inplace)
                             .empty(empty));
}

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names{"pytorch",     "r_torch",  "megengine", "brainpy_2_7",
                                              "brainpy_2_8", "numpy_ml", "puzzlelib"};
  return names;
}

BatchNorm2dOptions preset_by_name(const std::string& name, int64_t num_features) {
  if (name == "pytorch") return pytorch(num_features);
  if (name == "r_torch") return r_torch(num_features);
  if (name == "megengine") return megengine(num_features);
  if (name == "brainpy_2_7" || name == "brainpy") return brainpy_2_7(num_features);
  if (name == "brainpy_2_8" || name == "brainpy-2.8") return brainpy_2_8(num_features);
  if (name == "numpy_ml") return numpy_ml(num_features);
  if (name == "puzzlelib") return puzzlelib(num_features);
  fail("bn preset: unknown name '{}', accepted names: {}", name, fmt::join(preset_names(), ", "));
}

double pytorch_momentum_from_decay(double decay) { return 1.0 - decay; }
double decay_from_pytorch_momentum(double momentum) { return 1.0 - momentum; }

// ---------------------------------------------------------------- MegEngine state dicts

namespace {

// The state-dict names of every BatchNorm2d tensor in `model`, with the module's channel count.
std::map<std::string, int64_t> batchnorm_keys(Module& model) {
  std::map<std::string, int64_t> keys;
  for (auto& [name, m] : model.named_modules()) {
    auto* bn = dynamic_cast<BatchNorm2d*>(m);
    if (!bn) continue;
    std::string prefix = name;  // "1" or "1." (Module::named_modules has given both)
    if (!prefix.empty() && prefix.back() != '.') prefix += '.';
    for (const char* n : {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})
      keys[prefix + n] = bn->options.num_features_;
  }
  return keys;
}

bool is_counter(const std::string& key) {
  const std::string n = "num_batches_tracked";
  return key.size() >= n.size() && key.compare(key.size() - n.size(), n.size(), n) == 0;
}

}  // namespace

NamedTensors from_megengine_state_dict(const NamedTensors& state, Module& model) {
  const auto keys = batchnorm_keys(model);
  std::set<std::string> present;
  NamedTensors out;
  for (const auto& [k, t] : state) {
    present.insert(k);
    auto it = keys.find(k);
    if (it == keys.end() || is_counter(k)) {
      out.emplace_back(k, t);
      continue;
    }
    const int64_t C = it->second;
    if (t.shape() == Shape{1, C, 1, 1})
      out.emplace_back(k, t.reshape({C}));
    else if (t.shape() == Shape{C})
      out.emplace_back(k, t);
    else
      fail("from_megengine_state_dict: '{}' has shape {} but the BatchNorm2d with {} channels expects (1, {}, 1, 1)",
           k, t.shape(), C, C);
  }
  // MegEngine keeps no counter; its momentum is constant, so t restarts at 0.
  for (const auto& [name, t] : model.state_dict())
    if (keys.count(name) && is_counter(name) && !present.count(name)) out.emplace_back(name, zeros({}));
  return out;
}

NamedTensors to_megengine_state_dict(const NamedTensors& state, Module& model) {
  const auto keys = batchnorm_keys(model);
  NamedTensors out;
  for (const auto& [k, t] : state) {
    auto it = keys.find(k);
    if (it == keys.end()) {
      out.emplace_back(k, t);
      continue;
    }
    if (is_counter(k)) continue;
    const int64_t C = it->second;
    if (t.shape() != Shape{C})
      fail("to_megengine_state_dict: '{}' has shape {} but the BatchNorm2d has {} channels", k, t.shape(), C);
    out.emplace_back(k, t.reshape({1, C, 1, 1}));
  }
  return out;
}

}  // namespace norma::nn::bn_presets
