// EtcdStore's waits: read the key once; when it is missing, watch it from the revision right
// after that read (so a put between the read and the watch is still delivered) and return as
// its put arrives. The watch is one Watch stream (gRPC, both ways) with one watcher on it, which
// is cancelled once the key is seen. Cost per wait: one range request and one stream, whatever
// the wait's length, instead of a poll every 5-100 ms (which made thousands of waiting ranks the
// load of the etcd).
#include <fmt/format.h>

#include <thread>

#include "collectives/store/etcd_api.h"
#include "collectives/store/etcd_stubs.h"
#include "collectives/store/store_errors.h"
#include "common/error.h"

namespace cohort::collectives {
namespace {

using Clock = std::chrono::steady_clock;

// A watch that ended without the key (compaction, the server closing it) is retried after this
// pause, so a stream that keeps ending at once cannot spin.
constexpr auto kResumePause = std::chrono::milliseconds(10);
// Consecutive broken streams (each followed by a successful read) before giving up.
constexpr int kMaxBreaks = 3;

}  // namespace

EtcdStore::Watched EtcdStore::WatchOnce(const std::string& key, int64_t from, Deadline deadline,
                                        std::string* value) {
  const std::string what = fmt::format("watch({})", QuoteKey(key));
  const std::string full = prefix_ + key;
  grpc::ClientContext ctx;
  const auto left =
      std::min<Clock::duration>(deadline - Clock::now(), std::chrono::hours(24 * 365));
  ctx.set_deadline(std::chrono::system_clock::now() + left);
  if (const std::string token = AuthToken(); !token.empty()) ctx.AddMetadata("token", token);
  auto stream = stubs_->watch->Watch(&ctx);
  bool found = false, ended = false;  // ended: etcd canceled the watcher (compacted, refused)
  std::string refusal;
  if (stream->Write(etcd::WatchFrom(full, from))) {
    etcd::pb::WatchResponse message;
    while (!found && !ended && stream->Read(&message)) {
      const etcd::WatchMessage m = etcd::ParseWatch(message);
      for (const auto& kv : m.puts) {
        if (kv.key != full) continue;
        *value = kv.value;
        found = true;
        break;
      }
      ended = m.canceled;
      refusal = m.error;
    }
  }
  // Ends the stream from our side too (closing the watcher on etcd's), then reads its status.
  ctx.TryCancel();
  const grpc::Status status = stream->Finish();
  if (found) return Watched::kFound;
  if (!refusal.empty()) ThrowRefused(grpc::Status(grpc::StatusCode::UNKNOWN, refusal), what);
  if (ended) return Watched::kResume;  // compacted: read again and watch from the new revision
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return Watched::kTimedOut;
  if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
    ThrowRefused(status, what);
  }
  return Clock::now() >= deadline ? Watched::kTimedOut : Watched::kResume;
}

bool EtcdStore::Await(const std::string& key, Deadline deadline, std::string* value,
                      int64_t missing_at) {
  int breaks = 0;
  std::string last_break;
  for (int64_t revision = missing_at;;) {
    if (revision == 0) {
      try {
        if (TryGet(key, value, &revision)) return true;
      } catch (const Unavailable& e) {
        if (breaks == 0) throw;
        throw Unavailable(
            fmt::format("etcd at {} went away while waiting for {} (its watch broke "
                        "off: {}); then: {}",
                        endpoint_, QuoteKey(key), last_break, e.what()));
      }
    }
    if (Clock::now() >= deadline) return false;
    try {
      switch (WatchOnce(key, revision + 1, deadline, value)) {
        case Watched::kFound:
          return true;
        case Watched::kTimedOut:
          return false;
        case Watched::kResume:
          break;
      }
    } catch (const Unavailable& e) {
      if (++breaks >= kMaxBreaks) {
        throw Unavailable(fmt::format("etcd at {}: the watch of {} broke off {} times; last: {}",
                                      endpoint_, QuoteKey(key), breaks, e.what()));
      }
      last_break = e.what();
    }
    revision = 0;  // read again: the key may have come while no watch was open
    std::this_thread::sleep_for(std::min<Clock::duration>(
        kResumePause, std::max<Clock::duration>(deadline - Clock::now(), Clock::duration(0))));
  }
}

}  // namespace cohort::collectives
