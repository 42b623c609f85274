// The second phase of a two-phase save. The caller has copied its state to host memory (phase
// one: the only part training waits for); Save() takes those copies and returns at once while a
// background thread encodes and writes them. At most one save is in flight: a Save() while one
// is running waits for it. A failed save is logged when it fails and thrown by the next Save(),
// Wait() or Finish(), so it is never lost silently.
#pragma once

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "checkpoint/checkpointer.h"
#include "checkpoint/shard.h"

namespace cohort::checkpoint {

class AsyncSaver {
 public:
  explicit AsyncSaver(std::shared_ptr<Checkpointer> checkpointer);
  // Waits for the save in flight. An error nobody collected is logged (destructors cannot
  // throw): call Finish() to have it thrown. Destroyed by an exception (training failed, most
  // often because a peer died), it Abandon()s the save instead of waiting for it.
  ~AsyncSaver();
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  // Starts saving shard as snapshot `step` (overriding shard.step) and returns; first waits for
  // the previous save. Throws the previous save's error, if it failed, without starting this
  // one: a Save() that throws has saved nothing.
  void Save(int64_t step, Shard&& shard);
  // Waits until no save is in flight; throws the last save's error if it failed.
  void Wait();
  // Wait(), then stops the background thread; later Save() calls throw. Call at the end of
  // training (and on SIGTERM, after the last Save()).
  void Finish();
  // Finish() without waiting for other ranks: a save in flight completes if every peer has
  // reported already, else gives up (Checkpointer::Cancel) and its error is logged, not thrown.
  // For a rank whose training failed; an incomplete snapshot leaves `latest` at the one before.
  void Abandon();

  bool InFlight() const;
  // The last snapshot this saver completed.
  std::optional<SavedSnapshot> last_saved() const;

 private:
  void Run();
  // With mu_ held: waits while busy, then rethrows and clears a pending error.
  void WaitLocked(std::unique_lock<std::mutex>& lock);

  std::shared_ptr<Checkpointer> checkpointer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Shard> job_;
  bool busy_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
  std::optional<SavedSnapshot> last_saved_;
  std::thread thread_;
  int uncaught_at_start_ = 0;  // std::uncaught_exceptions() when constructed
};

}  // namespace cohort::checkpoint
