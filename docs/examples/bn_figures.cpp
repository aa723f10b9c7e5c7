// The data behind docs/normalization/figures: a short training of cifar-small
// that writes CSV files, which scripts/plot_bn_figures.sh turns into PNGs.
//   bn_figures OUT_DIR [STEPS [BATCH]]   (default 200 steps of batch 32)
// Data: a synthetic, learnable 10-class task (below), not CIFAR-10.
// Files written to OUT_DIR:
//   bn_hist.csv            histograms of 4 channels of conv [3]'s output before
//                          BatchNorm [4] and after its normalisation (xhat), on
//                          one batch of 64 after training
//   bn_stats.csv,
//   bn_stats_channels.csv  BnStatsRecorder every step: batch vs running statistics
//   bn_momentum.csv        running_mean under four momentum rules, one channel
//                          whose batch mean jumps from 0 to 2 at step 60
// Exits non-zero when the training does not learn or a file cannot be written.
#include <cmath>
#include <cstdio>
#include <numbers>
#include <string>

#include <norma/apps/bn_stats.h>
#include <norma/norma.h>
#include <norma/apps/models.h>

using namespace norma;
using namespace norma::nn;
namespace presets = norma::nn::bn_presets;

namespace {

// Synthetic images: class k is a grating at angle (k / 2) * 36 degrees with 2
// or 4 periods per image (k even or odd), in a colour (k % 3 dominant), with a
// random phase, a random per-image brightness and contrast, pixel noise, and an
// offset of 0.5 like raw pixel values in [0, 1].
void synthetic_batch(int64_t N, Tensor& x, Tensor& y) {
  const float pi = std::numbers::pi_v<float>;
  std::vector<float> xv(static_cast<size_t>(N * 3 * 32 * 32)), yv(static_cast<size_t>(N));
  Tensor noise = randn({N, 3, 32, 32}) * 0.3f;
  const float* nz = noise.data_ptr();
  for (int64_t n = 0; n < N; ++n) {
    const int k = int(random_uniform() * 10) % 10;
    yv[size_t(n)] = float(k);
    const float angle = float(k / 2) * pi / 5, periods = k % 2 ? 4.0f : 2.0f, phase = random_uniform() * 2 * pi;
    const float bright = random_uniform() - 0.5f, contrast = 0.5f + random_uniform();
    for (int64_t c = 0; c < 3; ++c) {
      const float colour = c == k % 3 ? 1.0f : 0.3f;
      for (int64_t i = 0; i < 32; ++i)
        for (int64_t j = 0; j < 32; ++j) {
          const float u = (float(j) * std::cos(angle) + float(i) * std::sin(angle)) * 2 * pi * periods / 32;
          const size_t at = size_t(((n * 3 + c) * 32 + i) * 32 + j);
          xv[at] = 0.5f + bright + contrast * colour * 0.5f * std::sin(u + phase) + nz[at];
        }
    }
  }
  x = from_vector(xv, {N, 3, 32, 32});
  y = from_vector(yv, {N});
}

FILE* open_or_fail(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) fail("bn_figures: cannot write {}", path);
  return f;
}

// Density histograms of channels 0..3 of a (N, C, H, W) tensor, `bins` bins over [lo, hi).
std::vector<std::vector<double>> histograms(const Tensor& t, double lo, double hi, int bins) {
  std::vector<std::vector<double>> h(4, std::vector<double>(size_t(bins), 0.0));
  const int64_t N = t.size(0), C = t.size(1), HW = t.size(2) * t.size(3);
  const float* p = t.contiguous().data_ptr();
  const double width = (hi - lo) / bins, total = double(N * HW);
  for (int64_t c = 0; c < 4; ++c)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        const int b = int(std::floor((p[(n * C + c) * HW + i] - lo) / width));
        if (b >= 0 && b < bins) h[size_t(c)][size_t(b)] += 1 / (total * width);
      }
  return h;
}

// A range covering mean +- 4 std of each of channels 0..3.
std::pair<double, double> range_of(const Tensor& t) {
  auto m = t.mean({0, 2, 3}).to_vector(), v = t.var({0, 2, 3}, false).to_vector();
  double lo = 1e30, hi = -1e30;
  for (size_t c = 0; c < 4; ++c) {
    lo = std::min(lo, m[c] - 4 * std::sqrt(double(v[c])));
    hi = std::max(hi, m[c] + 4 * std::sqrt(double(v[c])));
  }
  return {lo, hi};
}

