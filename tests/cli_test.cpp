// The `norma` CLI end to end on a tiny synthetic CIFAR-10 (and on the real one
// when ../shared/cifar10 is there): train, checkpoint, resume, eval, bench,
// summary, interruption and the error paths.
#include <catch2/catch.hpp>
#include <sys/wait.h>

#include <cctype>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <norma/apps/checkpoint.h>
#include <norma/core/kernel_policy.h>
#include <norma/norma.h>

#include "cifar_synth.h"
#include "trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Run {
  int code = -1;
  std::string out, err;
  json last_json() const {  // the last line of stdout, as JSON
    std::string s = out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    const size_t nl = s.rfind('\n');
    return json::parse(nl == std::string::npos ? s : s.substr(nl + 1));
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `norma <args>` with stdout and stderr captured.
Run norma_cli(const fs::path& work, const std::string& args, const std::string& prefix = "") {
  const fs::path out = work / "stdout.txt", err = work / "stderr.txt";
  const std::string cmd = fmt::format("{}{} {} >{} 2>{}", prefix, NORMA_CLI, args, out.string(), err.string());
  const int status = std::system(cmd.c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// A fresh directory for one test case with a synthetic dataset in data/.
fs::path workdir(const std::string& name, int64_t per_file = 40, int64_t test = 100) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("norma_cli_{}_{}", name, ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  norma::test::write_learnable_cifar10((dir / "data").string(), per_file, test);
  return dir;
}

std::string train_args(const fs::path& w) {
  return fmt::format("train --data {} --epochs 3 --batch-size 20 --lr 0.02 --test-limit 100 --threads 1 --quiet",
                     (w / "data").string());
}

}  // namespace

TEST_CASE("cli: train learns the synthetic task and writes checkpoint, metrics and a JSON summary") {
  const fs::path w = workdir("train");
  const Run r = norma_cli(w, train_args(w) + fmt::format(" --checkpoint {0}/ck.safetensors --metrics {0}/m.csv --json "
                                                          "--plot {0}/p.png", w.string()));
  INFO(r.err);
  REQUIRE(r.code == 0);
  const json j = r.last_json();
  CHECK(j["epochs"] == 3);
  CHECK(j["steps"] == 30);  // 200 images / 20 per batch x 3 epochs
  CHECK(j["test_acc"].get<double>() > 0.5);
  CHECK(j["train_img_per_s"].get<double>() > 0);
  CHECK(j["peak_rss_mb"].get<double>() > 0);
  CHECK(fs::exists(w / "ck.safetensors"));
  const std::string metrics = slurp(w / "m.csv");
  CHECK(metrics.starts_with("kind,epoch,step,lr,train_loss,train_acc,test_loss,test_acc,seconds,img_per_s\n"));
  CHECK(std::count(metrics.begin(), metrics.end(), '\n') == 4);
  CHECK(metrics.find("epoch,3,30,") != std::string::npos);
  // Beside it, one row per step: the lr it trained with, its loss and accuracy, and their moving averages.
  const std::string steps = slurp(w / "m.steps.csv");
  CHECK(steps.starts_with("step,epoch,lr,train_loss,train_acc,train_loss_ema,train_acc_ema\n1,0.1000,"));
  CHECK(std::count(steps.begin(), steps.end(), '\n') == 31);
  CHECK(steps.find("\n30,3.0000,") != std::string::npos);
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0) CHECK(slurp(w / "p.png").starts_with("\x89PNG"));

  // eval of that checkpoint gives the accuracy train reported, also with BatchNorm folded.
  const Run e = norma_cli(w, fmt::format("eval --data {0}/data --checkpoint {0}/ck.safetensors --limit 100 --json",
                                         w.string()));
  INFO(e.err);
  REQUIRE(e.code == 0);
  CHECK(e.last_json()["test_acc"] == j["test_acc"]);
  CHECK(e.last_json()["test_loss"].get<double>() == Approx(j["test_loss"].get<double>()).epsilon(1e-6));
  const Run f = norma_cli(w, fmt::format("eval --data {0}/data --checkpoint {0}/ck.safetensors --limit 100 --fuse-bn "
                                         "--json", w.string()));
  REQUIRE(f.code == 0);
  CHECK(f.last_json()["test_loss"].get<double>() == Approx(j["test_loss"].get<double>()).epsilon(1e-4));
  fs::remove_all(w);
}

TEST_CASE("train: a run interrupted by SIGINT and resumed takes exactly the uninterrupted run's steps") {
  const fs::path w = workdir("resume");
  norma::app::TrainConfig c;
  c.data = (w / "data").string();
  c.epochs = 2;
  c.batch_size = 20;
  c.lr = 0.02;
  c.test_limit = 40;
  c.quiet = true;
  c.threads = 1;
  std::vector<double> straight, resumed;
  c.on_step = [&](int64_t, double loss) { straight.push_back(loss); };
  c.metrics = (w / "straight.csv").string();
  const auto full = norma::app::train(c);
  REQUIRE(straight.size() == 20);

  c.metrics = (w / "m.csv").string();
  c.checkpoint = (w / "ck.safetensors").string();
  c.on_step = [&](int64_t step, double loss) {
    resumed.push_back(loss);
    if (step == 13) std::raise(SIGINT);  // mid-way through epoch 2
  };
  const auto first = norma::app::train(c);
  CHECK(first.interrupted);
  CHECK(first.steps == 13);
  c.resume = c.checkpoint;
  c.on_step = [&](int64_t, double loss) { resumed.push_back(loss); };
  const auto second = norma::app::train(c);
  CHECK_FALSE(second.interrupted);
  CHECK(second.steps == 20);
  CHECK(resumed == straight);  // bit for bit
  CHECK(second.test_loss == full.test_loss);
  CHECK(second.train_loss == full.train_loss);
  // The per-step CSV carries on where it stopped: the same rows, the moving
  // averages restored from the 6 decimals written.
  auto rows = [](const fs::path& p) {
    std::vector<std::vector<std::string>> out;
    std::istringstream in(slurp(p));
    for (std::string line; std::getline(in, line);) {
      out.emplace_back();
      std::istringstream row(line);
      for (std::string f; std::getline(row, f, ',');) out.back().push_back(f);
    }
    return out;
  };
  const auto a = rows(w / "straight.steps.csv"), b = rows(w / "m.steps.csv");
  REQUIRE(a.size() == 21);
  REQUIRE(b.size() == a.size());
  for (size_t i = 1; i < a.size(); ++i) {
    REQUIRE(a[i].size() == 7);
    REQUIRE(b[i].size() == 7);
    for (int k = 0; k < 5; ++k) CHECK(a[i][k] == b[i][k]);
    for (int k = 5; k < 7; ++k) CHECK(std::stod(a[i][k]) == Approx(std::stod(b[i][k])).margin(2e-6));
  }
  fs::remove_all(w);
}

TEST_CASE("train: --clip-grad-norm scales a step's gradients down to that norm, and leaves smaller ones alone") {
  const fs::path w = workdir("clip");
  // One step of plain SGD (lr 1, no momentum, no weight decay), so the change
  // of the parameters is the gradient the optimizer was given.
  norma::app::TrainConfig c;
  c.data = (w / "data").string();
  c.epochs = 1;
  c.batch_size = 20;
  c.limit = 20;
  c.lr = 1;
  c.momentum = 0;
  c.weight_decay = 0;
  c.schedule = "constant";
  c.test_limit = 20;
  c.quiet = true;
  c.threads = 1;
  c.checkpoint = (w / "ck.safetensors").string();
  norma::manual_seed(c.seed);
  const auto start = norma::app::build_model(c.model, c.bn_preset);
  auto step_norm = [&](double clip) {
    c.clip_grad_norm = clip;
    norma::app::train(c);
    const auto after = norma::app::build_model(c.model, c.bn_preset);
    norma::nn::load_checkpoint(c.checkpoint, *after, nullptr, nullptr);
    double sq = 0;
    const auto p0 = start->parameters(), p1 = after->parameters();
    for (size_t i = 0; i < p0.size(); ++i) {
      const auto x = p0[i].to_vector(), y = p1[i].to_vector();
      for (size_t j = 0; j < x.size(); ++j) sq += (double(y[j]) - x[j]) * (double(y[j]) - x[j]);
    }
    return std::sqrt(sq);
  };
  const double unclipped = step_norm(0);
  INFO("the gradient's norm: " << unclipped);
  REQUIRE(unclipped > 0.01);
  CHECK(step_norm(0.01) == Approx(0.01).epsilon(1e-3));
  CHECK(step_norm(2 * unclipped) == Approx(unclipped).epsilon(1e-6));
  fs::remove_all(w);
}

TEST_CASE("cli: SIGINT during training writes a checkpoint and exits 130") {
  const fs::path w = workdir("sigint", 200, 20);
  // Long enough that the signal arrives mid-training (1000 images x 200 epochs).
  const Run r = norma_cli(w, fmt::format("train --data {0}/data --epochs 200 --batch-size 20 --threads 1 "
                                         "--checkpoint {0}/ck.safetensors", w.string()),
                          "timeout --preserve-status -s INT 3 ");
  INFO(r.err);
  CHECK(r.code == 130);
  CHECK(r.err.find("interrupted by SIGINT") != std::string::npos);
  CHECK(r.err.find("--resume " + (w / "ck.safetensors").string()) != std::string::npos);
  REQUIRE(fs::exists(w / "ck.safetensors"));
  const Run resume = norma_cli(w, fmt::format("train --data {0}/data --epochs 200 --batch-size 20 --threads 1 "
                                              "--resume {0}/ck.safetensors --quiet", w.string()),
                               "timeout --preserve-status -s INT 2 ");
  CHECK(resume.code == 130);  // resumed, then interrupted again
  fs::remove_all(w);
}

TEST_CASE("cli: bench reports throughput and a per-layer table") {
  const fs::path w = workdir("bench", 1, 1);
  const Run r = norma_cli(w, "bench --batch-size 8 --steps 2 --warmup 1 --threads 1 --json");
  INFO(r.err);
  REQUIRE(r.code == 0);
  const json j = r.last_json();
  CHECK(j["train_img_per_s"].get<double>() > 0);
  CHECK(j["eval_img_per_s"].get<double>() > 0);
  CHECK(j["peak_rss_mb"].get<double>() > 0);
  // cifar-small's 20 modules, each BatchNorm2d timed with the ReLU (and a
  // MaxPool2d after it) fused into it, as Sequential runs them: 12 rows.
  REQUIRE(j["layers"].size() == 12);
  CHECK(j["layers"][0]["type"] == "Conv2d");
  CHECK(j["layers"][1]["name"] == "1+2");
  CHECK(j["layers"][1]["type"] == "BatchNorm2d+ReLU");
  CHECK(j["layers"][3]["name"] == "4+5+6");
  CHECK(j["layers"][3]["type"] == "BatchNorm2d+ReLU+MaxPool2d");
  CHECK(j["layers"][11]["name"] == "19");
  const Run text = norma_cli(w, "bench --batch-size 8 --steps 2 --warmup 1 --threads 1");
  REQUIRE(text.code == 0);
  CHECK(text.out.find("img/s") != std::string::npos);
  CHECK(text.out.find("BatchNorm2d") != std::string::npos);
  fs::remove_all(w);
}

TEST_CASE("cli: norma runs OpenBLAS's AVX-512 kernels only where the CPU has AVX-512") {
  const fs::path w = workdir("blas_core", 1, 1);
  const std::string args = "bench --batch-size 4 --steps 1 --warmup 0 --threads 1 --json";
  auto lower = [](std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  // A core the user chose is kept.
  const Run chosen = norma_cli(w, args, "OPENBLAS_CORETYPE=HASWELL ");
  INFO(chosen.err);
  REQUIRE(chosen.code == 0);
  CHECK(lower(chosen.last_json()["blas_core"].get<std::string>()) == "haswell");
  // Otherwise SkylakeX's kernels where the CPU and the OS support AVX-512, and
  // never elsewhere (they would die with SIGILL).
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512cd");
  const Run detected = norma_cli(w, args, "env -u OPENBLAS_CORETYPE -u NORMA_NO_REEXEC ");
  INFO(detected.err);
  REQUIRE(detected.code == 0);
  const std::string core = lower(detected.last_json()["blas_core"].get<std::string>());
  INFO("avx512: " << avx512 << ", core: " << core);
  const bool avx512_core = core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
  CHECK(avx512_core == avx512);
  fs::remove_all(w);
}

TEST_CASE("cli: summary lists the layers and the parameter count") {
  const fs::path w = workdir("summary", 1, 1);
  const Run r = norma_cli(w, "summary --model cifar-small");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("Conv2d") != std::string::npos);
  CHECK(r.out.find("Linear") != std::string::npos);
  CHECK(r.out.find("Total params: 160234") != std::string::npos);  // 864+64+9216+64+18432+128+36864+128+73728+256+20490
  fs::remove_all(w);
}

TEST_CASE("cli: every subcommand answers --help") {
  const fs::path w = workdir("help", 1, 1);
  for (const char* sub : {"train", "eval", "bench", "summary", "download", "demo"}) {
    CAPTURE(sub);
    const Run r = norma_cli(w, fmt::format("{} --help", sub));
    CHECK(r.code == 0);
    CHECK(r.out.find("--help") != std::string::npos);
  }
  fs::remove_all(w);
}

TEST_CASE("cli: bad flags and files fail with a message naming them") {
  const fs::path w = workdir("errors", 4, 4);
  const std::string data = (w / "data").string();
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"train --optimizer rmsprop", "--optimizer"},
      {"train --schedule linear", "--schedule"},
      {"train --bn-preset keras", "--bn-preset"},
      {"train --model vgg", "--model"},
      {"train --epochs 0", "--epochs"},
      {"train --batch-size 1", "--batch-size"},
      {"train --lr -1", "--lr"},
      {"train --momentum 1.5", "--momentum"},
      {"train --label-smoothing 1", "--label-smoothing"},
      {"train --clip-grad-norm -1", "--clip-grad-norm"},
      {"train --data " + w.string() + "/nowhere", "nowhere"},
      {"train --data " + data + " --warmup 5 --epochs 2", "--warmup"},
      {"train --data " + data + " --checkpoint " + w.string() + "/no/such/dir/ck.safetensors", "--checkpoint"},
      {"train --data " + data + " --metrics " + w.string() + "/no/such/dir/m.csv", "--metrics"},
      {"train --resume " + w.string() + "/missing.safetensors", "--resume"},
      {"eval --data " + data, "--checkpoint"},
      {"eval --data " + data + " --checkpoint " + data + "/test_batch.bin", "test_batch.bin"},
      {"download mnist", "dataset"},
      {"download cifar10 --archive " + w.string() + "/missing.tar.gz", "--archive"},
      {"train --data " + data + " --lr 1e30 --schedule constant --epochs 1 --batch-size 4 --checkpoint " +
           w.string() + "/ck.safetensors",
       "the loss became"},
      {"bench --steps 0", "--steps"},
      {"frobnicate", "frobnicate"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args);
    const Run r = norma_cli(w, c.args);
    CHECK(r.code != 0);
    CHECK(r.err.find(c.needle) != std::string::npos);
    if (r.err.find(c.needle) == std::string::npos) WARN(r.err);
  }
  fs::remove_all(w);
}

