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
#include <vector>

#include "collectives/ps/ps.grpc.pb.h"
#include "collectives/ps/ps_client.h"

namespace cohort::collectives::ps {

class Exchange {
 public:
  // A new call to server; fill the returned request before Run(), all but its data: the call
  // sends `bytes` bytes from `data`, which must stay unchanged until Run() returns.
  ::cohort::ps::PushRequest& Add(PsServerClient* server, const void* data = nullptr,
                                 size_t bytes = 0);
  // Starts every call and waits until all are answered. Throws the typed error of the most
  // telling failure (one line naming the server, its shard and the partition); cancels and
  // waits out the other calls first.
  void Run(PsServerClient::Deadline deadline);
  // The size of call i's answer (in the order of Add), after Run().
  size_t ResultSize(size_t i) const { return calls_[i].result_size; }
  // Copies bytes [from, from + n) of call i's answer to dst, after Run().
  void CopyResult(size_t i, size_t from, size_t n, void* dst) const;
  size_t size() const { return calls_.size(); }

 private:
  struct Call {
    PsServerClient* server = nullptr;
    ::cohort::ps::PushRequest req;  // without its data
    const void* data = nullptr;
    size_t bytes = 0;
    grpc::ByteBuffer request;
    grpc::ByteBuffer reply;           // an encoded PullReply
    std::vector<grpc::Slice> slices;  // reply's, after Run()
    size_t result_offset = 0;         // where its data field's bytes start in them
    size_t result_size = 0;
    grpc::ClientContext ctx;
    grpc::Status status;
    bool done = false;
  };
  // A call's completion, on a gRPC thread.
  void Finished(Call& call, grpc::Status status);
  // Waits until all calls finished, or one failed decisively, or an echo's grace passed.
  void AwaitOutcome(std::unique_lock<std::mutex>& lock, PsServerClient::Deadline deadline);
  [[noreturn]] void Throw(const Call& call) const;
  // Encodes call.req with call.data as its data field, without copying the data.
  static void Encode(Call& call);
  // Finds the data field in call.reply; throws Internal when it is not a PullReply.
  static void Decode(Call& call);

  std::deque<Call> calls_;  // a deque: Call holds a ClientContext, which cannot move
  std::mutex mu_;
  std::condition_variable cv_;
  size_t finished_ = 0;
  const Call* decisive_ = nullptr;  // the first failure worth reporting at once
  const Call* echo_ = nullptr;      // the first failure that may be another's consequence
  std::chrono::steady_clock::time_point echo_at_;
};

}  // namespace cohort::collectives::ps
