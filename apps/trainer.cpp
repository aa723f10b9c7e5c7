// The training loop: data, model, optimizer, schedule, checkpoints, metrics.
#include "trainer.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <nlohmann/json.hpp>

#include <norma/core/atomic_file.h>
#include <norma/core/dist/process_group.h>
#include <norma/norma.h>
#include <norma/core/dist/data_parallel.h>

#include "bn_stats.h"
#include "checkpoint.h"
#include "progress.h"

namespace norma::app {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

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

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

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

std::unique_ptr<optim::Optimizer> make_optimizer(const TrainConfig& c, nn::Module& model) {
  auto groups = optim::decay_groups(model, c.weight_decay);
  if (c.optimizer == "sgd")
    return std::make_unique<optim::SGD>(groups, c.lr, c.momentum, 0.0, c.weight_decay, c.nesterov && c.momentum > 0);
  if (c.optimizer == "adam")
    return std::make_unique<optim::Adam>(groups, c.lr, std::pair{0.9, 0.999}, 1e-8, c.weight_decay);
  if (c.optimizer == "adamw")
    return std::make_unique<optim::AdamW>(groups, c.lr, std::pair{0.9, 0.999}, 1e-8, c.weight_decay);
  fail("--optimizer: '{}' is not one of sgd, adam, adamw", c.optimizer);
}

// The per-step schedule over total_steps, with `warmup_steps` of linear warm-up
// (from 0.1 x lr); null for a constant lr without warm-up.
std::shared_ptr<optim::LRScheduler> make_schedule(const TrainConfig& c, optim::Optimizer& opt, int64_t total_steps,
                                                  int64_t warmup_steps) {
  using namespace optim;
  if (c.schedule == "onecycle") {
    OneCycleOptions o;
    if (warmup_steps > 0) o.pct_start = static_cast<double>(warmup_steps) / total_steps;
    o.cycle_momentum = c.optimizer != "sgd" || c.momentum > 0;
    return std::make_shared<OneCycleLR>(opt, c.lr, total_steps, o);
  }
  std::shared_ptr<LRScheduler> main;
  const int64_t rest = std::max<int64_t>(1, total_steps - warmup_steps);
  if (c.schedule == "cosine")
    main = std::make_shared<CosineAnnealingLR>(opt, rest);
  else if (c.schedule == "step")
    main = std::make_shared<MultiStepLR>(opt, std::vector<int64_t>{rest / 2, rest * 3 / 4}, 0.1);
  else if (c.schedule != "constant")
    fail("--schedule: '{}' is not one of onecycle, cosine, step, constant", c.schedule);
  if (warmup_steps == 0) return main;
  auto warm = std::make_shared<LinearLR>(opt, 0.1, 1.0, warmup_steps);
  if (!main) return warm;
  return std::make_shared<SequentialLR>(opt, std::vector<std::shared_ptr<LRScheduler>>{warm, main},
                                        std::vector<int64_t>{warmup_steps});
}

// torch.nn.utils.clip_grad_norm_: when the L2 norm of all the gradients
// together exceeds max_norm, scales them to max_norm.
void clip_grad_norm(nn::Module& model, double max_norm) {
  std::vector<Tensor> grads;
  double sq = 0;
  for (Tensor& p : model.parameters()) {
    if (!p.grad().defined()) continue;
    if (!p.grad().is_contiguous()) p.set_grad(p.grad().contiguous());
    grads.push_back(p.grad());
    const float* g = grads.back().data_ptr();
    for (int64_t i = 0, n = grads.back().numel(); i < n; ++i) sq += static_cast<double>(g[i]) * g[i];
  }
  const double norm = std::sqrt(sq);
  if (norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (Tensor& g : grads) {
      float* d = g.data_ptr();
      for (int64_t i = 0, n = g.numel(); i < n; ++i) d[i] *= scale;
    }
  }
}

void check_tta(const std::string& tta) {
  if (tta != "none" && tta != "flip") fail("--tta: must be 'none' or 'flip', got '{}'", tta);
}

void check_config(const TrainConfig& c) {
  if (c.epochs < 1) fail("--epochs: must be at least 1, got {}", c.epochs);
  if (c.batch_size < 2) fail("--batch-size: must be at least 2 (BatchNorm needs 2 values per channel), got {}", c.batch_size);
  if (!(c.lr > 0) || !std::isfinite(c.lr)) fail("--lr: must be a positive finite number, got {}", c.lr);
  if (!(c.momentum >= 0 && c.momentum < 1)) fail("--momentum: must be in [0, 1), got {}", c.momentum);
  if (!(c.weight_decay >= 0) || !std::isfinite(c.weight_decay))
    fail("--weight-decay: must be a finite number >= 0, got {}", c.weight_decay);
  if (!(c.warmup >= 0 && c.warmup < c.epochs))
    fail("--warmup: must be in [0, epochs = {}), got {}", c.epochs, c.warmup);
  if (!(c.label_smoothing >= 0 && c.label_smoothing < 1))
    fail("--label-smoothing: must be in [0, 1), got {}", c.label_smoothing);
  if (c.limit == 0 || c.limit < -1) fail("--limit: must be a positive number of images, got {}", c.limit);
  if (c.threads < 0) fail("--threads: must be >= 1, got {}", c.threads);
  if (c.crop_padding < 0 || c.crop_padding > 32) fail("--crop-padding: must be in [0, 32], got {}", c.crop_padding);
  if (!(c.clip_grad_norm >= 0) || !std::isfinite(c.clip_grad_norm))
    fail("--clip-grad-norm: must be a finite number >= 0 (0: no clipping), got {}", c.clip_grad_norm);
  if (c.bn_stats_every < 1) fail("--bn-stats-every: must be >= 1, got {}", c.bn_stats_every);
  check_tta(c.tta);
}

// Fails now, before any training, if `path` cannot be written (its directory
// is missing or read-only), rather than after the first epoch.
void check_writable(const char* flag, const std::string& path) {
  if (path.empty()) return;
  const std::string probe = path + ".probe." + std::to_string(::getpid());
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) fail("{}: cannot write '{}': {}", flag, path, std::strerror(errno));
  std::fclose(f);
  std::remove(probe.c_str());
}

