// SyncBatchNorm's collectives: the batch statistics and the two backward
// reductions of BatchNorm2d combined over a process group (the rules are
// documented at nn::SyncRule in layers/batchnorm_options.h). Called by the op
// batch_norm2d only; they know process groups, not layers.
//
// Per channel, rank r holds M_r values with mean m_r and biased variance v_r.
//   global:          M = sum M_r,  mean = sum M_r m_r / M,
//                    var = (sum M_r v_r + sum M_r (m_r - mean)^2) / M      (Chan et al. 1979)
//                    (one_pass: var = max(0, sum M_r (v_r + m_r^2) / M - mean^2))
//   replica_average: mean = (1/K) sum m_r,  E[x^2] = (1/K) sum (v_r + m_r^2),
//                    var = max(0, E[x^2] - mean^2), computed for two_pass as
//                    (1/K) sum v_r + (1/K) sum (m_r - mean)^2 (the same value, no cancellation)
#pragma once
#include <cstdint>

#include "process_group.h"

namespace norma::dist {

// The counts behind synced statistics: `backward` replaces M in the closed-form
// backward (global M; K * M_r for replica_average, since d mean / d x_i = 1 / (K M_r)),
// `unbiased` gives the running-variance factor M / (M - 1) (global M; local M_r).
struct SyncedCounts {
  double backward;
  double unbiased;
};

// mean and var (C): this rank's statistics over M values on entry, the group's
// on exit. by_count: the global rule (ranks weighed by their counts), else
// replica_average; one_pass: the variance combined as E[x^2] - mean^2.
SyncedCounts batchnorm_sync_stats(double* mean, double* var, int64_t C, double M, ProcessGroup& pg, bool by_count,
                                  bool one_pass);

// sum_dy and sum_dy_xhat (C each) summed over the group in place, in one collective.
void batchnorm_sync_grad_sums(double* sum_dy, double* sum_dy_xhat, int64_t C, ProcessGroup& pg);

}  // namespace norma::dist
