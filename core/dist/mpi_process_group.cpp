// ProcessGroup over MPI. Counts above INT_MAX are sent in pieces.
#include "mpi_process_group.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>

#include "../error.h"

namespace norma::dist {

namespace {

std::string mpi_error_string(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return fmt::format("MPI error code {}", rc);
  return std::string(text, size_t(len));
}

template <class T> MPI_Datatype mpi_type();
template <> MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <> MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
template <> MPI_Datatype mpi_type<int64_t>() { return MPI_INT64_T; }

class MpiProcessGroup final : public ProcessGroup {
 public:
  explicit MpiProcessGroup(MPI_Comm comm) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  void allreduce_sum(double* d, size_t n) override { allreduce(d, n); }
  void allreduce_sum(float* d, size_t n) override { allreduce(d, n); }
  void allreduce_sum(int64_t* d, size_t n) override { allreduce(d, n); }
  void broadcast(float* d, size_t n, int root) override { bcast(d, n, root); }
  void broadcast(double* d, size_t n, int root) override { bcast(d, n, root); }
  void broadcast(int64_t* d, size_t n, int root) override { bcast(d, n, root); }
  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }
  [[noreturn]] void abort(int exit_code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(comm_, exit_code);
    std::_Exit(exit_code);
  }

 private:
  void check(int rc, const char* call, size_t n = 0) const {
    if (rc != MPI_SUCCESS)
      fail("{} failed on rank {} of {} ({} values): {}", call, rank_, size_, n, mpi_error_string(rc));
  }
  template <class T>
  void allreduce(T* d, size_t n) {
    for (size_t at = 0; at < n; at += size_t(INT_MAX)) {
      const int count = int(std::min(n - at, size_t(INT_MAX)));
      check(MPI_Allreduce(MPI_IN_PLACE, d + at, count, mpi_type<T>(), MPI_SUM, comm_), "MPI_Allreduce", n);
    }
  }
  template <class T>
  void bcast(T* d, size_t n, int root) {
    if (n == 0) {  // still validate the root, as MPI would for a non-empty message
      check(MPI_Bcast(d, 0, mpi_type<T>(), root, comm_), "MPI_Bcast", n);
      return;
    }
    for (size_t at = 0; at < n; at += size_t(INT_MAX)) {
      const int count = int(std::min(n - at, size_t(INT_MAX)));
      check(MPI_Bcast(d + at, count, mpi_type<T>(), root, comm_), "MPI_Bcast", n);
    }
  }

  MPI_Comm comm_;
  int rank_ = -1, size_ = 0;
};

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// An exception escaping main on one rank would leave its peers blocked in the
// next collective: print it and abort the job instead.
[[noreturn]] void abort_on_terminate() {
  if (auto e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "norma: uncaught exception: %s\n", ex.what());
    } catch (...) {
      std::fprintf(stderr, "norma: uncaught exception of unknown type\n");
    }
  }
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace

std::shared_ptr<ProcessGroup> mpi_world() {
  static std::mutex m;
  static std::shared_ptr<ProcessGroup> world;
  std::lock_guard lock(m);
  if (world) return world;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) fail("mpi_world: MPI was already finalized");
  if (!initialized) {
    int provided = 0;
    if (int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided); rc != MPI_SUCCESS)
      fail("MPI_Init_thread failed: {}", mpi_error_string(rc));
    std::atexit(finalize_at_exit);
    if (provided < MPI_THREAD_FUNNELED)
      fail("MPI_Init_thread: needs thread level MPI_THREAD_FUNNELED ({}), the library provides {}",
           int(MPI_THREAD_FUNNELED), provided);
  }
  std::set_terminate(abort_on_terminate);
  MPI_Comm comm;
  if (int rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm); rc != MPI_SUCCESS)
    fail("MPI_Comm_dup failed: {}", mpi_error_string(rc));
  if (int rc = MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN); rc != MPI_SUCCESS)
    fail("MPI_Comm_set_errhandler failed: {}", mpi_error_string(rc));
  world = std::make_shared<MpiProcessGroup>(comm);
  return world;
}

bool launched_by_mpirun() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

std::shared_ptr<ProcessGroup> default_group() { return launched_by_mpirun() ? mpi_world() : single_process(); }

}  // namespace norma::dist
