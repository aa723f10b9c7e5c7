// The MPI process group: every rank `mpirun -np K` started (MPI_COMM_WORLD),
// on Open MPI from Debian. The header needs no <mpi.h>.
//
// mpi_world() initialises MPI on its first call (MPI_Init_thread with
// MPI_THREAD_FUNNELED: only the thread that called it talks to MPI; OpenMP
// workers never do) unless the program already did, and then MPI_Finalize runs
// at exit. Errors come back as norma::Error naming the MPI call (the group's
// communicator uses MPI_ERRORS_RETURN). An exception that escapes main aborts
// the whole job (std::terminate calls MPI_Abort), so peers do not hang; a rank
// that catches an error should call abort() (see process_group.h).
// When a peer dies (killed, crashed), mpirun ends every rank: the job exits
// non-zero with "mpirun noticed that process rank R ... exited on signal N".
//
// Launch: mpirun -np 2 ./prog   (as root add --allow-run-as-root; with more
// ranks than cores add --oversubscribe; across hosts --hostfile hosts.txt).
#pragma once
#include "process_group.h"

namespace norma::dist {

// The group of all ranks (a duplicate of MPI_COMM_WORLD), created once.
std::shared_ptr<ProcessGroup> mpi_world();

// True when this process was started by mpirun (Open MPI or another PMI
// launcher sets the environment it reads); MPI is not initialised by asking.
bool launched_by_mpirun();

// mpi_world() when launched by mpirun, else single_process().
std::shared_ptr<ProcessGroup> default_group();

}  // namespace norma::dist
