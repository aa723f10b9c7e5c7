// download_cifar10 on a small synthetic archive built here with `tar`, and its
// error paths (md5 mismatch, unreachable URL, bad sources). No network needed.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <norma/apps/download.h>
#include <norma/apps/md5.h>

#include "cifar_synth.h"

using namespace norma;
using namespace norma::data;
using namespace norma::test;
using Catch::Matchers::Contains;

namespace fs = std::filesystem;

namespace {

// tmp/src/cifar-10-batches-bin with 3 records per file, packed as tmp/cifar-10-binary.tar.gz.
std::string make_archive(const TempDir& tmp) {
  write_synth_cifar10(tmp.str("src/cifar-10-batches-bin"), 3);
  std::string archive = tmp.str("cifar-10-binary.tar.gz");
  std::string cmd = fmt::format("tar -czf '{}' -C '{}' cifar-10-batches-bin", archive, tmp.str("src"));
  REQUIRE(std::system(cmd.c_str()) == 0);
  return archive;
}

}  // namespace

TEST_CASE("download: a local synthetic archive unpacks and loads") {
  TempDir tmp("dl_local");
  std::string archive = make_archive(tmp);
  download_cifar10(tmp.str("out/nested"), archive, /*verify_md5=*/false);
  CifarDataset train = CifarDataset::load(tmp.str("out/nested/cifar-10-batches-bin"), Split::train);
  CifarDataset test = CifarDataset::load(tmp.str("out/nested/cifar-10-batches-bin"), Split::test);
  CHECK(train.size() == 15);
  CHECK(test.size() == 3);
  CHECK(train.label(4) == synth_label(1, 1, 10));
  CHECK(train.image(4)[77] == synth_pixel(1, 1, 77));
  CHECK(fs::exists(archive));  // a local archive is left alone
}

TEST_CASE("download: md5 mismatch names expected and got") {
  TempDir tmp("dl_md5");
  std::string archive = make_archive(tmp);
  std::string msg = error_of([&] { download_cifar10(tmp.str("out"), archive); });
  CHECK_THAT(msg, Contains("download_cifar10: md5 of '" + archive + "' (from " + archive + ") is " + md5_file(archive) +
                           ", expected c32a1d4ab5d03f1284b67883e8d87530: the archive is damaged or not the official "
                           "cifar-10-binary.tar.gz"));
  CHECK_FALSE(fs::exists(tmp.str("out/cifar-10-batches-bin")));  // nothing unpacked
}

TEST_CASE("download: an unreachable URL fails fast with the URL and the local-archive hint") {
  TempDir tmp("dl_url");
  const std::string url = "http://127.0.0.1:9/x.tar.gz";
  std::string msg = error_of([&] { download_cifar10(tmp.str("out"), url); });
  CHECK_THAT(msg, Contains("download_cifar10: curl could not fetch " + url + " (exit code 7: ") &&
                      Contains("If this machine is offline, download cifar-10-binary.tar.gz where there is internet "
                               "access and pass the path of that local archive as the source instead"));
  CHECK_FALSE(fs::exists(tmp.str("out/cifar-10-binary.tar.gz.part")));  // no partial file left
}

