// The choices a BatchNorm2d's arithmetic depends on, shared by the op
// (batchnorm2d.h), its kernels (ref/, fast/) and the cross-process
// statistics (core/dist/batchnorm_sync.h), none of which need the others' headers.
#pragma once

namespace norma::nn {

// Where the channel axis is: NCHW (PyTorch, MegEngine, PuzzleLib) or NHWC
// (BrainPy, numpy-ml).
enum class Layout { NCHW, NHWC };

// How the statistics of a batch are computed: two passes in double (accurate
// when |mean| >> std), or BrainPy's one pass var = max(0, E[x^2] - E[x]^2).
enum class VarianceMethod { two_pass, one_pass };

// Cross-process statistics (SyncBatchNorm), used in training when a process
// group is set; each rank passes its own shard of the batch. Formulas:
// core/dist/batchnorm_sync.h.
// global: the statistics of the batch concatenated over the ranks, combined
//   exactly from each rank's count, mean and centred sum of squares, so shards
//   may differ in size; running_var uses the global unbiased variance; the
//   backward all-reduces sum(dy) and sum(dy * xhat) and uses the global M, so
//   gradients equal single-process training on the concatenated batch.
// replica_average: BrainPy's axis_name: the unweighted mean over the K ranks of
//   each rank's E[x] and E[x^2] (var = E[x^2] - E[x]^2); the unbiased factor
//   uses the local count; the backward is this rule's exact gradient (M -> K * M_r).
// The two agree when every shard has the same size.
enum class SyncRule { global, replica_average };

}  // namespace norma::nn
