// BnStatsRecorder: its numbers against a direct computation on a tiny model in
// training and eval mode, the model left untouched, the CSV files, errors.
#include "temp_dir.h"
#include "test_util.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <norma/layers/activation.h>
#include <norma/apps/bn_stats.h>
#include <norma/layers/conv2d.h>

using namespace norma;
using namespace norma::nn;
namespace fs = std::filesystem;

using norma::test::TempDir;

namespace {


std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  return lines;
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream s(line);
  for (std::string f; std::getline(s, f, ',');) out.push_back(f);
  return out;
}

// Per-channel mean and variance of an NCHW tensor, in double, by plain loops;
// the averages over channels of both.
std::pair<double, double> direct_stats(const Tensor& x, bool unbiased) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const std::vector<float> v = x.to_vector();
  double mean_sum = 0, var_sum = 0;
  for (int64_t c = 0; c < C; ++c) {
    double m = 0, s = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) m += v[size_t((n * C + c) * HW + i)];
    m /= double(N * HW);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) s += std::pow(v[size_t((n * C + c) * HW + i)] - m, 2);
    mean_sum += m;
    var_sum += s / double(N * HW - (unbiased ? 1 : 0));
  }
  return {mean_sum / double(C), var_sum / double(C)};
}

// conv(2 -> 3) bn(3) relu [conv(3 -> 4) bn(4, biased running var)] with set gammas, betas and running stats.
struct Tiny {
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
  Sequential model;
  Tiny() {
    conv1 = std::make_shared<Conv2d>(2, 3, 3, 1, 1);
    bn1 = std::make_shared<BatchNorm2d>(3);
    conv2 = std::make_shared<Conv2d>(3, 4, 1);
    bn2 = std::make_shared<BatchNorm2d>(BatchNorm2dOptions(4).unbiased_running_var(false));
    model.push_back(conv1);
    model.push_back(bn1);
    model.push_back(std::make_shared<ReLU>());
    model.push_back("block", std::make_shared<Sequential>(std::initializer_list<ModulePtr>{conv2, bn2}));
    NoGradGuard g;
    bn1->weight.copy_(tensor({1.0f, 2.0f, 3.0f}));
    bn1->bias.copy_(tensor({0.5f, -0.5f, 1.5f}));
    bn1->running_mean.copy_(tensor({0.1f, 0.2f, 0.3f}));
    bn1->running_var.copy_(tensor({1.5f, 2.0f, 2.5f}));
    bn2->running_mean.copy_(tensor({-1.0f, 0.0f, 1.0f, 2.0f}));
  }
};

}  // namespace

TEST_CASE("bn_stats: BnStatsRecorder, values against a direct computation, training mode, the model untouched") {
  manual_seed(21);
  Tiny t;
  Tensor x = randn({4, 2, 5, 5}) * 2.0f + 1.0f;
  const NamedTensors before = t.model.state_dict();
  std::vector<std::vector<float>> before_values;
  for (auto& [n, v] : before) before_values.push_back(v.to_vector());
  const std::vector<float> x_before = x.to_vector();
  const uint64_t draws = get_rng_state().draws;

  BnStatsRecorder rec;
  rec.record(7, t.model, x);
  REQUIRE(rec.rows().size() == 2);
  const BnStatsRow& r1 = rec.rows()[0];
  const BnStatsRow& r2 = rec.rows()[1];
  CHECK(r1.step == 7);
  CHECK(r1.layer == "1");
  CHECK(r2.layer == "block.1");

  // Direct: the first BatchNorm sees conv1(x); the second sees conv2(relu(bn1 in training(conv1(x)))).
  NoGradGuard g;
  Tensor h1 = t.conv1->forward(x);
  auto [m1, v1] = direct_stats(h1, /*unbiased=*/true);
  CHECK(r1.batch_mean == Approx(m1).epsilon(1e-5));
  CHECK(r1.batch_var == Approx(v1).epsilon(1e-5));
  CHECK(r1.running_mean == Approx(0.2).epsilon(1e-6));
  CHECK(r1.running_var == Approx(2.0).epsilon(1e-6));
  CHECK(r1.gamma_mean == Approx(2.0).epsilon(1e-6));
  CHECK(r1.gamma_std == Approx(std::sqrt(2.0 / 3.0)).epsilon(1e-6));  // population std of 1, 2, 3
  CHECK(r1.beta_mean == Approx(0.5).epsilon(1e-6));
  CHECK(r1.beta_std == Approx(std::sqrt(2.0 / 3.0)).epsilon(1e-6));
  BatchNormArgs a;  // training: batch statistics, no update
  Tensor h2 = t.conv2->forward(relu(batch_norm2d(h1, t.bn1->weight, t.bn1->bias, Tensor(), Tensor(), a)));
  auto [m2, v2] = direct_stats(h2, /*unbiased=*/false);  // bn2 averages the biased variance
  CHECK(r2.batch_mean == Approx(m2).epsilon(1e-5));
  CHECK(r2.batch_var == Approx(v2).epsilon(1e-5));
  CHECK(r2.running_mean == Approx(0.5).epsilon(1e-6));
  CHECK(r2.gamma_mean == 1.0);
  CHECK(r2.gamma_std == 0.0);
  CHECK(r2.channel_batch_mean.empty());  // per-channel values only when asked for

  // Nothing changed: buffers (running stats, num_batches_tracked), parameters, input, generator.
  const NamedTensors after = t.model.state_dict();
  for (size_t i = 0; i < after.size(); ++i) {
    CAPTURE(after[i].first);
    CHECK(after[i].second.to_vector() == before_values[i]);
  }
  CHECK(t.bn1->num_batches_tracked.item() == 0.0f);
  CHECK(x.to_vector() == x_before);
  CHECK(get_rng_state().draws == draws);
}

