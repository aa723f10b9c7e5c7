// norma_bench_loader: images per second of the CIFAR-10 DataLoader alone
// (crop + flip + normalise into float batches), to compare with a training
// step (~1,000 img/s for cifar-small on 2 threads): the loader must not be the
// bottleneck. Reads the real data when found (--data, $NORMA_DATA, ./data/...,
// ../shared/...), else writes a synthetic 50,000-image set to a temp dir.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>

#include <norma/norma.h>
#include <norma/apps/download.h>  // find_cifar10_dir

using namespace norma;
using namespace norma::data;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Five data_batch files of 10,000 random records each, like the real layout.
std::string write_synthetic(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  uint64_t state = 1;
  std::vector<char> bytes(10000 * 3073);
  for (int f = 1; f <= 5; ++f) {
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = char(splitmix64(state++) >> 56);
    for (size_t r = 0; r < 10000; ++r) bytes[r * 3073] = char(r % 10);
    std::ofstream((dir / fmt::format("data_batch_{}.bin", f)).string(), std::ios::binary)
        .write(bytes.data(), std::streamsize(bytes.size()));
  }
  return dir.string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"norma_bench_loader: CIFAR-10 DataLoader throughput, loader alone"};
  std::string data;
  int64_t batch = 128, batches = 391;
  bool no_augment = false;
  app.add_option("--data", data, "CIFAR-10 directory (default: the usual search, else synthetic)");
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--batches", batches, "batches per measurement (391 = one epoch of 50,000)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--no-augment", no_augment, "skip random crop and flip");
  CLI11_PARSE(app, argc, argv);

  std::string dir, what;
  std::filesystem::path tmp;
  try {
    dir = find_cifar10_dir(data);
    what = "real CIFAR-10";
  } catch (const Error& e) {
    if (!data.empty()) {
      fmt::print(stderr, "{}\n", e.what());
      return 1;
    }
    tmp = std::filesystem::temp_directory_path() / fmt::format("norma_bench_loader_{}", getpid());
    dir = write_synthetic(tmp);
    what = "synthetic (no real CIFAR-10 found)";
  }
  auto t0 = Clock::now();
  CifarDataset ds = CifarDataset::load(dir, Split::train);
  fmt::print("{}: {} images from {} loaded in {:.2f} s (reading, SHA256SUMS check when present)\n", what,
             ds.size(), dir, seconds_since(t0));
  fmt::print("batch {}, augment {}, normalize on, {} batches per run\n\n", batch, no_augment ? "off" : "on",
             batches);

  for (int prefetch : {0, 2}) {
    LoaderOptions opt;
    opt.batch_size = batch, opt.augment = !no_augment, opt.prefetch = prefetch;
    DataLoader loader(ds, opt);
    int64_t images = 0, epoch = 0;
    loader.next();  // warm up: first allocations, thread start
    t0 = Clock::now();
    for (int64_t b = 0; b < batches; ++b) {
      std::optional<Batch> next = loader.next();
      if (!next) {
        loader.set_epoch(++epoch);
        next = loader.next();
      }
      images += next->images.size(0);
    }
    double s = seconds_since(t0);
    fmt::print("prefetch {}: {:8.0f} images/s  ({:.3f} ms per batch{})\n", prefetch, double(images) / s,
               1e3 * s / double(batches), prefetch ? ", consumer side, worker thread preparing" : ", all in this thread");
  }
  if (!tmp.empty()) std::filesystem::remove_all(tmp);
  return 0;
}