TEST_CASE("cli: --resume refuses a checkpoint from a run with other settings") {
  const fs::path w = workdir("mismatch");
  REQUIRE(norma_cli(w, fmt::format("train --data {0}/data --epochs 1 --batch-size 20 --test-limit 20 --threads 1 "
                                   "--quiet --checkpoint {0}/ck.safetensors", w.string())).code == 0);
  const Run r = norma_cli(w, fmt::format("train --data {0}/data --epochs 1 --batch-size 40 --test-limit 20 --threads 1 "
                                         "--quiet --resume {0}/ck.safetensors", w.string()));
  CHECK(r.code == 1);
  CHECK(r.err.find("global_batch = 20") != std::string::npos);
  CHECK(r.err.find("global_batch = 40") != std::string::npos);
  fs::remove_all(w);
}

TEST_CASE("cli: on the real CIFAR-10, one epoch on 10,000 images reaches 40% and eval agrees") {
  // The default recipe, only shortened (issue 27: it must learn at any
  // length). On the reference kernels alone (-DNORMA_FAST_KERNELS=OFF)
  // training runs about 13x slower: there, 5,000 images and 2,000 test
  // images, and 30% (10% is chance; 33.2% measured there with --lr 0.02
  // before gradient clipping was the default; 43.3% with the fast kernels,
  // the whole test set and flip TTA).
  const bool fast = norma::fast_kernels_built();
  const std::string limits = fast ? "--limit 10000" : "--limit 5000 --test-limit 2000";
  const fs::path real = fs::path(NORMA_SOURCE_DIR) / ".." / "shared" / "cifar10" / "cifar-10-batches-bin";
  if (!fs::exists(real / "data_batch_1.bin")) {
    WARN("skipped: no CIFAR-10 at " << real.string());
    return;
  }
  const fs::path w = workdir("real", 1, 1);
  // --tta none: flip TTA would double both evaluations of 10,000 images in CI.
  const Run r = norma_cli(w, fmt::format("train --data {} --epochs 1 {} --tta none --quiet --json "
                                         "--checkpoint {}/ck.safetensors", real.string(), limits, w.string()));
  INFO(r.err);
  REQUIRE(r.code == 0);
  const json j = r.last_json();
  INFO(j.dump());
  CHECK(j["test_acc"].get<double>() >= (fast ? 0.40 : 0.30));
  const Run e = norma_cli(w, fmt::format("eval --data {} --checkpoint {}/ck.safetensors --tta none --json {}",
                                         real.string(), w.string(), fast ? "" : "--limit 2000"));
  REQUIRE(e.code == 0);
  CHECK(e.last_json()["test_acc"] == j["test_acc"]);
  fs::remove_all(w);
}

