#include "tracking/run_logger.h"

#include <fmt/format.h>

#include <chrono>

#include "common/error.h"
#include "common/log.h"

namespace cohort::tracking {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// MLflow keeps tag values up to 8000 characters (MAX_TAG_VAL_LENGTH); keep errors well inside.
constexpr size_t kMaxErrorTag = 5000;

}  // namespace

RunLogger::Record RunLogger::Record::Of(Metric metric) {
  Record r;
  r.kind = Kind::kMetric;
  r.metric = std::move(metric);
  return r;
}

RunLogger::Record RunLogger::Record::Of(Kind kind, KeyValue kv) {
  Record r;
  r.kind = kind;
  r.kv = std::move(kv);
  return r;
}

RunLogger::RunLogger(MlflowConfig config, RunLoggerOptions options)
    : config_(std::move(config)), options_(options) {
  client_ = std::make_unique<MlflowClient>(config_, [this] { return cancel_.load(); });
  thread_ = std::thread([this] { Loop(); });
}

RunLogger::~RunLogger() {
  if (thread_.joinable()) Close(RunStatus::kKilled);
}

void RunLogger::Start(std::vector<KeyValue> params, std::vector<KeyValue> tags) {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ || closing_) return;
  started_ = true;
  for (auto& p : params) pending_.push_back(Record::Of(Record::Kind::kParam, std::move(p)));
  start_tags_ = std::move(tags);
  cv_.notify_all();
}

void RunLogger::LogMetric(const std::string& key, double value, int64_t step,
                          int64_t timestamp_ms) {
  Enqueue(Record::Of(Metric{key, value, timestamp_ms < 0 ? NowMs() : timestamp_ms, step}));
}

void RunLogger::SetTag(const std::string& key, const std::string& value) {
  Enqueue(Record::Of(Record::Kind::kTag, {key, value}));
}

void RunLogger::Enqueue(Record record) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fatal_ || closing_ || pending_.size() >= options_.max_pending) {
    CountLostLocked(record);
    return;
  }
  pending_.push_back(std::move(record));
  if (pending_.size() == 1 || pending_.size() >= kMaxMetricsPerBatch) cv_.notify_all();
}

void RunLogger::CountLostLocked(const Record& r) {
  if (r.kind == Record::Kind::kMetric) report_.metrics_lost++;
  if (r.kind == Record::Kind::kParam) report_.params_lost++;
  if (r.kind == Record::Kind::kTag) report_.tags_lost++;
}

void RunLogger::DropPendingLocked() {
  for (const Record& r : pending_) CountLostLocked(r);
  pending_.clear();
}

void RunLogger::Fatal(const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  fatal_ = true;
  report_.last_error = message;
  COHORT_WARN(kRuntime, "MLflow tracking stops: {}", message);
}

void RunLogger::Pause(std::unique_lock<std::mutex>* lock, double seconds) {
  cv_.wait_for(*lock, std::chrono::duration<double>(seconds), [this] { return cancel_.load(); });
}

std::string RunLogger::run_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return run_id_;
}

DeliveryReport RunLogger::report() const {
  std::lock_guard<std::mutex> lock(mu_);
  return report_;
}

void RunLogger::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return started_ || closing_; });
  while (started_ && !fatal_ && !cancel_) {
    lock.unlock();
    bool opened = OpenRun();
    lock.lock();
    if (opened) break;
    if (!fatal_) Pause(&lock, options_.retry_pause_s);
  }
  if (report_.run_opened) SendLoop(&lock);
  while (report_.run_opened && !fatal_ && !cancel_) {
    lock.unlock();
    bool ended = EndRun();
    lock.lock();
    if (ended) break;
    if (!fatal_) Pause(&lock, options_.retry_pause_s);
  }
  DropPendingLocked();
  done_ = true;
  cv_.notify_all();
}

// Sends batches until Close() and nothing is left (or a fatal error or the close deadline).
void RunLogger::SendLoop(std::unique_lock<std::mutex>* lock) {
  while (!fatal_ && !cancel_) {
    if (pending_.empty()) {
      if (closing_) return;
      cv_.wait(*lock, [this] { return closing_ || cancel_ || !pending_.empty(); });
      continue;
    }
    if (!SendSome(lock)) {
      Pause(lock, options_.retry_pause_s);
      continue;
    }
    // Let records gather into fuller batches, unless a full one is already waiting.
    cv_.wait_for(*lock, std::chrono::duration<double>(options_.flush_interval_s),
                 [this] { return closing_ || cancel_ || pending_.size() >= kMaxMetricsPerBatch; });
  }
}

bool RunLogger::OpenRun() {
  try {
    std::string id = config_.run_id;
    if (!id.empty()) {
      // A restarted job continues its run (saved in the snapshot), which it may have ended.
      if (client_->GetRunStatus(id) != "RUNNING") client_->UpdateRun(id, RunStatus::kRunning, -1);
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& t : start_tags_) pending_.push_front(Record::Of(Record::Kind::kTag, t));
    } else {
      std::string experiment = client_->GetOrCreateExperiment(config_.experiment_name);
      id = client_->CreateRun(experiment, NowMs(), start_tags_);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (config_.run_id.empty()) report_.tags_sent += start_tags_.size();
    run_id_ = id;
    report_.run_opened = true;
    return true;
  } catch (const Unavailable& e) {
    std::lock_guard<std::mutex> lock(mu_);
    report_.last_error = e.what();
  } catch (const Error& e) {
    Fatal(e.what());
  }
  return false;
}

