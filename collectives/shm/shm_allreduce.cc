#include "collectives/shm/shm_allreduce.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "collectives/reduce.h"
#include "collectives/store/store.h"
#include "common/env.h"
#include "common/error.h"

namespace cohort::collectives {
namespace {

constexpr uint64_t kMagic = 0x31'4d'48'53'54'48'4f'43;  // "COHTSHM1"
constexpr size_t kPage = 4096;
// Checks of a waiting rank before it sleeps on the futex. Short: the ranks often share fewer
// cores than there are of them, and a spinning rank takes the core its peer needs.
constexpr int kSpins = 256;
// How often a sleeping rank wakes up to check that the rank it waits for is alive.
constexpr long kCheckNanos = 50'000'000;

struct alignas(128) RankControl {
  std::atomic<uint32_t> phase;    // the futex word: 3g+1 posted, 3g+2 reduced, 3g+3 read
  std::atomic<uint32_t> waiters;  // ranks sleeping on phase; Mark() wakes them only if > 0
  std::atomic<int32_t> pid;
  // The call this rank is in (count, dtype, op), checked against every rank's by the first piece.
  std::atomic<uint64_t> count;
  std::atomic<uint32_t> kind;  // dtype << 8 | op
};

uint32_t KindOf(DType dtype, ReduceOp op) {
  return static_cast<uint32_t>(dtype) << 8 | static_cast<uint32_t>(op);
}

std::string DescribeCall(uint64_t count, uint32_t kind) {
  return fmt::format("{}[{}] {}", DTypeName(static_cast<DType>(kind >> 8)), count,
                     ReduceOpName(static_cast<ReduceOp>(kind & 0xff)));
}

struct Header {
  uint64_t magic;
  uint64_t nonce;
  uint64_t size;
  uint64_t slot_bytes;
};

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

size_t ControlBytes(int size) {
  return RoundUp(sizeof(Header) + alignof(RankControl) + sizeof(RankControl) * size, kPage);
}

// Two sets of (one slot per rank + the reduced piece); a piece is 1 MiB at most, less when
// many ranks share the host (the segment stays under ~40 MiB).
size_t SlotBytesFor(int size) {
  const size_t budget = size_t{40} << 20;
  const size_t slot = std::clamp(budget / (2 * (size + 1)), size_t{64} << 10, size_t{1} << 20);
  return slot / kPage * kPage;
}

bool Reached(uint32_t have, uint32_t want) { return static_cast<int32_t>(have - want) >= 0; }

uint32_t PhaseOf(uint64_t piece, int step) { return static_cast<uint32_t>(3 * piece + step); }

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

long Futex(std::atomic<uint32_t>* word, int op, uint32_t val, const timespec* ts) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, val, ts, nullptr, 0);
}

// False once pid has exited (gone, or a zombie its parent has not reaped yet).
bool Alive(int pid) {
  if (kill(pid, 0) != 0) return errno != ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'Z';
}

}  // namespace

// The mapping. Rank 0 creates the named segment; the name is unlinked by rank 0 once every
// rank has mapped it, so the mapping is all that is left.
struct ShmAllReduce::Segment {
  char* base = nullptr;
  size_t bytes = 0;
  std::string name;  // rank 0 only, until unlinked
  std::vector<bool> watch_pid;

  ~Segment() {
    if (base) munmap(base, bytes);
    if (!name.empty()) shm_unlink(name.c_str());
  }
  Header* header() const { return reinterpret_cast<Header*>(base); }
  RankControl* control(int r) const {
    const size_t off = RoundUp(sizeof(Header), alignof(RankControl));
    return reinterpret_cast<RankControl*>(base + off) + r;
  }

  static size_t BytesFor(int size, size_t slot) {
    return ControlBytes(size) + 2 * static_cast<size_t>(size + 1) * slot;
  }

  // Maps want bytes of fd and closes fd, whether or not the mapping worked.
  void MapAndClose(int fd, size_t want) {
    void* p = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int err = errno;
    close(fd);
    if (p == MAP_FAILED) throw Unavailable(fmt::format("mmap: {}", std::strerror(err)));
    base = static_cast<char*>(p);
    bytes = want;
  }

  static std::unique_ptr<Segment> Create(int size, size_t slot, uint64_t nonce) {
    auto seg = std::make_unique<Segment>();
    seg->name = fmt::format("/cohort-{}-{:016x}", getpid(), nonce);
    const int fd = shm_open(seg->name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
      seg->name.clear();
      throw Unavailable(fmt::format("shm_open: {}", std::strerror(errno)));
    }
    const size_t want = BytesFor(size, slot);
    // Reserve the pages now: on a full /dev/shm a plain ftruncate succeeds and the first
    // touch kills the process with SIGBUS.
    const int err = posix_fallocate(fd, 0, static_cast<off_t>(want));
    if (err != 0) {
      close(fd);
      throw Unavailable(
          fmt::format("cannot reserve {} MiB in /dev/shm: {}", want >> 20, std::strerror(err)));
    }
    seg->MapAndClose(fd, want);
    std::memset(seg->base, 0, want);  // also faults every page in now, not during a collective
    *seg->header() = Header{kMagic, nonce, static_cast<uint64_t>(size), slot};
    return seg;
  }

