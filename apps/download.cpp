// download_cifar10: curl or a local archive, md5, tar, then a validating load.
#include "download.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include <norma/core/error.h>
#include <norma/data/cifar.h>
#include "md5.h"

extern char** environ;

namespace fs = std::filesystem;

namespace norma::data {

namespace {

struct RunResult {
  bool started = false;  // false: the program could not be run (e.g. not installed)
  int exit_code = -1;
  std::string output;    // stdout and stderr together
};

// Runs argv[0] from PATH without a shell (no quoting issues with paths).
RunResult run(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0) fail("download_cifar10: pipe failed: {}", std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  pid_t pid;
  int err = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  RunResult r;
  if (err != 0) {
    close(fds[0]);
    r.output = std::strerror(err);
    return r;
  }
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    r.output.append(buf, size_t(n));
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.started = true;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == '\r')) r.output.pop_back();
  return r;
}

bool is_url(const std::string& s) {
  return s.starts_with("http://") || s.starts_with("https://") || s.starts_with("ftp://");
}

}  // namespace

void download_cifar10(const std::string& dir, const std::string& source, bool verify_md5) {
  const std::string url = source.empty() ? kCifar10Url : source;
  const bool remote = source.empty() || is_url(source);
  const std::string offline_hint =
      "If this machine is offline, download cifar-10-binary.tar.gz where there is internet access and pass the "
      "path of that local archive as the source instead";
  if (remote && !verify_md5)
    fail("download_cifar10: the md5 check can only be skipped for a local archive, not for {}", url);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("download_cifar10: cannot create directory '{}': {}", dir, ec.message());

  std::string archive = source;
  if (remote) {
    archive = (fs::path(dir) / "cifar-10-binary.tar.gz.part").string();
    RunResult r = run({"curl", "--fail", "--silent", "--show-error", "--location", "--connect-timeout", "20",
                       "--output", archive, url});
    if (!r.started)
      fail("download_cifar10: cannot run `curl` to fetch {} ({}). Install curl. {}", url, r.output, offline_hint);
    if (r.exit_code != 0) {
      fs::remove(archive, ec);
      fail("download_cifar10: curl could not fetch {} (exit code {}: {}). {}", url, r.exit_code, r.output,
           offline_hint);
    }
  } else if (!fs::is_regular_file(archive)) {
    fail("download_cifar10: local archive '{}' does not exist (expected cifar-10-binary.tar.gz from {})", archive,
         kCifar10Url);
  }

  if (verify_md5) {
    std::string got = md5_file(archive);
    if (got != kCifar10Md5) {
      if (remote) fs::remove(archive, ec);
      fail("download_cifar10: md5 of '{}' (from {}) is {}, expected {}: the archive is damaged or not the "
           "official cifar-10-binary.tar.gz",
           archive, url, got, kCifar10Md5);
    }
  }

  RunResult r = run({"tar", "-xzf", archive, "-C", dir});
  if (remote) fs::remove(archive, ec);
  if (!r.started) fail("download_cifar10: cannot run `tar` to unpack '{}' ({})", archive, r.output);
  if (r.exit_code != 0)
    fail("download_cifar10: `tar -xzf {} -C {}` failed (exit code {}: {})", archive, dir, r.exit_code, r.output);
  const std::string data_dir = (fs::path(dir) / "cifar-10-batches-bin").string();
  if (!fs::is_directory(data_dir))
    fail("download_cifar10: unpacking '{}' into '{}' gave no cifar-10-batches-bin directory", archive, dir);
  // Loading checks every file's presence, size and labels.
  CifarDataset::load(data_dir, Split::train);
  CifarDataset::load(data_dir, Split::test);
}

std::string find_cifar10_dir(const std::string& flag) {
  const char* env = std::getenv("NORMA_DATA");
  std::vector<std::string> tried;
  if (!flag.empty()) tried = {flag};
  else if (env && *env) tried = {env};
  else tried = {"./data/cifar-10-batches-bin", "../shared/cifar10/cifar-10-batches-bin"};
  for (const std::string& dir : tried)
    if (fs::is_directory(dir)) return dir;

  std::string where;
  if (!flag.empty()) where = fmt::format("--data {} (does not exist)", flag);
  else if (env && *env) where = fmt::format("$NORMA_DATA={} (does not exist)", env);
  else
    where = fmt::format("--data (not given), $NORMA_DATA (not set), {} and {} (relative to {}; neither exists)",
                        tried[0], tried[1], fs::current_path().string());
  fail("find_cifar10_dir: no CIFAR-10 directory found; tried {}. Pass --data DIR, set NORMA_DATA, or fetch it "
       "with `norma download cifar10`",
       where);
}

}  // namespace norma::data
