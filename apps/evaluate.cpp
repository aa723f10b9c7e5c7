// Evaluation: the accuracy and mean loss of a model on a CIFAR-10 split (with
// flip test-time augmentation), and of a checkpoint (`norma eval`).
#include <nlohmann/json.hpp>

#include <norma/core/dist/process_group.h>
#include <norma/norma.h>

#include "checkpoint.h"
#include "download.h"
#include "models.h"
#include "trainer.h"
#include "trainer_detail.h"

namespace norma::app {

using nlohmann::json;
using namespace detail;

namespace detail {

// Correct predictions (argmax of each logits row equals the target).
int64_t count_correct(const Tensor& logits, const Tensor& targets) {
  const Tensor l = logits.contiguous();
  const std::vector<float> t = targets.to_vector();
  const int64_t N = l.shape()[0], C = l.shape()[1];
  const float* p = l.data_ptr();
  int64_t correct = 0;
  for (int64_t i = 0; i < N; ++i) {
    int64_t best = 0;
    for (int64_t c = 1; c < C; ++c)
      if (p[i * C + c] > p[i * C + best]) best = c;
    correct += best == static_cast<int64_t>(t[i]);
  }
  return correct;
}

}  // namespace detail

namespace {

// The batch mirrored left-right (the W axis of NCHW images), for flip TTA.
Tensor mirrored(const Tensor& images) {
  const Tensor x = images.contiguous();
  Tensor out = empty(x.shape());
  const int64_t W = x.shape().back(), rows = x.numel() / W;
  const float* in = x.data_ptr();
  float* o = out.data_ptr();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t w = 0; w < W; ++w) o[r * W + w] = in[r * W + W - 1 - w];
  return out;
}

}  // namespace

EvalResult evaluate(nn::Module& model, const data::CifarDataset& ds, int64_t batch_size, dist::ProcessGroup* pg,
                    bool flip_tta) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = false;
  lo.augment = false;
  lo.rank = pg ? pg->rank() : 0;  // each rank evaluates its share; the sums are combined below
  lo.world_size = pg ? pg->size() : 1;
  data::DataLoader loader(ds, lo);
  loader.set_epoch(0);
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  const auto t0 = Clock::now();
  while (auto b = loader.next()) {
    Tensor logits = model.forward(b->images);
    // Flip TTA: the mean of the logits for the image and its mirror image, so
    // the loss below is the cross-entropy of the averaged prediction.
    if (flip_tta) {
      logits = add(logits, model.forward(mirrored(b->images)));
      float* l = logits.data_ptr();
      for (int64_t i = 0, n = logits.numel(); i < n; ++i) l[i] *= 0.5f;
    }
    loss_sum += nn::cross_entropy(logits, b->targets, nn::Reduction::sum).item();
    correct += count_correct(logits, b->targets);
    r.images += b->targets.numel();
  }
  if (pg) {
    double sums[3] = {loss_sum, static_cast<double>(correct), static_cast<double>(r.images)};
    pg->allreduce_sum(sums, 3);
    loss_sum = sums[0];
    correct = static_cast<int64_t>(sums[1]);
    r.images = static_cast<int64_t>(sums[2]);
  }
  r.img_per_s = r.images / seconds_since(t0);
  r.loss = loss_sum / r.images;
  r.acc = static_cast<double>(correct) / r.images;
  model.train(was_training);
  return r;
}

EvalResult evaluate_checkpoint(const EvalConfig& c) {
  if (c.checkpoint.empty()) fail("--checkpoint: a checkpoint path is required");
  if (c.batch_size < 1) fail("--batch-size: must be at least 1, got {}", c.batch_size);
  check_tta(c.tta);
  if (c.threads > 0) set_num_threads(c.threads);
  // The model and preset a Norma training checkpoint records; else the flags.
  std::string model_name = c.model, preset = c.bn_preset;
  const SafetensorsFile file = load_safetensors(c.checkpoint);
  if (auto it = file.metadata.find("norma"); it != file.metadata.end()) {
    const json meta = json::parse(it->second, nullptr, false);
    if (meta.is_object() && meta.contains("extra") && meta["extra"].contains("run")) {
      model_name = meta["extra"]["run"].value("model", model_name);
      preset = meta["extra"]["run"].value("bn_preset", preset);
    }
  }
  auto model = build_model(model_name, preset);
  nn::load_checkpoint(c.checkpoint, *model, nullptr, nullptr);
  model->eval();
  if (c.fuse_bn) {
    auto seq = std::dynamic_pointer_cast<nn::Sequential>(model);
    if (!seq) fail("--fuse-bn: model '{}' is not a Sequential, so its Conv2d+BatchNorm2d pairs cannot be folded", model_name);
    model = nn::fuse_conv_bn_eval(*seq);
  }
  const data::CifarDataset test_set =
      data::CifarDataset::load(data::find_cifar10_dir(c.data), data::Split::test, data::CifarKind::cifar10, c.limit);
  return evaluate(*model, test_set, c.batch_size, nullptr, c.tta == "flip");
}

}  // namespace norma::app
