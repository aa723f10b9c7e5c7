// Checkpoints survive what a long run meets: a writer killed by SIGKILL at
// random moments, a full disk (simulated with a file size limit, RLIMIT_FSIZE,
// which fails writes with EFBIG as a full disk fails them with ENOSPC; no root
// needed), and a checkpoint that cannot be written in the middle of training.
// The file always holds the last complete checkpoint, and temporaries do not pile up.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>  // nn::TrainingState's JSON member

#include <norma/apps/bn_stats.h>
#include <norma/apps/checkpoint.h>
#include <norma/apps/models.h>
#include <norma/core/atomic_file.h>

#include "cifar_synth.h"
#include "temp_dir.h"
#include "test_util.h"
#include "trainer.h"

using namespace norma;
using norma::test::check_error;
using norma::test::TempDir;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// A file size limit for this process while alive, SIGXFSZ ignored: a write
// past `bytes` fails with EFBIG ("File too large"). In-process rather than in a
// forked child because the trainer uses OpenMP, whose thread pool a fork does
// not carry over; lowering the soft limit and raising it back needs no root.
struct FileSizeLimit {
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_) == 0);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit r = old_;
    r.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &r) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit old_{};
  void (*old_handler_)(int) = nullptr;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Names in `dir` that start with `prefix`.
int count_files(const TempDir& dir, const std::string& prefix) {
  int n = 0;
  for (const std::string& name : dir.listing()) n += name.starts_with(prefix);
  return n;
}

// A cifar-small model and its SGD (momentum) after one step on a random batch:
// a checkpoint with optimizer/ tensors, like the trainer's.
struct TrainedState {
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<optim::SGD> opt;
  explicit TrainedState(uint64_t seed) {
    manual_seed(seed);
    model = nn::make_model("cifar-small");
    opt = std::make_unique<optim::SGD>(model->parameters(), 0.1, 0.9);
    Tensor loss = nn::cross_entropy(model->forward(randn({4, 3, 32, 32})), tensor({0, 1, 2, 3}));
    loss.backward();
    opt->step();
  }
  NamedTensors tensors() const {  // model and optimizer state
    NamedTensors all = model->state_dict();
    for (auto& [name, t] : opt->state_dict().tensors) all.emplace_back("optimizer/" + name, t);
    return all;
  }
};

bool same_bits(const NamedTensors& a, const NamedTensors& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].first != b[i].first || a[i].second.to_vector() != b[i].second.to_vector()) return false;
  return true;
}

nn::TrainingState epoch(int64_t e) {
  nn::TrainingState s;
  s.epoch = e;
  return s;
}

// A dead process id: a child that has exited and been reaped.
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return pid;
}

}  // namespace

TEST_CASE("atomic_file: the next write removes temporaries of dead writers and keeps a live writer's") {
  TempDir dir("atomic_stale");
  const std::string path = dir.file("m.csv");
  const std::string dead = fmt::format("m.csv.tmp.{}", dead_pid());
  for (const std::string& name : {dead, std::string("m.csv.tmp.1"), std::string("m.csv.tmp.x"),
                                  std::string("other.csv.tmp.999999999")})
    std::ofstream(dir.file(name)) << "left over";
  write_file_atomically(path, "a,b\n", "--metrics");
  CHECK(slurp(path) == "a,b\n");
  // pid 1 is alive (init); "x" is not a pid; another file's temporaries are not this write's business.
  CHECK(dir.listing() == std::vector<std::string>{"m.csv", "m.csv.tmp.1", "m.csv.tmp.x", "other.csv.tmp.999999999"});
}

