// Folding BatchNorm2d into Conv2d: the fused conv equals bn(conv(x)) in eval,
// for convs with and without bias, grouped, strided, dilated, and on cifar-small
// after training steps moved the running statistics; errors.
#include "test_util.h"

#include <norma/layers/activation.h>
#include <norma/layers/fuse.h>
#include <norma/layers/loss.h>
#include <norma/layers/models.h>
#include <norma/optim/sgd.h>

using namespace norma;
using namespace norma::nn;

using norma::test::scaled_diff;

namespace {


// Running statistics and affine parameters far from their defaults.
void randomise(BatchNorm2d& bn) {
  NoGradGuard g;
  const int64_t C = bn.options.num_features_;
  bn.running_mean.copy_(randn({C}));
  bn.running_var.copy_(rand({C}) * 3.0f + 0.05f);
  if (bn.options.affine_) {
    bn.weight.copy_(randn({C}));
    bn.bias.copy_(randn({C}));
  }
}

}  // namespace

TEST_CASE("fuse_conv_bn: equals bn(conv(x)) with and without bias, groups, stride, padding, dilation") {
  manual_seed(41);
  struct Conf {
    Conv2dOptions conv;
    bool affine;
  };
  std::vector<Conf> confs{
      {Conv2dOptions(3, 8, 3).padding(1), true},
      {Conv2dOptions(3, 8, 3).padding(1).bias(false), true},
      {Conv2dOptions(4, 6, 3).groups(2).stride(2).bias(false), true},
      {Conv2dOptions(6, 6, {3, 1}).groups(6).padding({1, 0}), true},  // depthwise
      {Conv2dOptions(4, 8, 3).dilation(2).padding(2).groups(4), false},
      {Conv2dOptions(5, 1, 1), true},
  };
  for (const Conf& c : confs) {
    Conv2d conv(c.conv);
    BatchNorm2d bn(BatchNorm2dOptions(c.conv.out_channels_).affine(c.affine).eps(1e-3));
    randomise(bn);
    bn.eval();
    Tensor x = randn({3, c.conv.in_channels_, 9, 7});
    const GeneratorState before = get_rng_state();
    auto fused = fuse_conv_bn(conv, bn);
    const GeneratorState after = get_rng_state();
    CHECK(after.draws == before.draws);  // folding draws no random numbers
    CHECK(fused->bias.defined());
    CHECK(fused->weight.shape() == conv.weight.shape());
    NoGradGuard g;
    const double d = scaled_diff(fused->forward(x), bn.forward(conv.forward(x)));
    CAPTURE(conv.extra_repr(), c.affine, d);
    CHECK(d < 1e-5);
  }
}

TEST_CASE("fuse_conv_bn: a frozen BatchNorm folds in training mode too") {
  manual_seed(42);
  Conv2d conv(2, 4, 3);
  BatchNorm2d bn(BatchNorm2dOptions(4).freeze(true));
  randomise(bn);
  Tensor x = randn({2, 2, 5, 5});
  auto fused = fuse_conv_bn(conv, bn);
  NoGradGuard g;
  CHECK(scaled_diff(fused->forward(x), bn.forward(conv.forward(x))) < 1e-5);
}

TEST_CASE("fuse_conv_bn_eval: cifar-small after training steps equals the unfused model") {
  manual_seed(43);
  auto model = cifar_small();
  optim::SGD opt(model->parameters(), 0.05, 0.9);
  for (int step = 0; step < 3; ++step) {  // moves running stats, gamma and beta away from 0, 1, 1, 0
    Tensor x = randn({8, 3, 32, 32}) * 1.5f + 0.3f;
    Tensor target = from_vector({0, 1, 2, 3, 4, 5, 6, 7}, {8});
    opt.zero_grad();
    cross_entropy(model->forward(x), target).backward();
    opt.step();
  }
  auto* bn1 = dynamic_cast<BatchNorm2d*>((*model)[1].get());
  REQUIRE(bn1);
  CHECK(std::fabs(bn1->running_mean.to_vector()[0]) > 1e-4);
  CHECK(bn1->num_batches_tracked.item() == 3.0f);

  model->eval();
  auto fused = fuse_conv_bn_eval(*model);
  CHECK_FALSE(fused->is_training());
  REQUIRE(fused->size() == model->size() - 5);  // five BatchNorms folded away
  std::vector<std::string> names;
  for (auto& [n, m] : fused->named_children()) {
    names.push_back(n);
    CHECK(dynamic_cast<BatchNorm2d*>(m.get()) == nullptr);
  }
  CHECK(names == std::vector<std::string>{"0", "2", "3", "5", "6", "7", "9", "10", "12", "13", "14", "16", "17",
                                          "18", "19"});
  CHECK(fused->named_parameters()[1].first == "0.bias");  // the fused conv has a bias

  NoGradGuard g;
  Tensor x = randn({4, 3, 32, 32}) * 1.5f + 0.3f;
  Tensor want = model->forward(x);
  Tensor got = fused->forward(x);
  const double d = scaled_diff(got, want);
  INFO("cifar-small fused vs unfused logits, scaled diff " << d);
  CHECK(d < 1e-4);
  CHECK(bn1->num_batches_tracked.item() == 3.0f);  // the original model is untouched
  NORMA_CHECK_CLOSE(model->forward(x), want, 0, 0);
}

