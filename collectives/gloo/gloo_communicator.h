// The Gloo backend: CPU tensors over Gloo's TCP transport, bootstrapped through our store;
// all-reduce, broadcast, all-gather and reduce-scatter go through shared memory instead when every
// rank is on one host (ShmCollectives).
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "collectives/threaded_communicator.h"

namespace gloo {
class Context;
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo

namespace cohort::collectives {

class HierCollectives;
class ShmCollectives;

class GlooCommunicator : public ThreadedCommunicator {
 public:
  // Joins the group and connects a full mesh of TCP pairs. Needs config.store.
  explicit GlooCommunicator(const CommConfig& config);
  // The same over an existing TCP device (a group shares its parent's: one listening socket and
  // one event-loop thread per process, however many groups).
  GlooCommunicator(const CommConfig& config, std::shared_ptr<gloo::transport::Device> device);
  ~GlooCommunicator() override;

  const char* Backend() const override { return "gloo"; }

  // Empty if Gloo can run with this config, else one line saying why not.
  static std::string UnavailableReason(const CommConfig& config);

  // The address Gloo binds: COHORT_GLOO_HOST, else 127.0.0.1 when the store is on loopback,
  // else this machine's hostname.
  static std::string BindHost();

 protected:
  // Send and recv are posted here, on the caller's thread (Gloo's pairs allow it, as c10d does),
  // and completed by their own waiter thread: they never wait behind, or block, collectives.
  WorkPtr Submit(Op op) override;
  // A group is a GlooCommunicator of its own: a sub-rendezvous under this one's store scope, its
  // own TCP pairs (so its traffic never matches ours) and shared memory when its ranks share a
  // host.
  std::unique_ptr<Communicator> CreateGroup(const SplitInfo& info) override;
  std::unique_ptr<Pending> Run(const Op& op) override;
  ErrorKind Classify(const std::exception& e) const override;

 private:
  struct Posted {
    WorkPtr work;
    std::unique_ptr<gloo::transport::UnboundBuffer> buf;
  };

  void RunAllReduce(const Op& op);
  void RunBroadcast(const Op& op);
  void RunAllGather(const Op& op);
  void RunReduceScatter(const Op& op);
  void RunBarrier(const Op& op);
  void WaitPosted();
  void StopWaiter();
  // Grows the reusable scratch buffer; fresh large buffers per op cost page faults.
  char* Scratch(size_t bytes);

  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;
  std::vector<char> scratch_;
  // Collectives through shared memory when every rank is on this host (COHORT_SHM).
  std::unique_ptr<ShmCollectives> shm_;
  // All-reduce, broadcast and all-gather through shared memory per host and TCP between hosts'
  // leaders (COHORT_HIER).
  std::unique_ptr<HierCollectives> hier_;

  std::mutex p2p_mu_;
  std::condition_variable p2p_cv_;
  std::deque<Posted> posted_;
  gloo::transport::UnboundBuffer* waiting_on_ = nullptr;  // the buffer the waiter blocks on
  bool waiting_on_recv_ = false;
  bool p2p_stop_ = false;
  std::thread waiter_;
};

}  // namespace cohort::collectives
