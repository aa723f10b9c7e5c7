// ProcessGroup: the K processes (ranks) of a data-parallel job and the
// collectives they run together. single_process() is rank 0 of 1 and needs no
// MPI; mpi_world() (mpi_process_group.h) spans every rank mpirun started.
//
// Every rank must call the same collectives in the same order with the same
// counts (the MPI rule). A rank that hits an error must not just return from
// main: its peers would wait in the next collective. Call abort() instead:
//
//   auto pg = dist::mpi_world();
//   try { train(*pg); } catch (const std::exception& e) {
//     fmt::print(stderr, "rank {}: {}\n", pg->rank(), e.what());
//     pg->abort(1);  // ends every rank of the job with exit code 1
//   }
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace norma::dist {

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;  // 0 .. size()-1
  virtual int size() const = 0;
  bool is_root() const { return rank() == 0; }
  virtual std::string name() const = 0;  // for logs: "single-process", "mpi"

  // In place: every rank ends with the elementwise sum over ranks.
  virtual void allreduce_sum(double* data, size_t n) = 0;
  virtual void allreduce_sum(float* data, size_t n) = 0;
  virtual void allreduce_sum(int64_t* data, size_t n) = 0;
  // In place: every rank ends with root's values.
  virtual void broadcast(float* data, size_t n, int root) = 0;
  virtual void broadcast(double* data, size_t n, int root) = 0;
  virtual void broadcast(int64_t* data, size_t n, int root) = 0;
  virtual void barrier() = 0;
  // Ends the whole job (every rank) with this exit code. Never returns.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// Rank 0 of 1: the collectives leave the data as it is. A root other than 0 is an error.
std::shared_ptr<ProcessGroup> single_process();

// Scalars across ranks, e.g. the loss of a step (mean) or correct counts (sum).
double allreduce_sum(double value, ProcessGroup& pg);
double allreduce_mean(double value, ProcessGroup& pg);
int64_t allreduce_sum(int64_t value, ProcessGroup& pg);

}  // namespace norma::dist
