// OpenBLAS's thread count for one scope (internal to matmul and the conv kernels).
//
// The conv kernels split the batch across OpenMP threads, each calling a
// single-threaded sgemm: one thread pool instead of OpenMP's and OpenBLAS's
// taking turns (their idle threads spin and steal each other's cores; on 2
// cores that cost 3x).
#pragma once
#include <cblas.h>

namespace norma {

struct BlasThreads {
  int saved;
  explicit BlasThreads(int n) : saved(openblas_get_num_threads()) { openblas_set_num_threads(n); }
  ~BlasThreads() { openblas_set_num_threads(saved); }
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;
};

}  // namespace norma