TEST_CASE("bn_stats: BnStatsRecorder, eval mode propagates with running statistics, per-channel values") {
  manual_seed(22);
  Tiny t;
  t.model.eval();
  Tensor x = randn({3, 2, 4, 4});
  BnStatsRecorder rec(/*per_channel=*/true);
  rec.record(1, t.model, x);
  REQUIRE(rec.rows().size() == 2);
  NoGradGuard g;
  Tensor h2 = t.conv2->forward(relu(t.bn1->forward(t.conv1->forward(x))));  // eval: the running statistics
  auto [m2, v2] = direct_stats(h2, false);
  const BnStatsRow& r2 = rec.rows()[1];
  CHECK(r2.batch_mean == Approx(m2).epsilon(1e-5));
  CHECK(r2.batch_var == Approx(v2).epsilon(1e-5));
  REQUIRE(r2.channel_batch_mean.size() == 4);
  CHECK(r2.channel_batch_mean[1] == Approx(h2.select(1, 1).mean().item()).epsilon(1e-5));
  CHECK(r2.channel_batch_var[1] == Approx(h2.select(1, 1).var({}, false).item()).epsilon(1e-5));
  CHECK(r2.channel_running_mean == std::vector<float>{-1.0f, 0.0f, 1.0f, 2.0f});
}

TEST_CASE("bn_stats: BnStatsRecorder, NHWC layout, no affine and no running statistics give NaN") {
  manual_seed(23);
  Sequential model{std::make_shared<BatchNorm2d>(
      BatchNorm2dOptions(3).layout(Layout::NHWC).affine(false).track_running_stats(false))};
  Tensor x = randn({2, 4, 4, 3});
  BnStatsRecorder rec;
  rec.record(0, model, x);
  REQUIRE(rec.rows().size() == 1);
  const BnStatsRow& r = rec.rows()[0];
  auto [m, v] = direct_stats(x.permute({0, 3, 1, 2}).contiguous(), true);
  CHECK(r.batch_mean == Approx(m).epsilon(1e-5));
  CHECK(r.batch_var == Approx(v).epsilon(1e-5));
  CHECK(std::isnan(r.running_mean));
  CHECK(std::isnan(r.running_var));
  CHECK(std::isnan(r.gamma_mean));
  CHECK(std::isnan(r.beta_std));
}

