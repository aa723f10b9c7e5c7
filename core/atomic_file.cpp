// AtomicFile: temporary, fsync, rename, fsync the directory.
#include "atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "error.h"

namespace norma {

namespace {

std::string parent_dir(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// Best effort: a leftover that cannot be removed (or a directory that cannot
// be listed) is no reason to fail a write that can succeed.
void remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const std::string prefix = fs::path(path).filename().string() + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(parent_dir(path), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(prefix) || name.size() == prefix.size() || name.size() - prefix.size() > 9) continue;
    const std::string pid = name.substr(prefix.size());
    if (!std::all_of(pid.begin(), pid.end(), [](unsigned char c) { return std::isdigit(c); })) continue;
    // ESRCH: no such process. EPERM means one exists (another user's).
    if (::kill(pid_t(std::stol(pid)), 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      fs::remove(it->path(), ignored);
    }
  }
}

}  // namespace

AtomicFile::AtomicFile(std::string path, std::string who)
    : path_(std::move(path)), who_(std::move(who)), tmp_(fmt::format("{}.tmp.{}", path_, ::getpid())) {
  remove_stale_temporaries(path_);
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) fail_io("creating");
}

AtomicFile::~AtomicFile() {
  if (f_) std::fclose(f_);
  if (!committed_) std::remove(tmp_.c_str());
}

void AtomicFile::fail_io(const char* step) {
  const int err = errno;
  if (f_) std::fclose(f_);
  f_ = nullptr;
  std::remove(tmp_.c_str());
  fail("{}: cannot write '{}': {} '{}' failed: {}", who_, path_, step, tmp_, std::strerror(err));
}

void AtomicFile::write(const void* data, size_t bytes) {
  if (bytes && std::fwrite(data, 1, bytes, f_) != bytes) fail_io("writing");
}

void AtomicFile::commit() {
  if (std::fflush(f_) != 0) fail_io("flushing");
  if (::fsync(fileno(f_)) != 0) fail_io("syncing");
  const int closed = std::fclose(f_);
  f_ = nullptr;
  if (closed != 0) fail_io("closing");
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail_io("renaming");
  committed_ = true;

  // The rename is durable once the directory entry is (EINVAL: a file system
  // that cannot sync directories).
  const std::string dir = parent_dir(path_);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0 || (::fsync(fd) != 0 && errno != EINVAL)) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    fail("{}: '{}' was written, but syncing its directory '{}' failed: {}", who_, path_, dir, std::strerror(err));
  }
  ::close(fd);
}

void write_file_atomically(const std::string& path, const std::string& text, const char* who) {
  AtomicFile f(path, who);
  f.write(text.data(), text.size());
  f.commit();
}

}  // namespace norma