TEST_CASE("cli: mpirun -np 2 norma train --distributed learns, and its checkpoint loads in one process") {
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    WARN("skipped: mpirun is not installed (apt-get install openmpi-bin)");
    return;
  }
  const fs::path w = workdir("mpi");
  const Run r = norma_cli(w, fmt::format("train --data {0}/data --epochs 3 --batch-size 10 --lr 0.02 --test-limit 100 "
                                         "--quiet --distributed --json --checkpoint {0}/ck.safetensors", w.string()),
                          "mpirun -np 2 --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 ");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '{') == 1);  // one JSON line: only rank 0 prints
  const json j = r.last_json();
  CHECK(j["steps"] == 30);  // 200 images / (2 ranks x 10) x 3 epochs
  CHECK(j["test_acc"].get<double>() > 0.5);
  const Run e = norma_cli(w, fmt::format("eval --data {0}/data --checkpoint {0}/ck.safetensors --limit 100 --json",
                                         w.string()));
  REQUIRE(e.code == 0);
  CHECK(e.last_json()["test_acc"] == j["test_acc"]);

  // 2 ranks x 10 take the same images per step as 1 process x 20, so either
  // resumes the other's checkpoint; another global batch is refused.
  const Run one = norma_cli(w, fmt::format("train --data {0}/data --epochs 3 --batch-size 20 --lr 0.02 --test-limit 100 "
                                           "--quiet --json --threads 1 --resume {0}/ck.safetensors", w.string()));
  INFO(one.err);
  REQUIRE(one.code == 0);
  CHECK(one.last_json()["steps"] == 30);
  CHECK(one.last_json()["test_acc"] == j["test_acc"]);  // nothing left to train: the same weights
  const Run other = norma_cli(w, fmt::format("train --data {0}/data --epochs 3 --batch-size 10 --lr 0.02 --quiet "
                                             "--threads 1 --resume {0}/ck.safetensors", w.string()));
  CHECK(other.code != 0);
  CHECK(other.err.find("was written by a run with global_batch = 20, but this run has global_batch = 10") !=
        std::string::npos);

  // A single-process run interrupted mid-epoch 2 (step 13 of 30) finishes on 2 ranks.
  norma::app::TrainConfig c;
  c.data = (w / "data").string();
  c.epochs = 3;
  c.batch_size = 20;
  c.lr = 0.02;
  c.test_limit = 100;
  c.quiet = true;
  c.threads = 1;
  c.checkpoint = (w / "single.safetensors").string();
  c.on_step = [&](int64_t step, double) {
    if (step == 13) std::raise(SIGINT);
  };
  REQUIRE(norma::app::train(c).interrupted);
  const Run two = norma_cli(w, fmt::format("train --data {0}/data --epochs 3 --batch-size 10 --lr 0.02 --test-limit 100 "
                                           "--quiet --distributed --json --resume {0}/single.safetensors", w.string()),
                            "mpirun -np 2 --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 ");
  INFO(two.err);
  REQUIRE(two.code == 0);
  CHECK(two.last_json()["steps"] == 30);
  CHECK(two.last_json()["test_acc"].get<double>() > 0.5);
  fs::remove_all(w);
}

