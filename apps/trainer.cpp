// The training loop: data, model, optimizer, schedule, checkpoints, metrics,
// signals; train() for any nn::Module, and for a model of the registry by name.
#include "trainer.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>

#include <norma/core/atomic_file.h>
#include <norma/core/dist/process_group.h>
#include <norma/norma.h>
#include <norma/core/dist/data_parallel.h>

#include "bn_stats.h"
#include "checkpoint.h"
#include "models.h"
#include "progress.h"
#include "trainer_detail.h"

namespace norma::app {

using nlohmann::json;
using namespace detail;

namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal = sig; }

// A signal's handler for the run, put back when train() returns or throws.
struct ScopedSignal {
  ScopedSignal(int sig, void (*handler)(int)) : sig_(sig), old_(std::signal(sig, handler)) {}
  ~ScopedSignal() { std::signal(sig_, old_); }
  ScopedSignal(const ScopedSignal&) = delete;
  ScopedSignal& operator=(const ScopedSignal&) = delete;

 private:
  int sig_;
  void (*old_)(int);
};

}  // namespace

int interrupt_signal() { return g_signal.load(); }

namespace {

// One training run of `model`, in parts: set up (the constructor: the data,
// and the optimizer and schedule `parts` does not give), resume, train an
// epoch step by step, evaluate and save at its end, report an interrupt,
// finish. train() calls them in that order. Only rank 0 (lead) writes files
// and prints; every rank runs the same collectives in the same order.
class Run {
 public:
  Run(nn::Module& model, const TrainConfig& c, const TrainParts& parts);
  void resume();
  TrainResult train();

 private:
  bool train_epoch();  // false: interrupted by a signal
  float train_step(const data::Batch& b);
  void end_epoch(double epoch_s, double epoch_compute, int64_t epoch_images);
  void save(int64_t at_epoch, int64_t in_epoch);
  void record_step(double lr, float loss, double acc);
  void restore_ema();
  void write_metrics();
  std::string checkpoint_note() const;
  void report_interrupt();
  void finish();

  const TrainConfig& c;
  const Clock::time_point t_start = Clock::now();
  const int rank, world;
  const bool lead;
  const std::shared_ptr<const data::CifarDataset> train_data, test_data;  // the parts' or loaded from c.data
  const data::CifarDataset &train_set, &test_set;
  std::unique_ptr<data::DataLoader> loader;
  nn::Module* const model;
  std::shared_ptr<optim::Optimizer> opt;
  std::shared_ptr<optim::LRScheduler> sched;
  int64_t steps_per_epoch = 0;
  json run;  // what a checkpoint must agree on to be resumed by this run

  // Where training stands (what a checkpoint saves).
  int64_t epoch = 0, step = 0, step_in_epoch = 0;
  double epoch_loss = 0;
  int64_t epoch_correct = 0, epoch_seen = 0;
  std::vector<std::string> metric_rows;
  std::vector<std::string> step_rows;   // the steps CSV's rows
  double ema_loss = 0, ema_acc = 0;     // not yet divided by 1 - kEma^ema_steps
  int64_t ema_steps = 0;

