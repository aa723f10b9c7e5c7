// data/: hashes, the CIFAR readers and their errors, transforms, and the
// DataLoader (shuffle, prefetch, drop_last, sharding, worker errors), on
// synthetic files; plus the real CIFAR-10 when ../shared/cifar10 is present.
#include <catch2/catch.hpp>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <set>

#include <norma/apps/download.h>  // find_cifar10_dir
#include <norma/apps/md5.h>

#include "cifar_synth.h"

using namespace norma;
using namespace norma::data;
using namespace norma::test;
using Catch::Matchers::Contains;

namespace fs = std::filesystem;

namespace {

std::string sh_hash(const char* tool, const std::string& path) {
  std::string cmd = fmt::format("{} '{}'", tool, path), out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  return out.substr(0, out.find(' '));
}

// Every batch of one epoch, on this loader.
std::vector<Batch> epoch_batches(DataLoader& loader) {
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

std::vector<int64_t> all_indices(const std::vector<Batch>& batches) {
  std::vector<int64_t> idx;
  for (const Batch& b : batches) idx.insert(idx.end(), b.indices.begin(), b.indices.end());
  return idx;
}

// Runs fn with $NORMA_DATA unset and the working directory at `cwd`, restoring both.
template <class F>
void with_env_and_cwd(const char* norma_data, const fs::path& cwd, F&& fn) {
  const char* old = getenv("NORMA_DATA");
  std::string saved = old ? old : "";
  fs::path old_cwd = fs::current_path();
  if (norma_data) setenv("NORMA_DATA", norma_data, 1);
  else unsetenv("NORMA_DATA");
  fs::current_path(cwd);
  try {
    fn();
  } catch (...) {
    fs::current_path(old_cwd);
    old ? setenv("NORMA_DATA", saved.c_str(), 1) : unsetenv("NORMA_DATA");
    throw;
  }
  fs::current_path(old_cwd);
  old ? setenv("NORMA_DATA", saved.c_str(), 1) : unsetenv("NORMA_DATA");
}

}  // namespace

// ---- hashes

TEST_CASE("data: md5 and sha256 known vectors") {
  auto md5 = [](const std::string& s) { return md5_hex(s.data(), s.size()); };
  auto sha = [](const std::string& s) { return sha256_hex(s.data(), s.size()); };
  CHECK(md5("") == "d41d8cd98f00b204e9800998ecf8427e");
  CHECK(md5("abc") == "900150983cd24fb0d6963f7d28e17f72");
  CHECK(md5("The quick brown fox jumps over the lazy dog") == "9e107d9d372bb6826bd81d3542a419d6");
  CHECK(md5(std::string(1000000, 'a')) == "7707d6ae4e027c70eea2a935c2296f21");
  CHECK(sha("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha(std::string(1000000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  // Feeding in uneven pieces (across block boundaries and the 56-byte padding edge) changes nothing.
  std::string msg;
  for (int i = 0; i < 1000; ++i) msg += char(i * 37 % 251);
  for (size_t piece : {1, 7, 55, 56, 63, 64, 65, 333}) {
    Md5 m;
    Sha256 s;
    for (size_t at = 0; at < msg.size(); at += piece) {
      m.update(msg.data() + at, std::min(piece, msg.size() - at));
      s.update(msg.data() + at, std::min(piece, msg.size() - at));
    }
    CHECK(m.hex() == md5(msg));
    CHECK(s.hex() == sha(msg));
  }
}

TEST_CASE("data: md5_file and sha256_file agree with md5sum and sha256sum") {
  TempDir tmp("hash_files");
  for (size_t n : {0, 55, 56, 64, 119, 120, 100003}) {
    std::vector<uint8_t> bytes(n);
    for (size_t i = 0; i < n; ++i) bytes[i] = uint8_t(i * 2654435761u >> 13);
    std::string path = tmp.str(fmt::format("f{}", n));
    write_bytes(path, bytes);
    INFO("file of " << n << " bytes");
    CHECK(md5_file(path) == sh_hash("md5sum", path));
    CHECK(sha256_file(path) == sh_hash("sha256sum", path));
  }
  CHECK_THAT(error_of([&] { md5_file(tmp.str("nope")); }), Contains("md5_file: cannot open '" + tmp.str("nope") + "'"));
  CHECK_THAT(error_of([&] { sha256_file(tmp.str("nope")); }), Contains("sha256_file: cannot open '" + tmp.str("nope") + "'"));
  // A directory opens but cannot be read.
  CHECK_THAT(error_of([&] { sha256_file(tmp.str()); }), Contains("sha256_file: read error in '" + tmp.str() + "'"));
}

// ---- readers

TEST_CASE("data: CIFAR-10 synthetic files read back exactly") {
  TempDir tmp("c10_read");
  write_synth_cifar10(tmp.str(), 4);
  CifarDataset train = CifarDataset::load(tmp.str(), Split::train);
  CifarDataset test = CifarDataset::load(tmp.str(), Split::test);
  REQUIRE(train.size() == 20);
  REQUIRE(test.size() == 4);
  CHECK(train.num_classes() == 10);
  for (int64_t i = 0; i < 20; ++i) {
    int f = int(i / 4);
    int64_t r = i % 4;
    CHECK(train.label(i) == synth_label(f, r, 10));
    const uint8_t* img = train.image(i);
    bool same = true;
    for (int64_t p = 0; p < 3072; ++p) same = same && img[p] == synth_pixel(f, r, p);
    CHECK(same);
  }
  CHECK(test.label(3) == synth_label(5, 3, 10));
  CHECK(test.image(3)[3071] == synth_pixel(5, 3, 3071));

  // limit reads the first records across files in order.
  CifarDataset part = CifarDataset::load(tmp.str(), Split::train, CifarKind::cifar10, 6);
  REQUIRE(part.size() == 6);
  CHECK(part.label(5) == synth_label(1, 1, 10));
  CHECK(part.image(5)[100] == synth_pixel(1, 1, 100));
  CHECK(CifarDataset::load(tmp.str(), Split::train, CifarKind::cifar10, 1000).size() == 20);

  CHECK_THAT(error_of([&] { train.coarse_label(0); }), Contains("CifarDataset::coarse_label: only CIFAR-100 has coarse labels"));
  CHECK_THAT(error_of([&] { train.image(20); }), Contains("CifarDataset::image: index 20 out of range for a dataset of 20 images"));
  CHECK_THAT(error_of([&] { train.label(-1); }), Contains("CifarDataset::label: index -1 out of range for a dataset of 20 images"));
  // Arguments: a negative limit other than -1 and enum values that are none of the enum's.
  CHECK_THAT(error_of([&] { CifarDataset::load(tmp.str(), Split::train, CifarKind::cifar10, -2); }),
             Contains("CifarDataset::load: limit must be -1 (every record) or >= 0, got -2"));
  CHECK_THAT(error_of([&] { CifarDataset::load(tmp.str(), Split(2)); }),
             Contains("CifarDataset::load: unknown split 2 (not a Split value)"));
  CHECK_THAT(error_of([&] { CifarDataset::load(tmp.str(), Split::test, CifarKind(-1)); }),
             Contains("CifarDataset::load: unknown kind -1 (not a CifarKind value)"));
}

TEST_CASE("data: CIFAR-100 synthetic files read back exactly") {
  TempDir tmp("c100_read");
  write_synth_cifar100(tmp.str(), 150);
  CifarDataset train = CifarDataset::load(tmp.str(), Split::train, CifarKind::cifar100);
  CifarDataset test = CifarDataset::load(tmp.str(), Split::test, CifarKind::cifar100, 10);
  REQUIRE(train.size() == 150);
  REQUIRE(test.size() == 10);
  CHECK(train.num_classes() == 100);
  int bad = 0;
  for (int64_t i = 0; i < 150; ++i) {
    bad += train.label(i) != synth_label(0, i, 100);
    bad += train.coarse_label(i) != synth_label(0, i, 100) / 5;
    bad += train.image(i)[i * 13 % 3072] != synth_pixel(0, i, i * 13 % 3072);
  }
  CHECK(bad == 0);
  CHECK(test.label(9) == synth_label(1, 9, 100));
  CHECK(test.image(9)[0] == synth_pixel(1, 9, 0));
}

TEST_CASE("data: reader errors name the file and the values") {
  TempDir tmp("c10_errors");
  const std::string dir = tmp.str("c10");
  write_synth_cifar10(dir, 3);
  auto load10 = [&](Split s) { return error_of([&] { CifarDataset::load(dir, s); }); };

  SECTION("missing directory") {
    std::string msg = error_of([&] { CifarDataset::load(tmp.str("absent"), Split::train); });
    CHECK_THAT(msg, Contains("cifar: data directory '" + tmp.str("absent") +
                             "' does not exist (expected the CIFAR-10 binary files there)"));
  }
  SECTION("missing file") {
    fs::remove(dir + "/data_batch_4.bin");
    CHECK_THAT(load10(Split::train), Contains("cifar: missing file '" + dir + "/data_batch_4.bin'"));
    CHECK(load10(Split::test).empty());
  }
  SECTION("size not a whole number of records") {
    fs::resize_file(dir + "/test_batch.bin", 3 * 3073 - 5);
    CHECK_THAT(load10(Split::test),
               Contains("cifar: '" + dir + "/test_batch.bin' has 9214 bytes, not a whole number of 3073-byte records"));
    fs::resize_file(dir + "/test_batch.bin", 0);
    CHECK_THAT(load10(Split::test), Contains("has 0 bytes"));
  }
  SECTION("label out of range") {
    std::vector<uint8_t> bytes(3 * 3073, 0);
    bytes[2 * 3073] = 10;  // record 2
    write_bytes(dir + "/data_batch_2.bin", bytes);
    CHECK_THAT(load10(Split::train),
               Contains("cifar: '" + dir + "/data_batch_2.bin' record 2 (0-based) has label 10, expected 0..9"));
  }
  SECTION("CIFAR-100 coarse and fine labels out of range") {
    const std::string d100 = tmp.str("c100");
    write_synth_cifar100(d100, 4);
    std::vector<uint8_t> bytes(4 * 3074, 0);
    bytes[1 * 3074] = 20;  // record 1: coarse 20
    write_bytes(d100 + "/train.bin", bytes);
    CHECK_THAT(error_of([&] { CifarDataset::load(d100, Split::train, CifarKind::cifar100); }),
               Contains("cifar: '" + d100 + "/train.bin' record 1 (0-based) has coarse label 20, expected 0..19"));
    bytes[1 * 3074] = 0;
    bytes[3 * 3074 + 1] = 100;  // record 3: fine 100
    write_bytes(d100 + "/test.bin", bytes);
    CHECK_THAT(error_of([&] { CifarDataset::load(d100, Split::test, CifarKind::cifar100); }),
               Contains("cifar: '" + d100 + "/test.bin' record 3 (0-based) has fine label 100, expected 0..99"));
  }
  SECTION("SHA256SUMS checked when present") {
    std::string good = sha256_file(dir + "/test_batch.bin");
    std::string bad(64, '0');
    write_bytes(dir + "/SHA256SUMS", {});
    {
      std::ofstream sums(dir + "/SHA256SUMS");
      sums << good << "  test_batch.bin\n" << bad << " *data_batch_1.bin\n";
    }
    CHECK(load10(Split::test).empty());  // a match passes
    CHECK_THAT(load10(Split::train), Contains("cifar: SHA-256 of '" + dir + "/data_batch_1.bin' is " +
                                              sha256_file(dir + "/data_batch_1.bin") + " but " + dir + "/SHA256SUMS expects " +
                                              bad + " (the file is damaged or not the original)"));
    // Files past the limit are not read, so their checksum is not checked.
    CHECK(error_of([&] { CifarDataset::load(dir, Split::train, CifarKind::cifar10, 0); }).empty());
    {
      std::ofstream sums(dir + "/SHA256SUMS");
      sums << "not a checksum line\n";
    }
    CHECK_THAT(load10(Split::test), Contains("cifar: " + dir + "/SHA256SUMS:1: expected '<64 hex digits>  <file name>', "
                                             "got 'not a checksum line'"));
  }
}

TEST_CASE("data: find_cifar10_dir order and error") {
  TempDir tmp("find_dir");
  fs::path root = fs::canonical(tmp.path);
  fs::create_directories(root / "a" / "data" / "cifar-10-batches-bin");
  fs::create_directories(root / "shared" / "cifar10" / "cifar-10-batches-bin");
  fs::create_directories(root / "b");
  fs::create_directories(root / "deep" / "empty");  // no ../shared next to it
  const std::string flag_dir = (root / "a" / "data" / "cifar-10-batches-bin").string();

  with_env_and_cwd(nullptr, root / "a", [&] {
    CHECK(find_cifar10_dir(flag_dir) == flag_dir);
    CHECK(find_cifar10_dir("") == "./data/cifar-10-batches-bin");
    CHECK_THAT(error_of([] { find_cifar10_dir("/no/such/dir"); }), Contains("--data /no/such/dir"));
  });
  with_env_and_cwd(nullptr, root / "b", [&] {
    CHECK(find_cifar10_dir("") == "../shared/cifar10/cifar-10-batches-bin");
  });
  with_env_and_cwd(flag_dir.c_str(), root / "deep" / "empty", [&] {
    CHECK(find_cifar10_dir("") == flag_dir);
    CHECK(find_cifar10_dir(flag_dir) == flag_dir);
  });
  with_env_and_cwd("/no/env/dir", root / "b", [&] {  // $NORMA_DATA is binding
    CHECK_THAT(error_of([] { find_cifar10_dir(""); }), Contains("$NORMA_DATA=/no/env/dir"));
  });
  with_env_and_cwd(nullptr, root / "deep" / "empty", [&] {
    CHECK_THAT(error_of([] { find_cifar10_dir(""); }),
               Contains("--data") && Contains("$NORMA_DATA") && Contains("./data/cifar-10-batches-bin") &&
                   Contains("../shared/cifar10/cifar-10-batches-bin") && Contains((root / "deep" / "empty").string()));
  });
}

// ---- transforms

TEST_CASE("data: crop and flip on a known image") {
  // One 3x4 channel holding 1..12:   1  2  3  4 /  5  6  7  8 /  9 10 11 12
  std::vector<uint8_t> in(12), out(12);
  for (int i = 0; i < 12; ++i) in[size_t(i)] = uint8_t(i + 1);
  auto run = [&](int dy, int dx, bool flip) {
    crop_flip(out.data(), in.data(), 1, 3, 4, dy, dx, flip);
    return std::vector<int>(out.begin(), out.end());
  };
  CHECK(run(0, 0, false) == std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  CHECK(run(0, 0, true) == std::vector<int>{4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9});
  // Crop window one row down and one column left: the top... bottom row and left column are padding.
  CHECK(run(1, -1, false) == std::vector<int>{0, 5, 6, 7, 0, 9, 10, 11, 0, 0, 0, 0});
  // The same crop, then mirrored.
  CHECK(run(1, -1, true) == std::vector<int>{7, 6, 5, 0, 11, 10, 9, 0, 0, 0, 0, 0});
  CHECK(run(-2, 2, false) == std::vector<int>{0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 0, 0});

  // On full CIFAR images, against an explicit pad-to-40x40, crop, flip.
  std::vector<uint8_t> img(3072), got(3072);
  for (int p = 0; p < 3072; ++p) img[size_t(p)] = uint8_t(p * 7 % 251 + 1);
  int wrong = 0;
  for (int dy = -4; dy <= 4; ++dy)
    for (int dx = -4; dx <= 4; ++dx)
      for (bool flip : {false, true}) {
        crop_flip(got.data(), img.data(), 3, 32, 32, dy, dx, flip);
        for (int c = 0; c < 3; ++c) {
          std::vector<uint8_t> padded(40 * 40, 0);
          for (int y = 0; y < 32; ++y)
            for (int x = 0; x < 32; ++x) padded[size_t((y + 4) * 40 + x + 4)] = img[size_t(c * 1024 + y * 32 + x)];
          for (int y = 0; y < 32; ++y)
            for (int x = 0; x < 32; ++x) {
              int cx = flip ? 31 - x : x;
              wrong += got[size_t(c * 1024 + y * 32 + x)] != padded[size_t((4 + dy + y) * 40 + 4 + dx + cx)];
            }
        }
      }
  CHECK(wrong == 0);
}

TEST_CASE("data: normalisation values") {
  std::vector<uint8_t> in = {0, 128, 255, 0, 128, 255, 0, 128, 255};  // three channels of three pixels
  std::vector<float> out(9);
  to_float(out.data(), in.data(), 3, 3, kCifar10Mean, kCifar10Std);
  const double mean[3] = {0.4914, 0.4822, 0.4465}, std[3] = {0.2470, 0.2435, 0.2616};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 3; ++i) {
      double want = (in[size_t(c * 3 + i)] / 255.0 - mean[c]) / std[c];
      INFO("channel " << c << " pixel " << int(in[size_t(c * 3 + i)]));
      CHECK(out[size_t(c * 3 + i)] == Approx(want).margin(1e-5));
    }
  CHECK(out[0] == Approx(-1.98947).margin(1e-4));  // (0 - 0.4914) / 0.2470
  CHECK(out[8] == Approx(2.11583).margin(1e-4));   // (1 - 0.4465) / 0.2616
  to_float(out.data(), in.data(), 3, 3, nullptr, nullptr);
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == Approx(128 / 255.0));
  CHECK(out[2] == 1.0f);
}

TEST_CASE("data: augmentation draws are deterministic and cover every offset") {
  std::set<int> dys, dxs;
  int flips = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    Augment a = draw_augment(7, 3, i, 4), b = draw_augment(7, 3, i, 4);
    REQUIRE((a.dy == b.dy && a.dx == b.dx && a.flip == b.flip));
    dys.insert(a.dy), dxs.insert(a.dx);
    flips += a.flip;
  }
  CHECK(dys == std::set<int>{-4, -3, -2, -1, 0, 1, 2, 3, 4});
  CHECK(dxs == dys);
  CHECK(flips > 4800);
  CHECK(flips < 5200);
  int same = 0;  // another epoch draws afresh
  for (uint64_t i = 0; i < 1000; ++i) {
    Augment a = draw_augment(7, 3, i, 4), b = draw_augment(7, 4, i, 4);
    same += a.dy == b.dy && a.dx == b.dx && a.flip == b.flip;
  }
  CHECK(same < 50);  // 1000 / 162 expected by chance
}

TEST_CASE("data: the loader's crop offsets stay within crop_padding") {
  TempDir tmp("loader_pad");
  write_synth_cifar10(tmp.str(), 10);
  CifarDataset ds = CifarDataset::load(tmp.str(), Split::train);  // 50 images
  for (int pad : {0, 2}) {
    LoaderOptions opt;
    opt.batch_size = 50, opt.shuffle = false, opt.normalize = false, opt.augment = true, opt.crop_padding = pad;
    opt.seed = 5;
    DataLoader loader(ds, opt);
    loader.set_epoch(0);
    const Batch b = *loader.next();
    int wrong = 0;
    std::set<int> offsets;
    std::vector<uint8_t> want(3072);
    for (int64_t i = 0; i < 50; ++i) {
      const Augment a = draw_augment(5, 0, uint64_t(i), pad);
      offsets.insert(a.dy), offsets.insert(a.dx);
      crop_flip(want.data(), ds.image(i), 3, 32, 32, a.dy, a.dx, a.flip);
      for (int p = 0; p < 3072; ++p) wrong += b.images.data_ptr()[i * 3072 + p] != float(want[size_t(p)]) / 255.0f;
    }
    CHECK(wrong == 0);
    CHECK(*offsets.begin() >= -pad);
    CHECK(*offsets.rbegin() <= pad);
    if (pad == 2) CHECK(offsets == std::set<int>{-2, -1, 0, 1, 2});
  }
}

// ---- loader

TEST_CASE("data: loader batches hold the dataset's pixels and labels") {
  TempDir tmp("loader_plain");
  write_synth_cifar10(tmp.str(), 10);
  CifarDataset ds = CifarDataset::load(tmp.str(), Split::train);  // 50 images
  LoaderOptions opt;
  opt.batch_size = 16, opt.shuffle = false, opt.normalize = false;
  DataLoader loader(ds, opt);
  CHECK(loader.num_batches() == 4);
  std::vector<Batch> batches = epoch_batches(loader);
  REQUIRE(batches.size() == 4);
  CHECK(batches[3].images.shape() == Shape{2, 3, 32, 32});
  CHECK(batches[3].targets.shape() == Shape{2});
  int wrong = 0;
  for (const Batch& b : batches) {
    const float* img = b.images.data_ptr();
    for (size_t i = 0; i < b.indices.size(); ++i) {
      int64_t idx = b.indices[i];
      wrong += b.targets.data_ptr()[i] != float(ds.label(idx));
      for (int p = 0; p < 3072; ++p) wrong += img[i * 3072 + size_t(p)] != float(ds.image(idx)[p]) / 255.0f;
    }
  }
  CHECK(wrong == 0);
  std::vector<int64_t> idx = all_indices(batches), want(50);
  std::iota(want.begin(), want.end(), 0);
  CHECK(idx == want);

  // Normalised: the loader's values are to_float's with CIFAR-10's statistics.
  opt.normalize = true;
  DataLoader norm(ds, opt);
  Batch b = *norm.next();
  std::vector<float> want_img(3072);
  to_float(want_img.data(), ds.image(0), 3, 1024, kCifar10Mean, kCifar10Std);
  CHECK(std::equal(want_img.begin(), want_img.end(), b.images.data_ptr()));
}

TEST_CASE("data: shuffle is a seeded permutation per epoch") {
  TempDir tmp("loader_shuffle");
  write_synth_cifar10(tmp.str(), 20);
  CifarDataset ds = CifarDataset::load(tmp.str(), Split::train);  // 100 images
  LoaderOptions opt;
  opt.batch_size = 32, opt.seed = 42;
  auto order = [&](uint64_t seed, int64_t epoch) {
    LoaderOptions o = opt;
    o.seed = seed;
    DataLoader loader(ds, o);
    loader.set_epoch(epoch);
    return all_indices(epoch_batches(loader));
  };
  std::vector<int64_t> e0 = order(42, 0), e1 = order(42, 1);
  CHECK(e0 == order(42, 0));
  CHECK(e1 == order(42, 1));
  CHECK(e0 != e1);
  CHECK(e0 != order(43, 0));
  std::vector<int64_t> sorted = e0, want(100);
  std::sort(sorted.begin(), sorted.end());
  std::iota(want.begin(), want.end(), 0);
  CHECK(sorted == want);
  sorted = e1;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == want);

