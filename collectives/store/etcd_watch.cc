// EtcdStore's waits: read the key once; when it is missing, watch it from the revision right
// after that read (so a put between the read and the watch is still delivered) and return as
// its put arrives. The watch is the gateway's POST /v3/watch, a stream of JSON objects (one per
// watch message) that http::Client::Stream hands over as it arrives and cuts once the key is
// seen. Cost per wait: one range request and one stream, whatever the wait's length, instead of
// a poll every 5-100 ms (which made thousands of waiting ranks the load of the etcd).
#include <fmt/format.h>

#include <thread>

#include "collectives/store/etcd_api.h"
#include "collectives/store/etcd_store.h"
#include "collectives/store/store_errors.h"
#include "common/error.h"
#include "common/http.h"
#include "common/json_stream.h"

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
  http::Request req;
  req.method = "POST";
  req.target = "/v3/watch";
  req.headers = {"Content-Type: application/json"};
  if (std::string auth = AuthHeader(); !auth.empty()) req.headers.push_back(std::move(auth));
  const std::string body = etcd::WatchBody(prefix_ + key, from);
  req.SetBody(body);
  req.what = fmt::format("watch({})", QuoteKey(key));
  const std::string full = prefix_ + key;
  bool found = false;
  auto on_message = [&](std::string_view object) {
    const etcd::WatchMessage m = etcd::ParseWatch(object);
    for (const auto& kv : m.puts) {
      if (kv.key != full) continue;
      *value = kv.value;
      found = true;
      return false;  // cut the stream: what we waited for is here
    }
    if (!m.error.empty()) ThrowRefused(0, m.error, req.what);
    return !m.canceled;  // compacted: read again and watch from the new revision
  };
  JsonObjectSplitter splitter;
  const double left_s = std::chrono::duration<double>(deadline - Clock::now()).count();
  const http::StreamResult r =
      http_->Stream(req, std::max(left_s, 0.001),
                    [&](std::string_view data) { return splitter.Feed(data, on_message); });
  if (found) return Watched::kFound;
  if (r.response.status != 200 && r.response.status != 0) {
    ThrowRefused(r.response.status, etcd::ErrorMessage(r.response.body), req.what);
  }
  return r.end == http::StreamResult::End::kTimedOut ? Watched::kTimedOut : Watched::kResume;
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
