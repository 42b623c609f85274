// The pushes a parameter server holds until every rank has pushed the same partition of the
// same collective (matched by communicator scope, sequence number and partition index). No
// thread waits: the last push of a round combines it and answers every rank.
#pragma once

#include <grpcpp/support/status.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "collectives/ps/ps.pb.h"

namespace cohort::collectives::ps {

class PushTable {
 public:
  // One rank's waiting push (a gRPC call).
  class Waiter {
   public:
    virtual ~Waiter() = default;
    virtual const ::cohort::ps::PushRequest& Request() const = 0;
    // The push's data, as runs of bytes in order: by default the request's data field; the
    // server's calls leave it in gRPC's receive buffers instead (no copy: ps_server.cc).
    virtual std::vector<std::string_view> Data() const { return {Request().data()}; }
    virtual size_t DataSize() const { return Request().data().size(); }
    // Called exactly once, without the table's lock held. result is null on error and for a
    // broadcast's root (which needs nothing back).
    virtual void Answer(const grpc::Status& status, std::shared_ptr<const std::string> result) = 0;
  };

  // Adds w to its round; answers it at once when the push is malformed, does not match the
  // round's other pushes (then the whole round fails, naming both ranks) or belongs to a round
  // that already failed. The last push of a round answers all of them.
  void Push(Waiter* w);

  // w's call went away (its rank cancelled, died, or passed its deadline): its round fails, so
  // the other ranks learn it now instead of at their deadline. No-op if w was already answered.
  void Abandon(Waiter* w);

  // Rank `rank` of the communicator `scope` went away: its pending rounds fail now and its later
  // pushes at once, naming that rank.
  void Left(const std::string& scope, int rank);

  // Rounds with some pushes still missing; for tests and logs.
  size_t Pending() const;

 private:
  struct Round {
    std::vector<Waiter*> by_rank;
    int arrived = 0;
  };
  static std::string Key(const ::cohort::ps::PushRequest& p);
  // Removes key's round, remembers why it failed, and returns its waiters; needs mu_.
  std::vector<Waiter*> FailLocked(const std::string& key, const grpc::Status& why);
  // Why key's round (of communicator scope) already failed, or null; needs mu_.
  const grpc::Status* FailedLocked(const std::string& key, const std::string& scope) const;
  static void AnswerAll(const std::vector<Waiter*>& waiters, const grpc::Status& status);

  mutable std::mutex mu_;
  std::unordered_map<std::string, Round> rounds_;
  // Rounds that failed, so that their late pushes fail too instead of waiting.
  std::unordered_map<std::string, grpc::Status> failed_;
  // Communicators one of whose ranks left (by scope), and why.
  std::unordered_map<std::string, grpc::Status> left_;
};

}  // namespace cohort::collectives::ps