  // One loader through epochs 0 and 1 matches fresh loaders; a finished epoch starts over unchanged.
  DataLoader loader(ds, opt);
  CHECK(all_indices(epoch_batches(loader)) == e0);
  CHECK(all_indices(epoch_batches(loader)) == e0);
  loader.set_epoch(1);
  CHECK(all_indices(epoch_batches(loader)) == e1);
}

TEST_CASE("data: prefetch 0 and 2 give identical batches with augmentation") {
  TempDir tmp("loader_prefetch");
  write_synth_cifar10(tmp.str(), 20);
  CifarDataset ds = CifarDataset::load(tmp.str(), Split::train);
  LoaderOptions opt;
  opt.batch_size = 12, opt.seed = 5, opt.augment = true;
  opt.prefetch = 0;
  DataLoader sync(ds, opt);
  opt.prefetch = 2;
  DataLoader async(ds, opt);
  for (int64_t epoch : {0, 1, 2}) {
    sync.set_epoch(epoch);
    async.set_epoch(epoch);
    std::vector<Batch> a = epoch_batches(sync), b = epoch_batches(async);
    REQUIRE(a.size() == 9);
    REQUIRE(b.size() == 9);
    for (size_t i = 0; i < a.size(); ++i) {
      INFO("epoch " << epoch << " batch " << i);
      CHECK(a[i].indices == b[i].indices);
      CHECK(a[i].images.to_vector() == b[i].images.to_vector());
      CHECK(a[i].targets.to_vector() == b[i].targets.to_vector());
    }
  }

  // The augmentation applied is draw_augment's for (seed, epoch, sample index), and it changes images.
  sync.set_epoch(2);
  Batch b = *sync.next();
  int changed = 0, wrong = 0;
  std::vector<uint8_t> cropped(3072);
  std::vector<float> want(3072);
  for (size_t i = 0; i < b.indices.size(); ++i) {
    Augment a = draw_augment(5, 2, uint64_t(b.indices[i]), 4);
    changed += a.dx != 0 || a.dy != 0 || a.flip;
    crop_flip(cropped.data(), ds.image(b.indices[i]), 3, 32, 32, a.dy, a.dx, a.flip);
    to_float(want.data(), cropped.data(), 3, 1024, kCifar10Mean, kCifar10Std);
    wrong += !std::equal(want.begin(), want.end(), b.images.data_ptr() + i * 3072);
  }
  CHECK(changed > 0);
  CHECK(wrong == 0);
}

