#include "runtime/rank_reports.h"

#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "common/log.h"
#include "runtime/process_group.h"

namespace cohort::runtime {
namespace {

constexpr size_t kExchangeDoubles = sizeof(ReportExchange) / sizeof(double);
static_assert(kExchangeDoubles == 7, "ReportExchange is 7 doubles");

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

ReportAll ExchangeReports(ProcessGroup& pg, const ReportExchange& e) {
  const auto world = static_cast<size_t>(pg.Size());
  std::vector<ReportExchange> ranks(world);
  ranks[static_cast<size_t>(pg.Rank())] = e;
  if (world > 1) {
    ReportExchange mine = e;
    pg.comm()
        .AllGather(collectives::TensorView(&mine, kExchangeDoubles, collectives::DType::kFloat64),
                   collectives::TensorView(ranks.data(), kExchangeDoubles * world,
                                           collectives::DType::kFloat64))
        ->Wait();
  }
  ReportAll all;
  for (const ReportExchange& r : ranks) {
    all.sum.loss_sum += r.loss_sum;
    all.sum.loss_steps += r.loss_steps;
    all.sum.last_loss += r.last_loss;
    all.sum.stop += r.stop;
    all.sum.next_every += r.next_every;
    all.step_seconds.push_back(r.step_seconds);
    all.node.push_back(static_cast<int>(r.node));
  }
  return all;
}

void FindStraggler(const ReportAll& all, MetricsRecord& record) {
  const double median = Median(all.step_seconds);
  record.step_seconds = median;
  if (all.step_seconds.size() < 2 || median <= 0) return;
  const auto slowest = std::max_element(all.step_seconds.begin(), all.step_seconds.end());
  const double ratio = *slowest / median;
  if (ratio <= 1.2) return;
  record.straggler_rank = static_cast<int>(slowest - all.step_seconds.begin());
  record.straggler_node = all.node[static_cast<size_t>(record.straggler_rank)];
  record.straggler_ratio = ratio;
}

void PrintRankTable(const ReportAll& totals) {
  if (totals.step_seconds.size() < 2) return;
  const double median = Median(totals.step_seconds);
  std::string table = "compute time per step by rank:";
  for (size_t r = 0; r < totals.step_seconds.size(); ++r) {
    const double s = totals.step_seconds[r];
    table += fmt::format("\n  rank {} (node {}): {:.2f} ms{}", r, totals.node[r], s * 1e3,
                         median > 0 && s / median > 1.2
                             ? fmt::format("  straggler at {:.1f}x the median", s / median)
                             : "");
  }
  COHORT_INFO(kRuntime, "{}", table);
}

}  // namespace cohort::runtime
