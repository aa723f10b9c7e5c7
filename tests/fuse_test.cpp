// Folding BatchNorm2d into Conv2d: the fused conv equals bn(conv(x)) in eval,
// for convs with and without bias, grouped, strided, dilated, and on cifar-small
// after training steps moved the running statistics; errors.
#include "test_util.h"

#include <norma/layers/activation.h>
#include <norma/layers/fast/kernels.h>
#include <norma/core/kernel_policy.h>
#include <norma/apps/fuse.h>
#include <norma/layers/fusion.h>
#include <norma/layers/loss.h>
#include <norma/apps/models.h>
#include <norma/layers/pooling.h>
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

namespace {
// A Sequential's modules one by one, each through its own forward: no fusion
// across modules, the reference for what Sequential::forward fuses.
Tensor one_by_one(const Sequential& model, Tensor h) {
  for (size_t i = 0; i < model.size(); ++i) h = model[i]->forward(h);
  return h;
}
}  // namespace

// Inference fusion (conv_bn_relu_eval): Sequential runs Conv2d + BatchNorm2d +
// ReLU (+ MaxPool2d) as one kernel under no_grad with the BatchNorm2d on its
// running statistics, and must give exactly what the modules give one by one.
TEST_CASE("Sequential: Conv2d + BatchNorm2d + ReLU (+ pool) fused for inference equal the modules one by one") {
  struct C {
    int64_t N, Cin, K, H, W, pad;
    bool bias, affine, pool;
  };
  // Winograd shapes with and without the pool (odd sizes leave a last row or
  // column out of every window), and the RGB layer's direct path.
  for (const C& c : {C{3, 16, 24, 13, 11, 1, true, true, true}, C{2, 32, 32, 32, 32, 1, false, true, true},
                     C{2, 20, 16, 9, 17, 1, true, false, false}, C{2, 64, 128, 8, 8, 1, false, true, true},
                     C{3, 3, 32, 32, 32, 1, false, true, false}, C{2, 3, 8, 6, 64, 1, true, true, false}}) {
    CAPTURE(c.N, c.Cin, c.K, c.H, c.W, c.bias, c.affine, c.pool);
    manual_seed(19);
    auto conv = std::make_shared<Conv2d>(Conv2dOptions(c.Cin, c.K, 3).padding(c.pad).bias(c.bias));
    auto bn = std::make_shared<BatchNorm2d>(BatchNorm2dOptions(c.K).affine(c.affine));
    randomise(*bn);
    Sequential model{conv, bn, std::make_shared<ReLU>()};
    if (c.pool) model.push_back(std::make_shared<MaxPool2d>(2));
    model.eval();
    Tensor x = randn({c.N, c.Cin, c.H, c.W});
    NoGradGuard g;
    const ConvShape s = conv2d_shape(x.shape(), conv->weight.shape(), 1, c.pad, 1, 1);
#if NORMA_FAST_KERNELS
    // Everywhere but the pool on F(4x4) tiles (ctest runs this again with NORMA_WINOGRAD_F44=32).
    const bool fuses = !(c.pool && conv2d_winograd_applies(s) && fast::kernels().winograd_row_tile(c.Cin) == 4);
#else
    const bool fuses = false;  // the epilogue is a fast kernel: without them the ops run one by one
#endif
    CHECK(conv2d_epilogue_applies(s, c.pool) == fuses);
    Tensor fused = conv_bn_relu_eval(*conv, *bn, x, c.pool);
    CHECK(fused.defined() == fuses);  // the fused kernel really ran
    const Tensor want = one_by_one(model, x);
    if (fused.defined()) CHECK(fused.to_vector() == want.to_vector());
    CHECK(model.forward(x).to_vector() == want.to_vector());
  }
}

