// Norma: a small deep-learning framework. Include this one header.
//
// It declares every public class and function: the library norma::norma
// (core/, layers/, optim/, data/), the trainer's library norma::train (apps/:
// trainer, training checkpoints, built-in models, BatchNorm diagnostics, the
// download) and the MPI process group (core/dist/mpi_process_group.h). Calling
// the last two needs linking norma::train or norma::mpi (pkg-config norma or
// norma-mpi). The JSON in state dicts and checkpoints is only declared here:
// include <nlohmann/json.hpp> to read or build it. Internal headers (kernels,
// kernel tables, helpers) are left out: tests/consumer/public_headers.cmake lists them.
#pragma once
#include "apps/bn_stats.h"
#include "apps/checkpoint.h"
#include "apps/download.h"
#include "apps/fuse.h"
#include "apps/md5.h"
#include "apps/models.h"
#include "apps/progress.h"
#include "apps/trainer.h"
#include "core/allocator.h"
#include "core/anomaly_mode.h"
#include "core/atomic_file.h"
#include "core/autograd.h"
#include "core/dist/data_parallel.h"
#include "core/dist/mpi_process_group.h"
#include "core/dist/process_group.h"
#include "core/error.h"
#include "core/gradcheck.h"
#include "core/kernel_policy.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "data/cifar.h"
#include "data/hash.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "layers/activation.h"
#include "layers/batchnorm2d.h"
#include "layers/batchnorm_composite.h"
#include "layers/batchnorm_options.h"
#include "layers/batchnorm_presets.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/fusion.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/loss.h"
#include "layers/module.h"
#include "layers/pooling.h"
#include "layers/residual.h"
#include "layers/sequential.h"
#include "layers/serialize.h"
#include "optim/adam.h"
#include "optim/lr_scheduler.h"
#include "optim/optimizer.h"
#include "optim/sgd.h"
