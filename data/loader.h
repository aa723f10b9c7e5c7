// DataLoader: shuffled, augmented, normalised float batches from a
// CifarDataset, prepared ahead by one background thread.
//
// Order and augmentation are pure functions of (seed, epoch, sample index):
// the same options give bit-identical batches with prefetch 0 or 2, on any
// machine, and Norma's global generator (manual_seed) is never touched.
//
// Data parallelism (rank, world_size): batch_size is per rank. Every rank
// shuffles the whole dataset with the same permutation; global batch g is
// permuted positions [g*B*R, (g+1)*B*R) (B batch_size, R world_size) and rank
// r takes the contiguous share [g*B*R + r*B, g*B*R + (r+1)*B). The last,
// partial global batch is split as evenly as possible (shares differ by at
// most one sample); when it has fewer samples than ranks it is dropped, so
// every rank takes the same number of steps. drop_last drops it always.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "../core/tensor.h"
#include "cifar.h"

namespace norma::data {

struct Batch {
  Tensor images;                 // (B, 3, 32, 32) float32, normalised when LoaderOptions::normalize
  Tensor targets;                // (B) float32 class indices (what nn::cross_entropy takes)
  std::vector<int64_t> indices;  // (B) dataset index of each sample
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;
  bool augment = false;    // random crop 32 with zero padding + horizontal flip p=0.5
  int crop_padding = 4;    // the crop's zero padding p: offsets in [-p, p] (torchvision's RandomCrop(32, padding=p))
  bool normalize = true;   // CIFAR-10 per-channel mean and std (transforms.h); else pixel / 255
  int prefetch = 2;        // batches prepared ahead by one background worker thread; 0 = no thread
  int64_t rank = 0, world_size = 1;  // data-parallel shard (contiguous share, see above)
  // Runs on each finished batch (in the worker thread when prefetch > 0), e.g.
  // for an extra transform. Must depend on the batch alone to stay deterministic.
  std::function<void(Batch&)> on_batch;
};

class DataLoader {
 public:
  // Keeps a reference to `ds`, which must outlive the loader. Validates the
  // options (batch_size > 0, prefetch >= 0, 0 <= rank < world_size, a non-empty dataset).
  DataLoader(const CifarDataset& ds, LoaderOptions opt);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Starts epoch `epoch` from its first batch (stopping the worker if it was
  // mid-epoch); the shuffle order is a seeded Fisher-Yates for (seed, epoch).
  void set_epoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }
  int64_t num_batches() const { return num_batches_; }  // per epoch, on this rank
  // The next batch, or nullopt at the end of the epoch; the call after a
  // nullopt starts the same epoch over (like iterating a PyTorch DataLoader
  // again). An error while preparing a batch is rethrown here, and again on
  // the next call (the batch is not skipped).
  std::optional<Batch> next();

 private:
  struct Item {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };
  Batch make_batch(int64_t b) const;
  void start_worker();
  void stop_worker();
  void worker_loop(int64_t first);

  const CifarDataset& ds_;
  LoaderOptions opt_;
  int64_t num_batches_ = 0;
  int64_t epoch_ = 0;
  int64_t pos_ = 0;             // batches handed out this epoch
  std::vector<int64_t> perm_;   // (N) this epoch's order of dataset indices

  // Worker state, guarded by mu_.
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable ready_, space_;  // an item was queued / a slot was freed or stop was asked
  std::deque<Item> queue_;
  bool stop_ = false;
};

}  // namespace norma::data
