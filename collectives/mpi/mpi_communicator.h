// The MPI backend: CPU tensors through Open MPI's tuned collectives, for processes started by
// mpirun. MPI cannot time out a blocking call, so a hung peer is caught by Work::Wait(): the
// caller gets a Timeout naming the stuck ranks, and at exit the job is aborted, not finalized.
#pragma once

#include <mpi.h>

#include "collectives/threaded_communicator.h"

namespace cohort::collectives {

class MpiCommunicator : public ThreadedCommunicator {
 public:
  // Initializes MPI if needed and duplicates MPI_COMM_WORLD. config.rank/size must match MPI's.
  explicit MpiCommunicator(const CommConfig& config);
  ~MpiCommunicator() override;

  const char* Backend() const override { return "mpi"; }

  static std::string UnavailableReason(const CommConfig& config);

 protected:
  // Collectives block the worker; send and recv are posted (MPI_Isend/MPI_Irecv) and polled.
  std::unique_ptr<Pending> Run(const Op& op) override;
  // MPI_Comm_split of this communicator (needs MPI_THREAD_MULTIPLE: each group's worker thread
  // calls MPI on its own communicator).
  std::unique_ptr<Communicator> CreateGroup(const SplitInfo& info) override;
  void OnWaitTimeout(Work& work) override;
  // A caller's thread is blocked in MPI past the timeout: name the culprits, then abort the job.
  void OnInlineStuck(const Op& op) override;

 private:
  // A group: adopts comm, made by MPI_Comm_split of a parent.
  MpiCommunicator(const CommConfig& config, MPI_Comm comm);
  // Shared tail of both constructors: error handler, tag bound, the worker.
  void Adopt(MPI_Comm comm);
  void RunAllReduce(const Op& op);
  void RunReduceScatter(const Op& op);
  std::unique_ptr<Pending> PostSendRecv(const Op& op);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int tag_ub_ = 32767;  // the largest tag MPI accepts (MPI_TAG_UB)
};

}  // namespace cohort::collectives