TEST_CASE("cli: --detect-anomaly names the op that diverged (lr 1e30) and the checkpoint already there stays loadable") {
  const fs::path w = workdir("anomaly", 4, 20);  // 20 training images: 5 steps of 4
  const std::string ck = (w / "ck.safetensors").string();
  const std::string base = fmt::format("train --data {}/data --epochs 1 --batch-size 4 --schedule constant --threads 1 "
                                       "--quiet --checkpoint {}", w.string(), ck);
  REQUIRE(norma_cli(w, base + " --lr 0.02").code == 0);
  const std::string good = slurp(ck);
  const Run r = norma_cli(w, base + " --lr 1e30 --detect-anomaly");
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(r.err.find("norma: error: train: a non-finite value at epoch 1 step ") != std::string::npos);
  CHECK(r.err.find(": detect_anomaly: '") != std::string::npos);  // the op, by name
  CHECK(r.err.find(" produced an output of shape ") != std::string::npos);
  CHECK(r.err.find("'" + ck + "' is unchanged (this run had not written it yet)") != std::string::npos);
  CHECK(slurp(ck) == good);
  CHECK(norma_cli(w, fmt::format("eval --data {}/data --checkpoint {} --limit 20", w.string(), ck)).code == 0);
  // Without the flag the same run stops at the non-finite loss, naming the step and the flag.
  const Run plain = norma_cli(w, base + " --lr 1e30");
  CHECK(plain.code == 1);
  CHECK(plain.err.find("train: the loss became ") != std::string::npos);
  CHECK(plain.err.find("(--detect-anomaly names the first op that produces a non-finite value)") != std::string::npos);
  CHECK(slurp(ck) == good);
  // The message says what is on disk: no checkpoint yet, or no --checkpoint at all.
  const std::string fresh = (w / "fresh.safetensors").string();
  const Run no_file = norma_cli(w, fmt::format("train --data {}/data --epochs 1 --batch-size 4 --schedule constant "
                                               "--threads 1 --quiet --lr 1e30 --checkpoint {}", w.string(), fresh));
  CHECK(no_file.err.find("no checkpoint had been written to '" + fresh + "' yet") != std::string::npos);
  CHECK_FALSE(fs::exists(fresh));
  const Run no_flag = norma_cli(w, fmt::format("train --data {}/data --epochs 1 --batch-size 4 --schedule constant "
                                               "--threads 1 --quiet --lr 1e30", w.string()));
  CHECK(no_flag.err.find("; no --checkpoint was given") != std::string::npos);
  fs::remove_all(w);
}

