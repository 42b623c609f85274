// MLflow's runs/log-batch payload and its request limits: at most 1000 metrics, 100 params,
// 100 tags, 1000 items in all and 1 MB (as the server measures it) per request. Larger batches
// are split here, in order, so each piece is one request the server accepts.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace cohort::tracking {

struct Metric {
  std::string key;
  double value = 0;
  int64_t timestamp_ms = 0;  // Unix time in milliseconds
  int64_t step = 0;
};

using KeyValue = std::pair<std::string, std::string>;  // a param or a tag

struct Batch {
  std::vector<Metric> metrics;
  std::vector<KeyValue> params;
  std::vector<KeyValue> tags;
  bool empty() const { return metrics.empty() && params.empty() && tags.empty(); }
  size_t size() const { return metrics.size() + params.size() + tags.size(); }
};

// MLflow's limits (mlflow/utils/validation.py, MAX_*_PER_BATCH and MAX_BATCH_LOG_REQUEST_SIZE).
inline constexpr size_t kMaxMetricsPerBatch = 1000;
inline constexpr size_t kMaxParamsPerBatch = 100;
inline constexpr size_t kMaxTagsPerBatch = 100;
inline constexpr size_t kMaxEntitiesPerBatch = 1000;
inline constexpr size_t kMaxBatchBytes = 1000000;

// Splits into requests within the limits, keeping the order within each kind. Every piece but
// possibly the last is full along some limit.
std::vector<Batch> SplitBatch(Batch batch);

// The runs/log-batch body: {"run_id", "metrics", "params", "tags"} with MLflow's field names.
nlohmann::json BatchJson(const std::string& run_id, const Batch& batch);

// A metric as MLflow's JSON wants it. Non-finite values go as "NaN", "Infinity" and
// "-Infinity", as protobuf's JSON mapping writes doubles (JSON itself has no NaN).
nlohmann::json MetricJson(const Metric& metric);

// The length of json.dumps(value) in Python (", " and ": " separators, non-ASCII escaped):
// what the MLflow server compares with kMaxBatchBytes.
size_t PythonJsonSize(const nlohmann::json& value);

}  // namespace cohort::tracking
