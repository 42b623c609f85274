// N-dimensional boxes of a row-major tensor, and copying a box between two row-major arrays:
// what resharding is made of. A tensor of global shape G cut over ranks is a set of boxes, each
// {offsets, sizes} with offsets[d] + sizes[d] <= G[d]; a 0-d tensor has the one empty box {}.
// Torch-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cohort::checkpoint {

using Shape = std::vector<int64_t>;

struct Box {
  Shape offsets;
  Shape sizes;

  // The box that covers all of shape.
  static Box Whole(const Shape& shape);
  size_t Rank() const { return sizes.size(); }
  // Elements in the box (1 for a 0-d box; 0 when any size is 0).
  int64_t Volume() const;
  bool operator==(const Box& o) const { return offsets == o.offsets && sizes == o.sizes; }
  bool operator!=(const Box& o) const { return !(*this == o); }
  // "[0:32, 16:48]" (start:end per dimension), "[]" for 0-d.
  std::string ToString() const;
};

// "[64, 32]".
std::string ShapeToString(const Shape& shape);
// Elements of a shape (1 for {}).
int64_t ShapeVolume(const Shape& shape);
// The overlap of two boxes of the same rank, nullopt when they do not overlap (an empty box of
// volume 0 overlaps nothing). Throws InvalidArgument when the ranks differ.
std::optional<Box> Intersect(const Box& a, const Box& b);
// Whether box lies inside shape (same rank, non-negative offsets and sizes).
bool FitsIn(const Box& box, const Shape& shape);

// Copies the elements of `region` (in global coordinates) from src to dst. src holds the box
// src_box of the global tensor as a row-major array; dst holds dst_box. region must lie inside
// both boxes (InvalidArgument otherwise). When src_first_byte > 0, src points at that byte of
// src_box's array rather than its start (a ranged read that fetched only part of it); the bytes
// region needs must lie at or after it. Contiguous runs are copied with one memcpy each:
// trailing dimensions that both boxes cover whole are merged into one run.
void CopyRegion(const void* src, const Box& src_box, uint64_t src_first_byte, void* dst,
                const Box& dst_box, const Box& region, size_t element_size);

// Bytes [first, last) of a row-major array of box `within` that hold `region` (inside it): the
// span a ranged read must fetch. {0, 0} for an empty region.
std::pair<uint64_t, uint64_t> ByteSpan(const Box& within, const Box& region, size_t element_size);

}  // namespace cohort::checkpoint
