// BatchNorm2d options not covered by the preset fixtures: skip_init (PuzzleLib's
// empty), gamma/beta initialisers (named and user functions), and the m = 1
// training error in both layouts.
#include <cmath>

#include "test_util.h"

#include <norma/layers/batchnorm_presets.h>
#include <norma/layers/init.h>

using namespace norma;
using namespace norma::nn;
namespace presets = norma::nn::bn_presets;

TEST_CASE("BatchNorm2d: skip_init (PuzzleLib's empty) runs no initialiser, NaN until a checkpoint is loaded") {
  manual_seed(5);
  const std::vector<float> next_draw = randn({4}).to_vector();
  manual_seed(5);
  BatchNorm2d empty(presets::puzzlelib(3, 1.0, 0.1, 0.01, true, false, /*empty=*/true));
  CHECK(empty.options.skip_init_);
  // The normal(1, sscale) draw did not happen: the generator is where it was.
  CHECK(randn({4}).to_vector() == next_draw);
  for (const Tensor& t : {empty.weight, empty.bias, empty.running_mean, empty.running_var})
    for (float v : t.to_vector()) CHECK(std::isnan(v));
  CHECK(empty.num_batches_tracked.item() == 0.0f);
  CHECK(std::isnan(empty.forward(randn({2, 3, 2, 2})).to_vector()[0]));  // used before loading: visible

  BatchNorm2d trained(presets::puzzlelib(3));
  for (int t = 0; t < 3; ++t) trained.forward(randn({4, 3, 2, 2}) + float(t));
  BatchNorm2d loaded(presets::puzzlelib(3, 1.0, 0.1, 0.01, true, false, /*empty=*/true));
  loaded.load_state_dict(trained.state_dict());
  trained.eval();
  loaded.eval();
  Tensor x = randn({2, 3, 2, 2});
  CHECK(loaded.forward(x).to_vector() == trained.forward(x).to_vector());
  CHECK(loaded.num_batches_tracked.item() == 3.0f);
}

TEST_CASE("BatchNorm2d: gamma and beta initialisers, named and user functions, reapplied by reset_parameters") {
  manual_seed(17);
  BatchNorm2dOptions o(5);
  o.weight_init([](Tensor& w) { init::normal_(w, 1.0, 0.02); });  // a given std
  o.bias_init([](Tensor& b) { init::constant_(b, 0.5); });
  BatchNorm2d bn(o);
  const std::vector<float> w0 = bn.weight.to_vector();
  CHECK(w0 != std::vector<float>(5, 1.0f));
  for (float v : w0) CHECK(std::fabs(v - 1.0f) < 0.2f);
  CHECK(bn.bias.to_vector() == std::vector<float>(5, 0.5f));

  // A user function sees the (C) tensor and may set anything: gamma_c = c + 1.
  BatchNorm2dOptions u(4);
  u.weight_init([](Tensor& w) {
    std::vector<float> v(size_t(w.numel()));
    for (size_t c = 0; c < v.size(); ++c) v[c] = float(c + 1);
    w.copy_(from_vector(v, w.shape()));
  });
  u.bias_init([](Tensor& b) { init::zeros_(b); });
  BatchNorm2d user(u);
  CHECK(user.weight.to_vector() == std::vector<float>{1, 2, 3, 4});
  // Training on a batch of +-1 per channel: y = gamma_c * (+-1 / sqrt(1 + eps)).
  Tensor y = user.forward(tensor({-1, -1, -1, -1, 1, 1, 1, 1}).reshape({2, 4, 1, 1}));
  CHECK(y.to_vector()[7] == Approx(4.0 / std::sqrt(1.0 + 1e-5)).epsilon(1e-6));

  // reset_parameters reapplies the initialisers (and resets the running statistics).
  NoGradGuard g;
  user.weight.fill_(9.0f);
  user.reset_parameters();
  CHECK(user.weight.to_vector() == std::vector<float>{1, 2, 3, 4});
  CHECK(user.running_mean.to_vector() == std::vector<float>(4, 0.0f));
  CHECK(user.num_batches_tracked.item() == 0.0f);
}

TEST_CASE("BatchNorm2d: m = 1 in training is an error in both layouts, m = 2 is not, eval accepts m = 1") {
  // PyTorch: "Expected more than 1 value per channel when training, got input size torch.Size([1, 3, 1, 1])".
  BatchNorm2d nchw(3);
  CHECK_THROWS_WITH(nchw.forward(zeros({1, 3, 1, 1})),
                    Catch::Contains("batch_norm2d: expected more than 1 value per channel when training, "
                                    "got input size (1, 3, 1, 1)"));
  BatchNorm2d nhwc(presets::brainpy(3));
  CHECK_THROWS_WITH(nhwc.forward(zeros({1, 1, 1, 3})),
                    Catch::Contains("expected more than 1 value per channel when training, got input size (1, 1, 1, 3)"));
  CHECK_NOTHROW(nchw.forward(randn({1, 3, 2, 1})));  // one image, two positions: m = 2
  nchw.eval();
  CHECK_NOTHROW(nchw.forward(randn({1, 3, 1, 1})));  // running statistics: any m
  // Without running statistics the batch statistics are used in eval too, so m = 1 fails there as well.
  BatchNorm2d untracked(BatchNorm2dOptions(3).track_running_stats(false));
  untracked.eval();
  CHECK_THROWS_WITH(untracked.forward(zeros({1, 3, 1, 1})),
                    Catch::Contains("expected more than 1 value per channel when training"));
}
