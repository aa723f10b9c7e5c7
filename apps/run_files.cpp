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


// Draws train/test loss and accuracy per epoch from the metrics CSV.
void plot_metrics(const std::string& csv, const std::string& png) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    fmt::print(stderr, "norma: --plot: gnuplot is not installed, so no plot was drawn (apt-get install gnuplot-nox); "
                       "the figures are in {}\n", csv);
    return;
  }
  const std::string tmp = png + ".tmp.png";
  const std::string script = fmt::format(
      "set terminal pngcairo size 1100,420 font ',10'\nset output '{1}'\nset datafile separator ','\n"
      "set key autotitle columnhead\nset grid\nset xlabel 'epoch'\nset multiplot layout 1,2\n"
      "set title 'loss'\nset logscale y\nplot '< grep -E \"^(kind|epoch),\" {0}' using 2:5 with linespoints title 'train', "
      "'' using 2:7 with linespoints title 'test'\n"
      "set title 'accuracy'\nunset logscale y\nset yrange [0:1]\nplot '< grep -E \"^(kind|epoch),\" {0}' using 2:6 with linespoints "
      "title 'train', '' using 2:8 with linespoints title 'test'\nunset multiplot\n",
      csv, tmp);
  std::FILE* gp = ::popen("gnuplot 2>&1", "w");
  if (!gp) fail("--plot: cannot start gnuplot: {}", std::strerror(errno));
  std::fputs(script.c_str(), gp);
  if (::pclose(gp) != 0) fail("--plot: gnuplot failed drawing '{}' from '{}'", png, csv);
  if (std::rename(tmp.c_str(), png.c_str()) != 0) fail("--plot: cannot rename '{}' to '{}'", tmp, png);
}

const char* kMetricsHeader = "kind,epoch,step,lr,train_loss,train_acc,test_loss,test_acc,seconds,img_per_s";

// Rows of an earlier run's metrics file up to `step`, for a resumed run.
std::vector<std::string> read_metrics_until(const std::string& path, int64_t step) {
  std::vector<std::string> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.starts_with("kind,")) continue;
    // kind,epoch,step,...
    const size_t a = line.find(','), b = line.find(',', a + 1), c = line.find(',', b + 1);
    if (a == std::string::npos || c == std::string::npos) continue;
    if (std::stoll(line.substr(b + 1, c - b - 1)) <= step) rows.push_back(line);
  }
  return rows;
}

}  // namespace detail

}  // namespace norma::app
