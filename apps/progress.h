// Training progress on stdout: a bar redrawn in place when stdout is a
// terminal, plain lines every 10% of an epoch (or 30 s) when it is not (CI logs).
#pragma once
#include <chrono>
#include <cstdint>

namespace norma::app {

class Progress {
 public:
  explicit Progress(bool enabled);
  void start_epoch(int64_t epoch, int64_t epochs, int64_t steps, int64_t first_step);
  // After step `step` (1-based within the epoch) with running loss/accuracy and throughput.
  void step(int64_t step, double loss, double acc, double img_per_s);
  void finish();  // ends a bar line before other output

 private:
  using Clock = std::chrono::steady_clock;
  bool enabled_, tty_, drawn_ = false;
  int64_t epoch_ = 0, epochs_ = 0, steps_ = 0, first_ = 0;
  Clock::time_point start_, last_;
};

}  // namespace norma::app
