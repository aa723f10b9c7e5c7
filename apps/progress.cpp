// Progress bar (terminal) or periodic lines (pipe).
#include "progress.h"

#include <unistd.h>

#include <fmt/core.h>
#include <string>

namespace norma::app {

Progress::Progress(bool enabled) : enabled_(enabled), tty_(::isatty(STDOUT_FILENO) == 1) {}

void Progress::start_epoch(int64_t epoch, int64_t epochs, int64_t steps, int64_t first_step) {
  epoch_ = epoch;
  epochs_ = epochs;
  steps_ = steps;
  first_ = first_step;
  start_ = last_ = Clock::now();
}

void Progress::step(int64_t step, double loss, double acc, double img_per_s) {
  if (!enabled_) return;
  const auto now = Clock::now();
  const double since_last = std::chrono::duration<double>(now - last_).count();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const int64_t done = step - first_;
  const double eta = done > 0 ? elapsed / done * (steps_ - step) : 0;
  if (tty_) {
    if (since_last < 0.1 && step != steps_) return;  // redraw at most 10 times a second
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * step / std::max<int64_t>(steps_, 1));
    fmt::print("\repoch {}/{} [{}{}] {}/{} loss {:.4f} acc {:.4f} {:.0f} img/s ETA {:.0f} s   ", epoch_, epochs_,
               std::string(filled, '#'), std::string(kWidth - filled, '.'), step, steps_, loss, acc, img_per_s, eta);
    std::fflush(stdout);
    drawn_ = true;
  } else {
    const int64_t every = std::max<int64_t>(1, steps_ / 10);
    if (step % every != 0 && since_last < 30 && step != steps_) return;
    fmt::print("epoch {}/{} step {}/{} loss {:.4f} acc {:.4f} {:.0f} img/s ETA {:.0f} s\n", epoch_, epochs_, step,
               steps_, loss, acc, img_per_s, eta);
    std::fflush(stdout);
  }
  last_ = now;
}

void Progress::finish() {
  if (drawn_) fmt::print("\n");
  drawn_ = false;
}

}  // namespace norma::app
