// Error messages of the command line (docs/errors.md, "CLI and apps"): the
// trainer's, evaluator's and benchmark's checks of their configs in process,
// and the `norma` binary's exit codes and messages for bad flags.
#include <catch2/catch.hpp>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <norma/apps/models.h>
#include <norma/apps/download.h>
#include <norma/norma.h>

#include "bench.h"
#include "cifar_synth.h"
#include "trainer.h"

namespace fs = std::filesystem;
using namespace norma;
using namespace norma::test;
using Catch::Contains;

namespace {

struct Run {
  int code = -1;
  std::string out, err;
};

// Runs `norma <args>` in `dir`, capturing stdout and stderr.
Run run_norma(const TempDir& dir, const std::string& args, const std::string& env = "") {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const std::string cmd = fmt::format("cd '{}' && {} {} {} >{} 2>{}", dir.str(), env, NORMA_CLI, args, out, err);
  const int status = std::system(cmd.c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::stringstream o, e;
  o << std::ifstream(out).rdbuf();
  e << std::ifstream(err).rdbuf();
  r.out = o.str();
  r.err = e.str();
  return r;
}

// A config that would train on the small synthetic set in `dir`.
app::TrainConfig tiny_config(const TempDir& dir) {
  app::TrainConfig c;
  c.data = dir.str("data");
  c.epochs = 1;
  c.batch_size = 10;
  c.threads = 1;
  c.quiet = true;
  c.test_limit = 20;
  return c;
}

}  // namespace

TEST_CASE("errors: the trainer checks its config before anything else") {
  TempDir dir("errors_train_cfg");
  auto msg = [&](auto edit) {
    app::TrainConfig c = tiny_config(dir);  // no data: every one of these fails first
    edit(c);
    return error_of([&] { app::train(c); });
  };
  CHECK_THAT(msg([](auto& c) { c.epochs = 0; }), Contains("--epochs: must be at least 1, got 0"));
  CHECK_THAT(msg([](auto& c) { c.batch_size = 1; }),
             Contains("--batch-size: must be at least 2 (BatchNorm needs 2 values per channel), got 1"));
  CHECK_THAT(msg([](auto& c) { c.lr = NAN; }), Contains("--lr: must be a positive finite number, got nan"));
  CHECK_THAT(msg([](auto& c) { c.lr = 0; }), Contains("--lr: must be a positive finite number, got 0"));
  CHECK_THAT(msg([](auto& c) { c.lr = INFINITY; }), Contains("--lr: must be a positive finite number, got inf"));
  CHECK_THAT(msg([](auto& c) { c.momentum = NAN; }), Contains("--momentum: must be in [0, 1), got nan"));
  CHECK_THAT(msg([](auto& c) { c.momentum = 1; }), Contains("--momentum: must be in [0, 1), got 1"));
  CHECK_THAT(msg([](auto& c) { c.weight_decay = -1e-4; }), Contains("--weight-decay: must be a finite number >= 0, got -0.0001"));
  CHECK_THAT(msg([](auto& c) { c.weight_decay = INFINITY; }), Contains("--weight-decay: must be a finite number >= 0, got inf"));
  CHECK_THAT(msg([](auto& c) { c.warmup = 1; }), Contains("--warmup: must be in [0, epochs = 1), got 1"));
  CHECK_THAT(msg([](auto& c) { c.warmup = NAN; }), Contains("--warmup: must be in [0, epochs = 1), got nan"));
  CHECK_THAT(msg([](auto& c) { c.label_smoothing = NAN; }), Contains("--label-smoothing: must be in [0, 1), got nan"));
  CHECK_THAT(msg([](auto& c) { c.clip_grad_norm = -1; }),
             Contains("--clip-grad-norm: must be a finite number >= 0 (0: no clipping), got -1"));
  CHECK_THAT(msg([](auto& c) { c.clip_grad_norm = INFINITY; }),
             Contains("--clip-grad-norm: must be a finite number >= 0 (0: no clipping), got inf"));
  CHECK_THAT(msg([](auto& c) { c.limit = 0; }), Contains("--limit: must be a positive number of images, got 0"));
  CHECK_THAT(msg([](auto& c) { c.limit = -5; }), Contains("--limit: must be a positive number of images, got -5"));
  CHECK_THAT(msg([](auto& c) { c.threads = -1; }), Contains("--threads: must be >= 1, got -1"));
  CHECK_THAT(msg([](auto& c) { c.bn_stats_every = 0; }), Contains("--bn-stats-every: must be >= 1, got 0"));
  CHECK_THAT(msg([](auto& c) { c.crop_padding = -1; }), Contains("--crop-padding: must be in [0, 32], got -1"));
  CHECK_THAT(msg([](auto& c) { c.tta = "five-crop"; }), Contains("--tta: must be 'none' or 'flip', got 'five-crop'"));
  // Output files are tried before any data is read.
  const std::string nowhere = dir.file("no/such/dir/out.csv");
  CHECK_THAT(msg([&](auto& c) { c.metrics = nowhere; }), Contains("--metrics: cannot write '" + nowhere + "': No such file or directory"));
  CHECK_THAT(msg([&](auto& c) { c.bn_stats = nowhere; }), Contains("--bn-stats: cannot write '" + nowhere + "': No such file or directory"));
  CHECK(fs::is_empty(dir.path));  // nothing was written
}

TEST_CASE("errors: the trainer names a bad optimizer, schedule or batch size") {
  TempDir dir("errors_train_data");
  write_learnable_cifar10(dir.str("data"), 4, 20);  // 20 training images
  auto msg = [&](auto edit) {
    app::TrainConfig c = tiny_config(dir);
    edit(c);
    return error_of([&] { app::train(c); });
  };
  CHECK_THAT(msg([](auto& c) { c.optimizer = "rmsprop"; }), Contains("--optimizer: 'rmsprop' is not one of sgd, adam, adamw"));
  CHECK_THAT(msg([](auto& c) { c.schedule = "linear"; }),
             Contains("--schedule: 'linear' is not one of onecycle, cosine, step, constant"));
  CHECK_THAT(msg([](auto& c) { c.batch_size = 32; }), Contains("--batch-size: 32 x 1 process(es) is more than the 20 training images"));
  CHECK_THAT(msg([](auto& c) { c.model = "vgg"; }), Contains("make_model: unknown model 'vgg'; accepted names: cifar-small, cifar-small-class, resnet8"));
}

TEST_CASE("errors: --resume refuses other settings, naming the setting and both values") {
  TempDir dir("errors_resume");
  write_learnable_cifar10(dir.str("data"), 4, 20);
  app::TrainConfig c = tiny_config(dir);
  c.checkpoint = dir.file("ck.safetensors");
  app::train(c);
  c.resume = c.checkpoint;
  c.seed = 7;
  CHECK_THAT(error_of([&] { app::train(c); }),
             Contains("--resume: '" + c.checkpoint + "' was written by a run with seed = 0, but this run has seed = 7; "
                      "resume with the same settings"));
}

TEST_CASE("errors: a diverging run stops at the first non-finite loss, naming the step") {
  TempDir dir("errors_diverge");
  write_learnable_cifar10(dir.str("data"), 4, 20);
  app::TrainConfig c = tiny_config(dir);
  c.lr = 1e30;
  c.schedule = "constant";
  CHECK_THAT(error_of([&] { app::train(c); }),
             Contains("train: the loss became ") && Contains(" at epoch 1 step ") &&
                 Contains("); lower --lr or check the data (--detect-anomaly names the first op that produces a non-finite "
                          "value); no --checkpoint was given"));
}

TEST_CASE("errors: weights made non-finite are not saved, and the run says so") {
  TempDir dir("errors_inf_weights");
  write_learnable_cifar10(dir.str("data"), 4, 20);
  app::TrainConfig c = tiny_config(dir);
  c.epochs = 2;
  c.limit = 4;
  c.batch_size = 4;  // one step per epoch: the save comes right after the step that broke the weights
  c.schedule = "constant";
  c.checkpoint = dir.file("ck.safetensors");
  c.lr = 1e300;  // inf in float32; the step's own loss is still finite
  CHECK_THAT(error_of([&] { app::train(c); }),
             Contains("train: after global step 1 (epoch 1) the state is not finite: '0.weight' of shape (32, 3, 3, 3) "
                      "holds 864 non-finite values; it was not saved, so no checkpoint had been written to '" +
                      c.checkpoint + "' yet") &&
                 Contains("; lower --lr (--detect-anomaly names the first op that produces a non-finite value)"));
  CHECK_FALSE(fs::exists(c.checkpoint));
}

TEST_CASE("errors: no room for two checkpoints is found before the first step") {
  TempDir dir("errors_room");
  write_learnable_cifar10(dir.str("data"), 4, 20);
  app::TrainConfig c = tiny_config(dir);
  c.checkpoint = dir.file("ck.safetensors");
  int steps = 0;
  c.on_step = [&](int64_t, double) { ++steps; };
  rlimit old{};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
  rlimit low = old;
  low.rlim_cur = 64 * 1024;  // a file size limit below two checkpoints of cifar-small
  REQUIRE(setrlimit(RLIMIT_FSIZE, &low) == 0);
  const std::string msg = error_of([&] { app::train(c); });
  REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
  CHECK_THAT(msg, Contains("--checkpoint: cannot write '" + c.checkpoint + "': reserving ") &&
                      Contains(" bytes for its checkpoints (two of ") &&
                      Contains(" bytes while one is rewritten) failed: File too large"));
  CHECK(steps == 0);
}

TEST_CASE("errors: --plot names a gnuplot that fails and a plot that was not drawn") {
  TempDir dir("errors_plot");
  write_learnable_cifar10(dir.str("data"), 4, 20);
  fs::create_directories(dir.str("bin"));
  // A stand-in gnuplot: `exit 1` fails; `exit 0` draws nothing, so there is no file to rename.
  auto fake_gnuplot = [&](int code) {
    std::ofstream(dir.file("bin/gnuplot")) << "#!/bin/sh\ncat >/dev/null\nexit " << code << "\n";
    fs::permissions(dir.file("bin/gnuplot"), fs::perms::owner_all);
  };
  const std::string old_path = std::getenv("PATH");
  setenv("PATH", (dir.str("bin") + ":" + old_path).c_str(), 1);
  app::TrainConfig c = tiny_config(dir);
  c.metrics = dir.file("m.csv");
  c.plot = dir.file("curves.png");
  fake_gnuplot(1);
  const std::string failed = error_of([&] { app::train(c); });
  fake_gnuplot(0);
  const std::string undrawn = error_of([&] { app::train(c); });
  setenv("PATH", old_path.c_str(), 1);
  CHECK_THAT(failed, Contains("--plot: gnuplot failed drawing '" + c.plot + "' from '" + c.metrics + "'"));
  CHECK_THAT(undrawn, Contains("--plot: cannot rename '" + c.plot + ".tmp.png' to '" + c.plot + "'"));
}

TEST_CASE("errors: evaluate_checkpoint and run_bench check their configs") {
  app::EvalConfig e;
  CHECK_THAT(error_of([&] { app::evaluate_checkpoint(e); }), Contains("--checkpoint: a checkpoint path is required"));
  e.checkpoint = "x.safetensors";
  e.batch_size = 0;
  CHECK_THAT(error_of([&] { app::evaluate_checkpoint(e); }), Contains("--batch-size: must be at least 1, got 0"));
  app::BenchConfig b;
  b.batch_size = 1;
  CHECK_THAT(error_of([&] { app::run_bench(b); }),
             Contains("--batch-size: must be at least 2 (BatchNorm needs 2 values per channel), got 1"));
  b = app::BenchConfig();
  b.steps = 0;
  CHECK_THAT(error_of([&] { app::run_bench(b); }), Contains("--steps: must be at least 1, got 0"));
  b = app::BenchConfig();
  b.threads = -2;
  CHECK_THAT(error_of([&] { app::run_bench(b); }), Contains("--threads: must be >= 1, got -2"));
}

TEST_CASE("errors: --fuse-bn needs a Sequential, and CifarSmall a BatchNorm2d") {
  TempDir dir("errors_fuse_bn");
  nn::CifarSmall model;
  nn::save(model, dir.file("class.safetensors"));
  app::EvalConfig e;
  e.checkpoint = dir.file("class.safetensors");
  e.model = "cifar-small-class";
  e.fuse_bn = true;
  CHECK_THAT(error_of([&] { app::evaluate_checkpoint(e); }),
             Contains("--fuse-bn: model 'cifar-small-class' is not a Sequential, so its Conv2d+BatchNorm2d pairs "
                      "cannot be folded"));
  CHECK_THAT(error_of([] { nn::CifarSmall bad([](int64_t) { return std::make_shared<nn::ReLU>(); }); }),
             Contains("CifarSmall: the norm factory must make a BatchNorm2d (for 32 channels)"));
}

TEST_CASE("errors: norma exits 2 for an unknown command, CLI11's code for a bad flag and 1 for a runtime error") {
  TempDir dir("errors_cli");
  struct Case {
    std::string args;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"frobnicate", 2, "norma: unknown command 'frobnicate' (expected one of: train, eval, bench, summary, download, demo)"},
      {"", 106, "A subcommand is required"},                                     // CLI11 RequiredError
      {"eval", 106, "--checkpoint is required"},                                 // RequiredError
      {"train --epochs 0", 105, "--epochs: Value 0 not in range"},               // ValidationError
      {"train --epochs two", 105, "--epochs: Value two not in range"},            // ValidationError
      {"train --optimizer rmsprop", 105, "--optimizer: rmsprop not in {sgd,adam,adamw}"},
      {"train --frobnicate", 109, "The following argument was not expected: --frobnicate"},  // ExtrasError
      {"download mnist", 105, "dataset: mnist not in {cifar10}"},
      // Values CLI11's range checks let through (NaN compares false) reach the trainer: a runtime error.
      {"train --lr nan", 1, "norma: error: --lr: must be a positive finite number, got nan"},
      {"train --momentum nan", 1, "norma: error: --momentum: must be in [0, 1), got nan"},
      {"train --weight-decay nan", 1, "norma: error: --weight-decay: must be a finite number >= 0, got nan"},
      {"train --label-smoothing nan", 1, "norma: error: --label-smoothing: must be in [0, 1), got nan"},
      {"train --clip-grad-norm nan", 1, "norma: error: --clip-grad-norm: must be a finite number >= 0 (0: no clipping), got nan"},
      {"train --warmup nan", 1, "norma: error: --warmup: must be in [0, epochs = 15), got nan"},
      {"demo --lr nan --steps 1", 1, "norma: error: --lr: must be a positive finite number, got nan"},
      {"train --data " + dir.str("nowhere"), 1,
       "norma: error: find_cifar10_dir: no CIFAR-10 directory found; tried --data " + dir.str("nowhere") +
           " (does not exist). Pass --data DIR, set NORMA_DATA, or fetch it with `norma download cifar10`"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args);
    const Run r = run_norma(dir, c.args);
    INFO("stderr: " << r.err);
    CHECK(r.code == c.code);
    CHECK_THAT(r.err, Contains(c.message));
  }
}

TEST_CASE("errors: norma download without --archive adds the command to run with a local archive") {
  TempDir dir("errors_cli_download");
  std::ofstream(dir.file("file")) << "x";
  const Run r = run_norma(dir, "download cifar10 --dir " + dir.file("file") + "/data");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Contains("norma: error: download_cifar10: cannot create directory '" + dir.file("file") + "/data': ") &&
                        Contains("\n(from the command line: norma download cifar10 --archive cifar-10-binary.tar.gz --dir " +
                                 dir.file("file") + "/data)"));
}