TEST_CASE("Sequential: no inference fusion where a graph is recorded, in training, or without running statistics") {
  manual_seed(23);
  auto conv = std::make_shared<Conv2d>(Conv2dOptions(16, 16, 3).padding(1));
  auto bn = std::make_shared<BatchNorm2d>(16);
  randomise(*bn);
  auto relu = std::make_shared<ReLU>();
  Tensor x = randn({2, 16, 8, 8});
  bn->eval();
  CHECK_FALSE(conv_bn_relu_eval(*conv, *bn, x, false).defined());  // weights require grad
  {
    NoGradGuard g;
    CHECK(conv_bn_relu_eval(*conv, *bn, x, false).defined() == fast_kernels_built());
    autograd::DetectAnomalyGuard anomaly;  // each op's output checked by name: one by one
    CHECK_FALSE(conv_bn_relu_eval(*conv, *bn, x, false).defined());
  }
  NoGradGuard g;
  bn->train();
  CHECK_FALSE(conv_bn_relu_eval(*conv, *bn, x, false).defined());  // batch statistics
  auto no_stats = std::make_shared<BatchNorm2d>(BatchNorm2dOptions(16).track_running_stats(false));
  no_stats->eval();
  CHECK_FALSE(conv_bn_relu_eval(*conv, *no_stats, x, false).defined());
  bn->eval();
  auto strided = std::make_shared<Conv2d>(Conv2dOptions(16, 16, 3).padding(1).stride(2));  // no fused kernel
  CHECK_FALSE(conv_bn_relu_eval(*strided, *bn, x, false).defined());
}

TEST_CASE("conv2d: the fused inference epilogue refuses convolutions it has no kernel for") {
  const std::vector<float> one(16, 1.0f), zero(16, 0.0f);
  const ConvEpilogue e{zero.data(), zero.data(), one.data(), zero.data(), false};
  Tensor x = randn({1, 16, 8, 8}), w = randn({16, 16, 3, 3}), y = empty({1, 16, 4, 4});
  const ConvShape s = conv2d_shape(x.shape(), w.shape(), 2, 1, 1, 1);  // stride 2: im2col only
  CHECK_FALSE(conv2d_epilogue_applies(s, false));
  CHECK_THROWS_WITH(conv2d_forward_epilogue(y.data_ptr(), x.data_ptr(), w.data_ptr(), nullptr, s, e),
                    Catch::Contains("conv2d_forward_epilogue: no fused path for input (1, 16, 8, 8)"));
  Tensor x3 = randn({1, 3, 8, 20}), w3 = randn({16, 3, 3, 3}), y3 = empty({1, 16, 8, 20});
  const ConvShape s3 = conv2d_shape(x3.shape(), w3.shape(), 1, 1, 1, 1);  // direct, rows of 20
  CHECK_FALSE(conv2d_epilogue_applies(s3, false));
#if NORMA_FAST_KERNELS
  CHECK_THROWS_WITH(fast::kernels().conv2d_direct_forward(y3.data_ptr(), x3.data_ptr(), w3.data_ptr(), nullptr, s3, &e),
                    Catch::Contains("conv2d_direct_forward: an epilogue needs output rows of whole 32s, got OW 20"));
#endif
}

// cifar-small written as a class (its forward calls the fused ops itself)
// computes what the Sequential computes, bit for bit, in training and for
// inference: same kernels, same fusion.
TEST_CASE("CifarSmall: the class and the Sequential give the same outputs and gradients") {
  manual_seed(29);
  auto seq = cifar_small();
  auto cls = std::make_shared<CifarSmall>();
  const NamedTensors from = seq->state_dict(), to = cls->state_dict();
  REQUIRE(from.size() == to.size());
  {
    NoGradGuard g;
    for (size_t i = 0; i < from.size(); ++i) {
      CAPTURE(from[i].first, to[i].first);
      REQUIRE(from[i].second.shape() == to[i].second.shape());
      to[i].second.detach().copy_(from[i].second);
    }
  }
  Tensor x = randn({4, 3, 32, 32});
  Tensor target = from_vector({1, 3, 5, 7}, {4});
  for (auto* m : {static_cast<Module*>(seq.get()), static_cast<Module*>(cls.get())}) {
    m->train();
    cross_entropy(m->forward(x), target).backward();
  }
  const auto gs = seq->named_parameters(), gc = cls->named_parameters();
  for (size_t i = 0; i < gs.size(); ++i) {
    CAPTURE(gs[i].first);
    CHECK(gs[i].second.grad().to_vector() == gc[i].second.grad().to_vector());
  }
  const auto bs = seq->named_buffers(), bc = cls->named_buffers();
  for (size_t i = 0; i < bs.size(); ++i) CHECK(bs[i].second.to_vector() == bc[i].second.to_vector());
  seq->eval(), cls->eval();
  NoGradGuard g;
  CHECK(seq->forward(x).to_vector() == cls->forward(x).to_vector());
}
