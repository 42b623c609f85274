// What the Trainer's ranks tell each other at a report: one all-gather of a few doubles per
// rank (losses, the stop request, rank 0's next report interval, each rank's compute time per
// step and its node), from which rank 0 names a straggler and prints the per-rank table.
#pragma once

#include <vector>

#include "runtime/metrics.h"

namespace cohort::runtime {

class ProcessGroup;

// What each rank contributes at a report (one all-gather of 7 doubles per rank).
struct ReportExchange {
  double loss_sum = 0;      // this rank's losses since the previous report
  double loss_steps = 0;    // how many steps they are
  double last_loss = 0;     // this rank's loss of the step just taken
  double stop = 0;          // 1 if this rank was asked to stop
  double next_every = 0;    // rank 0 only: steps until the next report
  double step_seconds = 0;  // mean compute time per step since the previous report
  double node = 0;          // this rank's node (COHORT_NODE_RANK)
};

// The report's view of all ranks: the first five fields summed, the rest per rank.
struct ReportAll {
  ReportExchange sum;
  std::vector<double> step_seconds;  // by rank
  std::vector<int> node;             // by rank
};

// Every rank's e (no collective in a world of one). Collective: every rank calls it.
ReportAll ExchangeReports(ProcessGroup& pg, const ReportExchange& e);

// Fills the record's step time and, when one rank is over 1.2x the median, its straggler.
void FindStraggler(const ReportAll& all, MetricsRecord& record);

// Logs each rank's compute time per step (totals.step_seconds), naming stragglers; nothing in
// a world of one.
void PrintRankTable(const ReportAll& totals);

}  // namespace cohort::runtime
