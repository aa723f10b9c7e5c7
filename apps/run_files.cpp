// What a run writes besides training, and the checks before it does: that
// every output file can be written and the checkpoints have room, that the
// state is finite before a save, the metrics CSV (and a resumed run's earlier
// rows) and its plot.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include <norma/norma.h>

#include "trainer.h"
#include "trainer_detail.h"

namespace norma::app {

double peak_rss_mb() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

namespace detail {

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

// The size of a checkpoint of `model` trained by `opt`: the model's state, the
// optimizer's buffers (per parameter: a momentum for SGD with momentum, none
// without; two moments for Adam and AdamW, three with amsgrad, and two for an
// optimizer of another kind), and room for the header and the 8-byte batch counters.
int64_t checkpoint_bytes(const nn::Module& model, const optim::Optimizer& opt) {
  int64_t state = 0, buffers = 0;
  for (const auto& [name, t] : model.state_dict()) state += t.numel() * 4;
  for (const optim::ParamGroup& g : opt.param_groups()) {
    const int per_param = opt.name() == "SGD" ? (g.momentum.value_or(0) > 0 ? 1 : 0) : 2 + g.amsgrad.value_or(false);
    for (const Tensor& p : g.params) buffers += per_param * p.numel() * 4;
  }
  return state + buffers + (1 << 16);
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

// The per-step file's header (the smoothing: kEma, trainer_detail.h).
const char* kStepsHeader = "step,epoch,lr,train_loss,train_acc,train_loss_ema,train_acc_ema";

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

}  // namespace detail

}  // namespace norma::app