TEST_CASE("data: drop_last drops the partial batch") {
  TempDir tmp("loader_drop");
  write_synth_cifar10(tmp.str(), 10);
  CifarDataset ds = CifarDataset::load(tmp.str(), Split::train);  // 50 images
  LoaderOptions opt;
  opt.batch_size = 16;
  DataLoader keep(ds, opt);
  CHECK(keep.num_batches() == 4);
  CHECK(all_indices(epoch_batches(keep)).size() == 50);
  opt.drop_last = true;
  DataLoader drop(ds, opt);
  CHECK(drop.num_batches() == 3);
  std::vector<Batch> batches = epoch_batches(drop);
  REQUIRE(batches.size() == 3);
  for (const Batch& b : batches) CHECK(b.images.size(0) == 16);
  opt.batch_size = 50;
  CHECK(DataLoader(ds, opt).num_batches() == 1);
}

TEST_CASE("data: two ranks take disjoint shares that cover each global batch") {
  TempDir tmp("loader_shard");
  write_synth_cifar10(tmp.str(), 20);
  CifarDataset ds = CifarDataset::load(tmp.str(), Split::train);  // 100 images = 6 global batches of 16 + 4
  LoaderOptions opt;
  opt.batch_size = 16, opt.seed = 9, opt.augment = true;
  DataLoader global(ds, opt);  // one rank with the global batch size
  global.set_epoch(3);
  std::vector<Batch> whole = epoch_batches(global);

  opt.batch_size = 8, opt.world_size = 2;
  std::vector<std::vector<Batch>> shards;
  for (int64_t r = 0; r < 2; ++r) {
    opt.rank = r;
    DataLoader loader(ds, opt);
    loader.set_epoch(3);
    CHECK(loader.num_batches() == 7);
    shards.push_back(epoch_batches(loader));
  }
  REQUIRE(whole.size() == 7);
  REQUIRE(shards[0].size() == 7);
  REQUIRE(shards[1].size() == 7);
  for (size_t g = 0; g < 7; ++g) {
    INFO("global batch " << g);
    std::vector<int64_t> a = shards[0][g].indices, b = shards[1][g].indices;
    std::set<int64_t> sa(a.begin(), a.end()), sb(b.begin(), b.end());
    for (int64_t i : sa) CHECK(sb.count(i) == 0);
    // Contiguous shares: rank 0's then rank 1's samples are the global batch, in order.
    std::vector<int64_t> joined = a;
    joined.insert(joined.end(), b.begin(), b.end());
    CHECK(joined == whole[g].indices);
    CHECK(a.size() == (g < 6 ? 8u : 2u));
    CHECK(b.size() == a.size());
    // The images too (augmentation depends on the sample, not the rank).
    std::vector<float> img = shards[0][g].images.to_vector(), img1 = shards[1][g].images.to_vector();
    img.insert(img.end(), img1.begin(), img1.end());
    CHECK(img == whole[g].images.to_vector());
  }

  // A last global batch with fewer samples than ranks is dropped so both ranks step together.
  CifarDataset odd = CifarDataset::load(tmp.str(), Split::train, CifarKind::cifar10, 97);
  for (int64_t r = 0; r < 2; ++r) {
    opt.rank = r;
    DataLoader loader(odd, opt);
    CHECK(loader.num_batches() == 6);
    CHECK(epoch_batches(loader).size() == 6);
  }
}