TEST_CASE("cli: weights made infinite by the last step of an epoch are not saved over the last good checkpoint") {
  // lr 1e300 is inf in float: one step makes the weights inf/nan, yet that
  // step's loss was finite. With one step per epoch the next thing is the save.
  const fs::path w = workdir("inf_weights", 4, 20);
  const std::string ck = (w / "ck.safetensors").string();
  const std::string base = fmt::format("train --data {}/data --epochs 2 --limit 4 --batch-size 4 --schedule constant "
                                       "--test-limit 20 --threads 1 --quiet --checkpoint {}", w.string(), ck);
  REQUIRE(norma_cli(w, base + " --lr 0.02").code == 0);
  const std::string good = slurp(ck);
  const Run r = norma_cli(w, base + " --lr 1e300");
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(r.err.find("train: after global step 1 (epoch 1) the state is not finite: '") != std::string::npos);
  CHECK(r.err.find("non-finite value") != std::string::npos);
  CHECK(r.err.find("it was not saved, so '" + ck + "' is unchanged") != std::string::npos);
  CHECK(slurp(ck) == good);
  // With --detect-anomaly the evaluation after the epoch names the op that met the infinite weights.
  const Run a = norma_cli(w, base + " --lr 1e300 --detect-anomaly");
  INFO(a.err);
  CHECK(a.code == 1);
  // (evaluation runs at the training batch size, 4)
  CHECK(a.err.find("train: a non-finite value evaluating after epoch 1 (global step 1): detect_anomaly: 'conv2d' "
                   "produced an output of shape (4, 32, 32, 32)") != std::string::npos);
  CHECK(a.err.find("its input 1 of shape (32, 3, 3, 3) already held 864 non-finite values") != std::string::npos);
  CHECK(slurp(ck) == good);
  fs::remove_all(w);
}

