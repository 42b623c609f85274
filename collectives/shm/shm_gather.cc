// ShmCollectives: broadcast, all-gather and reduce-scatter, one step a piece each.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "collectives/shm/shm_collectives.h"
#include "collectives/shm/shm_rank_order.h"
#include "collectives/shm/shm_segment.h"
#include "common/error.h"

namespace cohort::collectives {
namespace {

constexpr const char* kPosting = "to post its data";

// Copies n bytes unless there are none (data may then be null) or dst is src.
void Copy(char* dst, const char* src, size_t n) {
  if (n > 0 && dst != src) std::memcpy(dst, src, n);
}

}  // namespace

// Piece by piece: the root copies the piece into its slot, the ranks meet, the others copy it out.
void ShmCollectives::Broadcast(void* data_ptr, size_t count, DType dtype, int root,
                               Millis timeout) {
  ShmSegment& seg = *seg_;
  if (root < 0 || root >= seg.size()) {
    throw InvalidArgument(
        fmt::format("broadcast from rank {}: the group has ranks 0 to {}", root, seg.size() - 1));
  }
  if (seg.size() == 1) return;
  const size_t es = ElementSize(dtype);
  char* data = static_cast<char*>(data_ptr);
  seg.Begin({OpType::kBroadcast, count, dtype, static_cast<uint32_t>(root)}, timeout);
  const size_t per_piece = seg.slot_bytes() / es;
  size_t first = 0;
  do {
    const size_t n = std::min(per_piece, count - first);
    if (seg.rank() == root) Copy(seg.Slot(root), data + first * es, n * es);
    seg.Sync(kPosting);
    if (first == 0) seg.CheckSameCall();
    if (seg.rank() != root) Copy(data + first * es, seg.Slot(root), n * es);
    seg.EndPiece();
    first += per_piece;
  } while (first < count);
}

// Piece by piece of every rank's contribution: each copies its piece into its slot, the ranks
// meet, each copies every slot into its place in out.
void ShmCollectives::AllGather(const void* in_ptr, void* out_ptr, size_t count, DType dtype,
                               Millis timeout) {
  ShmSegment& seg = *seg_;
  const int size = seg.size(), me = seg.rank();
  const size_t es = ElementSize(dtype);
  const char* in = static_cast<const char*>(in_ptr);
  char* out = static_cast<char*>(out_ptr);
  if (size == 1) return Copy(out, in, count * es);
  seg.Begin({OpType::kAllGather, count, dtype, 0}, timeout);
  const size_t per_piece = seg.slot_bytes() / es;
  size_t first = 0;
  do {
    const size_t n = std::min(per_piece, count - first);
    Copy(seg.Slot(me), in + first * es, n * es);
    seg.Sync(kPosting);
    if (first == 0) seg.CheckSameCall();
    for (int k = 0; k < size; ++k) {
      char* dst = out + (k * count + first) * es;
      Copy(dst, k == me ? in + first * es : seg.Slot(k), n * es);
    }
    seg.EndPiece();
    first += per_piece;
  } while (first < count);
}

// Piece by piece of each rank's result: each rank copies, for every rank k, its piece of slice k
// into part k of its slot; the ranks meet; each reduces part rank of every slot, in rank order,
// into out. Its own slice is reduced straight from in unless out is that slice (out then holds
// partial sums while the slice is still to be read).
void ShmCollectives::ReduceScatter(const void* in_ptr, void* out_ptr, size_t count, DType dtype,
                                   ReduceOp op, Millis timeout) {
  ShmSegment& seg = *seg_;
  const int size = seg.size(), me = seg.rank();
  const size_t es = ElementSize(dtype);
  const char* in = static_cast<const char*>(in_ptr);
  char* out = static_cast<char*>(out_ptr);
  if (size == 1) return Copy(out, in, count * es);
  seg.Begin({OpType::kReduceScatter, count, dtype, static_cast<uint32_t>(op)}, timeout);
  const bool in_place = out == in + me * count * es;
  const size_t per_piece = seg.slot_bytes() / es / size;
  std::vector<const char*> src(size);
  size_t first = 0;
  do {
    const size_t n = std::min(per_piece, count - first);
    char* slot = seg.Slot(me);
    for (int k = 0; k < size; ++k) {
      if (k != me || in_place) Copy(slot + k * n * es, in + (k * count + first) * es, n * es);
    }
    seg.Sync(kPosting);
    if (first == 0) seg.CheckSameCall();
    for (int k = 0; k < size; ++k) {
      src[k] = k == me && !in_place ? in + (me * count + first) * es : seg.Slot(k) + me * n * es;
    }
    ReduceInRankOrder(op, dtype, out + first * es, src.data(), size, n);
    seg.EndPiece();
    first += per_piece;
  } while (first < count);
}

}  // namespace cohort::collectives