  static std::unique_ptr<Segment> Open(const std::string& name, uint64_t nonce, int size,
                                       size_t slot) {
    const int fd = shm_open(name.c_str(), O_RDWR, 0);
    if (fd < 0) {
      throw Unavailable(fmt::format("cannot open rank 0's segment {} ({}): not on rank 0's host",
                                    name, std::strerror(errno)));
    }
    auto seg = std::make_unique<Segment>();
    struct stat st {};
    const size_t want = BytesFor(size, slot);
    if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != want) {
      close(fd);
      throw Unavailable(fmt::format("segment {} has the wrong size", name));
    }
    seg->MapAndClose(fd, want);
    const Header h = *seg->header();
    if (h.magic != kMagic || h.nonce != nonce || h.size != static_cast<uint64_t>(size) ||
        h.slot_bytes != slot) {
      throw Unavailable(fmt::format("segment {} is not this group's", name));
    }
    for (size_t off = 0; off < want; off += kPage)
      (void)*static_cast<volatile char*>(seg->base + off);
    return seg;
  }
};

std::unique_ptr<ShmAllReduce> ShmAllReduce::Create(Store& store, const std::string& scope, int rank,
                                                   int size, Millis timeout, std::string* why_not) {
  const std::string key = scope + "/shm/";
  const size_t slot = SlotBytesFor(size);
  const bool enabled = env::kShm.Bool(true);
  std::unique_ptr<Segment> seg;
  std::string why;
  if (rank == 0) {
    const uint64_t nonce = std::random_device{}() * uint64_t{0x9E3779B97F4A7C15} ^
                           static_cast<uint64_t>(getpid()) << 32 ^ std::random_device{}();
    if (!enabled) {
      why = "COHORT_SHM=0";
    } else {
      try {
        seg = Segment::Create(size, slot, nonce);
      } catch (const std::exception& e) {
        why = e.what();
      }
    }
    store.Set(key + "name", seg ? fmt::format("{} {:x}", seg->name, nonce) : "");
  } else {
    const std::string published = store.Get(key + "name", timeout);
    const size_t sp = published.find(' ');
    if (published.empty() || sp == std::string::npos) {
      why = "rank 0 made no segment";
    } else if (!enabled) {
      why = "COHORT_SHM=0";
    } else {
      try {
        seg = Segment::Open(published.substr(0, sp),
                            std::stoull(published.substr(sp + 1), nullptr, 16), size, slot);
      } catch (const std::exception& e) {
        why = e.what();
      }
    }
  }
  if (seg) seg->control(rank)->pid.store(getpid());
  store.Set(key + "ok/" + std::to_string(rank), why.empty() ? "ok" : "no " + why);
  std::string refusal;
  for (int r = 0; r < size; ++r) {
    const std::string v = store.Get(key + "ok/" + std::to_string(r), timeout);
    if (v != "ok" && refusal.empty()) refusal = fmt::format("rank {}: {}", r, v.substr(3));
  }
  if (seg && rank == 0) {
    shm_unlink(seg->name.c_str());
    seg->name.clear();
  }
  if (!refusal.empty()) {
    if (why_not) *why_not = refusal;
    return nullptr;
  }
  // A peer's pid is watched only if this process can see it (not in another pid namespace).
  seg->watch_pid.assign(size, false);
  for (int r = 0; r < size; ++r) {
    const int pid = seg->control(r)->pid.load();
    seg->watch_pid[r] = r != rank && pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
  }
  return std::unique_ptr<ShmAllReduce>(new ShmAllReduce(rank, size, std::move(seg)));
}

ShmAllReduce::ShmAllReduce(int rank, int size, std::unique_ptr<Segment> segment)
    : rank_(rank), size_(size), segment_(std::move(segment)) {
  slot_bytes_ = segment_->header()->slot_bytes;
}

ShmAllReduce::~ShmAllReduce() = default;

char* ShmAllReduce::Slot(int set, int rank) const {
  return segment_->base + ControlBytes(size_) +
         (static_cast<size_t>(set) * (size_ + 1) + rank) * slot_bytes_;
}

char* ShmAllReduce::Result(int set) const { return Slot(set, size_); }

void ShmAllReduce::Run(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                       Millis timeout) {
  deadline_ = std::chrono::steady_clock::now() + timeout;
  RankControl* me = segment_->control(rank_);
  me->count.store(count, std::memory_order_relaxed);
  me->kind.store(KindOf(dtype, op), std::memory_order_relaxed);
  const size_t per_piece = slot_bytes_ / ElementSize(dtype);
  size_t first = 0;
  do {
    RunPiece(static_cast<const char*>(in), static_cast<char*>(out), first,
             std::min(per_piece, count - first), dtype, op, first == 0);
    first += per_piece;
  } while (first < count);
}