  int64_t saved_step = -1;  // the global step of the last checkpoint this run wrote
  bool had_checkpoint = false;
  nn::BnStatsRecorder bn_stats;
  TrainResult result;
  double train_seconds = 0;
  int64_t train_images = 0;
  Progress progress;
};

Run::Run(nn::Module& net, const TrainConfig& c, const TrainParts& parts)
    : c(c),
      rank(c.process_group ? c.process_group->rank() : 0),
      world(c.process_group ? c.process_group->size() : 1),
      lead(rank == 0),
      train_data(load_split(c, data::Split::train, parts.train_dataset)),
      test_data(load_split(c, data::Split::test, parts.test_dataset)),
      train_set(*train_data),
      test_set(*test_data),
      model(&net),
      progress(lead && !c.quiet) {
  if (train_set.size() < c.batch_size * world)
    fail("--batch-size: {} x {} process(es) is more than the {} training images", c.batch_size, world, train_set.size());
  // The last batch is dropped only when it would hold one image per process,
  // which BatchNorm cannot train on.
  const bool drop_last = train_set.size() % (c.batch_size * world) < 2 * world &&
                         train_set.size() % (c.batch_size * world) != 0;
  data::LoaderOptions lo;
  lo.batch_size = c.batch_size;
  lo.seed = c.seed;
  lo.drop_last = drop_last;
  lo.augment = c.augment;
  lo.crop_padding = int(c.crop_padding);
  lo.rank = rank;
  lo.world_size = world;
  loader = std::make_unique<data::DataLoader>(train_set, lo);

  if (c.process_group) dist::broadcast_state(*model, *c.process_group, 0);  // every rank starts from rank 0's weights
  opt = parts.optimizer ? parts.optimizer : make_optimizer(c, *model);
  steps_per_epoch = loader->num_batches();
  const int64_t warmup_steps = static_cast<int64_t>(c.warmup * steps_per_epoch);
  sched = parts.lr_scheduler ? parts.lr_scheduler(*opt, steps_per_epoch * c.epochs)
                             : make_schedule(c, *opt, steps_per_epoch * c.epochs, warmup_steps);
  if (lead) check_room("--checkpoint", c.checkpoint, checkpoint_bytes(*model, *opt));
  // A part the program gave is recorded by what it is: the model by
  // parts.model_name (else its class name), an optimizer by its kind, a schedule as "custom".
  const std::string model_name = !parts.model_name.empty() ? parts.model_name : model->name();
  const std::string optimizer = parts.optimizer ? opt->name() : c.optimizer;
  const std::string schedule = parts.lr_scheduler ? "custom" : c.schedule;
  // The global batch, not batch size and world size apart: K ranks x B take
  // the same images per step as 1 process x K*B (see DataLoader), so a run may
  // resume at another width.
  run = {{"model", model_name},       {"bn_preset", c.bn_preset},        {"epochs", c.epochs},
         {"global_batch", c.batch_size * world}, {"steps_per_epoch", steps_per_epoch},
         {"optimizer", optimizer},    {"schedule", schedule},            {"limit", c.limit},
         {"seed", c.seed}};
  had_checkpoint = !c.checkpoint.empty() && std::filesystem::exists(c.checkpoint);
}

void Run::resume() {
  if (c.resume.empty()) return;
  nn::TrainingState s = nn::load_checkpoint(c.resume, *model, opt.get(), sched.get());
  json saved = s.extra.value("run", json::object());
  if (saved.contains("batch_size") && saved.contains("world_size") && !saved.contains("global_batch"))
    saved["global_batch"] = saved["batch_size"].get<int64_t>() * saved["world_size"].get<int64_t>();
  for (const auto& [key, value] : run.items())
    if (saved.contains(key) && saved[key] != value)
      fail("--resume: '{}' was written by a run with {} = {}, but this run has {} = {}; resume with the same "
           "settings", c.resume, key, saved[key].dump(), key, value.dump());
  epoch = s.epoch;
  step = s.step;
  step_in_epoch = s.extra.value("step_in_epoch", int64_t{0});
  epoch_loss = s.extra.value("epoch_loss", 0.0);
  epoch_correct = s.extra.value("epoch_correct", int64_t{0});
  epoch_seen = s.extra.value("epoch_seen", int64_t{0});
  if (!lead) epoch_loss = 0, epoch_correct = epoch_seen = 0;  // the saved partial sums are global: count them once
  if (lead && !c.metrics.empty()) {
    metric_rows = read_rows_until(c.metrics, 2, step);
    step_rows = read_rows_until(steps_path(c.metrics), 0, step);
    restore_ema();
  }
  if (lead && !c.quiet)
    fmt::print("resumed from {} at epoch {} step {} ({} steps into the epoch)\n", c.resume, epoch + 1, step,
               step_in_epoch);
}

// What the checkpoint file holds, for an error that stops the run.
std::string Run::checkpoint_note() const {
  if (c.checkpoint.empty()) return "no --checkpoint was given";
  if (saved_step >= 0) return fmt::format("'{}' still holds the run at global step {}", c.checkpoint, saved_step);
  if (had_checkpoint) return fmt::format("'{}' is unchanged (this run had not written it yet)", c.checkpoint);
  return fmt::format("no checkpoint had been written to '{}' yet", c.checkpoint);
}

// Called by every rank: the epoch's partial sums are summed over the ranks.
void Run::save(int64_t at_epoch, int64_t in_epoch) {
  if (c.checkpoint.empty()) return;
  // The epoch's partial sums over all ranks, so a run of any width can resume them.
  double sums[3] = {epoch_loss, static_cast<double>(epoch_correct), static_cast<double>(epoch_seen)};
  if (c.process_group) c.process_group->allreduce_sum(sums, 3);
  if (!lead) return;
  // A last step that made the weights infinite leaves a finite loss behind; saving them would overwrite the
  // last good checkpoint with one that cannot train.
  if (const std::string bad = nonfinite_state(*model, *opt); !bad.empty())
    fail("train: after global step {} (epoch {}) the state is not finite: {}; it was not saved, so {}; lower --lr "
         "(--detect-anomaly names the first op that produces a non-finite value)", step, epoch + 1, bad,
         checkpoint_note());
  json extra = {{"run", run}, {"step_in_epoch", in_epoch}, {"epoch_loss", sums[0]},
                {"epoch_correct", int64_t(sums[1])}, {"epoch_seen", int64_t(sums[2])}};
  try {
    nn::save_checkpoint(c.checkpoint, *model, opt.get(), sched.get(), {at_epoch, step, extra});
  } catch (const Error& e) {
    fail("train: the checkpoint at global step {} (epoch {}) could not be written, so the run stops; {}: {}", step,
         epoch + 1, checkpoint_note(), e.what());
  }
  saved_step = step;
}

// One row of the steps CSV: the step's lr, loss and batch accuracy, and their moving averages.
void Run::record_step(double lr, float loss, double acc) {
  ema_loss = kEma * ema_loss + (1 - kEma) * loss;
  ema_acc = kEma * ema_acc + (1 - kEma) * acc;
  const double debias = 1 - std::pow(kEma, ++ema_steps);
  step_rows.push_back(fmt::format("{},{:.4f},{:.6g},{:.6f},{:.6f},{:.6f},{:.6f}", step,
                                  static_cast<double>(step) / steps_per_epoch, lr, loss, acc, ema_loss / debias,
                                  ema_acc / debias));
}

// A resumed run's moving averages continue from the last row read back.
void Run::restore_ema() {
  if (step_rows.empty()) return;
  const std::vector<std::string> f = split_csv(step_rows.back());
  if (f.size() < 7) return;
  ema_steps = std::stoll(f[0]);
  const double debias = 1 - std::pow(kEma, ema_steps);
  ema_loss = std::stod(f[5]) * debias;
  ema_acc = std::stod(f[6]) * debias;
}

void Run::write_metrics() {
  if (!lead || c.metrics.empty()) return;
  write_csv(c.metrics, kMetricsHeader, metric_rows, "--metrics");
  write_csv(steps_path(c.metrics), kStepsHeader, step_rows, "--metrics");
}

// One step: forward, loss, backward, (all-reduce), update. Returns the loss.
float Run::train_step(const data::Batch& b) {
  Tensor logits, loss;
  float loss_value = 0;
  try {  // with --detect-anomaly, the first op to produce NaN/Inf (forward or backward) throws in here
    logits = model->forward(b.images);
    loss = nn::cross_entropy(logits, b.targets, nn::Reduction::mean, c.label_smoothing);
    loss_value = loss.item();
    if (std::isfinite(loss_value)) {
      opt->zero_grad();
      loss.backward();
    }
  } catch (const Error& e) {
    if (!c.detect_anomaly) throw;
    fail("train: a non-finite value at epoch {} step {} (global step {}): {}; lower --lr or check the data; {}",
         epoch + 1, step_in_epoch + 1, step + 1, e.what(), checkpoint_note());
  }
  if (!std::isfinite(loss_value))
    fail("train: the loss became {} at epoch {} step {} (global step {}); lower --lr or check the data "
         "(--detect-anomaly names the first op that produces a non-finite value); {}",
         std::isnan(loss_value) ? "nan" : fmt::format("{}", loss_value), epoch + 1,
         step_in_epoch + 1, step + 1, checkpoint_note());
  if (c.process_group) dist::allreduce_gradients(*model, *c.process_group);
  if (c.clip_grad_norm > 0) clip_grad_norm(*model, c.clip_grad_norm);
  opt->step();
  if (sched) sched->step();
  const int64_t correct = count_correct(logits, b.targets), n = b.targets.numel();
  ++step;
  ++step_in_epoch;
  epoch_loss += static_cast<double>(loss_value) * n;
  epoch_correct += correct;
  epoch_seen += n;
  return loss_value;
}

bool Run::train_epoch() {
  loader->set_epoch(epoch);
  for (int64_t i = 0; i < step_in_epoch; ++i) loader->next();  // resumed mid-epoch: skip what was trained
  const auto t_epoch = Clock::now();
  double epoch_compute = 0;
  int64_t epoch_images = 0;  // this process's, this session (a resumed epoch's earlier images are not timed)
  progress.start_epoch(epoch + 1, c.epochs, steps_per_epoch, step_in_epoch);
  while (auto b = loader->next()) {
    const auto t_step = Clock::now();
    const double lr = opt->param_groups()[0].lr.value_or(c.lr);  // the lr this step trains with
    const int64_t correct_before = epoch_correct;
    const float loss_value = train_step(*b);
    const int64_t n = b->targets.numel();
    const double dt = seconds_since(t_step);
    epoch_images += n;
    epoch_compute += dt;
    train_images += n;
    if (lead && !c.bn_stats.empty() && (step == 1 || step % c.bn_stats_every == 0))
      bn_stats.record(step, *model, b->images);
    if (lead && c.metrics_every_step)
      metric_rows.push_back(fmt::format("step,{},{},{:.6g},{:.6f},{:.6f},,,{:.4f},{:.1f}", epoch + 1, step, lr,
                                        loss_value, static_cast<double>(epoch_correct - correct_before) / n, dt,
                                        n / dt));
    if (lead) record_step(lr, loss_value, static_cast<double>(epoch_correct - correct_before) / n);
    progress.step(step_in_epoch, loss_value, static_cast<double>(epoch_correct) / epoch_seen,
                  (epoch_images * world) / seconds_since(t_epoch));
    if (c.on_step) c.on_step(step, loss_value);
    if (c.process_group) {  // every rank stops at the same step, or the others would wait forever
      int64_t stop = g_signal.load();
      c.process_group->allreduce_sum(&stop, 1);
      if (stop && !g_signal) g_signal = SIGINT;
    }
    if (g_signal) return false;
  }
  train_seconds += epoch_compute;
  end_epoch(seconds_since(t_epoch), epoch_compute, epoch_images);
  return true;
}

// Evaluates, prints and records the epoch, then saves it.
void Run::end_epoch(double epoch_s, double epoch_compute, int64_t epoch_images) {
  EvalResult test;
  try {
    // At the training batch size: evaluation then reuses the blocks the
    // caching allocator holds for training instead of a second, larger set.
    test = evaluate(*model, test_set, c.batch_size, c.process_group.get(), c.tta == "flip");
  } catch (const Error& e) {
    if (!c.detect_anomaly) throw;
    fail("train: a non-finite value evaluating after epoch {} (global step {}): {}; lower --lr; {}", epoch + 1, step,
         e.what(), checkpoint_note());
  }
  double sums[3] = {epoch_loss, static_cast<double>(epoch_correct), static_cast<double>(epoch_seen)};
  if (c.process_group) c.process_group->allreduce_sum(sums, 3);  // the whole global batch's figures
  result.train_loss = sums[0] / sums[2];
  result.train_acc = sums[1] / sums[2];
  result.test_loss = test.loss;
  result.test_acc = test.acc;
  progress.finish();
  if (lead && !c.quiet)
    fmt::print("epoch {:>3}/{}  train loss {:.4f} acc {:.4f}  test loss {:.4f} acc {:.4f}  {:.1f} s  {:.0f} img/s\n",
               epoch + 1, c.epochs, result.train_loss, result.train_acc, test.loss, test.acc, epoch_s,
               epoch_images * world / epoch_compute);
  metric_rows.push_back(fmt::format("epoch,{},{},{:.6g},{:.6f},{:.6f},{:.6f},{:.6f},{:.3f},{:.1f}", epoch + 1, step,
                                    opt->param_groups()[0].lr.value_or(c.lr), result.train_loss, result.train_acc,
                                    test.loss, test.acc, epoch_s, epoch_images * world / epoch_compute));
  step_in_epoch = 0;
  epoch_loss = 0;
  epoch_correct = epoch_seen = 0;
  save(epoch + 1, 0);
  write_metrics();
  if (lead && !c.bn_stats.empty()) bn_stats.write_csv(c.bn_stats);
}

// SIGINT or SIGTERM stopped the epoch after a step: save where it stands.
void Run::report_interrupt() {
  save(epoch, step_in_epoch);
  write_metrics();
  progress.finish();
  if (lead)
    fmt::print(stderr, "norma: interrupted by {} at epoch {} step {}; {}\n", g_signal == SIGINT ? "SIGINT" : "SIGTERM",
               epoch + 1, step,
               c.checkpoint.empty() ? "no --checkpoint was given, so nothing was saved"
                                    : "resume with --resume " + c.checkpoint);
  result.interrupted = true;
}

// The result's totals, and the plot of the metrics.
void Run::finish() {
  result.epochs = epoch;
  result.steps = step;
  result.train_img_per_s = train_seconds > 0 ? train_images * world / train_seconds : 0;
  result.wall_s = seconds_since(t_start);
  result.peak_rss_mb = peak_rss_mb();
  if (!lead || c.plot.empty() || result.interrupted) return;
  std::string csv = c.metrics, steps_csv = steps_path(c.metrics);
  if (csv.empty()) {  // no --metrics: draw from temporary copies
    csv = c.plot + ".csv.tmp";
    steps_csv = c.plot + ".steps.csv.tmp";
    write_csv(csv, kMetricsHeader, metric_rows, "--plot");
    write_csv(steps_csv, kStepsHeader, step_rows, "--plot");
  }
  plot_metrics(csv, steps_csv, c.plot);
  if (c.metrics.empty()) {
    std::remove(csv.c_str());
    std::remove(steps_csv.c_str());
  }
}

TrainResult Run::train() {
  g_signal = 0;
  ScopedSignal sigint(SIGINT, on_signal), sigterm(SIGTERM, on_signal);
  const int64_t start_epoch = epoch;
  model->train();
  for (; epoch < c.epochs; ++epoch)
    if (!train_epoch()) {
      report_interrupt();
      break;
    }
  if (epoch == start_epoch && !result.interrupted) {  // resumed a finished run: report its weights
    const EvalResult test = evaluate(*model, test_set, c.batch_size, c.process_group.get(), c.tta == "flip");
    result.test_loss = test.loss;
    result.test_acc = test.acc;
    if (lead && !c.quiet)
      fmt::print("nothing left to train: the checkpoint had finished epoch {} of {}; test loss {:.4f} acc {:.4f}\n",
                 epoch, c.epochs, test.loss, test.acc);
  }
  finish();
  return result;
}

}  // namespace

TrainResult train(nn::Module& model, const TrainConfig& c, const TrainParts& parts) {
  check_config(c);
  if (c.threads > 0) set_num_threads(c.threads);
  // Under a file size limit (ulimit -f) a write past it then fails with EFBIG,
  // an error naming the file, instead of SIGXFSZ killing the process.
  ScopedSignal xfsz(SIGXFSZ, SIG_IGN);
  std::optional<autograd::DetectAnomalyGuard> anomaly;
  if (c.detect_anomaly) anomaly.emplace();
  if (!c.process_group || c.process_group->rank() == 0) {
    check_writable("--checkpoint", c.checkpoint);
    check_writable("--metrics", c.metrics);
    check_writable("--bn-stats", c.bn_stats);
    check_writable("--plot", c.plot);
  }
  Run run(model, c, parts);
  run.resume();
  return run.train();
}

TrainResult train(const TrainConfig& c) {
  check_config(c);  // before the model is built, as before anything else
  manual_seed(c.seed);
  const std::shared_ptr<nn::Module> model = build_model(c.model, c.bn_preset, c.sync_bn ? c.process_group : nullptr);
  TrainParts parts;
  parts.model_name = c.model;
  return train(*model, c, parts);
}

}  // namespace norma::app