// The size of a checkpoint of `model` trained by `c`'s optimizer: the model's
// state, the optimizer's buffers (a momentum per parameter for SGD, two for
// Adam), and room for the header and the 8-byte batch counters.
int64_t checkpoint_bytes(const nn::Module& model, const TrainConfig& c) {
  int64_t state = 0, params = 0;
  for (const auto& [name, t] : model.state_dict()) state += t.numel() * 4;
  for (const Tensor& p : model.parameters()) params += p.numel() * 4;
  const int buffers = c.optimizer == "sgd" ? (c.momentum > 0 ? 1 : 0) : 2;
  return state + buffers * params + (1 << 16);
}

// Fails now, before any training, if checkpoints of `bytes` cannot be written
// beside `path` (a full disk, a quota, a file size limit), rather than after
// the first epoch. Rewriting one needs room for two (the old file and the
// temporary), less what a file already at `path` holds; that room is reserved
// in probe files of at most `bytes` each, which are then removed. A disk that
// fills during the run is the checkpoint write's own error.
void check_room(const char* flag, const std::string& path, int64_t bytes) {
  if (path.empty()) return;
  std::error_code ec;
  const auto existing = std::filesystem::file_size(path, ec);
  const int64_t need = std::max(bytes, 2 * bytes - (ec ? 0 : static_cast<int64_t>(existing)));
  std::vector<std::string> probes;
  int err = 0;
  for (int64_t left = need; left > 0 && err == 0; left -= bytes) {
    probes.push_back(fmt::format("{}.probe.{}.{}", path, ::getpid(), probes.size()));
    const int fd = ::open(probes.back().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
      err = errno;
      break;
    }
    err = ::posix_fallocate(fd, 0, std::min(left, bytes));  // returns the error, does not set errno
    ::close(fd);
  }
  for (const std::string& p : probes) std::remove(p.c_str());
  if (err != 0)
    fail("{}: cannot write '{}': reserving {} bytes for its checkpoints (two of {} bytes while one is rewritten{}) "
         "failed: {}", flag, path, need, bytes,
         ec ? "" : fmt::format(", less the {} bytes of the file already there", existing), std::strerror(err));
}

