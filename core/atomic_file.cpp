// write_file_atomically: temporary, fsync, rename.
#include "atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "error.h"

namespace norma {

void write_file_atomically(const std::string& path, const std::string& text, const char* who) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  auto io_fail = [&](const char* what) {
    const int err = errno;
    if (f) std::fclose(f);
    std::remove(tmp.c_str());
    fail("{}: cannot write '{}': {} '{}' failed: {}", who, path, what, tmp, std::strerror(err));
  };
  if (!f) io_fail("creating");
  if (std::fwrite(text.data(), 1, text.size(), f) != text.size()) io_fail("writing");
  if (std::fflush(f) != 0) io_fail("flushing");
  if (fsync(fileno(f)) != 0) io_fail("syncing");
  const int closed = std::fclose(f);
  f = nullptr;
  if (closed != 0) io_fail("closing");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) io_fail("renaming");
}

}  // namespace norma
