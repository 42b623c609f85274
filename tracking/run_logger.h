// An asynchronous MLflow run: the caller (the training loop) only appends to a bounded buffer,
// and the logger's own thread opens the run, sends what is pending in runs/log-batch requests
// and retries through outages. Nothing here ever blocks or fails the caller: a full buffer
// drops the record (counted), an unreachable or refusing server is reported once by Close().
// Torch-free; the Trainer wires it with Start / LogMetric / SetTag / Close.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tracking/mlflow_client.h"

namespace cohort::tracking {

struct RunLoggerOptions {
  size_t max_pending = 100000;  // records buffered before new ones are dropped
  double flush_interval_s = 1;  // how long a record may wait for a fuller batch
  double retry_pause_s = 1;     // between rounds of failed calls (each with its own retries)
  double close_timeout_s = 10;  // Close() waits this long for the rest to go out
};

// What Close() could and could not deliver, counted per kind.
struct DeliveryReport {
  uint64_t metrics_sent = 0, params_sent = 0, tags_sent = 0;
  uint64_t metrics_lost = 0, params_lost = 0, tags_lost = 0;  // dropped, rejected or unsent
  bool run_opened = false;
  bool status_set = false;
  std::string last_error;  // one line; "" when none
  bool complete() const {
    return run_opened && status_set && metrics_lost + params_lost + tags_lost == 0;
  }
};

class RunLogger {
 public:
  // Starts the thread; nothing is sent before Start(). The client is built from `config`.
  explicit RunLogger(MlflowConfig config, RunLoggerOptions options = {});
  // Closes with KILLED if Close() was not called (e.g. on an exception unwinding the trainer).
  ~RunLogger();
  RunLogger(const RunLogger&) = delete;
  RunLogger& operator=(const RunLogger&) = delete;

  // Opens the run in the background: continues config.run_id when set (status back to
  // RUNNING), else creates one in config.experiment_name (created if absent) with `tags`; then
  // logs `params`. Call once.
  void Start(std::vector<KeyValue> params, std::vector<KeyValue> tags);
  // Queues one metric value; timestamp_ms < 0 means now. Never blocks.
  void LogMetric(const std::string& key, double value, int64_t step, int64_t timestamp_ms = -1);
  // Queues a tag (set again, the last value wins, as in MLflow). Never blocks.
  void SetTag(const std::string& key, const std::string& value);

  // Ends the run with `status` (FINISHED, FAILED or KILLED; `error`, when not empty, goes in
  // the tag cohort.error), waits at most close_timeout_s for everything pending, stops the
  // thread and returns one line: what was delivered, or what could not be and why.
  std::string Close(RunStatus status, const std::string& error = "");

  // The run's id once the thread has opened it ("" before, or when it could not).
  std::string run_id() const;
  // Counts so far (final after Close()).
  DeliveryReport report() const;

 private:
  struct Record {
    enum class Kind { kMetric, kParam, kTag };
    Kind kind = Kind::kMetric;
    Metric metric;
    KeyValue kv;
    static Record Of(Metric metric);
    static Record Of(Kind kind, KeyValue kv);
  };

  void Enqueue(Record record);
  void Loop();
  bool OpenRun();
  bool SendSome(std::unique_lock<std::mutex>* lock);
  bool EndRun();
  void Fatal(const std::string& message);
  void DropPendingLocked();
  void SendLoop(std::unique_lock<std::mutex>* lock);
  void Pause(std::unique_lock<std::mutex>* lock, double seconds);
  void CountLostLocked(const Record& record);
  std::string Summary() const;

  MlflowConfig config_;
  RunLoggerOptions options_;
  std::unique_ptr<MlflowClient> client_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Record> pending_;
  std::vector<KeyValue> start_tags_;
  bool started_ = false;
  bool closing_ = false;             // Close() called: send the rest, then the status
  std::atomic<bool> cancel_{false};  // Close()'s deadline passed: stop now (polled by curl)
  bool fatal_ = false;               // refused or rejected for good: drop everything
  bool done_ = false;                // the thread has finished
  RunStatus final_status_ = RunStatus::kFinished;
  std::string error_;
  std::string run_id_;
  DeliveryReport report_;
  std::string summary_;
  std::thread thread_;
};

}  // namespace cohort::tracking