void write_histograms(const std::string& path, const Tensor& before, const Tensor& after) {
  const int bins = 80;
  auto [lb, ub] = range_of(before);
  auto [la, ua] = range_of(after);
  auto hb = histograms(before, lb, ub, bins), ha = histograms(after, la, ua, bins);
  FILE* f = open_or_fail(path);
  std::fprintf(f, "x_before,before_c0,before_c1,before_c2,before_c3,x_after,after_c0,after_c1,after_c2,after_c3\n");
  for (int b = 0; b < bins; ++b) {
    std::fprintf(f, "%.4f", lb + (ub - lb) * (b + 0.5) / bins);
    for (int c = 0; c < 4; ++c) std::fprintf(f, ",%.5f", hb[size_t(c)][size_t(b)]);
    std::fprintf(f, ",%.4f", la + (ua - la) * (b + 0.5) / bins);
    for (int c = 0; c < 4; ++c) std::fprintf(f, ",%.5f", ha[size_t(c)][size_t(b)]);
    std::fprintf(f, "\n");
  }
  std::fclose(f);
}

// One channel whose batch mean jumps from 0 to 2 at step 60; four running-average rules follow it.
void write_momentum(const std::string& path) {
  BatchNorm2d fast(presets::pytorch(1)), slow(presets::brainpy(1)), sched(presets::puzzlelib(1)),
      cumulative(presets::pytorch(1, std::nullopt));
  slow.options.layout(Layout::NCHW);  // one channel: the layout does not change the numbers
  FILE* f = open_or_fail(path);
  std::fprintf(f, "step,batch_mean,pytorch_0.1,brainpy_0.01,puzzlelib,pytorch_none\n");
  NoGradGuard g;
  for (int t = 1; t <= 150; ++t) {
    Tensor x = randn({16, 1, 4, 4}) + (t >= 60 ? 2.0f : 0.0f);
    for (BatchNorm2d* bn : {&fast, &slow, &sched, &cumulative}) bn->forward(x);
    std::fprintf(f, "%d,%.5f,%.5f,%.5f,%.5f,%.5f\n", t, x.mean().item(), fast.running_mean.item(),
                 slow.running_mean.item(), sched.running_mean.item(), cumulative.running_mean.item());
  }
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: bn_figures OUT_DIR [STEPS [BATCH]]\n");
    return 2;
  }
  const std::string out = argv[1];
  const int steps = argc > 2 ? std::stoi(argv[2]) : 200;
  const int64_t batch = argc > 3 ? std::stoi(argv[3]) : 32;
  try {
    manual_seed(1);
    auto net = cifar_small();
    optim::SGD opt(net->parameters(), 0.02, 0.9);
    BnStatsRecorder rec(/*per_channel=*/true);
    double recent_loss = 0, recent_correct = 0, first_loss = 0;
    const int window = std::min(20, steps);
    for (int step = 1; step <= steps; ++step) {
      Tensor x, y;
      synthetic_batch(batch, x, y);
      rec.record(step, *net, x);  // an extra forward; buffers and generator are restored
      opt.zero_grad();
      Tensor logits = net->forward(x);
      Tensor loss = cross_entropy(logits, y);
      loss.backward();
      opt.step();
      if (step == 1) first_loss = loss.item();
      if (step > steps - window) {
        recent_loss += loss.item() / window;
        auto pred = logits.argmax(1).to_vector(), yv = y.to_vector();
        for (size_t i = 0; i < pred.size(); ++i) recent_correct += pred[i] == yv[i] ? 1.0 / double(batch * window) : 0;
      }
    }
    rec.write_csv(out + "/bn_stats.csv");
    rec.write_channel_csv(out + "/bn_stats_channels.csv");

    // conv [3]'s output on a fresh batch, and BatchNorm [4]'s normalisation of it (xhat: no gamma, beta).
    NoGradGuard g;
    Tensor x, y;
    synthetic_batch(64, x, y);
    Tensor h = x;
    for (size_t i = 0; i <= 3; ++i) h = (*net)[i]->forward(h);
    BatchNormArgs args;  // batch statistics, no running update
    write_histograms(out + "/bn_hist.csv", h, batch_norm2d(h, Tensor(), Tensor(), Tensor(), Tensor(), args));
    write_momentum(out + "/bn_momentum.csv");

    fmt::print("{} steps: loss {:.3f} at step 1, {:.3f} and accuracy {:.1f}% over the last {} training batches\n",
               steps, first_loss, recent_loss, 100 * recent_correct, window);
    fmt::print("wrote {}/bn_hist.csv, bn_stats.csv, bn_stats_channels.csv, bn_momentum.csv\n", out);
    // Learning at all is the check, for runs long enough to learn: twice chance (10%).
    if (steps >= 100 && !(recent_correct > 0.2)) {
      fmt::print("the task was not learned\n");
      return 1;
    }
  } catch (const Error& e) {
    fmt::print(stderr, "{}\n", e.what());
    return 1;
  }
  return 0;
}
