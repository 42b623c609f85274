#include "checkpoint/save_stats.h"

#include <mutex>

namespace cohort::checkpoint {
namespace {

std::mutex g_mu;
SaveTotals g_totals;

}  // namespace

void SaveStats::RecordSave(const SavedSnapshot& saved) {
  std::lock_guard<std::mutex> lock(g_mu);
  ++g_totals.saves;
  g_totals.bytes += saved.shard.size;
  g_totals.seconds += saved.total_seconds;
  g_totals.encode_seconds += saved.encode_seconds;
  g_totals.write_seconds += saved.write_seconds;
  g_totals.last_seconds = saved.total_seconds;
  g_totals.last_step = saved.step;
}

void SaveStats::RecordFailure() {
  std::lock_guard<std::mutex> lock(g_mu);
  ++g_totals.failures;
}

SaveTotals SaveStats::Totals() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_totals;
}

}  // namespace cohort::checkpoint
