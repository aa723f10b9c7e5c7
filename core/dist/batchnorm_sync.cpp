// C channels; K ranks; M_r values per channel on rank r. Everything in double.
#include "batchnorm_sync.h"

#include <algorithm>
#include <vector>

namespace norma::dist {

SyncedCounts batchnorm_sync_stats(double* mean, double* var, int64_t C, double M, ProcessGroup& pg, bool by_count,
                                  bool one_pass) {
  const double K = pg.size();
  if (M == 0)  // an empty shard contributes nothing (its own statistics are 0/0)
    std::fill(mean, mean + C, 0.0), std::fill(var, var + C, 0.0);
  // Pass 1: counts and means (and E[x^2] for one_pass), one collective.
  const bool global = by_count;
  std::vector<double> buf(size_t(1 + 2 * C));
  buf[0] = M;
  for (int64_t c = 0; c < C; ++c) {
    const double w = global ? M : 1.0;  // global weighs by count, replica_average does not
    buf[1 + c] = w * mean[c];
    buf[1 + C + c] = w * (var[c] + mean[c] * mean[c]);
  }
  pg.allreduce_sum(buf.data(), one_pass ? buf.size() : size_t(1 + C));
  const double M_all = buf[0], div = global ? M_all : K;
  const SyncedCounts counts{global ? M_all : K * M, global ? M_all : M};
  if (div == 0) return counts;  // no values anywhere: the op reports it
  std::vector<double> local_mean(mean, mean + C);
  for (int64_t c = 0; c < C; ++c) mean[c] = buf[1 + c] / div;
  if (one_pass) {  // BrainPy: max(0, E[x^2] - E[x]^2)
    for (int64_t c = 0; c < C; ++c) var[c] = std::max(0.0, buf[1 + C + c] / div - mean[c] * mean[c]);
    return counts;
  }
  // Pass 2: within-rank plus between-rank sums of squares about the group mean.
  for (int64_t c = 0; c < C; ++c) {
    const double w = global ? M : 1.0, d = local_mean[c] - mean[c];
    buf[c] = w * (var[c] + d * d);
  }
  pg.allreduce_sum(buf.data(), size_t(C));
  for (int64_t c = 0; c < C; ++c) var[c] = buf[c] / div;
  return counts;
}

void batchnorm_sync_grad_sums(double* sum_dy, double* sum_dy_xhat, int64_t C, ProcessGroup& pg) {
  std::vector<double> buf(sum_dy, sum_dy + C);
  buf.insert(buf.end(), sum_dy_xhat, sum_dy_xhat + C);
  pg.allreduce_sum(buf.data(), buf.size());
  std::copy(buf.begin(), buf.begin() + C, sum_dy);
  std::copy(buf.begin() + C, buf.end(), sum_dy_xhat);
}

}  // namespace norma::dist
