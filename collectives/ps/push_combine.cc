#include "collectives/ps/push_combine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "collectives/op.h"
#include "collectives/reduce.h"
#include "collectives/tensor_view.h"

namespace cohort::collectives::ps {
namespace {

namespace pb = ::cohort::ps;

constexpr int kDTypes = static_cast<int>(sizeof(kAllDTypes) / sizeof(kAllDTypes[0]));
constexpr int kReduceOps = static_cast<int>(sizeof(kAllReduceOps) / sizeof(kAllReduceOps[0]));

const char* KindName(pb::Kind kind) {
  switch (kind) {
    case pb::REDUCE:
      return "allreduce";
    case pb::BROADCAST:
      return "broadcast";
    case pb::GATHER:
      return "allgather";
    case pb::BARRIER:
      return "barrier";
    default:
      return "unknown op";
  }
}

DType DTypeOf(const pb::PushRequest& p) { return static_cast<DType>(p.dtype()); }

// What one rank passed, e.g. "f32[1031] sum", "f32[7] from root 1", "nothing".
std::string DescribeCall(const pb::PushRequest& p) {
  if (p.kind() == pb::BARRIER) return "a barrier";
  std::string s = fmt::format("{} {}[{}]", KindName(p.kind()), DTypeName(DTypeOf(p)), p.total());
  if (p.kind() == pb::REDUCE)
    s += fmt::format(" {}", ReduceOpName(static_cast<ReduceOp>(p.reduce())));
  if (p.kind() == pb::BROADCAST) s += fmt::format(" from root {}", p.root());
  return s;
}

bool SameCall(const pb::PushRequest& a, const pb::PushRequest& b) {
  if (a.kind() != b.kind() || a.world() != b.world()) return false;
  if (a.kind() == pb::BARRIER) return true;
  return a.dtype() == b.dtype() && a.total() == b.total() && a.count() == b.count() &&
         (a.kind() != pb::REDUCE || a.reduce() == b.reduce()) &&
         (a.kind() != pb::BROADCAST || a.root() == b.root());
}

}  // namespace

std::string DescribePush(const pb::PushRequest& p) {
  return fmt::format("{} #{} partition {}", KindName(p.kind()), p.seq(), p.part());
}

std::string CheckPush(const pb::PushRequest& p, size_t data_bytes) {
  if (p.world() < 1 || p.rank() < 0 || p.rank() >= p.world()) {
    return fmt::format("{}: rank {} is outside a world of {}", DescribePush(p), p.rank(),
                       p.world());
  }
  if (p.kind() < pb::REDUCE || p.kind() > pb::BARRIER) {
    return fmt::format("push of unknown kind {}: is the worker newer than this server?",
                       static_cast<int>(p.kind()));
  }
  if (p.kind() == pb::BARRIER) return "";
  if (p.dtype() < 0 || p.dtype() >= kDTypes || p.reduce() < 0 || p.reduce() >= kReduceOps) {
    return fmt::format("{}: unknown dtype {} or reduce op {}", DescribePush(p), p.dtype(),
                       p.reduce());
  }
  if (p.kind() == pb::BROADCAST && (p.root() < 0 || p.root() >= p.world())) {
    return fmt::format("{}: root {} is outside a world of {}", DescribePush(p), p.root(),
                       p.world());
  }
  const bool sends = p.kind() != pb::BROADCAST || p.root() == p.rank();
  const size_t want = sends ? p.count() * ElementSize(DTypeOf(p)) : 0;
  if (data_bytes != want) {
    return fmt::format("{}: rank {} sent {} bytes for {} elements of {}; expected {}",
                       DescribePush(p), p.rank(), data_bytes, p.count(), DTypeName(DTypeOf(p)),
                       want);
  }
  return "";
}

std::string Mismatch(const pb::PushRequest& x, const pb::PushRequest& y) {
  if (SameCall(x, y)) return "";
  // The lower rank first, whichever arrived first: every run says the same.
  const pb::PushRequest& a = x.rank() < y.rank() ? x : y;
  const pb::PushRequest& b = x.rank() < y.rank() ? y : x;
  std::string what =
      fmt::format("{} (seq {}): rank {} called {} but rank {} called {}", KindName(a.kind()),
                  a.seq(), a.rank(), DescribeCall(a), b.rank(), DescribeCall(b));
  if (a.world() != b.world()) {
    what += fmt::format(" (in worlds of {} and {})", a.world(), b.world());
  } else if (a.kind() == b.kind() && a.total() == b.total() && a.count() != b.count()) {
    what += fmt::format(
        " (partitions of {} and {} elements: set the same "
        "COHORT_PS_PARTITION_BYTES on every rank)",
        a.count(), b.count());
  }
  return what +
         "; every rank must make the same collective calls, in the same order, with the "
         "same count, dtype and op";
}

namespace {

void Append(std::string& out, const std::vector<std::string_view>& spans) {
  for (std::string_view s : spans) out.append(s.data(), s.size());
}

// acc (its elements in order) op= the elements whose bytes spans hold. Runs whose start is not
// aligned for the element type (gRPC's slices may start anywhere) go through a small aligned
// buffer; an element cut between two runs is put together first.
void ReduceSpans(ReduceOp op, DType dtype, char* acc, const std::vector<std::string_view>& spans) {
  const size_t es = ElementSize(dtype);
  alignas(64) static thread_local char bounce[64 << 10];
  alignas(16) char cut[16];
  size_t done = 0, in_cut = 0;
  for (std::string_view s : spans) {
    const char* p = s.data();
    size_t n = s.size();
    if (in_cut > 0) {
      const size_t take = std::min(es - in_cut, n);
      std::memcpy(cut + in_cut, p, take);
      in_cut += take, p += take, n -= take;
      if (in_cut < es) continue;
      ReduceInto(op, dtype, acc + done, acc + done, cut, 1);
      done += es, in_cut = 0;
    }
    while (n >= es) {
      const size_t whole = n / es * es;
      const bool aligned = reinterpret_cast<uintptr_t>(p) % es == 0;
      const size_t m = aligned ? whole : std::min(whole, sizeof(bounce) / es * es);
      const char* from = p;
      if (!aligned) from = static_cast<const char*>(std::memcpy(bounce, p, m));
      ReduceInto(op, dtype, acc + done, acc + done, from, m / es);
      done += m, p += m, n -= m;
    }
    std::memcpy(cut, p, n);
    in_cut = n;
  }
}

}  // namespace

std::string Combine(const std::vector<const pb::PushRequest*>& pushes,
                    const std::vector<std::vector<std::string_view>>& data) {
  const pb::PushRequest& first = *pushes.front();
  std::string out;
  switch (first.kind()) {
    case pb::BARRIER:
      return out;
    case pb::BROADCAST:
      Append(out, data[static_cast<size_t>(first.root())]);
      return out;
    case pb::GATHER:
      out.reserve(first.count() * ElementSize(DTypeOf(first)) * pushes.size());
      for (const auto& spans : data) Append(out, spans);
      return out;
    default:
      break;
  }
  const DType dtype = DTypeOf(first);
  const auto op = static_cast<ReduceOp>(first.reduce());
  out.reserve(first.count() * ElementSize(dtype));
  Append(out, data.front());
  for (size_t r = 1; r < pushes.size(); ++r) ReduceSpans(op, dtype, out.data(), data[r]);
  if (op == ReduceOp::kAvg) {
    FinishAverage(dtype, out.data(), first.count(), static_cast<int>(pushes.size()));
  }
  return out;
}

}  // namespace cohort::collectives::ps
