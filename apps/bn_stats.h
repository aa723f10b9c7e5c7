// BatchNorm diagnostics: per BatchNorm2d layer and training step, the statistics
// of the batch the layer sees against its running statistics, and its gamma and
// beta, collected as rows and written as CSV for plotting (the trainer's
// --bn-stats PATH; docs/normalization turns it into figures with gnuplot).
//
// How: record(step, model, input) runs one extra forward of `input` through the
// model under NoGradGuard, walking Sequentials child by child, and before each
// BatchNorm2d computes the per-channel mean and variance of that layer's input
// with the primitive reductions (mean, var). It costs one forward pass and
// about two reads of every BatchNorm input, so call it every K steps (e.g. every
// 50), not every step. The walk changes nothing: every buffer of the model
// (running statistics, num_batches_tracked) and the global random generator
// (Dropout) are restored afterwards, and the caller's input is not written.
//
// Limitation: only BatchNorm2d layers reachable through nested Sequentials are
// observed; a non-Sequential module (e.g. a residual block) that contains one
// is an error, since its forward gives no access to the BatchNorm's input; so
// is a lazy BatchNorm2d that has not seen an input yet (record after the first
// training step). A forward observer in BatchNorm2d would lift both limits.
#pragma once
#include <string>
#include <vector>

#include <norma/layers/batchnorm2d.h>

namespace norma::nn {

// One layer at one step. Every value is averaged over the C channels; a value
// that does not exist (no running statistics, no affine) is NaN ("nan" in CSV).
struct BnStatsRow {
  int64_t step = 0;
  std::string layer;         // dotted module name, as in state_dict ("1", "features.4")
  double batch_mean = 0;     // mean over channels of the batch mean of each channel
  double batch_var = 0;      // ... of the batch variance, with the estimator running_var averages
                             // (unbiased M/(M-1) by default, biased when unbiased_running_var is off;
                             // NaN for one value per channel, M = 1, with the unbiased one)
  double running_mean = 0;   // mean over channels of running_mean
  double running_var = 0;    // mean over channels of running_var
  double gamma_mean = 0, gamma_std = 0;  // mean and population std over channels of weight
  double beta_mean = 0, beta_std = 0;    // ... of bias
  // Per channel (C), filled only when the recorder keeps channels.
  std::vector<float> channel_batch_mean, channel_batch_var, channel_running_mean, channel_running_var;
};

class BnStatsRecorder {
 public:
  // per_channel: also keep each channel's statistics (C floats x 4 per row).
  explicit BnStatsRecorder(bool per_channel = false) : per_channel_(per_channel) {}

  // Appends one row per BatchNorm2d of `model`, in forward order, for `input`
  // (a batch the model accepts). The model's modes are used as they are, so in
  // training mode the walk sees exactly what a training forward would. On error
  // nothing is appended and the model is left unchanged.
  void record(int64_t step, Module& model, const Tensor& input);

  const std::vector<BnStatsRow>& rows() const { return rows_; }
  void clear() { rows_.clear(); }

  // All rows so far, as CSV with the header
  //   step,layer,batch_mean,batch_var,running_mean,running_var,gamma_mean,gamma_std,beta_mean,beta_std
  // written atomically: a temporary beside `path` (path + ".tmp.<pid>") is
  // written, flushed and fsynced, then renamed over `path`, so a reader (a
  // plotting script during training) never sees half a file. An unwritable
  // path is a norma::Error naming it and the system's reason.
  void write_csv(const std::string& path) const;
  // One line per channel: step,layer,channel,batch_mean,batch_var,running_mean,running_var.
  // Needs per_channel; written atomically like write_csv.
  void write_channel_csv(const std::string& path) const;

 private:
  bool per_channel_;
  std::vector<BnStatsRow> rows_;
};

}  // namespace norma::nn