TEST_CASE("checkpoint: writers killed by SIGKILL at random moments always leave a loadable checkpoint") {
  // A child writes checkpoints A and B in turn until the parent kills it after
  // a seeded random delay; after each kill the file must load and be exactly A
  // or B, and at most one temporary (the killed writer's) may be left, which the
  // next writer removes.
  TempDir dir("sigkill");
  const std::string path = dir.file("ck.safetensors");
  const TrainedState a(1), b(2);
  nn::save_checkpoint(path, *a.model, a.opt.get(), nullptr, epoch(1));
  const auto t0 = Clock::now();
  nn::save_checkpoint(path, *b.model, b.opt.get(), nullptr, epoch(2));
  const double save_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  const double max_delay_ms = std::max(20.0, 4 * save_ms);  // a few saves per child, not always the first
  std::mt19937 rng(20240607);
  std::uniform_real_distribution<double> delay_ms(0, max_delay_ms);
  const int kills = 20;
  int mid_write = 0;  // kills that left a temporary: the writer was inside save_checkpoint
  std::set<int64_t> seen;
  const auto t_start = Clock::now();
  for (int k = 0; k < kills; ++k) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {  // the writer, until killed; it never returns into Catch
      try {
        for (int64_t i = 0;; ++i) {
          const TrainedState& s = i % 2 == 0 ? a : b;
          nn::save_checkpoint(path, *s.model, s.opt.get(), nullptr, epoch(1 + i % 2));
        }
      } catch (...) {
      }
      ::_exit(3);
    }
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(delay_ms(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CAPTURE(k);
    REQUIRE(WIFSIGNALED(status));  // not an exit: the writer did not fail on its own
    const int temps = count_files(dir, "ck.safetensors.tmp.");
    CHECK(temps <= 1);
    mid_write += temps;
    const TrainedState fresh(3);
    const nn::TrainingState got = nn::load_checkpoint(path, *fresh.model, fresh.opt.get(), nullptr);
    REQUIRE((got.epoch == 1 || got.epoch == 2));
    CHECK(same_bits(fresh.tensors(), (got.epoch == 1 ? a : b).tensors()));
    seen.insert(got.epoch);
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  // The kills landed both inside a write and between writes that completed.
  CHECK(mid_write >= 1);
  CHECK(seen.size() == 2);
  nn::save_checkpoint(path, *a.model, a.opt.get(), nullptr, epoch(1));
  CHECK(dir.listing() == std::vector<std::string>{"ck.safetensors"});  // the last killed writer's temporary is gone
  fmt::print("sigkill: {} kills, delays 0..{:.1f} ms (one save {:.1f} ms, {} bytes): {} mid-write, states seen {}, "
             "{:.2f} s\n", kills, max_delay_ms, save_ms, fs::file_size(path), mid_write, seen.size(), total_s);
}

TEST_CASE("full disk: checkpoint, metrics and BatchNorm statistics writers fail naming the file, keeping the old one") {
  TempDir dir("full_disk");
  const TrainedState a(1), b(2);
  const std::string ck = dir.file("ck.safetensors");
  nn::save_checkpoint(ck, *a.model, a.opt.get(), nullptr, epoch(1));
  const std::string before = slurp(ck);
  const std::string metrics = dir.file("m.csv");
  const std::string rows = "kind,epoch\nepoch,1\n";
  write_file_atomically(metrics, rows, "--metrics");
  nn::BnStatsRecorder bn_stats;
  bn_stats.record(1, *a.model, randn({2, 3, 32, 32}));
  const std::string bn_csv = dir.file("bn.csv");
  bn_stats.write_csv(bn_csv);
  const std::string bn_before = slurp(bn_csv);
  for (int step = 2; step <= 10; ++step) bn_stats.record(step, *a.model, randn({2, 3, 32, 32}));
  {
    FileSizeLimit limit(before.size() / 2);  // each new file is larger than the limit
    check_error([&] { nn::save_checkpoint(ck, *b.model, b.opt.get(), nullptr, epoch(2)); },
                {"save_safetensors: cannot write '" + ck + "'", "File too large"});
  }
  {
    FileSizeLimit limit(rows.size() + 4);
    check_error([&] { write_file_atomically(metrics, rows + "epoch,2\n", "--metrics"); },
                {"--metrics: cannot write '" + metrics + "'", "File too large"});
  }
  {
    FileSizeLimit limit(bn_before.size() + 4);
    check_error([&] { bn_stats.write_csv(bn_csv); }, {"BnStatsRecorder: cannot write '" + bn_csv + "'", "File too large"});
  }
  CHECK(slurp(ck) == before);
  CHECK(slurp(metrics) == rows);
  CHECK(slurp(bn_csv) == bn_before);
  CHECK(dir.listing() == std::vector<std::string>{"bn.csv", "ck.safetensors", "m.csv"});  // no temporaries
  const TrainedState fresh(3);
  CHECK(nn::load_checkpoint(ck, *fresh.model, fresh.opt.get(), nullptr).epoch == 1);
}

namespace {
app::TrainConfig synthetic_run(const TempDir& dir) {
  test::write_learnable_cifar10(dir.str("data"), 40, 20);  // 200 training images: 10 steps of 20 per epoch
  app::TrainConfig c;
  c.data = dir.str("data");
  c.epochs = 3;
  c.batch_size = 20;
  c.lr = 0.02;
  c.test_limit = 20;
  c.threads = 1;
  c.quiet = true;
  c.checkpoint = dir.file("ck.safetensors");
  return c;
}
}  // namespace

TEST_CASE("train: a checkpoint that cannot be written mid-training stops the run and the last good one stays") {
  TempDir dir("train_full");
  app::TrainConfig c = synthetic_run(dir);
  std::optional<FileSizeLimit> limit;
  c.on_step = [&](int64_t step, double) {
    if (step == 15) limit.emplace(fs::file_size(c.checkpoint) / 2);  // the disk "fills" during epoch 2
  };
  std::string msg;
  try {
    app::train(c);
  } catch (const Error& e) {
    msg = e.what();
  }
  limit.reset();
  INFO(msg);
  CHECK_THAT(msg, Catch::Contains("train: the checkpoint at global step 20 (epoch 2) could not be written, so the run "
                                  "stops; '" + c.checkpoint + "' still holds the run at global step 10: "
                                  "save_safetensors: cannot write '" + c.checkpoint + "'") &&
                      Catch::Contains("File too large"));
  auto model = app::build_model(c.model, c.bn_preset);
  const nn::TrainingState s = nn::load_checkpoint(c.checkpoint, *model, nullptr, nullptr);
  CHECK(s.epoch == 1);
  CHECK(s.step == 10);
  CHECK(count_files(dir, "ck.safetensors.") == 0);  // no temporary, no probe
}

TEST_CASE("train: a file size limit below a checkpoint's size is found before the first step") {
  TempDir dir("train_limit");
  app::TrainConfig c = synthetic_run(dir);
  int steps = 0;
  c.on_step = [&](int64_t, double) { ++steps; };
  {
    FileSizeLimit limit(64 * 1024);
    check_error([&] { app::train(c); }, {"--checkpoint: cannot write '" + c.checkpoint + "': reserving ",
                                         "bytes for its checkpoints", "failed: File too large"});
  }
  CHECK(steps == 0);
  CHECK(count_files(dir, "ck.safetensors") == 0);
  // A checkpoint already there (as when resuming from it) counts as room for one of the two.
  std::ofstream(c.checkpoint) << std::string(1000, 'x');
  {
    FileSizeLimit limit(64 * 1024);
    check_error([&] { app::train(c); }, {"less the 1000 bytes of the file already there) failed: File too large"});
  }
  CHECK(steps == 0);
  CHECK(dir.listing() == std::vector<std::string>{"ck.safetensors", "data"});
}
