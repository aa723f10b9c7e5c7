// The C++ API as a newcomer meets it (issue 27's frictions): options read back
// by name, in-place writes through a const Tensor&, loaded tensors looked up by
// name, the presets' names in one convention and PuzzleLib's by named option.
#include <catch2/catch.hpp>

#include <norma/norma.h>

#include "cifar_synth.h"
#include "temp_dir.h"

using namespace norma;
using Catch::Matchers::Contains;
using norma::test::error_of;

TEST_CASE("api: options read back through getters named like their setters") {
  auto bn = nn::BatchNorm2dOptions(8).eps(1e-3).layout(nn::Layout::NHWC).affine(false);
  CHECK(bn.num_features() == 8);
  CHECK(bn.eps() == 1e-3);
  CHECK(bn.layout() == nn::Layout::NHWC);
  CHECK_FALSE(bn.affine());
  CHECK(bn.momentum().min_factor == 0.1);
  CHECK(bn.eps_ == 1e-3);  // the field, as code before the getters read it
  auto conv = nn::Conv2dOptions(3, 16, 3).stride(2).bias(false);
  CHECK(conv.out_channels() == 16);
  CHECK(conv.stride().h == 2);
  CHECK_FALSE(conv.bias());
}

TEST_CASE("api: copy_, fill_ and zero_ write through a const Tensor&") {
  nn::Linear fc(3, 2);
  NoGradGuard no_grad;  // parameters require grad: written in place only outside the graph
  const std::vector<Tensor> params = fc.parameters();
  for (const Tensor& p : params) p.zero_();
  for (const Tensor& p : fc.parameters()) CHECK(p.abs().max().item() == 0.0f);
  const Tensor& w = params[0];
  w.fill_(2.0f);
  CHECK(fc.parameters()[0].to_vector() == std::vector<float>(6, 2.0f));
  w.copy_(full({2, 3}, 5.0f));
  CHECK(fc.parameters()[0].to_vector() == std::vector<float>(6, 5.0f));
}

TEST_CASE("api: a loaded safetensors file is looked up by name") {
  test::TempDir tmp("api");
  const std::string path = tmp.str("w.safetensors");
  save_safetensors(path, {{"a", full({2}, 1.0f)}, {"b", full({3}, 2.0f)}});
  SafetensorsFile f = load_safetensors(path);
  CHECK(f.contains("b"));
  CHECK_FALSE(f.contains("c"));
  CHECK(f.at("b").shape() == Shape{3});
  CHECK(f.at("b").max().item() == 2.0f);
  CHECK(error_of([&] { f.at("c"); }) ==
        "SafetensorsFile::at: no tensor 'c' in '" + path + "'; it holds a, b");
}

TEST_CASE("api: preset names in one convention, the older ones still accepted") {
  namespace p = nn::bn_presets;
  const auto& names = p::preset_names();
  CHECK(std::find(names.begin(), names.end(), "brainpy_2_7") != names.end());
  CHECK(std::find(names.begin(), names.end(), "brainpy_2_8") != names.end());
  CHECK(p::BrainPyVersion::v2_7_8 == p::BrainPyVersion::v2_7);
  for (auto [old_name, name] : {std::pair{"brainpy", "brainpy_2_7"}, std::pair{"brainpy-2.8", "brainpy_2_8"}}) {
    auto a = p::preset_by_name(old_name, 4), b = p::preset_by_name(name, 4);
    CHECK(a.unbiased_running_var() == b.unbiased_running_var());
    CHECK(a.layout() == b.layout());
    CHECK(a.variance_method() == b.variance_method());
  }
  CHECK_FALSE(p::brainpy_2_7(4).unbiased_running_var());
  CHECK(p::brainpy_2_8(4).unbiased_running_var());
  CHECK_THAT(error_of([] { p::preset_by_name("brainpy_2_9", 4); }), Contains("brainpy_2_7, brainpy_2_8"));
}

TEST_CASE("api: puzzlelib by named options equals the positional form") {
  namespace p = nn::bn_presets;
  auto named = p::puzzlelib(4, p::PuzzleLibOptions().affine(false).min_factor(0.2));
  auto positional = p::puzzlelib(4, 1.0, 0.2, 0.01, false);
  CHECK_FALSE(named.affine());
  CHECK(named.momentum().min_factor == positional.momentum().min_factor);
  CHECK(named.momentum().init_factor == positional.momentum().init_factor);
  CHECK(p::puzzlelib(4).affine());
  manual_seed(3);
  nn::BatchNorm2d a(p::puzzlelib(4, p::PuzzleLibOptions().sscale(0.5)));
  manual_seed(3);
  nn::BatchNorm2d b(p::puzzlelib(4, 1.0, 0.1, 0.5));
  CHECK(a.parameters()[0].to_vector() == b.parameters()[0].to_vector());
  CHECK_THAT(error_of([] { p::puzzlelib(4, p::PuzzleLibOptions().sscale(-1)); }),
             Contains("bn_presets::puzzlelib: sscale must be finite and >= 0, got -1"));
}

TEST_CASE("api: a param group's lr reads and writes without optional's ceremony") {
  nn::Linear fc(3, 2);
  optim::SGD opt(optim::decay_groups(fc, 5e-4), /*lr=*/0.05, /*momentum=*/0.9);
  for (const optim::ParamGroup& g : opt.param_groups()) CHECK(g.get_lr() == 0.05);
  opt.param_groups()[1].set_lr(0.01);
  CHECK(*opt.param_groups()[1].lr == 0.01);  // the optional, as code before get_lr() read it
  optim::ParamGroup fresh;
  CHECK(error_of([&] { fresh.get_lr(); }) ==
        "ParamGroup::get_lr: this group has no lr yet; an optimizer built from it completes it from its defaults");
}