// "'3.weight' of shape (16) holds 16 non-finite values" for the first tensor
// of the model's or the optimizer's state that holds NaN or Inf; "" if none does.
std::string nonfinite_state(const nn::Module& model, const optim::Optimizer& opt) {
  NamedTensors all = model.state_dict();
  for (auto& [name, t] : opt.state_dict().tensors) all.emplace_back("optimizer/" + name, t);
  for (const auto& [name, t] : all) {
    const std::vector<float> v = t.to_vector();
    const auto bad = std::count_if(v.begin(), v.end(), [](float x) { return !std::isfinite(x); });
    if (bad > 0) return fmt::format("'{}' of shape {} holds {} non-finite value{}", name, t.shape(), bad, bad == 1 ? "" : "s");
  }
  return "";
}


// Draws three panels from the metrics CSV (per epoch) and the steps CSV (per
// step, x = step / steps per epoch, so epoch N's row sits at the end of its
// last step): the loss, per step, smoothed and per epoch, on a log scale; the
// accuracy; the learning rate each step trained with.
void plot_metrics(const std::string& csv, const std::string& steps_csv, const std::string& png) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    fmt::print(stderr, "norma: --plot: gnuplot is not installed, so no plot was drawn (apt-get install gnuplot-nox); "
                       "the figures are in {}\n", csv);
    return;
  }
  const std::string tmp = png + ".tmp.png";
  const std::string script = fmt::format(
      "set terminal pngcairo size 1500,440 font ',10'\nset output '{2}'\nset datafile separator ','\n"
      "set grid\nset key noautotitle\nset xlabel 'epoch'\nset multiplot layout 1,3\n"
      "E = '< grep -E \"^epoch,\" {0}'\nS = '{1}'\n"
      "set title 'loss'\nset logscale y\n"
      "plot S skip 1 using 2:4 with lines lc rgb '#c6dbef' title 'train, per step', "
      "S skip 1 using 2:6 with lines lw 2 lc rgb '#2171b5' title 'train, smoothed', "
      "E using 2:5 with points pt 7 lc rgb '#08306b' title 'train, epoch mean', "
      "E using 2:7 with linespoints lw 2 pt 7 lc rgb '#d62728' title 'test'\n"
      "set title 'accuracy'\nunset logscale y\nset yrange [0:1]\nset key left top\n"
      "plot S skip 1 using 2:7 with lines lw 2 lc rgb '#2171b5' title 'train, smoothed', "
      "E using 2:6 with points pt 7 lc rgb '#08306b' title 'train, epoch mean', "
      "E using 2:8 with linespoints lw 2 pt 7 lc rgb '#d62728' title 'test'\n"
      "set title 'learning rate'\nset autoscale y\nset key right top\n"
      "plot S skip 1 using 2:3 with lines lw 2 lc rgb '#238b45' title 'lr'\nunset multiplot\n",
      csv, steps_csv, tmp);
  std::FILE* gp = ::popen("gnuplot 2>&1", "w");
  if (!gp) fail("--plot: cannot start gnuplot: {}", std::strerror(errno));
  std::fputs(script.c_str(), gp);
  if (::pclose(gp) != 0) fail("--plot: gnuplot failed drawing '{}' from '{}' and '{}'", png, csv, steps_csv);
  if (std::rename(tmp.c_str(), png.c_str()) != 0) fail("--plot: cannot rename '{}' to '{}'", tmp, png);
}

const char* kMetricsHeader = "kind,epoch,step,lr,train_loss,train_acc,test_loss,test_acc,seconds,img_per_s";

// The per-step CSV beside the metrics: m.csv -> m.steps.csv.
std::string steps_path(const std::string& metrics) {
  const bool csv = metrics.ends_with(".csv");
  return (csv ? metrics.substr(0, metrics.size() - 4) : metrics) + ".steps.csv";
}

// The per-step file's header. The smoothed columns are exponential moving
// averages with factor kEma (a span of about 20 steps), divided by
// 1 - kEma^steps so the first steps are not pulled towards 0.
const char* kStepsHeader = "step,epoch,lr,train_loss,train_acc,train_loss_ema,train_acc_ema";
constexpr double kEma = 0.95;

