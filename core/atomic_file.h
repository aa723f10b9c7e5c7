// Writing a file so that a reader never sees half of it and a crash never
// leaves a half-written one: a temporary beside `path` (path + ".tmp.<pid>")
// is written, flushed and fsynced, renamed over `path`, and the directory is
// fsynced so the rename survives a power cut. Checkpoints (save_safetensors),
// the trainer's metrics and the BatchNorm statistics CSV all go through here.
//
// A writer killed mid-write (SIGKILL, a crash) leaves its temporary behind and
// `path` as it was. The next write to the same path removes such leftovers:
// the temporaries of `path` whose pid is no longer a running process (a live
// pid may be another writer's save in progress, so its file is left alone).
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>

namespace norma {

// Streams a file into place atomically:
//
//   AtomicFile f(path, "save_safetensors");  // creates path + ".tmp.<pid>"
//   f.write(data, bytes);                     // as many times as needed
//   f.commit();                               // flush, fsync, rename, fsync the directory
//
// Every failure (a full disk, a file size limit, a missing directory) throws
// norma::Error "<who>: cannot write '<path>': <step> '<temporary>' failed:
// <reason>" with the system's reason ("No space left on device", "File too
// large"); the temporary is removed and `path` is untouched. An AtomicFile
// destroyed without commit() removes its temporary too.
class AtomicFile {
 public:
  AtomicFile(std::string path, std::string who);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void commit();
  const std::string& temporary() const { return tmp_; }

 private:
  [[noreturn]] void fail_io(const char* step);
  std::string path_, who_, tmp_;
  std::FILE* f_ = nullptr;
  bool committed_ = false;
};

// Writes `text` to `path` with an AtomicFile; errors name `who` as above.
void write_file_atomically(const std::string& path, const std::string& text, const char* who);

}  // namespace norma