TEST_CASE("cli: a disk too full for the checkpoints is found before training (a 512 KiB tmpfs)") {
  // A real ENOSPC: a small tmpfs mounted in a private mount namespace
  // (unshare -rm: no root needed where user namespaces are enabled).
  const fs::path w = workdir("enospc", 4, 20);
  fs::create_directories(w / "disk");
  if (std::system(fmt::format("unshare -rm sh -c 'mount -t tmpfs -o size=512k tmpfs {}' 2>/dev/null",
                              (w / "disk").string()).c_str()) != 0) {
    WARN("skipped: unshare -rm cannot mount a tmpfs here");
    fs::remove_all(w);
    return;
  }
  const std::string ck = (w / "disk" / "ck.safetensors").string();
  const Run r = norma_cli(w, fmt::format("train --data {}/data --epochs 1 --batch-size 4 --threads 1 --quiet "
                                         "--checkpoint {}", w.string(), ck),
                          fmt::format("unshare -rm sh -c 'mount -t tmpfs -o size=512k tmpfs {} && exec \"$0\" \"$@\"' ",
                                      (w / "disk").string()));
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(r.err.find("--checkpoint: cannot write '" + ck + "': reserving ") != std::string::npos);
  CHECK(r.err.find("failed: No space left on device") != std::string::npos);
  fs::remove_all(w);
}

