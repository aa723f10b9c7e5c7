// Writing a small file so that a reader never sees half of it and a crash
// never leaves a half-written one: a temporary beside `path`
// (path + ".tmp.<pid>") is written, flushed and fsynced, then renamed over path.
#pragma once
#include <string>

namespace norma {

// Writes `text` to `path` atomically. On failure the temporary is removed,
// `path` is untouched, and norma::Error says "<who>: cannot write '<path>':
// <step> '<temporary>' failed: <reason>".
void write_file_atomically(const std::string& path, const std::string& text, const char* who);

}  // namespace norma