TEST_CASE("data: loader option errors") {
  TempDir tmp("loader_opts");
  write_synth_cifar10(tmp.str(), 2);
  CifarDataset ds = CifarDataset::load(tmp.str(), Split::train);  // 10 images
  auto msg = [&](auto edit) {
    LoaderOptions opt;
    edit(opt);
    return error_of([&] { DataLoader loader(ds, opt); });
  };
  CHECK_THAT(msg([](LoaderOptions& o) { o.batch_size = 0; }), Contains("DataLoader: batch_size must be positive, got 0"));
  CHECK_THAT(msg([](LoaderOptions& o) { o.crop_padding = -1; }), Contains("DataLoader: crop_padding must be in [0, 32], got -1"));
  CHECK_THAT(msg([](LoaderOptions& o) { o.crop_padding = 33; }), Contains("got 33"));
  CHECK_THAT(msg([](LoaderOptions& o) { o.prefetch = -1; }), Contains("DataLoader: prefetch must be >= 0 (0 = no worker thread), got -1"));
  CHECK_THAT(msg([](LoaderOptions& o) { o.rank = 2, o.world_size = 2; }),
             Contains("DataLoader: need 0 <= rank < world_size, got rank 2 and world_size 2"));
  CHECK_THAT(msg([](LoaderOptions& o) { o.world_size = 0; }), Contains("got rank 0 and world_size 0"));
  CHECK_THAT(msg([](LoaderOptions& o) { o.rank = -1; }), Contains("got rank -1 and world_size 1"));
  CHECK_THAT(msg([](LoaderOptions& o) { o.batch_size = 16, o.drop_last = true; }),
             Contains("DataLoader: 10 samples make no batch of 16 per rank with world_size 1 and drop_last true"));
  CifarDataset empty_ds = CifarDataset::load(tmp.str(), Split::train, CifarKind::cifar10, 0);
  CHECK_THAT(error_of([&] { DataLoader loader(empty_ds, LoaderOptions{}); }), Contains("DataLoader: the dataset is empty"));
  DataLoader loader(ds, LoaderOptions{});
  CHECK_THAT(error_of([&] { loader.set_epoch(-1); }), Contains("DataLoader::set_epoch: epoch must be >= 0, got -1"));
}

