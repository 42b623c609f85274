// FaultyObjectStore: wraps any ObjectStore and injects faults for tests (LevelDB's
// fault-injection Env, for object stores): fail the Nth call of an operation, fail calls at a
// seeded random rate, cut a write short (commit a truncated object, or throw mid-write), and
// delay calls. Everything random comes from the seed, so a failing trial replays exactly.
// Thread-safe; faults are counted across all threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>

#include "checkpoint/store/object_store.h"
#include "common/error.h"

namespace cohort::checkpoint {

class FaultyObjectStore : public ObjectStore {
 public:
  // The operations faults attach to. kWrite is ObjectWriter::Write, kCommit ObjectWriter::Commit.
  enum class Op { kNewWriter, kWrite, kCommit, kGet, kGetRange, kHead, kList, kDelete };
  static constexpr int kNumOps = 8;
  static const char* OpName(Op op);

  // How CutWrite() shortens an object.
  enum class Cut {
    kCommitTruncated,  // Commit() succeeds but stores only the first keep bytes (silent damage)
    kThrowMidWrite,    // the Write() that crosses keep bytes writes up to keep, then throws;
                       // the object is not committed
  };

  FaultyObjectStore(std::shared_ptr<ObjectStore> inner, uint64_t seed = 0);

  // The nth call of op from now on (1 = the next one) throws an error of kind; later calls pass.
  void FailNth(Op op, int n, ErrorKind kind = ErrorKind::kUnavailable);
  // Every call of op fails with this probability (seeded); 0 turns it off.
  void FailRandomly(Op op, double probability, ErrorKind kind = ErrorKind::kUnavailable);
  // The nth writer created from now on (1 = the next) is cut after keep bytes. With keep =
  // nullopt the cut point is drawn from the seed when the writer commits, in [0, bytes written).
  void CutWrite(int n, Cut how, std::optional<uint64_t> keep = std::nullopt);
  // Each call of op sleeps this long first; with jitter, a seeded extra in [0, jitter).
  void Delay(Op op, std::chrono::milliseconds delay,
             std::chrono::milliseconds jitter = std::chrono::milliseconds(0));
  // Removes every fault (counters keep counting).
  void Reset();

  // Calls of op so far, faulty or not.
  int Calls(Op op) const;
  // Faults injected so far (failed calls and cut writes).
  int Injected() const;

  ObjectStore& inner() { return *inner_; }

  std::string Uri() const override;
  std::unique_ptr<ObjectWriter> NewWriter(const std::string& key) override;
  std::optional<std::string> Get(const std::string& key) override;
  std::string GetRange(const std::string& key, uint64_t offset, uint64_t length) override;
  std::optional<ObjectInfo> Head(const std::string& key) override;
  std::vector<ObjectInfo> List(const std::string& prefix) override;
  void Delete(const std::string& key) override;

  // Called by every wrapped call (and by the writers): counts, delays, maybe throws.
  void Enter(Op op, const std::string& what);
  // Draws a cut point in [0, size) for a random cut.
  uint64_t DrawCut(uint64_t size);
  void CountInjected();

 private:
  struct OpFaults {
    int calls = 0;
    int fail_at = 0;  // absolute call number to fail; 0 = none
    ErrorKind fail_kind = ErrorKind::kUnavailable;
    double fail_probability = 0;
    ErrorKind random_kind = ErrorKind::kUnavailable;
    std::chrono::milliseconds delay{0};
    std::chrono::milliseconds jitter{0};
  };

  std::shared_ptr<ObjectStore> inner_;
  mutable std::mutex mu_;
  std::mt19937_64 rng_;
  OpFaults ops_[kNumOps];
  int writers_ = 0;
  int cut_at_ = 0;  // absolute writer number to cut; 0 = none
  Cut cut_how_ = Cut::kCommitTruncated;
  std::optional<uint64_t> cut_keep_;
  int injected_ = 0;
};

}  // namespace cohort::checkpoint
