// The process-wide MPI state: initialized once, at the thread level cohort needs, and at exit
// finalized, or aborted when an operation is stuck inside MPI (a hung peer), since
// MPI_Finalize would then wait forever.
#pragma once

#include <string>

namespace cohort::collectives {

class MpiEnv {
 public:
  // True when this process was started by mpirun (or MPI is already initialized).
  static bool Launched();
  // Initializes MPI with MPI_THREAD_MULTIPLE (at least SERIALIZED) unless the program already did; throws
  // Unavailable if MPI was initialized at a lower thread level than cohort needs.
  static void Ensure();
  // Runs fn at exit just before MPI_Finalize (to free MPI objects cohort created).
  static void BeforeFinalize(void (*fn)());
  // Records that an operation is stuck in MPI: at exit, MPI_Abort replaces MPI_Finalize.
  static void MarkStuck();
  static bool Stuck();
  // True when MPI runs at MPI_THREAD_MULTIPLE (needed by groups); valid after Ensure().
  static bool ThreadMultiple();
  // Terminates every process of the MPI job with code (MPI_Abort).
  [[noreturn]] static void Abort(int code);
};

}  // namespace cohort::collectives
