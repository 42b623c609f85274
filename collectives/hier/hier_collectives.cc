#include "collectives/hier/hier_collectives.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <deque>

#include "collectives/hier/host_groups.h"
#include "collectives/reduce.h"
#include "collectives/shm/shm_collectives.h"
#include "common/env.h"
#include "common/error.h"

namespace cohort::collectives {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds Left(Clock::time_point deadline) {
  return std::max(std::chrono::milliseconds(1),
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

// Every rank learns whether every host with >= 2 ranks made its segment: one counter, a join,
// and a read (O(1) store calls per rank). Returns "" or why not.
std::string AgreeOnShm(Store& store, const std::string& prefix, int rank, int size, bool failed,
                       const std::string& why, std::chrono::milliseconds timeout) {
  if (failed) store.Set(prefix + "shm-why", fmt::format("rank {}: {}", rank, why));
  store.Add(prefix + "shm-failed", failed ? 1 : 0);
  if (!store.Join(prefix + "built/", rank, size, "1", timeout)) {
    throw InvalidArgument(
        fmt::format("hier: rank {} already joined '{}built/'; give each job its "
                    "own COHORT_RUN_ID, or restart the store",
                    rank, prefix));
  }
  if (store.Add(prefix + "shm-failed", 0) == 0) return "";
  return "no shared memory on some host (" + store.Get(prefix + "shm-why", timeout) + ")";
}

}  // namespace

std::unique_ptr<HierCollectives> HierCollectives::Create(const CommConfig& config,
                                                         const std::string& scope,
                                                         const LeaderFactory& make_leaders,
                                                         std::string* why_not) {
  Store& store = *config.store;
  const std::string prefix = scope + "/hier/";
  const int rank = config.rank, size = config.size;
  HostGroups g =
      GroupByHost(store, prefix, rank, size, env::kHier.Bool(true), config.connect_timeout);
  if (!g.why_not.empty()) {
    if (why_not) *why_not = g.why_not;
    return nullptr;
  }
  std::unique_ptr<HierCollectives> h(new HierCollectives);
  h->size_ = size;
  h->hosts_ = g.hosts();
  const int host = g.host_of[rank];
  h->host_ = host;
  h->host_of_ = g.host_of;
  for (int k = 0; k < h->hosts_; ++k) h->ranks_of_.push_back(g.RanksOf(k));
  h->local_ranks_ = h->ranks_of_[host];
  const int local_size = static_cast<int>(h->local_ranks_.size());
  const int local_rank = static_cast<int>(
      std::find(h->local_ranks_.begin(), h->local_ranks_.end(), rank) - h->local_ranks_.begin());
  h->local_rank_ = static_cast<size_t>(local_rank);
  std::string shm_why;
  if (local_size > 1) {
    h->shm_ = ShmCollectives::Create(store, prefix + "host-" + std::to_string(host), local_rank,
                                     local_size, config.connect_timeout, &shm_why);
  }
  const std::string no_shm = AgreeOnShm(store, prefix, rank, size, local_size > 1 && !h->shm_,
                                        shm_why, config.connect_timeout);
  if (!no_shm.empty()) {
    if (why_not) *why_not = no_shm;
    return nullptr;
  }
  std::vector<int> counts;
  for (const auto& ranks : h->ranks_of_) counts.push_back(static_cast<int>(ranks.size()));
  h->describe_ = fmt::format("{} ranks on {} hosts ({})", size, h->hosts_, fmt::join(counts, ","));
  if (local_rank == 0) {  // the leader: the all-reduce between hosts
    CommConfig c = config;
    c.rank = host;  // hosts are numbered in the order of their leaders
    c.size = h->hosts_;
    c.name = config.name + "/hier-leaders";
    c.group = kLeadersGroup;
    c.global_ranks.clear();
    for (int l : g.Leaders()) {
      c.global_ranks.push_back(config.global_ranks.empty() ? l : config.global_ranks[l]);
    }
    h->leaders_ = make_leaders(c);
  }
  h->MakeRail(config, make_leaders);
  return h;
}

// Every host with the same rank count L >= 2: rail l (l > 0) is the communicator of the ranks of
// local rank l, one per host in host order (rail 0 is the leaders'). Each rail connects only its
// own ranks, under its own name, so the rails connect side by side.
void HierCollectives::MakeRail(const CommConfig& config, const LeaderFactory& make_rail) {
  const size_t local_size = local_ranks_.size();
  for (const auto& ranks : ranks_of_) {
    if (ranks.size() != local_size || local_size < 2) return;
  }
  rails_ = true;
  if (local_rank_ == 0) return;
  CommConfig c = config;
  c.rank = host_;
  c.size = hosts_;
  c.name = fmt::format("{}/hier-rail-{}", config.name, local_rank_);
  c.group = kLeadersGroup;  // one rank per host: over TCP, as the leaders
  c.global_ranks.clear();
  for (const auto& ranks : ranks_of_) {
    const int r = ranks[local_rank_];
    c.global_ranks.push_back(config.global_ranks.empty() ? r : config.global_ranks[r]);
  }
  rail_ = make_rail(c);
}

HierCollectives::~HierCollectives() = default;

template <typename F>
void HierCollectives::Local(const char* op, const char* what, F&& step) {
  try {
    step();
  } catch (const cohort::Error& e) {
    // ShmCollectives' errors start with the peer's local rank ("rank 1 (pid ...) exited"): name
    // it as a rank of this communicator.
    std::string detail = e.what();
    size_t digits = 0;
    if (detail.rfind("rank ", 0) == 0) {
      while (5 + digits < detail.size() &&
             std::isdigit(static_cast<unsigned char>(detail[5 + digits]))) {
        ++digits;
      }
    }
    if (digits > 0) {
      const size_t local = std::stoul(detail.substr(5, digits));
      if (local < local_ranks_.size()) {
        detail = fmt::format("rank {} (local rank {} of this host){}", local_ranks_[local], local,
                             detail.substr(5 + digits));
      }
    }
    ThrowError(e.kind(),
               fmt::format("hierarchical {}, {} through shared memory: {}", op, what, detail));
  }
}

// Buffers of kRailMinBytes and more go over the rails, all but the last count % L elements
// (fewer than a host's L ranks), which take the leaders' path with the smaller buffers. The
// choice depends only on the call, so every rank makes the same one.
void HierCollectives::AllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                                Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  const size_t es = ElementSize(dtype), local_size = local_ranks_.size();
  if (!rails_ || count * es < kRailMinBytes) {
    LeaderAllReduce(in, out, count, dtype, op, deadline);
    return;
  }
  const size_t railed = count - count % local_size;
  RailAllReduce(in, out, railed, dtype, op, deadline);
  if (railed < count) {
    LeaderAllReduce(static_cast<const char*>(in) + railed * es,
                    static_cast<char*>(out) + railed * es, count - railed, dtype, op, deadline);
  }
}

// Pieces of kPieceBytes pipeline the steps: the leaders' TCP all-reduce of piece k (on the
// leaders' communicator's thread) runs while this host reduces piece k + 1 in shared memory. Every
// rank of a host makes the same sequence of shared-memory calls (reduce 0, reduce 1, broadcast 0,
// reduce 2, broadcast 1, ...), so they stay in step.
void HierCollectives::LeaderAllReduce(const void* in, void* out, size_t count, DType dtype,
                                      ReduceOp op, Clock::time_point deadline) {
  const ReduceOp step = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const size_t es = ElementSize(dtype);
  const size_t per_piece = std::max<size_t>(1, kPieceBytes / es);
  struct Piece {
    WorkPtr work;  // the leaders' all-reduce of it, on leaders
    char* data;
    size_t n;
  };
  std::deque<Piece> inflight;
  auto finish = [&](const Piece& p) {
    if (p.work) {
      p.work->Wait();
      if (op == ReduceOp::kAvg) FinishAverage(dtype, p.data, p.n, size_);
    }
    if (shm_) {
      Local("all-reduce", "receiving its leader's result",
            [&] { shm_->Broadcast(p.data, p.n, dtype, 0, Left(deadline)); });
    }
  };
  // Zero elements: one piece, so that the ranks of a host still meet and check the call.
  for (size_t first = 0; first < count || (count == 0 && first == 0); first += per_piece) {
    const size_t n = std::min(per_piece, count - first);
    const char* src = static_cast<const char*>(in) + first * es;
    char* dst = static_cast<char*>(out) + first * es;
    if (shm_) {
      Local("all-reduce", "reducing",
            [&] { shm_->AllReduce(src, dst, n, dtype, step, Left(deadline)); });
    } else if (dst != src && n > 0) {
      std::memcpy(dst, src, n * es);
    }
    Piece p{nullptr, dst, n};
    if (leaders_) {
      OpOptions opts;
      opts.timeout = Left(deadline);
      p.work = leaders_->AllReduce(TensorView(dst, n, dtype), step, opts);
    }
    inflight.push_back(std::move(p));
    if (inflight.size() > 1) {
      finish(inflight.front());
      inflight.pop_front();
    }
    if (count == 0) break;
  }
  for (; !inflight.empty(); inflight.pop_front()) finish(inflight.front());
}

// Pieces of kPieceBytes rounded down to a multiple of L, pipelined as the leaders' path: this
// host reduce-scatters piece k + 1 through shared memory while every rail all-reduces its slice
// of piece k over TCP; then the host all-gathers the slices of piece k. Every rank of a host
// makes the same sequence of shared-memory calls (scatter 0, scatter 1, gather 0, scatter 2, ...).
void HierCollectives::RailAllReduce(const void* in, void* out, size_t count, DType dtype,
                                    ReduceOp op, Clock::time_point deadline) {
  const ReduceOp step = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const size_t es = ElementSize(dtype), local_size = local_ranks_.size();
  const size_t per_piece = std::max<size_t>(1, kRailPieceBytes / es / local_size) * local_size;
  Communicator& rail = rail_ ? *rail_ : *leaders_;
  struct Piece {
    WorkPtr work;  // this rank's rail all-reduce of its slice
    char* slice;   // this rank's slice of the piece, in out
    char* data;    // the piece, in out
    size_t n;      // the slice's elements
  };
  std::deque<Piece> inflight;
  auto finish = [&](const Piece& p) {
    p.work->Wait();
    if (op == ReduceOp::kAvg) FinishAverage(dtype, p.slice, p.n, size_);
    Local("all-reduce", "gathering the rails' results",
          [&] { shm_->AllGather(p.slice, p.data, p.n, dtype, Left(deadline)); });
  };
  for (size_t first = 0; first < count; first += per_piece) {
    const size_t n = std::min(per_piece, count - first) / local_size;
    const char* src = static_cast<const char*>(in) + first * es;
    char* dst = static_cast<char*>(out) + first * es;
    char* slice = dst + local_rank_ * n * es;
    Local("all-reduce", "reducing",
          [&] { shm_->ReduceScatter(src, slice, n, dtype, step, Left(deadline)); });
    OpOptions opts;
    opts.timeout = Left(deadline);
    inflight.push_back({rail.AllReduce(TensorView(slice, n, dtype), step, opts), slice, dst, n});
    if (inflight.size() > 1) {
      finish(inflight.front());
      inflight.pop_front();
    }
  }
  for (; !inflight.empty(); inflight.pop_front()) finish(inflight.front());
}

// Root's host first (root to its host, leader included), then the leaders from root's host's
// leader, then every other host from its leader: three steps, each rank in one or two of them.
void HierCollectives::Broadcast(void* data, size_t count, DType dtype, int root, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  const int root_host = host_of_.at(root);
  if (host_ == root_host && shm_) {
    const int local_root = static_cast<int>(
        std::find(local_ranks_.begin(), local_ranks_.end(), root) - local_ranks_.begin());
    Local("broadcast", "copying the root's data",
          [&] { shm_->Broadcast(data, count, dtype, local_root, Left(deadline)); });
  }
  if (leaders_) {
    OpOptions opts;
    opts.timeout = Left(deadline);
    leaders_->Broadcast(TensorView(data, count, dtype), root_host, opts)->Wait();
  }
  if (host_ != root_host && shm_) {
    Local("broadcast", "receiving its leader's copy",
          [&] { shm_->Broadcast(data, count, dtype, 0, Left(deadline)); });
  }
}

char* HierCollectives::Scratch(size_t bytes) {
  if (scratch_.size() < bytes) scratch_.resize(bytes);
  return scratch_.data();
}

size_t HierCollectives::MaxLocal() const {
  size_t max_local = 0;
  for (const auto& ranks : ranks_of_) max_local = std::max(max_local, ranks.size());
  return max_local;
}

// Host blocks of max_local pieces (the largest host's rank count), so the leaders' all-gather has
// equal parts; each leader then moves every piece to its rank's place in out.
void HierCollectives::AllGather(const void* in, void* out, size_t count, DType dtype,
                                Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  const size_t piece = count * ElementSize(dtype);
  const size_t max_local = MaxLocal();
  // This host's pieces in local rank order, padded to max_local (in and out may overlap: in is
  // read here, before out is written), then the leaders' blocks; kept from call to call.
  const size_t block_bytes = max_local * piece;
  char* block = Scratch(block_bytes * (leaders_ ? hosts_ + 1 : 1));
  if (shm_) {
    Local("all-gather", "gathering this host's pieces",
          [&] { shm_->AllGather(in, block, count, dtype, Left(deadline)); });
  } else if (piece > 0) {
    std::memcpy(block, in, piece);
  }
  if (leaders_) {
    char* blocks = block + block_bytes;
    OpOptions opts;
    opts.timeout = Left(deadline);
    leaders_
        ->AllGather(TensorView(block, max_local * count, dtype),
                    TensorView(blocks, hosts_ * max_local * count, dtype), opts)
        ->Wait();
    char* dst = static_cast<char*>(out);
    for (int h = 0; h < hosts_; ++h) {
      for (size_t j = 0; j < ranks_of_[h].size() && piece > 0; ++j) {
        std::memcpy(dst + ranks_of_[h][j] * piece, blocks + (h * max_local + j) * piece, piece);
      }
    }
  }
  if (shm_) {
    Local("all-gather", "receiving its leader's result",
          [&] { shm_->Broadcast(out, size_ * count, dtype, 0, Left(deadline)); });
  }
}

// Inputs over kReduceScatterMaxBytes go over the rails (callers only send those where hosts
// are even); the others through the leaders.
void HierCollectives::ReduceScatter(const void* in, void* out, size_t count, DType dtype,
                                    ReduceOp op, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  if (rails_ && size_ * count * ElementSize(dtype) > kReduceScatterMaxBytes) {
    RailReduceScatter(in, out, count, dtype, op, deadline);
  } else {
    LeaderReduceScatter(in, out, count, dtype, op, deadline);
  }
}

// The input rearranged into rail chunks (chunk l: the slices of the ranks of local rank l, in
// host order), one shared-memory reduce-scatter of the chunks per host (local rank l keeps chunk
// l, summed over its host), then rail l's reduce-scatter of chunk l: rail rank h ends with the
// slice of host h's rank of local rank l, summed over every host. Nothing is broadcast, and each
// rank reduces 1/L of the input in shared memory. kAvg sums until each rank divides its slice.
void HierCollectives::RailReduceScatter(const void* in, void* out, size_t count, DType dtype,
                                        ReduceOp op, Clock::time_point deadline) {
  const ReduceOp step = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const size_t piece = count * ElementSize(dtype), chunk = hosts_ * count;
  const size_t local_size = local_ranks_.size();
  // in is read here, before out (which may be a slice of it) is written.
  char* chunks = Scratch(size_ * piece);
  for (size_t l = 0; l < local_size; ++l) {
    for (int h = 0; h < hosts_; ++h) {
      std::memcpy(chunks + (l * hosts_ + h) * piece,
                  static_cast<const char*>(in) + ranks_of_[h][l] * piece, piece);
    }
  }
  char* mine = chunks + local_rank_ * hosts_ * piece;
  Local("reduce-scatter", "reducing",
        [&] { shm_->ReduceScatter(chunks, mine, chunk, dtype, step, Left(deadline)); });
  Communicator& rail = rail_ ? *rail_ : *leaders_;
  OpOptions opts;
  opts.timeout = Left(deadline);
  rail.ReduceScatter(TensorView(mine, chunk, dtype), TensorView(out, count, dtype), step, opts)
      ->Wait();
  if (op == ReduceOp::kAvg) FinishAverage(dtype, out, count, size_);
}

// The input rearranged into host blocks (the padding is zeros and never read back), one
// shared-memory all-reduce of it per host, the leaders' reduce-scatter of the blocks, then each
// host's block from its leader. kAvg sums until its leader divides by the world's size.
void HierCollectives::LeaderReduceScatter(const void* in, void* out, size_t count, DType dtype,
                                          ReduceOp op, Clock::time_point deadline) {
  const ReduceOp step = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const size_t piece = count * ElementSize(dtype), max_local = MaxLocal();
  const size_t block_count = max_local * count;
  // in is read here, before out (which may be a slice of it) is written.
  std::vector<char> blocks(static_cast<size_t>(hosts_) * max_local * piece);
  for (int h = 0; h < hosts_; ++h) {
    for (size_t j = 0; j < ranks_of_[h].size() && piece > 0; ++j) {
      std::memcpy(blocks.data() + (h * max_local + j) * piece,
                  static_cast<const char*>(in) + ranks_of_[h][j] * piece, piece);
    }
  }
  if (shm_) {
    Local("reduce-scatter", "reducing", [&] {
      shm_->AllReduce(blocks.data(), blocks.data(), hosts_ * block_count, dtype, step,
                      Left(deadline));
    });
  }
  std::vector<char> block(max_local * piece);
  if (leaders_) {
    OpOptions opts;
    opts.timeout = Left(deadline);
    leaders_
        ->ReduceScatter(TensorView(blocks.data(), hosts_ * block_count, dtype),
                        TensorView(block.data(), block_count, dtype), step, opts)
        ->Wait();
    if (op == ReduceOp::kAvg) FinishAverage(dtype, block.data(), block_count, size_);
  }
  if (shm_) {
    Local("reduce-scatter", "receiving its leader's result",
          [&] { shm_->Broadcast(block.data(), block_count, dtype, 0, Left(deadline)); });
  }
  if (piece > 0) std::memcpy(out, block.data() + local_rank_ * piece, piece);
}

}  // namespace cohort::collectives
