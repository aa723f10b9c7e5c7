// Throughput and a per-layer profile on random data (no dataset needed).
#include "bench.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include <norma/norma.h>

#include "trainer.h"

namespace norma::app {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Forward and backward time of each child of a Sequential, run one layer at a
// time on the activations a real forward produces (training mode). A
// BatchNorm2d and the ReLU after it run fused, as in Sequential::forward: one
// row named "1+2" ("4+5+6" with a 2x2 MaxPool2d after them).
std::vector<LayerTime> profile_layers(nn::Sequential& seq, const Tensor& input, int64_t reps) {
  std::vector<LayerTime> out;
  const auto children = seq.named_children();
  Tensor x = input;
  for (size_t i = 0; i < children.size(); ++i) {
    const auto& [name, layer] = children[i];
    const bool pooled = i + 2 < children.size() &&
                        nn::fuses_with_relu_pool(*layer, *children[i + 1].second, *children[i + 2].second);
    const bool fused = pooled || (i + 1 < children.size() && nn::fuses_with_relu(*layer, *children[i + 1].second));
    std::vector<double> fwd, bwd;
    Tensor y;
    // The first layer's input is the data, which needs no gradient in a real
    // step: its backward then computes only the parameters' gradients (for a
    // Conv2d, dw without dx). Layers after it get the gradient of their input.
    const bool data_input = out.empty() && !layer->parameters().empty();
    for (int64_t r = 0; r < reps; ++r) {
      Tensor xi = data_input ? x.detach() : x.detach().requires_grad_();
      auto t0 = Clock::now();
      y = pooled  ? static_cast<nn::BatchNorm2d&>(*layer).forward_relu_pool(xi)
          : fused ? static_cast<nn::BatchNorm2d&>(*layer).forward_relu(xi)
                  : layer->forward(xi);
      fwd.push_back(ms_since(t0));
      Tensor dy = ones(y.shape());
      t0 = Clock::now();
      y.backward(dy);
      bwd.push_back(ms_since(t0));
      layer->zero_grad();
    }
    if (pooled) {
      out.push_back({name + "+" + children[i + 1].first + "+" + children[i + 2].first,
                     layer->name() + "+ReLU+MaxPool2d", median(fwd), median(bwd)});
      i += 2;
    } else if (fused)
      out.push_back({name + "+" + children[++i].first, layer->name() + "+ReLU", median(fwd), median(bwd)});
    else
      out.push_back({name, layer->name(), median(fwd), median(bwd)});
    x = y.detach();
  }
  return out;
}

}  // namespace

BenchResult run_bench(const BenchConfig& c) {
  if (c.batch_size < 2) fail("--batch-size: must be at least 2 (BatchNorm needs 2 values per channel), got {}", c.batch_size);
  if (c.steps < 1) fail("--steps: must be at least 1, got {}", c.steps);
  if (c.threads < 0) fail("--threads: must be >= 1, got {}", c.threads);
  if (c.threads > 0) set_num_threads(c.threads);
  manual_seed(c.seed);
  auto model = build_model(c.model, c.bn_preset);
  optim::SGD opt(optim::decay_groups(*model, 5e-4), 0.01, 0.9, 0, 5e-4, true);
  const Tensor images = randn({c.batch_size, 3, 32, 32});
  std::vector<float> t(c.batch_size);
  for (int64_t i = 0; i < c.batch_size; ++i) t[i] = static_cast<float>(i % 10);
  const Tensor targets = from_vector(t, {c.batch_size});

  BenchResult r;
  r.batch_size = c.batch_size;
  r.threads = get_num_threads();
  r.blas_core = openblas_get_corename();
  model->train();
  std::vector<double> fwd, bwd, upd, total;
  for (int64_t s = 0; s < c.warmup + c.steps; ++s) {
    auto t0 = Clock::now();
    Tensor loss = nn::cross_entropy(model->forward(images), targets);
    const double f = ms_since(t0);
    auto t1 = Clock::now();
    opt.zero_grad();
    loss.backward();
    const double b = ms_since(t1);
    auto t2 = Clock::now();
    opt.step();
    const double u = ms_since(t2);
    if (s < c.warmup) continue;
    fwd.push_back(f);
    bwd.push_back(b);
    upd.push_back(u);
    total.push_back(ms_since(t0));
  }
  r.forward_ms = median(fwd);
  r.backward_ms = median(bwd);
  r.optimizer_ms = median(upd);
  r.train_img_per_s = c.batch_size / (median(total) / 1000);

  model->eval();
  std::vector<double> eval;
  {
    NoGradGuard g;
    for (int64_t s = 0; s < c.warmup + c.steps; ++s) {
      auto t0 = Clock::now();
      model->forward(images);
      if (s >= c.warmup) eval.push_back(ms_since(t0));
    }
  }
  r.eval_img_per_s = c.batch_size / (median(eval) / 1000);
  model->train();
  if (auto seq = std::dynamic_pointer_cast<nn::Sequential>(model))
    r.layers = profile_layers(*seq, images, std::max<int64_t>(3, c.steps / 4));
  r.peak_rss_mb = peak_rss_mb();
  return r;
}

std::string format_bench(const BenchResult& r) {
  std::string s = fmt::format("batch {}, {} thread(s), OpenBLAS core {}\n", r.batch_size, r.threads, r.blas_core);
  s += fmt::format("train  {:8.1f} img/s   step {:.1f} ms = forward {:.1f} + backward {:.1f} + optimizer {:.1f}\n",
                   r.train_img_per_s, r.forward_ms + r.backward_ms + r.optimizer_ms, r.forward_ms, r.backward_ms,
                   r.optimizer_ms);
  s += fmt::format("eval   {:8.1f} img/s\n", r.eval_img_per_s);
  s += fmt::format("peak RSS {:.1f} MB\n", r.peak_rss_mb);
  if (r.layers.empty()) return s;
  double tf = 0, tb = 0;
  for (const auto& l : r.layers) tf += l.forward_ms, tb += l.backward_ms;
  s += fmt::format("\n{:<6} {:<18} {:>10} {:>10} {:>7}\n", "layer", "type", "fwd ms", "bwd ms", "share");
  for (const auto& l : r.layers)
    s += fmt::format("{:<6} {:<18} {:>10.2f} {:>10.2f} {:>6.1f}%\n", l.name, l.type, l.forward_ms, l.backward_ms,
                     100 * (l.forward_ms + l.backward_ms) / (tf + tb));
  s += fmt::format("{:<6} {:<18} {:>10.2f} {:>10.2f}\n", "total", "", tf, tb);
  return s;
}

std::string bench_json(const BenchResult& r) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers)
    layers.push_back({{"name", l.name}, {"type", l.type}, {"forward_ms", l.forward_ms}, {"backward_ms", l.backward_ms}});
  return nlohmann::json{{"batch_size", r.batch_size}, {"threads", r.threads}, {"train_img_per_s", r.train_img_per_s},
                        {"eval_img_per_s", r.eval_img_per_s}, {"forward_ms", r.forward_ms},
                        {"backward_ms", r.backward_ms}, {"optimizer_ms", r.optimizer_ms},
                        {"peak_rss_mb", r.peak_rss_mb}, {"blas_core", r.blas_core}, {"layers", layers}}
      .dump();
}

}  // namespace norma::app
