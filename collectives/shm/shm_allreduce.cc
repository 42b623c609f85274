// ShmCollectives: creation, and the all-reduce (small: one step; large: two steps a piece).
#include <algorithm>
#include <cstring>
#include <vector>

#include "collectives/shm/shm_collectives.h"
#include "collectives/shm/shm_copy.h"
#include "collectives/shm/shm_rank_order.h"
#include "collectives/shm/shm_segment.h"

namespace cohort::collectives {
namespace {

constexpr const char* kPosting = "to post its data";
constexpr const char* kReducing = "to finish reducing its share";

// Elements [begin, begin + len) of n are rank r's share of a piece: n / size each, the first
// n % size ranks one more.
struct Share {
  size_t begin, len;
};
Share ShareOf(size_t n, int size, int rank) {
  const size_t base = n / size, rem = n % size, r = static_cast<size_t>(rank);
  return {r * base + std::min(r, rem), base + (r < rem ? 1 : 0)};
}

}  // namespace

std::unique_ptr<ShmCollectives> ShmCollectives::Create(Store& store, const std::string& scope,
                                                       int rank, int size, Millis timeout,
                                                       std::string* why_not) {
  auto seg = ShmSegment::Create(store, scope, rank, size, timeout, why_not);
  if (!seg) return nullptr;
  return std::unique_ptr<ShmCollectives>(new ShmCollectives(std::move(seg)));
}

ShmCollectives::ShmCollectives(std::unique_ptr<ShmSegment> segment) : seg_(std::move(segment)) {}
ShmCollectives::~ShmCollectives() = default;

int ShmCollectives::rank() const { return seg_->rank(); }
int ShmCollectives::size() const { return seg_->size(); }
size_t ShmCollectives::slot_bytes() const { return seg_->slot_bytes(); }

void ShmCollectives::AllReduce(const void* in_data, void* out_data, size_t count, DType dtype,
                               ReduceOp op, Millis timeout) {
  ShmSegment& seg = *seg_;
  const int size = seg.size(), me = seg.rank();
  const size_t es = ElementSize(dtype);
  const char* in = static_cast<const char*>(in_data);
  char* out = static_cast<char*>(out_data);
  if (size == 1) {
    if (out != in && count > 0) std::memcpy(out, in, count * es);
    return;
  }
  seg.Begin({OpType::kAllReduce, count, dtype, static_cast<uint32_t>(op)}, timeout);
  std::vector<const char*> src(size);
  if (count * es <= kSmallAllReduceBytes) {
    // One step: every rank reduces every slot (its own too: out may be in) into out.
    if (count > 0) std::memcpy(seg.Slot(me), in, count * es);
    seg.Sync(kPosting);
    seg.CheckSameCall();
    for (int k = 0; k < size; ++k) src[k] = seg.Slot(k);
    ReduceInRankOrder(op, dtype, out, src.data(), size, count);
    seg.EndPiece();
    return;
  }
  const size_t per_piece = seg.slot_bytes() / es;
  // In place, out's lines are in the cache already (this piece of in was just read): no read for
  // ownership to save.
  const bool stream = in != out && StreamsResult(count * es, size);
  for (size_t first = 0; first < count; first += per_piece) {
    const size_t n = std::min(per_piece, count - first);
    const Share mine = ShareOf(n, size, me);
    // Post the parts of this piece that the other ranks reduce; this rank's share stays in in.
    const char* piece = in + first * es;
    char* slot = seg.Slot(me);
    std::memcpy(slot, piece, mine.begin * es);
    const size_t after = mine.begin + mine.len;
    std::memcpy(slot + after * es, piece + after * es, (n - after) * es);
    seg.Sync(kPosting);
    if (first == 0) seg.CheckSameCall();
    for (int k = 0; k < size; ++k) src[k] = (k == me ? piece : seg.Slot(k)) + mine.begin * es;
    ReduceInRankOrder(op, dtype, seg.Result() + mine.begin * es, src.data(), size, mine.len);
    seg.Sync(kReducing);
    // out may be in: this piece of in has been read by now (its share above, the rest posted).
    if (stream) {
      StreamCopy(out + first * es, seg.Result(), n * es);
    } else {
      std::memcpy(out + first * es, seg.Result(), n * es);
    }
    seg.EndPiece();
  }
}

}  // namespace cohort::collectives