TEST_CASE("fuse_conv_bn_eval: nested Sequentials are folded, other modules kept in place") {
  manual_seed(44);
  auto inner = std::make_shared<Sequential>(
      std::initializer_list<ModulePtr>{std::make_shared<Conv2d>(4, 4, 3, 1, 1), std::make_shared<BatchNorm2d>(4),
                                       std::make_shared<ReLU>()});
  Sequential outer{std::make_shared<Conv2d>(2, 4, 1), std::make_shared<ReLU>(), inner,
                   std::make_shared<BatchNorm2d>(4)};  // a BatchNorm after a non-conv stays
  for (auto& [n, m] : outer.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) randomise(*bn);
  outer.eval();
  auto fused = fuse_conv_bn_eval(outer);
  auto fused_inner = std::dynamic_pointer_cast<Sequential>((*fused)[2]);
  REQUIRE(fused_inner);
  CHECK(fused_inner->size() == 2);
  CHECK(dynamic_cast<BatchNorm2d*>((*fused)[3].get()) != nullptr);
  NoGradGuard g;
  Tensor x = randn({2, 2, 6, 6});
  CHECK(scaled_diff(fused->forward(x), outer.forward(x)) < 1e-5);
}

TEST_CASE("fuse_conv_bn: errors") {
  Conv2d conv(3, 8, 3);
  BatchNorm2d train_bn(8);
  CHECK_THROWS_WITH(fuse_conv_bn(conv, train_bn),
                    Catch::Contains("fuse_conv_bn: BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, "
                                    "track_running_stats=True) is in training mode, where it normalises with batch "
                                    "statistics; call eval() first"));
  BatchNorm2d wrong(4);
  wrong.eval();
  CHECK_THROWS_WITH(fuse_conv_bn(conv, wrong),
                    Catch::Contains("fuse_conv_bn: Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1)) has 8 output "
                                    "channels but BatchNorm2d(4,") &&
                        Catch::Contains("has 4 features"));
  BatchNorm2d nhwc(BatchNorm2dOptions(8).layout(Layout::NHWC));
  nhwc.eval();
  CHECK_THROWS_WITH(fuse_conv_bn(conv, nhwc), Catch::Contains(") uses the NHWC layout but Conv2d(3, 8, kernel_size=(3, 3), "
                                                                "stride=(1, 1)) outputs NCHW"));
  BatchNorm2d untracked(BatchNorm2dOptions(8).track_running_stats(false));
  untracked.eval();
  CHECK_THROWS_WITH(fuse_conv_bn(conv, untracked),
                    Catch::Contains("track_running_stats=False) has no running statistics (track_running_stats=false), so "
                                    "it always normalises with batch statistics and cannot be folded"));

  BatchNorm2d lazy(0);
  lazy.eval();
  CHECK_THROWS_WITH(fuse_conv_bn(conv, lazy), Catch::Contains("fuse_conv_bn: BatchNorm2d(lazy,") &&
                                                  Catch::Contains(") is lazy and has not seen an input yet, so it has no "
                                                                  "statistics to fold"));

  auto model = cifar_small();  // still in training mode
  CHECK_THROWS_WITH(fuse_conv_bn_eval(*model),
                    Catch::Contains("fuse_conv_bn_eval: layers '0' and '1': fuse_conv_bn: BatchNorm2d(32,") &&
                        Catch::Contains("is in training mode"));
  auto nested = std::make_shared<Sequential>();
  nested->push_back("features", std::make_shared<Sequential>(std::initializer_list<ModulePtr>{
                                    std::make_shared<Conv2d>(3, 8, 3), std::make_shared<BatchNorm2d>(4)}));
  nested->eval();
  CHECK_THROWS_WITH(fuse_conv_bn_eval(*nested),
                    Catch::Contains("fuse_conv_bn_eval: layers 'features.0' and 'features.1'") &&
                        Catch::Contains("has 8 output channels but BatchNorm2d(4,"));
}
