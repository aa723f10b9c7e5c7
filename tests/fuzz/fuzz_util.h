// What the fuzz targets share: the rule that norma::Error is the expected
// answer to bad bytes, an oracle check that aborts, and a scratch directory.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <norma/core/error.h>

#include "../temp_dir.h"

// An oracle: libFuzzer reports an abort as a crash and saves the input.
#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

namespace norma::fuzz {

// A norma::Error is how a parser must refuse bad input, unless it comes from
// NORMA_CHECK ("internal error at ..."): a broken invariant is a bug whatever
// the input. Any other exception is not caught by the targets, so it ends the
// run through std::terminate, which libFuzzer reports as a crash.
inline void expected(const Error& e) {
  if (std::string_view(e.what()).starts_with("internal error")) {
    std::fprintf(stderr, "norma::Error from an internal check: %s\n", e.what());
    std::abort();
  }
}

// This process's scratch directory (under $TMPDIR, else /tmp), removed at exit.
inline const test::TempDir& scratch() {
  static const test::TempDir dir("fuzz");
  return dir;
}

inline void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), std::streamsize(size));
  FUZZ_CHECK(out.good());
}

}  // namespace norma::fuzz