// Sends one runs/log-batch request from the front of the buffer; false when it must be retried
// later. Exactly the records in the request leave the buffer, so none is sent twice by us.
bool RunLogger::SendSome(std::unique_lock<std::mutex>* lock) {
  Batch chunk;
  for (const Record& r : pending_) {
    if (chunk.size() >= kMaxEntitiesPerBatch) break;
    if (r.kind == Record::Kind::kMetric) {
      if (chunk.metrics.size() >= kMaxMetricsPerBatch) break;
      chunk.metrics.push_back(r.metric);
    } else if (r.kind == Record::Kind::kParam) {
      if (chunk.params.size() >= kMaxParamsPerBatch) break;
      chunk.params.push_back(r.kv);
    } else {
      if (chunk.tags.size() >= kMaxTagsPerBatch) break;
      chunk.tags.push_back(r.kv);
    }
  }
  const std::string run = run_id_;
  lock->unlock();
  Batch piece = std::move(SplitBatch(std::move(chunk)).front());  // one request's worth
  bool rejected = false;
  std::string error;
  try {
    client_->LogBatch(run, piece);
  } catch (const Unauthenticated& e) {
    Fatal(e.what());
    lock->lock();
    return false;
  } catch (const Unavailable& e) {
    error = e.what();
  } catch (const Error& e) {  // MLflow rejected the batch itself: dropping it is all we can do
    rejected = true;
    error = e.what();
  }
  lock->lock();
  if (!error.empty()) report_.last_error = error;
  if (!error.empty() && !rejected) return false;
  // Take the piece's records off the front: its first metrics, params and tags, in order.
  size_t m = piece.metrics.size(), p = piece.params.size(), t = piece.tags.size();
  std::deque<Record> rest;
  for (Record& r : pending_) {
    size_t* left = r.kind == Record::Kind::kMetric ? &m : r.kind == Record::Kind::kParam ? &p : &t;
    if (*left > 0) {
      --*left;
      if (rejected) CountLostLocked(r);
    } else {
      rest.push_back(std::move(r));
    }
  }
  pending_.swap(rest);
  if (!rejected) {
    report_.metrics_sent += piece.metrics.size();
    report_.params_sent += piece.params.size();
    report_.tags_sent += piece.tags.size();
  }
  return true;
}

bool RunLogger::EndRun() {
  std::string run;
  RunStatus status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    run = run_id_;
    status = final_status_;
  }
  try {
    client_->UpdateRun(run, status, NowMs());
    std::lock_guard<std::mutex> lock(mu_);
    report_.status_set = true;
    return true;
  } catch (const Unavailable& e) {
    std::lock_guard<std::mutex> lock(mu_);
    report_.last_error = e.what();
  } catch (const Error& e) {
    Fatal(e.what());
  }
  return false;
}

std::string RunLogger::Close(RunStatus status, const std::string& error) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!thread_.joinable()) return summary_;
  if (!closing_) {
    if (!error.empty() && !fatal_)
      pending_.push_back(
          Record::Of(Record::Kind::kTag, {"cohort.error", error.substr(0, kMaxErrorTag)}));
    final_status_ = status;
    closing_ = true;
    cv_.notify_all();
  }
  // Past the deadline, cancel: calls in flight abort and the thread ends at once.
  if (!cv_.wait_for(lock, std::chrono::duration<double>(options_.close_timeout_s),
                    [this] { return done_; })) {
    cancel_ = true;
    cv_.notify_all();
  }
  lock.unlock();
  thread_.join();
  lock.lock();
  if (!report_.run_opened) report_.tags_lost += start_tags_.size();
  summary_ = Summary();
  if (report_.complete()) {
    COHORT_INFO(kRuntime, "{}", summary_);
  } else {
    COHORT_WARN(kRuntime, "{}", summary_);
  }
  return summary_;
}

// One line: what went where, or what did not and the last reason.
std::string RunLogger::Summary() const {
  const DeliveryReport& r = report_;
  const std::string run = run_id_.empty() ? "(not opened)" : run_id_;
  const char* status = RunStatusName(final_status_);
  if (r.complete())
    return fmt::format("{}: run {} has {} params, {} tags, {} metric values and status {}",
                       client_->ServerName(), run, r.params_sent, r.tags_sent, r.metrics_sent,
                       status);
  return fmt::format(
      "{}: run {}: not delivered: {} of {} metric values, {} of {} params, {} of {} tags{}{}{}",
      client_->ServerName(), run, r.metrics_lost, r.metrics_lost + r.metrics_sent, r.params_lost,
      r.params_lost + r.params_sent, r.tags_lost, r.tags_lost + r.tags_sent,
      r.status_set ? "" : fmt::format(", status {}", status),
      r.last_error.empty() ? "" : "; last error: ", http::OneLine(r.last_error, 400));
}

}  // namespace cohort::tracking
