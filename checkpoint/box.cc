#include "checkpoint/box.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>

#include "common/error.h"

namespace cohort::checkpoint {
namespace {

// Row-major element strides of an array of the given sizes.
Shape Strides(const Shape& sizes) {
  Shape strides(sizes.size(), 1);
  for (size_t d = sizes.size(); d-- > 1;) strides[d - 1] = strides[d] * sizes[d];
  return strides;
}

bool Inside(const Box& region, const Box& box) {
  if (region.Rank() != box.Rank() || region.offsets.size() != region.Rank() ||
      box.offsets.size() != box.Rank()) {
    return false;
  }
  for (size_t d = 0; d < region.Rank(); ++d) {
    if (region.offsets[d] < box.offsets[d] ||
        region.offsets[d] + region.sizes[d] > box.offsets[d] + box.sizes[d]) {
      return false;
    }
  }
  return true;
}

// Element index, within the row-major array of `within`, of the global coordinate `at`.
int64_t Ravel(const Box& within, const Shape& at) {
  const Shape strides = Strides(within.sizes);
  int64_t index = 0;
  for (size_t d = 0; d < at.size(); ++d) index += (at[d] - within.offsets[d]) * strides[d];
  return index;
}

}  // namespace

Box Box::Whole(const Shape& shape) { return Box{Shape(shape.size(), 0), shape}; }

int64_t Box::Volume() const { return ShapeVolume(sizes); }

std::string Box::ToString() const {
  std::vector<std::string> parts;
  for (size_t d = 0; d < sizes.size(); ++d) {
    parts.push_back(fmt::format("{}:{}", offsets[d], offsets[d] + sizes[d]));
  }
  return fmt::format("[{}]", fmt::join(parts, ", "));
}

std::string ShapeToString(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int64_t ShapeVolume(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::optional<Box> Intersect(const Box& a, const Box& b) {
  if (a.Rank() != b.Rank()) {
    throw InvalidArgument(
        fmt::format("boxes {} and {} have different ranks", a.ToString(), b.ToString()));
  }
  Box out{Shape(a.Rank()), Shape(a.Rank())};
  for (size_t d = 0; d < a.Rank(); ++d) {
    const int64_t lo = std::max(a.offsets[d], b.offsets[d]);
    const int64_t hi = std::min(a.offsets[d] + a.sizes[d], b.offsets[d] + b.sizes[d]);
    if (hi <= lo) return std::nullopt;
    out.offsets[d] = lo;
    out.sizes[d] = hi - lo;
  }
  if (a.Volume() == 0 || b.Volume() == 0) return std::nullopt;
  return out;
}

bool FitsIn(const Box& box, const Shape& shape) {
  if (box.offsets.size() != shape.size() || box.sizes.size() != shape.size()) return false;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (box.offsets[d] < 0 || box.sizes[d] < 0 || box.offsets[d] + box.sizes[d] > shape[d]) {
      return false;
    }
  }
  return true;
}

std::pair<uint64_t, uint64_t> ByteSpan(const Box& within, const Box& region, size_t element_size) {
  if (region.Volume() == 0) return {0, 0};
  Shape last = region.offsets;
  for (size_t d = 0; d < last.size(); ++d) last[d] += region.sizes[d] - 1;
  return {static_cast<uint64_t>(Ravel(within, region.offsets)) * element_size,
          static_cast<uint64_t>(Ravel(within, last) + 1) * element_size};
}

void CopyRegion(const void* src, const Box& src_box, uint64_t src_first_byte, void* dst,
                const Box& dst_box, const Box& region, size_t element_size) {
  if (!Inside(region, src_box) || !Inside(region, dst_box)) {
    throw InvalidArgument(fmt::format("region {} does not lie inside both {} and {}",
                                      region.ToString(), src_box.ToString(), dst_box.ToString()));
  }
  if (region.Volume() == 0) return;
  const size_t n = region.Rank();
  const auto [first, end] = ByteSpan(src_box, region, element_size);
  if (first < src_first_byte) {
    throw InvalidArgument(fmt::format("region {} starts at byte {}, before the {} fetched",
                                      region.ToString(), first, src_first_byte));
  }
  // Merge trailing dimensions that all three boxes cover whole into one contiguous run.
  size_t k = n;  // dimensions [k, n) form the run
  int64_t run = 1;
  while (k > 0 && region.sizes[k - 1] == src_box.sizes[k - 1] &&
         region.sizes[k - 1] == dst_box.sizes[k - 1]) {
    run *= region.sizes[--k];
  }
  if (k > 0) run *= region.sizes[--k];  // the innermost partial dimension joins the run
  const size_t run_bytes = static_cast<size_t>(run) * element_size;
  const Shape ss = Strides(src_box.sizes), ds = Strides(dst_box.sizes);
  const auto* s = static_cast<const uint8_t*>(src);
  auto* t = static_cast<uint8_t*>(dst);
  Shape index(k, 0);  // odometer over dimensions [0, k)
  while (true) {
    int64_t so = 0, doff = 0;
    for (size_t d = 0; d < n; ++d) {
      const int64_t at = region.offsets[d] + (d < k ? index[d] : 0);
      so += (at - src_box.offsets[d]) * ss[d];
      doff += (at - dst_box.offsets[d]) * ds[d];
    }
    std::memcpy(t + doff * element_size, s + (so * element_size - src_first_byte), run_bytes);
    size_t d = k;
    while (d > 0 && ++index[d - 1] == region.sizes[d - 1]) index[--d] = 0;
    if (d == 0) break;
  }
}

}  // namespace cohort::checkpoint