TEST_CASE("data: worker errors reach next() and set_epoch restarts mid-epoch") {
  TempDir tmp("loader_worker");
  write_synth_cifar10(tmp.str(), 20);
  CifarDataset ds = CifarDataset::load(tmp.str(), Split::train);
  for (int prefetch : {0, 2}) {
    INFO("prefetch " << prefetch);
    LoaderOptions opt;
    opt.batch_size = 10, opt.shuffle = false, opt.prefetch = prefetch;
    opt.on_batch = [](Batch& b) {
      if (b.indices[0] == 20) norma::fail("on_batch: refusing the batch at index {}", b.indices[0]);
    };
    DataLoader loader(ds, opt);
    CHECK(loader.next()->indices[0] == 0);
    CHECK(loader.next()->indices[0] == 10);
    CHECK_THAT(error_of([&] { loader.next(); }), Contains("refusing the batch at index 20"));
    CHECK_THAT(error_of([&] { loader.next(); }), Contains("refusing the batch at index 20"));  // not skipped
    loader.set_epoch(1);
    CHECK(loader.next()->indices[0] == 0);
  }

  // set_epoch mid-epoch and destruction with a full queue neither hang nor mix epochs.
  LoaderOptions opt;
  opt.batch_size = 10, opt.seed = 1, opt.augment = true;
  DataLoader fresh(ds, opt);
  fresh.set_epoch(4);
  std::vector<Batch> want = epoch_batches(fresh);
  DataLoader loader(ds, opt);
  loader.next();
  loader.next();
  loader.set_epoch(4);
  std::vector<Batch> got = epoch_batches(loader);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].indices == want[i].indices);
    CHECK(got[i].images.to_vector() == want[i].images.to_vector());
  }
  { DataLoader abandoned(ds, opt); }
  {
    DataLoader abandoned(ds, opt);
    abandoned.next();
  }
}

// ---- real data

TEST_CASE("data: real CIFAR-10 sizes and label histogram") {
  const std::string dir = NORMA_SOURCE_DIR "/../shared/cifar10/cifar-10-batches-bin";
  if (!fs::is_directory(dir)) {
    WARN("skipped: no real CIFAR-10 at " << dir);
    SUCCEED();
    return;
  }
  CHECK(fs::exists(dir + "/SHA256SUMS"));  // so load() verified every file it read
  CifarDataset train = CifarDataset::load(dir, Split::train);
  CifarDataset test = CifarDataset::load(dir, Split::test);
  REQUIRE(train.size() == 50000);
  REQUIRE(test.size() == 10000);
  std::vector<int> htrain(10), htest(10);
  for (int64_t i = 0; i < train.size(); ++i) ++htrain[size_t(train.label(i))];
  for (int64_t i = 0; i < test.size(); ++i) ++htest[size_t(test.label(i))];
  CHECK(htrain == std::vector<int>(10, 5000));
  CHECK(htest == std::vector<int>(10, 1000));
}