TEST_CASE("download: bad sources are refused") {
  TempDir tmp("dl_bad");
  SECTION("skipping md5 for a URL") {
    CHECK_THAT(error_of([&] { download_cifar10(tmp.str("out"), "", false); }),
               Contains(std::string("download_cifar10: the md5 check can only be skipped for a local archive, not for ") +
                        kCifar10Url));
  }
  SECTION("missing local archive") {
    CHECK_THAT(error_of([&] { download_cifar10(tmp.str("out"), tmp.str("none.tar.gz")); }),
               Contains("download_cifar10: local archive '" + tmp.str("none.tar.gz") +
                        "' does not exist (expected cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/"
                        "cifar-10-binary.tar.gz)"));
  }
  SECTION("not a tar.gz") {
    write_bytes(tmp.str("junk.tar.gz"), {1, 2, 3});
    CHECK_THAT(error_of([&] { download_cifar10(tmp.str("out"), tmp.str("junk.tar.gz"), false); }),
               Contains("download_cifar10: `tar -xzf " + tmp.str("junk.tar.gz") + " -C " + tmp.str("out") +
                        "` failed (exit code 2: "));
  }
  SECTION("archive without cifar-10-batches-bin") {
    fs::create_directories(tmp.str("src/other"));
    write_bytes(tmp.str("src/other/x.bin"), {1});
    std::string cmd = fmt::format("tar -czf '{}' -C '{}' other", tmp.str("other.tar.gz"), tmp.str("src"));
    REQUIRE(std::system(cmd.c_str()) == 0);
    CHECK_THAT(error_of([&] { download_cifar10(tmp.str("out"), tmp.str("other.tar.gz"), false); }),
               Contains("download_cifar10: unpacking '" + tmp.str("other.tar.gz") + "' into '" + tmp.str("out") +
                        "' gave no cifar-10-batches-bin directory"));
  }
  SECTION("archive with damaged data") {
    write_synth_cifar10(tmp.str("src/cifar-10-batches-bin"), 2);
    fs::resize_file(tmp.str("src/cifar-10-batches-bin/data_batch_3.bin"), 100);
    std::string cmd =
        fmt::format("tar -czf '{}' -C '{}' cifar-10-batches-bin", tmp.str("bad.tar.gz"), tmp.str("src"));
    REQUIRE(std::system(cmd.c_str()) == 0);
    CHECK_THAT(error_of([&] { download_cifar10(tmp.str("out"), tmp.str("bad.tar.gz"), false); }),
               Contains("data_batch_3.bin") && Contains("100 bytes"));
  }
}

namespace {
// Sets an environment variable for one scope.
struct ScopedEnv {
  std::string name, old;
  bool had;
  ScopedEnv(const char* n, const std::string& value) : name(n), had(std::getenv(n) != nullptr) {
    if (had) old = std::getenv(n);
    setenv(n, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had) setenv(name.c_str(), old.c_str(), 1);
    else unsetenv(name.c_str());
  }
};
}  // namespace

TEST_CASE("download: missing tools, an uncreatable directory and no free file descriptor are named") {
  TempDir tmp("dl_env");
  const std::string url = "http://127.0.0.1:9/x.tar.gz";
  write_bytes(tmp.str("file"), {1});
  CHECK_THAT(error_of([&] { download_cifar10(tmp.str("file/out"), url); }),
             Contains("download_cifar10: cannot create directory '" + tmp.str("file/out") + "': Not a directory"));
  std::string archive = make_archive(tmp);
  {
    fs::create_directories(tmp.str("empty_bin"));
    ScopedEnv path("PATH", tmp.str("empty_bin"));  // neither curl nor tar can be found
    CHECK_THAT(error_of([&] { download_cifar10(tmp.str("out"), url); }),
               Contains("download_cifar10: cannot run `curl` to fetch " + url + " (No such file or directory). Install curl."));
    CHECK_THAT(error_of([&] { download_cifar10(tmp.str("out"), archive, false); }),
               Contains("download_cifar10: cannot run `tar` to unpack '" + archive + "' (No such file or directory)"));
  }
  {
    // Every descriptor below a lowered limit taken: the pipe to curl cannot be made.
    rlimit old{};
    REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
    rlimit low = old;
    low.rlim_cur = 256;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    std::vector<int> fds;
    for (int fd; (fd = open("/dev/null", O_RDONLY)) >= 0;) fds.push_back(fd);
    const std::string msg = error_of([&] { download_cifar10(tmp.str("out"), url); });
    for (int fd : fds) close(fd);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK_THAT(msg, Contains("download_cifar10: pipe failed: Too many open files"));
  }
}