TEST_CASE("evaluate: flip TTA scores the mean of the logits of each image and of its mirror") {
  using namespace norma;
  const fs::path w = workdir("tta", 40, 60);
  // The same test images mirrored in the file itself (each 32-byte row of each
  // plane reversed), so the expected figures do not rely on the code under test.
  {
    std::ifstream in(w / "data" / "test_batch.bin", std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t rec = 0; rec < bytes.size(); rec += 3073)
      for (size_t row = 0; row < 96; ++row) std::reverse(&bytes[rec + 1 + row * 32], &bytes[rec + 1 + row * 32 + 32]);
    fs::create_directories(w / "mirror");
    for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                          "data_batch_5.bin"})
      fs::copy_file(w / "data" / f, w / "mirror" / f);
    std::ofstream(w / "mirror" / "test_batch.bin", std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  }
  const auto test_set = [&](const char* dir) { return data::CifarDataset::load((w / dir).string(), data::Split::test); };
  const data::CifarDataset plain = test_set("data"), mirror = test_set("mirror");
  manual_seed(3);
  auto model = app::build_model("cifar-small", "pytorch");
  model->eval();
  // Logits far apart (an untrained model's are nearly uniform, which would
  // make every loss below about log 10 whatever the images).
  for (auto& [name, p] : model->named_parameters())
    if (name == "19.weight")
      for (int64_t i = 0; i < p.numel(); ++i) p.data_ptr()[i] *= 200.0f;
  const auto logits = [&](const data::CifarDataset& ds) {
    NoGradGuard no_grad;
    data::LoaderOptions lo;
    lo.batch_size = 60, lo.shuffle = false;
    data::DataLoader loader(ds, lo);
    loader.set_epoch(0);
    const data::Batch b = *loader.next();
    return std::pair{model->forward(b.images), b.targets};
  };
  const auto [a, targets] = logits(plain);
  const Tensor mean_logits = div(add(a, logits(mirror).first), full({1}, 2.0f));
  const double want_loss = nn::cross_entropy(mean_logits, targets).item();

  const app::EvalResult tta = app::evaluate(*model, plain, 25, nullptr, true);  // batches of 25, 25, 10
  CHECK(tta.images == 60);
  CHECK(tta.loss == Approx(want_loss).epsilon(1e-5));
  const app::EvalResult no_tta = app::evaluate(*model, plain, 25, nullptr, false);
  CHECK(no_tta.loss == Approx(nn::cross_entropy(a, targets).item()).epsilon(1e-5));
  // The mirror images change the prediction by far more than the tolerance above.
  CHECK(std::abs(no_tta.loss - tta.loss) > 1e-3 * tta.loss);
  // Mirroring the test set changes nothing under flip TTA.
  const app::EvalResult tta_mirror = app::evaluate(*model, mirror, 25, nullptr, true);
  CHECK(tta_mirror.loss == Approx(tta.loss).epsilon(1e-6));
  CHECK(tta_mirror.acc == tta.acc);
  CHECK(model->is_training() == false);

  // norma eval --tta flip on a checkpoint of this model agrees; a value it does
  // not know is refused naming the flag.
  nn::save_checkpoint((w / "ck.safetensors").string(), *model, nullptr, nullptr, {});
  const Run e = norma_cli(w, fmt::format("eval --data {0}/data --checkpoint {0}/ck.safetensors --tta flip --json",
                                         w.string()));
  INFO(e.err);
  REQUIRE(e.code == 0);
  CHECK(e.last_json()["test_loss"].get<double>() == Approx(tta.loss).epsilon(1e-5));
  const Run bad = norma_cli(w, fmt::format("eval --data {0}/data --checkpoint {0}/ck.safetensors --tta mirror",
                                           w.string()));
  CHECK(bad.code != 0);
  CHECK_THAT(bad.err, Catch::Contains("--tta"));
  CHECK_THROWS_WITH(app::evaluate_checkpoint([&] {
                      app::EvalConfig ec;
                      ec.checkpoint = (w / "none").string();
                      ec.tta = "mirror";
                      return ec;
                    }()),
                    Catch::Contains("--tta: must be 'none' or 'flip', got 'mirror'"));
  fs::remove_all(w);
}