// Writes `rows` under `header` to `path`, atomically.
void write_csv(const std::string& path, const char* header, const std::vector<std::string>& rows, const char* who) {
  std::string text = std::string(header) + "\n";
  for (const auto& r : rows) text += r + "\n";
  write_file_atomically(path, text, who);
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> fields;
  std::istringstream row(line);
  for (std::string f; std::getline(row, f, ',');) fields.push_back(f);
  return fields;
}

// Rows of an earlier run's CSV whose global step (column `step_column`, from 0)
// is at most `step`, for a resumed run.
std::vector<std::string> read_rows_until(const std::string& path, int step_column, int64_t step) {
  std::vector<std::string> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    const std::vector<std::string> fields = split_csv(line);
    if (std::ssize(fields) > step_column && std::stoll(fields[step_column]) <= step) rows.push_back(line);
  }
  return rows;
}

}  // namespace

int interrupt_signal() { return g_signal.load(); }

double peak_rss_mb() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

std::shared_ptr<nn::Module> build_model(const std::string& model, const std::string& bn_preset,
                                        std::shared_ptr<dist::ProcessGroup> pg) {
  nn::bn_presets::preset_by_name(bn_preset, 1);  // an unknown name fails here, listing the accepted ones
  auto bn = [bn_preset, pg](int64_t c) -> nn::ModulePtr {
    nn::BatchNorm2dOptions o = nn::bn_presets::preset_by_name(bn_preset, c);
    o.layout(nn::Layout::NCHW);  // Norma's convolutions are NCHW; statistics are per channel either way
    if (pg) o.process_group(pg);
    return std::make_shared<nn::BatchNorm2d>(o);
  };
  return nn::make_model(model, bn);
}

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

namespace {

// One training run, in parts: set up (the constructor), resume, train an
// epoch step by step, evaluate and save at its end, report an interrupt,
// finish. train() calls them in that order. Only rank 0 (lead) writes files
// and prints; every rank runs the same collectives in the same order.
class Run {
 public:
  explicit Run(const TrainConfig& c);
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
  const data::CifarDataset train_set, test_set;
  std::unique_ptr<data::DataLoader> loader;
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<optim::Optimizer> opt;
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

data::CifarDataset load_split(const TrainConfig& c, data::Split split) {
  const std::string dir = data::find_cifar10_dir(c.data);
  return data::CifarDataset::load(dir, split, data::CifarKind::cifar10,
                                  split == data::Split::train ? c.limit : c.test_limit);
}

Run::Run(const TrainConfig& c)
    : c(c),
      rank(c.process_group ? c.process_group->rank() : 0),
      world(c.process_group ? c.process_group->size() : 1),
      lead(rank == 0),
      train_set(load_split(c, data::Split::train)),
      test_set(load_split(c, data::Split::test)),
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

  manual_seed(c.seed);
  model = build_model(c.model, c.bn_preset, c.sync_bn ? c.process_group : nullptr);
  if (c.process_group) dist::broadcast_state(*model, *c.process_group, 0);  // every rank starts from rank 0's weights
  opt = make_optimizer(c, *model);
  steps_per_epoch = loader->num_batches();
  const int64_t warmup_steps = static_cast<int64_t>(c.warmup * steps_per_epoch);
  sched = make_schedule(c, *opt, steps_per_epoch * c.epochs, warmup_steps);
  if (lead) check_room("--checkpoint", c.checkpoint, checkpoint_bytes(*model, c));
  // The global batch, not batch size and world size apart: K ranks x B take
  // the same images per step as 1 process x K*B (see DataLoader), so a run may
  // resume at another width.
  run = {{"model", c.model},          {"bn_preset", c.bn_preset},        {"epochs", c.epochs},
         {"global_batch", c.batch_size * world}, {"steps_per_epoch", steps_per_epoch},
         {"optimizer", c.optimizer},  {"schedule", c.schedule},          {"limit", c.limit},
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

TrainResult train(const TrainConfig& c) {
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
  Run run(c);
  run.resume();
  return run.train();
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
