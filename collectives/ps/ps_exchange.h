// The calls of one collective to the parameter servers: started together (a worker talks to all
// servers at once) and waited for together. When one fails the rest are cancelled, which tells
// the servers to fail the other ranks' pushes of the same partitions at once; the error names
// the server and shard, preferring the root cause (a server that went away, a mismatch) over
// its echoes (another rank gave up).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>

#include "collectives/ps/ps.grpc.pb.h"
#include "collectives/ps/ps_client.h"

namespace cohort::collectives::ps {

class Exchange {
 public:
  // A new call to server; fill the returned request before Run().
  ::cohort::ps::PushRequest& Add(PsServerClient* server);
  // Starts every call and waits until all are answered. Throws the typed error of the most
  // telling failure (one line naming the server, its shard and the partition); cancels and
  // waits out the other calls first.
  void Run(PsServerClient::Deadline deadline);
  // The answer of call i (in the order of Add), after Run().
  const std::string& Result(size_t i) const { return calls_[i].reply.data(); }
  size_t size() const { return calls_.size(); }

 private:
  struct Call {
    PsServerClient* server = nullptr;
    ::cohort::ps::PushRequest req;
    ::cohort::ps::PullReply reply;
    grpc::ClientContext ctx;
    grpc::Status status;
    bool done = false;
  };
  // Waits until all calls finished, or one failed decisively, or an echo's grace passed.
  void AwaitOutcome(std::unique_lock<std::mutex>& lock, PsServerClient::Deadline deadline);
  [[noreturn]] void Throw(const Call& call) const;

  std::deque<Call> calls_;  // a deque: Call holds a ClientContext, which cannot move
  std::mutex mu_;
  std::condition_variable cv_;
  size_t finished_ = 0;
  const Call* decisive_ = nullptr;  // the first failure worth reporting at once
  const Call* echo_ = nullptr;      // the first failure that may be another's consequence
  std::chrono::steady_clock::time_point echo_at_;
};

}  // namespace cohort::collectives::ps
