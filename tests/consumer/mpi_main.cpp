// Uses an installed Norma's component mpi (norma::mpi, pkg-config norma-mpi):
// links the MPI process group and, started without mpirun, gets the
// single-process group from default_group(). Exits non-zero when wrong.
#include <cstdio>

#include <norma/norma.h>

using namespace norma;

int main() {
  const bool launched = dist::launched_by_mpirun();
  auto pg = dist::default_group();  // mpi_world() under mpirun
  const bool ok = !launched && pg->size() == 1 && pg->rank() == 0;
  std::printf("launched by mpirun: %s; group %s of size %d: %s\n", launched ? "yes" : "no", pg->name().c_str(),
              pg->size(), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
