#include "tracking/mlflow_batch.h"

#include <cmath>

namespace cohort::tracking {
namespace {

// Room left for {"run_id": "...", "metrics": [], "params": [], "tags": []} around the items.
constexpr size_t kEnvelopeBytes = 1000;

nlohmann::json KeyValueJson(const KeyValue& kv) {
  return nlohmann::json{{"key", kv.first}, {"value", kv.second}};
}

// Fills pieces greedily: an item that would break a limit of the current piece starts the next.
class Splitter {
 public:
  void Add(const nlohmann::json& item, size_t limit, size_t* in_piece) {
    size_t bytes = PythonJsonSize(item) + 2;
    if (*in_piece + 1 > limit || current_.size() + 1 > kMaxEntitiesPerBatch ||
        bytes_ + bytes > kMaxBatchBytes - kEnvelopeBytes)
      Emit();
    ++*in_piece;
    bytes_ += bytes;
  }
  void Emit() {
    if (!current_.empty()) pieces_.push_back(std::move(current_));
    current_ = Batch();
    bytes_ = metrics_ = params_ = tags_ = 0;
  }

  std::vector<Batch> pieces_;
  Batch current_;
  size_t bytes_ = 0, metrics_ = 0, params_ = 0, tags_ = 0;
};

}  // namespace

nlohmann::json MetricJson(const Metric& m) {
  nlohmann::json value;
  if (std::isnan(m.value)) {
    value = "NaN";
  } else if (std::isinf(m.value)) {
    value = m.value > 0 ? "Infinity" : "-Infinity";
  } else {
    value = m.value;
  }
  return nlohmann::json{
      {"key", m.key}, {"value", value}, {"timestamp", m.timestamp_ms}, {"step", m.step}};
}

std::vector<Batch> SplitBatch(Batch batch) {
  Splitter s;
  for (auto& p : batch.params) {
    s.Add(KeyValueJson(p), kMaxParamsPerBatch, &s.params_);
    s.current_.params.push_back(std::move(p));
  }
  for (auto& t : batch.tags) {
    s.Add(KeyValueJson(t), kMaxTagsPerBatch, &s.tags_);
    s.current_.tags.push_back(std::move(t));
  }
  for (auto& m : batch.metrics) {
    s.Add(MetricJson(m), kMaxMetricsPerBatch, &s.metrics_);
    s.current_.metrics.push_back(std::move(m));
  }
  s.Emit();
  return std::move(s.pieces_);
}

nlohmann::json BatchJson(const std::string& run_id, const Batch& batch) {
  nlohmann::json metrics = nlohmann::json::array(), params = nlohmann::json::array(),
                 tags = nlohmann::json::array();
  for (const auto& m : batch.metrics) metrics.push_back(MetricJson(m));
  for (const auto& p : batch.params) params.push_back(KeyValueJson(p));
  for (const auto& t : batch.tags) tags.push_back(KeyValueJson(t));
  return nlohmann::json{
      {"run_id", run_id}, {"metrics", metrics}, {"params", params}, {"tags", tags}};
}

size_t PythonJsonSize(const nlohmann::json& value) {
  if (value.is_object()) {
    size_t n = 2 + (value.empty() ? 0 : 2 * (value.size() - 1));
    for (const auto& [k, v] : value.items())
      n += nlohmann::json(k).dump(-1, ' ', true).size() + 2 + PythonJsonSize(v);
    return n;
  }
  if (value.is_array()) {
    size_t n = 2 + (value.empty() ? 0 : 2 * (value.size() - 1));
    for (const auto& v : value) n += PythonJsonSize(v);
    return n;
  }
  // Scalars: ASCII-escaped as Python does; non-ASCII code points above U+FFFF take two \u
  // escapes in both.
  return value.dump(-1, ' ', true).size();
}

}  // namespace cohort::tracking
