// BatchNorm diagnostics: the recording walk and the atomic CSV writer.
#include "bn_stats.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include <norma/core/atomic_file.h>
#include <norma/core/autograd.h>
#include <norma/core/ops.h>
#include <norma/layers/sequential.h>

namespace norma::nn {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Restores every buffer of a model and the random generator when it goes out of scope.
struct StateGuard {
  explicit StateGuard(Module& m) : buffers(m.named_buffers()), rng(get_rng_state()) {
    for (auto& [n, t] : buffers) saved.push_back(t.clone());
  }
  ~StateGuard() {
    NoGradGuard g;
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].second.copy_(saved[i]);
    set_rng_state(rng);
  }
  NamedTensors buffers;
  std::vector<Tensor> saved;
  GeneratorState rng;
};

double mean_of(const Tensor& t) { return t.defined() ? double(t.mean().item()) : kNaN; }
double std_of(const Tensor& t) { return t.defined() ? std::sqrt(double(t.var({}, /*unbiased=*/false).item())) : kNaN; }

// The statistics of x, the input of bn: per channel, then averaged over channels.
BnStatsRow measure(int64_t step, const std::string& name, const BatchNorm2d& bn, const Tensor& x, bool per_channel) {
  const auto& o = bn.options;
  const std::vector<int64_t> dims = o.layout_ == Layout::NCHW ? std::vector<int64_t>{0, 2, 3}
                                                               : std::vector<int64_t>{0, 1, 2};
  Tensor mu = mean(x, dims);                              // (C) batch mean
  Tensor v = var(x, dims, /*unbiased=*/o.unbiased_running_var_);  // (C) what the running average consumes
  BnStatsRow r;
  r.step = step;
  r.layer = name;
  r.batch_mean = mean_of(mu);
  r.batch_var = mean_of(v);
  r.running_mean = mean_of(bn.running_mean);
  r.running_var = mean_of(bn.running_var);
  r.gamma_mean = mean_of(bn.weight);
  r.gamma_std = std_of(bn.weight);
  r.beta_mean = mean_of(bn.bias);
  r.beta_std = std_of(bn.bias);
  if (per_channel) {
    r.channel_batch_mean = mu.to_vector();
    r.channel_batch_var = v.to_vector();
    const std::vector<float> none(size_t(o.num_features_), std::numeric_limits<float>::quiet_NaN());
    r.channel_running_mean = bn.running_mean.defined() ? bn.running_mean.to_vector() : none;
    r.channel_running_var = bn.running_var.defined() ? bn.running_var.to_vector() : none;
  }
  return r;
}

// The dotted name of the first BatchNorm2d below m, or "" when there is none.
std::string find_batchnorm(const Module& m, const std::string& prefix) {
  for (const auto& [n, child] : m.named_children()) {
    if (dynamic_cast<const BatchNorm2d*>(child.get())) return join(prefix, n);
    if (std::string found = find_batchnorm(*child, join(prefix, n)); !found.empty()) return found;
  }
  return "";
}

// Forward through m, recording every BatchNorm2d met on the way.
Tensor walk(Module& m, const std::string& name, const Tensor& x, int64_t step, bool per_channel,
            std::vector<BnStatsRow>& out) {
  if (auto* seq = dynamic_cast<Sequential*>(&m)) {
    Tensor h = x;
    for (auto& [n, child] : seq->named_children()) h = walk(*child, join(name, n), h, step, per_channel, out);
    return h;
  }
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) {
    if (!bn->is_materialized())  // its forward would create parameters that no one restores
      fail("BnStatsRecorder: '{}' is a lazy BatchNorm2d that has not seen an input yet; record after the first "
           "training step", name);
    const int64_t channel_dim = bn->options.layout_ == Layout::NCHW ? 1 : 3;
    if (x.dim() != 4 || x.size(channel_dim) != bn->options.num_features_)
      return bn->forward(x);  // batch_norm2d reports the bad shape in its own words
    out.push_back(measure(step, name, *bn, x, per_channel));
    return bn->forward(x);
  }
  if (std::string inner = find_batchnorm(m, name); !inner.empty())
    fail("BnStatsRecorder: '{}' ({}) contains the BatchNorm2d '{}' but is not a Sequential, so that layer's "
         "input cannot be observed", name, m.name(), inner);
  return m.forward(x);
}

// A CSV field: quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}


}  // namespace

void BnStatsRecorder::record(int64_t step, Module& model, const Tensor& input) {
  if (!input.defined()) fail("BnStatsRecorder: record(step {}) got an undefined input tensor", step);
  NoGradGuard g;
  std::vector<BnStatsRow> rows;
  {
    StateGuard keep(model);  // the walk's training forwards update buffers; undo that
    walk(model, "", input.clone(), step, per_channel_, rows);  // clone: in-place layers must not write the input
  }
  rows_.insert(rows_.end(), std::make_move_iterator(rows.begin()), std::make_move_iterator(rows.end()));
}

void BnStatsRecorder::write_csv(const std::string& path) const {
  std::string text = "step,layer,batch_mean,batch_var,running_mean,running_var,gamma_mean,gamma_std,beta_mean,beta_std\n";
  for (const BnStatsRow& r : rows_)
    text += fmt::format("{},{},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g}\n", r.step, csv_field(r.layer),
                        r.batch_mean, r.batch_var, r.running_mean, r.running_var, r.gamma_mean, r.gamma_std,
                        r.beta_mean, r.beta_std);
  write_file_atomically(path, text, "BnStatsRecorder");
}

void BnStatsRecorder::write_channel_csv(const std::string& path) const {
  if (!per_channel_)
    fail("BnStatsRecorder: write_channel_csv('{}') needs a recorder made with per_channel=true", path);
  std::string text = "step,layer,channel,batch_mean,batch_var,running_mean,running_var\n";
  for (const BnStatsRow& r : rows_)
    for (size_t c = 0; c < r.channel_batch_mean.size(); ++c)
      text += fmt::format("{},{},{},{:.9g},{:.9g},{:.9g},{:.9g}\n", r.step, csv_field(r.layer), c,
                          r.channel_batch_mean[c], r.channel_batch_var[c], r.channel_running_mean[c],
                          r.channel_running_var[c]);
  write_file_atomically(path, text, "BnStatsRecorder");
}

}  // namespace norma::nn
