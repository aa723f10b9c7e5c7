// DataLoader: epoch permutation, batch assembly and the prefetch worker.
#include "loader.h"

#include <numeric>

#include "../core/error.h"
#include "transforms.h"

namespace norma::data {

namespace {

constexpr uint64_t kShuffleStream = 0;  // transforms.h's draw_augment uses stream 1

}  // namespace

DataLoader::DataLoader(const CifarDataset& ds, LoaderOptions opt) : ds_(ds), opt_(std::move(opt)) {
  const int64_t B = opt_.batch_size, R = opt_.world_size, N = ds_.size();
  if (B <= 0) fail("DataLoader: batch_size must be positive, got {}", B);
  if (opt_.crop_padding < 0 || opt_.crop_padding > 32)
    fail("DataLoader: crop_padding must be in [0, 32], got {}", opt_.crop_padding);
  if (opt_.prefetch < 0) fail("DataLoader: prefetch must be >= 0 (0 = no worker thread), got {}", opt_.prefetch);
  if (R <= 0 || opt_.rank < 0 || opt_.rank >= R)
    fail("DataLoader: need 0 <= rank < world_size, got rank {} and world_size {}", opt_.rank, R);
  if (N == 0) fail("DataLoader: the dataset is empty");
  num_batches_ = N / (B * R) + (!opt_.drop_last && N % (B * R) >= R ? 1 : 0);
  if (num_batches_ == 0)
    fail("DataLoader: {} samples make no batch of {} per rank with world_size {} and drop_last {}", N, B, R,
         opt_.drop_last);
  epoch_ = -1;  // so set_epoch(0) below does the work
  set_epoch(0);
}

DataLoader::~DataLoader() { stop_worker(); }

void DataLoader::set_epoch(int64_t epoch) {
  if (epoch < 0) fail("DataLoader::set_epoch: epoch must be >= 0, got {}", epoch);
  // Same epoch and nothing handed out yet: the worker is already on the right batches.
  if (epoch == epoch_ && pos_ == 0) return;
  stop_worker();
  epoch_ = epoch;
  pos_ = 0;
  perm_.resize(size_t(ds_.size()));
  std::iota(perm_.begin(), perm_.end(), int64_t(0));
  if (opt_.shuffle)  // Fisher-Yates, each swap drawn from the hash of (seed, epoch, i)
    for (int64_t i = ds_.size() - 1; i > 0; --i) {
      uint64_t j = hash_below(hash_u64(opt_.seed, uint64_t(epoch), uint64_t(i), kShuffleStream), uint64_t(i + 1));
      std::swap(perm_[size_t(i)], perm_[j]);
    }
  if (opt_.prefetch > 0) start_worker();
}

Batch DataLoader::make_batch(int64_t b) const {
  // This rank's share of global batch b (see the header).
  const int64_t B = opt_.batch_size, R = opt_.world_size, r = opt_.rank;
  const int64_t start = b * B * R, m = std::min(B * R, ds_.size() - start);
  const int64_t lo = m == B * R ? start + r * B : start + m * r / R;
  const int64_t hi = m == B * R ? lo + B : start + m * (r + 1) / R;
  const int64_t n = hi - lo;

  // Tensors come from the caching allocator, so once the consumer drops an
  // earlier batch its memory is handed out again rather than faulted in fresh.
  Batch out;
  out.images = empty({n, kCifarChannels, kCifarHeight, kCifarWidth});
  out.targets = empty({n});
  out.indices.resize(size_t(n));
  float* images = out.images.data_ptr();
  float* targets = out.targets.data_ptr();
  const float* mean = opt_.normalize ? kCifar10Mean : nullptr;
  const float* std = opt_.normalize ? kCifar10Std : nullptr;
  uint8_t cropped[kCifarImageBytes];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t idx = perm_[size_t(lo + i)];
    const uint8_t* src = ds_.image(idx);
    if (opt_.augment) {
      Augment a = draw_augment(opt_.seed, uint64_t(epoch_), uint64_t(idx), opt_.crop_padding);
      crop_flip(cropped, src, kCifarChannels, kCifarHeight, kCifarWidth, a.dy, a.dx, a.flip);
      src = cropped;
    }
    to_float(images + i * kCifarImageBytes, src, kCifarChannels, kCifarHeight * kCifarWidth, mean, std);
    targets[i] = float(ds_.label(idx));
    out.indices[size_t(i)] = idx;
  }
  if (opt_.on_batch) opt_.on_batch(out);
  return out;
}

std::optional<Batch> DataLoader::next() {
  if (pos_ == num_batches_) {  // end of the epoch; the next call starts it over
    stop_worker();
    pos_ = 0;
    if (opt_.prefetch > 0) start_worker();
    return std::nullopt;
  }
  if (opt_.prefetch == 0) {
    Batch b = make_batch(pos_);
    ++pos_;
    return b;
  }
  if (!worker_.joinable()) start_worker();  // it stopped after an error
  Item item;
  {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [&] { return !queue_.empty(); });
    item = std::move(queue_.front());
    queue_.pop_front();
  }
  space_.notify_one();
  if (item.error) {
    stop_worker();  // it has exited after queueing the error; pos_ stays, so a retry fails the same way
    std::rethrow_exception(item.error);
  }
  ++pos_;
  return std::move(item.batch);
}

void DataLoader::start_worker() {
  NORMA_CHECK(!worker_.joinable());
  stop_ = false;
  queue_.clear();
  worker_ = std::thread(&DataLoader::worker_loop, this, pos_);
}

void DataLoader::stop_worker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  space_.notify_all();
  if (worker_.joinable()) worker_.join();
  queue_.clear();
}

// Prepares batches first, first+1, ... keeping at most `prefetch` of them
// queued or in the making; stops on request or after queueing an error.
void DataLoader::worker_loop(int64_t first) {
  for (int64_t b = first; b < num_batches_; ++b) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      space_.wait(lock, [&] { return stop_ || queue_.size() < size_t(opt_.prefetch); });
      if (stop_) return;
    }
    Item item;
    try {
      item.batch = make_batch(b);
    } catch (...) {
      item.error = std::current_exception();
    }
    const bool failed = item.error != nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      queue_.push_back(std::move(item));
    }
    ready_.notify_one();
    if (failed) return;
  }
}

}  // namespace norma::data
