#include "operator/controller.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/error.h"
#include "common/log.h"

namespace cohort::k8s {
namespace {

using Clock = std::chrono::steady_clock;

std::string DefaultIdentity() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return fmt::format("{}_{}", host, getpid());
}

// Sleeps up to seconds, waking early when stop is set.
void Nap(const std::atomic<bool>& stop, double seconds) {
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (!stop && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

std::string KeyOf(const Json& object) {
  return object["metadata"].value("namespace", "") + "/" + object["metadata"].value("name", "");
}

}  // namespace

Controller::Controller(KubeClient& client, ControllerOptions options)
    : client_(client),
      options_(std::move(options)),
      elector_(client, options_.lease_ns, options_.lease_name,
               options_.identity.empty() ? DefaultIdentity() : options_.identity,
               options_.lease_duration_s),
      reconciler_(client) {}

void Controller::Enqueue(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (queued_.insert(key).second) queue_.push_back(key);
  wake_.notify_one();
}

std::string Controller::Relist() {
  const ApiResult list = client_.List(ResourcePath(kTrainingJobs, options_.ns));
  if (!list.ok()) {
    throw Unavailable("the API server refused to list TrainingJobs: " + list.Message() +
                      " (is the CRD operator/deploy/crd.yaml applied?)");
  }
  std::set<std::string> keys;
  for (const Json& item : list.body["items"]) keys.insert(KeyOf(item));
  {
    std::lock_guard<std::mutex> lock(mu_);
    known_ = keys;
  }
  for (const std::string& key : keys) Enqueue(key);
  return list.body["metadata"].value("resourceVersion", "");
}

void Controller::OnEvent(const WatchEvent& event) {
  if (!event.object.is_object() || !event.object.contains("metadata")) return;
  const std::string key = KeyOf(event.object);
  if (event.type == "DELETED") {
    std::lock_guard<std::mutex> lock(mu_);
    known_.erase(key);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    known_.insert(key);
  }
  Enqueue(key);
}

void Controller::WatchLoop(const std::atomic<bool>& stop) {
  std::string version;
  double backoff = 0.1;
  while (!stop) {
    try {
      if (version.empty()) version = Relist();
      const WatchEnd end =
          client_.Watch(ResourcePath(kTrainingJobs, options_.ns), version, options_.watch_timeout_s,
                        [&](const WatchEvent& event) {
                          if (event.object.is_object() && event.object.contains("metadata"))
                            version = event.object["metadata"].value("resourceVersion", version);
                          OnEvent(event);
                          return !stop.load();
                        });
      if (end == WatchEnd::kGone) {
        COHORT_INFO(kOperator,
                    "watch of TrainingJobs: resourceVersion {} is gone (410); listing "
                    "again",
                    version);
        version.clear();
      }
      backoff = 0.1;
    } catch (const Error& e) {
      COHORT_WARN(kOperator, "watch of TrainingJobs dropped: {}; reconnecting in {:.1f} s",
                  e.what(), backoff);
      Nap(stop, backoff);
      backoff = std::min(backoff * 2, options_.backoff_max_s);
    }
  }
}

void Controller::LeaseLoop(const std::atomic<bool>& stop) {
  while (!stop) {
    try {
      elector_.TryOnce();
    } catch (const Error& e) {
      COHORT_WARN(kOperator, "leader election: {}", e.what());
    }
    Nap(stop, options_.renew_period_s);
  }
}

void Controller::WorkLoop(const std::atomic<bool>& stop) {
  auto next_resync = Clock::now();
  while (!stop) {
    std::string key;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_until(lock, next_resync, [&] { return !queue_.empty() || stop; });
      if (Clock::now() >= next_resync) {  // every known job again: polls the Jobs they own
        for (const std::string& k : known_)
          if (queued_.insert(k).second) queue_.push_back(k);
        next_resync = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(options_.resync_s));
      }
      if (queue_.empty() || stop) continue;
      key = queue_.front();
      queue_.pop_front();
      queued_.erase(key);
    }
    if (!elector_.IsLeader()) continue;  // a follower only watches
    const size_t slash = key.find('/');
    try {
      if (!reconciler_.Reconcile(key.substr(0, slash), key.substr(slash + 1))) {
        std::lock_guard<std::mutex> lock(mu_);
        known_.erase(key);  // final or gone: a change to it comes back through the watch
      }
    } catch (const Error& e) {
      COHORT_WARN(kOperator, "TrainingJob {}: {}", key, e.what());  // the resync retries
    }
  }
}

void Controller::Run(const std::atomic<bool>& stop) {
  COHORT_INFO(kOperator, "cohort-operator {} on {} ({}), waiting for Lease {}/{}",
              elector_.identity(), client_.config().server, client_.config().source,
              options_.lease_ns, options_.lease_name);
  std::thread lease([&] { LeaseLoop(stop); });
  std::thread watch([&] { WatchLoop(stop); });
  WorkLoop(stop);
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_.notify_all();
  }
  watch.join();
  lease.join();
  try {
    elector_.Release();
  } catch (const Error& e) {
    COHORT_WARN(kOperator, "could not release the Lease: {}", e.what());
  }
}

}  // namespace cohort::k8s
