// Fetching CIFAR-10: the official archive over the network (with the `curl`
// command) or a local copy of it, checked against the published md5,
// unpacked with `tar` and validated by loading it.
#pragma once
#include <string>

namespace norma::data {

inline constexpr const char* kCifar10Url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
inline constexpr const char* kCifar10Md5 = "c32a1d4ab5d03f1284b67883e8d87530";

// Leaves CIFAR-10 in dir/cifar-10-batches-bin (dir is created if needed).
// `source`: empty for kCifar10Url; an http://, https:// or ftp:// URL (fetched
// with curl to dir/cifar-10-binary.tar.gz.part, removed afterwards); or the
// path of a local .tar.gz. The archive's md5 must be kCifar10Md5; only a
// local archive may skip that check (verify_md5 = false, for tests with a
// small synthetic archive). Errors name the URL or file; a failed fetch
// suggests downloading elsewhere and passing the local archive instead.
void download_cifar10(const std::string& dir, const std::string& source, bool verify_md5 = true);

// Where CIFAR-10 lives: `flag` (the --data option) when non-empty, else
// $NORMA_DATA when set, else the first existing of ./data/cifar-10-batches-bin
// and ../shared/cifar10/cifar-10-batches-bin (relative to the current
// directory). An explicit flag or $NORMA_DATA is binding: when it does not
// exist that is the error, rather than silently reading other data. The
// error lists every place tried.
std::string find_cifar10_dir(const std::string& flag);

}  // namespace norma::data
