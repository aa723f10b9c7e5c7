// Internal to norma_train, not part of its API: what the training loop
// (trainer.cpp) calls in the files beside it: the command line's recipe
// (recipe.cpp), evaluation's helpers (evaluate.cpp) and the files a run writes
// besides training (run_files.cpp).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <norma/data/cifar.h>
#include <norma/layers/module.h>

// Declared, not included: trainer.cpp includes this header and trainer.h.
namespace norma::optim {
class Optimizer;
class LRScheduler;
}
namespace norma::app {
struct TrainConfig;
}

namespace norma::app::detail {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// recipe.cpp: TrainConfig's checks and the optimizer, schedule and data `norma train` makes from it.
void check_tta(const std::string& tta);
void check_config(const TrainConfig& c);
std::unique_ptr<optim::Optimizer> make_optimizer(const TrainConfig& c, nn::Module& model);
// `given` when there is one, else the split loaded from c.data.
std::shared_ptr<const data::CifarDataset> load_split(const TrainConfig& c, data::Split split,
                                                     std::shared_ptr<const data::CifarDataset> given);
// torch.nn.utils.clip_grad_norm_: scales the gradients to norm max_norm when above it.
void clip_grad_norm(nn::Module& model, double max_norm);
// The per-step schedule over total_steps, with `warmup_steps` of linear warm-up
// (from 0.1 x lr); null for a constant lr without warm-up.
std::shared_ptr<optim::LRScheduler> make_schedule(const TrainConfig& c, optim::Optimizer& opt, int64_t total_steps,
                                                  int64_t warmup_steps);

// evaluate.cpp: correct predictions (argmax of each logits row equals the target).
int64_t count_correct(const Tensor& logits, const Tensor& targets);

// run_files.cpp: the up-front checks of a run's output files, the NaN check
// before a save, the metrics CSV and its plot.
void check_writable(const char* flag, const std::string& path);
int64_t checkpoint_bytes(const nn::Module& model, const optim::Optimizer& opt);
void check_room(const char* flag, const std::string& path, int64_t bytes);
std::string nonfinite_state(const nn::Module& model, const optim::Optimizer& opt);
// Draws the metrics CSV (per epoch) and the steps CSV (per step) to png.
void plot_metrics(const std::string& csv, const std::string& steps_csv, const std::string& png);
extern const char* kMetricsHeader;
extern const char* kStepsHeader;
// The steps CSV's smoothed columns are exponential moving averages with factor
// kEma (a span of about 20 steps), divided by 1 - kEma^steps so the first
// steps are not pulled towards 0.
constexpr double kEma = 0.95;
// The per-step CSV beside the metrics: m.csv -> m.steps.csv.
std::string steps_path(const std::string& metrics);
// Writes `rows` under `header` to `path`, atomically.
void write_csv(const std::string& path, const char* header, const std::vector<std::string>& rows, const char* who);
std::vector<std::string> split_csv(const std::string& line);
// Rows of an earlier run's CSV whose global step (column `step_column`, from 0)
// is at most `step`, for a resumed run.
std::vector<std::string> read_rows_until(const std::string& path, int step_column, int64_t step);

}  // namespace norma::app::detail
