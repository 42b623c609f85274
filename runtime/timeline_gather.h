// Writing the timeline (common/timeline.h): every rank's events gathered to rank 0, which writes
// COHORT_TIMELINE as one Chrome trace, a process (pid) per rank. Clocks: ranks on rank 0's host
// share its monotonic clock; a rank on another host is shifted by its clock's offset from rank
// 0's, measured right after a barrier (good to the barrier's exit skew, tens of microseconds on
// a LAN). No libtorch.
#pragma once

namespace cohort::runtime {

class ProcessGroup;

// Collective over pg (every rank calls it); a no-op when the timeline is off. Rank 0 writes the
// file, replacing an older one; a write failure is logged, never thrown (a trace is not worth a
// lost run). Returns the number of events written on rank 0 (0 elsewhere).
int WriteTimeline(ProcessGroup& pg);

}  // namespace cohort::runtime