TEST_CASE("bn_stats: BnStatsRecorder, the CSV files") {
  manual_seed(24);
  Tiny t;
  BnStatsRecorder rec(true);
  for (int64_t step : {0, 50, 100}) rec.record(step, t.model, randn({2, 2, 3, 3}));
  TempDir dir("bn_stats");
  const std::string path = dir.file("bn.csv");
  rec.write_csv(path);
  std::vector<std::string> lines = read_lines(path);
  REQUIRE(lines.size() == 1 + 3 * 2);
  CHECK(lines[0] ==
        "step,layer,batch_mean,batch_var,running_mean,running_var,gamma_mean,gamma_std,beta_mean,beta_std");
  for (size_t i = 1; i < lines.size(); ++i) {
    auto f = split(lines[i]);
    REQUIRE(f.size() == 10);
    const BnStatsRow& r = rec.rows()[i - 1];
    CHECK(f[0] == std::to_string(r.step));
    CHECK(f[1] == r.layer);
    CHECK(std::stod(f[2]) == Approx(r.batch_mean).epsilon(1e-8));
    CHECK(std::stod(f[3]) == Approx(r.batch_var).epsilon(1e-8));
    CHECK(std::stod(f[9]) == Approx(r.beta_std).epsilon(1e-8));
  }
  CHECK(split(lines[6])[0] == "100");
  CHECK(split(lines[6])[1] == "block.1");

  rec.write_channel_csv(dir.file("bn_channels.csv"));
  lines = read_lines(dir.file("bn_channels.csv"));
  REQUIRE(lines.size() == 1 + 3 * (3 + 4));
  CHECK(lines[0] == "step,layer,channel,batch_mean,batch_var,running_mean,running_var");
  CHECK(lines[1].rfind("0,1,0,", 0) == 0);
  CHECK(split(lines[4])[1] == "block.1");
  CHECK(split(lines[4])[5] == "-1");  // bn2's running mean of channel 0

  // Rewritten in place (the temporary renamed over it); no temporary left behind.
  rec.clear();
  rec.write_csv(path);
  CHECK(read_lines(path).size() == 1);
  CHECK(dir.listing() == std::vector<std::string>{"bn.csv", "bn_channels.csv"});
}

TEST_CASE("bn_stats: BnStatsRecorder, errors") {
  manual_seed(25);
  Tiny t;
  BnStatsRecorder rec;
  rec.record(1, t.model, randn({2, 2, 3, 3}));
  CHECK_THROWS_WITH(rec.write_csv("/nonexistent_norma_dir/bn.csv"),
                    Catch::Contains("BnStatsRecorder: cannot write '/nonexistent_norma_dir/bn.csv': creating") &&
                        Catch::Contains("No such file or directory"));
  TempDir dir("bn_stats");
  fs::create_directories(dir.path / "taken" / "child");  // a non-empty directory where the file should go
  CHECK_THROWS_WITH(rec.write_csv(dir.file("taken")), Catch::Contains("renaming"));
  CHECK(dir.listing() == std::vector<std::string>{"taken"});  // the temporary was removed
  CHECK_THROWS_WITH(rec.write_channel_csv(dir.file("c.csv")),
                    Catch::Contains("BnStatsRecorder: write_channel_csv('" + dir.file("c.csv") +
                                    "') needs a recorder made with per_channel=true"));
  CHECK_THROWS_WITH(rec.record(2, t.model, Tensor()), Catch::Contains("record(step 2) got an undefined input tensor"));
  CHECK_THROWS_WITH(rec.record(2, t.model, randn({2, 3, 3, 3})), Catch::Contains("conv2d"));
  CHECK(rec.rows().size() == 2);  // failed records append nothing

  // A BatchNorm inside a module that is not a Sequential cannot be observed.
  struct Block : Module {
    std::shared_ptr<BatchNorm2d> bn;
    Block() { bn = register_module("bn", std::make_shared<BatchNorm2d>(2)); }
    Tensor forward(const Tensor& x) override { return bn->forward(x) + x; }
    std::string name() const override { return "Block"; }
  };
  Sequential model{std::make_shared<Block>()};
  CHECK_THROWS_WITH(rec.record(3, model, randn({2, 2, 3, 3})),
                    Catch::Contains("BnStatsRecorder: '0' (Block) contains the BatchNorm2d '0.bn' but is not a "
                                    "Sequential, so that layer's input cannot be observed"));
  Sequential lazy{std::make_shared<BatchNorm2d>(0)};
  CHECK_THROWS_WITH(rec.record(3, lazy, randn({2, 2, 3, 3})),
                    Catch::Contains("BnStatsRecorder: '0' is a lazy BatchNorm2d that has not seen an input yet; record "
                                    "after the first training step"));
  CHECK(lazy.named_parameters().empty());  // still lazy
  CHECK(rec.rows().size() == 2);
}