// Another rank's call is published before its "posted" mark of the first piece, and is not
// overwritten by its next call before every rank has marked "reduced" here, after this check.
void ShmAllReduce::CheckSameCall() const {
  const RankControl* me = segment_->control(rank_);
  for (int k = 0; k < size_; ++k) {
    const RankControl* c = segment_->control(k);
    if (c->count.load() != me->count.load() || c->kind.load() != me->kind.load()) {
      throw InvalidArgument(fmt::format(
          "ranks called different all-reduces: rank {} {}, rank {} {}; every rank must pass the "
          "same count, dtype and op",
          rank_, DescribeCall(me->count.load(), me->kind.load()), k,
          DescribeCall(c->count.load(), c->kind.load())));
    }
  }
}

// Piece g uses set g % 2. Writing set s again (piece g + 2) needs every rank done reading it
// (phase 3g+3); that is implied by the wait for every rank's "reduced" of piece g + 1, which
// comes first.
void ShmAllReduce::RunPiece(const char* in, char* out, size_t first, size_t n, DType dtype,
                            ReduceOp op, bool first_piece) {
  const uint64_t g = piece_;
  const int set = static_cast<int>(g & 1);
  const size_t esize = ElementSize(dtype);
  std::memcpy(Slot(set, rank_), in + first * esize, n * esize);
  Mark(PhaseOf(g, 1));
  WaitAll(PhaseOf(g, 1));
  if (first_piece) CheckSameCall();
  // This rank's share of the piece: elements [begin, begin + len), summed in rank order.
  const size_t base = n / size_, rem = n % size_, r = static_cast<size_t>(rank_);
  const size_t begin = r * base + std::min(r, rem), len = base + (r < rem ? 1 : 0);
  if (len > 0) {
    const size_t off = begin * esize;
    char* res = Result(set) + off;
    if (size_ == 1) {
      std::memcpy(res, Slot(set, 0) + off, len * esize);
    } else {
      ReduceInto(op, dtype, res, Slot(set, 0) + off, Slot(set, 1) + off, len);
    }
    for (int k = 2; k < size_; ++k) ReduceInto(op, dtype, res, res, Slot(set, k) + off, len);
    if (op == ReduceOp::kAvg) FinishAverage(dtype, res, len, size_);
  }
  Mark(PhaseOf(g, 2));
  WaitAll(PhaseOf(g, 2));
  std::memcpy(out + first * esize, Result(set), n * esize);
  Mark(PhaseOf(g, 3));
  ++piece_;
}

void ShmAllReduce::Mark(uint32_t phase) {
  RankControl* c = segment_->control(rank_);
  c->phase.store(phase, std::memory_order_seq_cst);
  if (c->waiters.load(std::memory_order_seq_cst) > 0)
    Futex(&c->phase, FUTEX_WAKE, INT_MAX, nullptr);
}

void ShmAllReduce::WaitAll(uint32_t phase) {
  for (int k = 0; k < size_; ++k) {
    if (k != rank_) WaitFor(k, phase);
  }
}

void ShmAllReduce::WaitFor(int peer, uint32_t phase) {
  RankControl* c = segment_->control(peer);
  for (int i = 0; i < kSpins; ++i) {
    if (Reached(c->phase.load(std::memory_order_acquire), phase)) return;
    CpuRelax();
  }
  auto next_check = std::chrono::steady_clock::now() + std::chrono::nanoseconds(kCheckNanos);
  for (;;) {
    c->waiters.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t seen = c->phase.load(std::memory_order_seq_cst);
    if (!Reached(seen, phase)) {
      const timespec ts{0, kCheckNanos};
      Futex(&c->phase, FUTEX_WAIT, seen, &ts);
    }
    c->waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (Reached(c->phase.load(std::memory_order_acquire), phase)) return;
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_check) {
      CheckPeer(peer, phase);
      next_check = now + std::chrono::nanoseconds(kCheckNanos);
    }
  }
}

void ShmAllReduce::CheckPeer(int peer, uint32_t phase) const {
  const char* step = phase % 3 == 1 ? "to post its data" : "to finish reducing its share";
  if (segment_->watch_pid[peer]) {
    const int pid = segment_->control(peer)->pid.load();
    if (!Alive(pid)) {
      throw PeerFailure(
          fmt::format("rank {} (pid {}) exited while this rank waited for it {} "
                      "(shared-memory all-reduce)",
                      peer, pid, step));
    }
  }
  if (std::chrono::steady_clock::now() >= deadline_) {
    throw Timeout(fmt::format(
        "rank {} did not arrive in time: this rank waited for it {} (shared-memory all-reduce); "
        "it is hung or stopped; raise COHORT_TIMEOUT if it is only slow",
        peer, step));
  }
}

}  // namespace cohort::collectives
