// The check behind COHORT_DEBUG_COLLECTIVES: before an operation runs, every rank gathers every
// rank's CallSignature (the op's number, type, count, dtype, reduce op and peer) through the
// backend's own all-gather, and each rank compares them. A mismatch fails on every rank with
// InvalidArgument naming both calls, instead of mixing buffers or hanging in the transport.
// The signature is plain bytes, so any backend can gather it: the threaded backends run it as
// an inline all-gather, NCCL as an ncclAllGather on its stream (c10d's ProcessGroupWrapper does
// the same with a side Gloo group; we use the group itself, which needs no second transport).
#pragma once

#include <cstdint>
#include <string>

#include "collectives/op.h"

namespace cohort::collectives {

struct CallSignature {
  uint64_t seq;
  uint64_t count;
  uint8_t type;
  uint8_t dtype;
  uint8_t reduce;
  uint8_t pad;
  int32_t peer;
};
static_assert(sizeof(CallSignature) == 24, "CallSignature is gathered as raw bytes");

// What op looks like to the other ranks (zeroed padding, so that bytes compare).
CallSignature SignatureOf(const Op& op);

// "all-reduce #3 of f32[7] sum", as Op::Describe() writes it.
std::string SignatureText(const CallSignature& s);

// Throws InvalidArgument naming this rank's call and the first rank's that differs, given the
// signatures gathered from all `size` ranks.
void CheckSameCall(const CallSignature* all, int size, int rank);

}  // namespace cohort::collectives
