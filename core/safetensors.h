// Checkpoints in the safetensors format (Hugging Face's; what PyTorch and most
// hubs now use): named tensors plus string metadata, read and written without
// the Python package, byte for byte as the reference Rust writer lays them out.
//
// Layout (docs/checkpoints.md has the details):
//   u64 N (little endian) | N bytes of JSON header, padded with spaces to a
//   multiple of 8 | the data buffer, every tensor's raw little-endian bytes
// The header maps each name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets into the buffer) and "__metadata__" to a {string: string} object.
#pragma once
#include <map>
#include <string>

#include "tensor.h"

namespace norma {

struct SafetensorsFile {
  NamedTensors tensors;                         // in the file's data order
  std::map<std::string, std::string> metadata;  // the header's "__metadata__"
  std::string path;                             // where it was read from (for errors)
  // Lookups by name: at() fails naming the file and the names it holds.
  bool contains(const std::string& name) const;
  const Tensor& at(const std::string& name) const;
};

// Writes `tensors` (float32, any strides) to `path`. Every tensor is stored as
// F32 except those whose name ends with "num_batches_tracked", stored as I64
// like PyTorch's (their values must be whole numbers). Entries are ordered as
// the Rust writer orders them: wider dtypes first, then by name.
// The write is atomic (core/atomic_file.h): a temporary file beside `path`
// (path + ".tmp.<pid>") is written, flushed and fsynced, renamed over `path`,
// and the directory fsynced. On failure the temporary is removed, an existing
// file at `path` is left as it was, and norma::Error names the path and the
// system's reason. A writer killed mid-save leaves `path` as it was; the
// temporary it leaves is removed by the next save to `path`.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads a safetensors file into float32 tensors. Accepts F32, F64 (rounded to
// float), I64 and I32 (whole numbers up to 2^24 in magnitude, exact in float).
// Validates the whole file before trusting it, and never reads out of bounds:
// header length, JSON, fields, dtypes, shapes, offsets, overlaps, gaps and
// duplicate names each fail with a norma::Error naming the file and the tensor.
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace norma
