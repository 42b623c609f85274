#include "collectives/shm/shm_segment.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/futex.h>
#include <sched.h>
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
#include <thread>
#include <vector>

#include "collectives/store/store.h"
#include "common/env.h"
#include "common/error.h"
#include "common/spin.h"

namespace cohort::collectives {
namespace {

constexpr uint64_t kMagic = 0x32'4d'48'53'54'48'4f'43;  // "COHTSHM2"
constexpr size_t kPage = 4096;
// How long a waiting rank polls before it sleeps on the futex. A sleep and wake-up costs tens
// of microseconds; a small collective takes one or two. When the ranks outnumber the cores the
// poll yields the core every time, so the rank waited for gets it.
constexpr auto kSpinBudget = std::chrono::microseconds(50);
constexpr auto kYieldBudget = std::chrono::microseconds(200);
// How often a sleeping rank wakes up to check that the rank it waits for is alive.
constexpr long kCheckNanos = 50'000'000;

// The call a rank is in, published per set (see the reuse rule in the header).
struct PublishedCall {
  std::atomic<uint64_t> count;
  std::atomic<uint32_t> what;  // type << 16 | dtype << 8, then arg in its own word
  std::atomic<uint32_t> arg;
};

struct alignas(128) RankControl {
  std::atomic<uint32_t> step;     // the futex word: Syncs this rank has arrived at
  std::atomic<uint32_t> waiters;  // ranks sleeping on step; Sync wakes them only if > 0
  std::atomic<int32_t> pid;
  PublishedCall call[2];
};

struct Header {
  uint64_t magic;
  uint64_t nonce;
  uint64_t size;
  uint64_t slot_bytes;
};

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

size_t ControlBytes(int size) {
  return RoundUp(RoundUp(sizeof(Header), alignof(RankControl)) + sizeof(RankControl) * size, kPage);
}

// A slot is 256 KiB at most: a piece's slots and result stay in the cores' caches, and a
// pipeline of small pieces keeps every rank busy. Less when many ranks share the host (the
// segment stays under ~40 MiB).
size_t SlotBytesFor(int size) {
  const size_t budget = size_t{40} << 20;
  const size_t slot = std::clamp(budget / (2 * (size + 1)), size_t{64} << 10, size_t{256} << 10);
  return slot / kPage * kPage;
}

bool Reached(uint32_t have, uint32_t want) { return static_cast<int32_t>(have - want) >= 0; }

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

const char* CallName(OpType type, bool plural) {
  switch (type) {
    case OpType::kAllReduce:
      return plural ? "all-reduces" : "all-reduce";
    case OpType::kBroadcast:
      return plural ? "broadcasts" : "broadcast";
    case OpType::kAllGather:
      return plural ? "all-gathers" : "all-gather";
    case OpType::kReduceScatter:
      return plural ? "reduce-scatters" : "reduce-scatter";
    default:
      return plural ? "collectives" : "collective";
  }
}

ShmCall Load(const PublishedCall& c) {
  const uint32_t what = c.what.load();
  return ShmCall{static_cast<OpType>(what >> 16), c.count.load(),
                 static_cast<DType>((what >> 8) & 0xff), c.arg.load()};
}

bool operator==(const ShmCall& a, const ShmCall& b) {
  return a.type == b.type && a.count == b.count && a.dtype == b.dtype && a.arg == b.arg;
}

// "f32[7] sum", "f32[7] from rank 0", "f32[7]"; with the op type in front when with_type.
std::string Describe(const ShmCall& c, bool with_type) {
  std::string s = with_type ? std::string(CallName(c.type, false)) + " " : "";
  s += fmt::format("{}[{}]", DTypeName(c.dtype), c.count);
  if (c.type == OpType::kAllReduce || c.type == OpType::kReduceScatter)
    s += std::string(" ") + ReduceOpName(static_cast<ReduceOp>(c.arg));
  if (c.type == OpType::kBroadcast) s += fmt::format(" from rank {}", c.arg);
  return s;
}

}  // namespace

// The mapping. Rank 0 creates the named segment; the name is unlinked by rank 0 once every
// rank has mapped it, so the mapping is all that is left.
struct ShmSegment::Mapping {
  char* base = nullptr;
  size_t bytes = 0;
  std::string name;  // rank 0 only, until unlinked
  std::vector<bool> watch_pid;

  ~Mapping() {
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

  static std::unique_ptr<Mapping> Create(int size, size_t slot, uint64_t nonce) {
    auto seg = std::make_unique<Mapping>();
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

  static std::unique_ptr<Mapping> Open(const std::string& name, uint64_t nonce, int size,
                                       size_t slot) {
    const int fd = shm_open(name.c_str(), O_RDWR, 0);
    if (fd < 0) {
      throw Unavailable(fmt::format("cannot open rank 0's segment {} ({}): not on rank 0's host",
                                    name, std::strerror(errno)));
    }
    auto seg = std::make_unique<Mapping>();
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

std::unique_ptr<ShmSegment> ShmSegment::Create(Store& store, const std::string& scope, int rank,
                                               int size, Millis timeout, std::string* why_not) {
  const std::string key = scope + "/shm/";
  const size_t slot = SlotBytesFor(size);
  const bool enabled = env::kShm.Bool(true);
  std::unique_ptr<Mapping> seg;
  std::string why;
  if (rank == 0) {
    const uint64_t nonce = std::random_device{}() * uint64_t{0x9E3779B97F4A7C15} ^
                           static_cast<uint64_t>(getpid()) << 32 ^ std::random_device{}();
    if (!enabled) {
      why = "COHORT_SHM=0";
    } else {
      try {
        seg = Mapping::Create(size, slot, nonce);
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
        seg = Mapping::Open(published.substr(0, sp),
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
  return std::unique_ptr<ShmSegment>(new ShmSegment(rank, size, std::move(seg)));
}

ShmSegment::ShmSegment(int rank, int size, std::unique_ptr<Mapping> mapping)
    : rank_(rank), size_(size), map_(std::move(mapping)) {
  slot_bytes_ = map_->header()->slot_bytes;
  oversubscribed_ =
      static_cast<unsigned>(size_) > std::max(1u, std::thread::hardware_concurrency());
}

ShmSegment::~ShmSegment() = default;

char* ShmSegment::Slot(int index) const {
  return map_->base + ControlBytes(size_) +
         (static_cast<size_t>(set()) * (size_ + 1) + index) * slot_bytes_;
}

void ShmSegment::Begin(const ShmCall& call, Millis timeout) {
  deadline_ = std::chrono::steady_clock::now() + timeout;
  PublishedCall& c = map_->control(rank_)->call[set()];
  c.count.store(call.count, std::memory_order_relaxed);
  c.what.store(static_cast<uint32_t>(call.type) << 16 | static_cast<uint32_t>(call.dtype) << 8,
               std::memory_order_relaxed);
  c.arg.store(call.arg, std::memory_order_relaxed);
}

void ShmSegment::CheckSameCall() const {
  const ShmCall mine = Load(map_->control(rank_)->call[set()]);
  for (int k = 0; k < size_; ++k) {
    const ShmCall theirs = Load(map_->control(k)->call[set()]);
    if (theirs == mine) continue;
    const bool same_type = theirs.type == mine.type;
    throw InvalidArgument(
        fmt::format("ranks called different {}: rank {} {}, rank {} {}; {}",
                    same_type ? CallName(mine.type, true) : "collectives", rank_,
                    Describe(mine, !same_type), k, Describe(theirs, !same_type),
                    same_type ? "every rank must pass the same count, dtype and op"
                              : "every rank must call the same collectives in the same order"));
  }
}

void ShmSegment::Sync(const char* what) {
  const uint32_t step = ++step_;
  RankControl* me = map_->control(rank_);
  me->step.store(step, std::memory_order_seq_cst);
  if (me->waiters.load(std::memory_order_seq_cst) > 0)
    Futex(&me->step, FUTEX_WAKE, INT_MAX, nullptr);
  for (int k = 0; k < size_; ++k) {
    if (k != rank_) WaitFor(k, step, what);
  }
}

bool ShmSegment::SpinFor(int peer, uint32_t step) const {
  const std::atomic<uint32_t>& word = map_->control(peer)->step;
  auto done = [&] { return Reached(word.load(std::memory_order_acquire), step); };
  if (!oversubscribed_) return SpinUntil(done, kSpinBudget);
  const auto end = std::chrono::steady_clock::now() + kYieldBudget;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    sched_yield();
  }
  return true;
}

void ShmSegment::WaitFor(int peer, uint32_t step, const char* what) {
  if (SpinFor(peer, step)) return;
  RankControl* c = map_->control(peer);
  auto next_check = std::chrono::steady_clock::now() + std::chrono::nanoseconds(kCheckNanos);
  for (;;) {
    c->waiters.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t seen = c->step.load(std::memory_order_seq_cst);
    if (!Reached(seen, step)) {
      const timespec ts{0, kCheckNanos};
      Futex(&c->step, FUTEX_WAIT, seen, &ts);
    }
    c->waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (Reached(c->step.load(std::memory_order_acquire), step)) return;
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_check) {
      CheckPeer(peer, what);
      next_check = now + std::chrono::nanoseconds(kCheckNanos);
    }
  }
}

void ShmSegment::CheckPeer(int peer, const char* what) const {
  if (map_->watch_pid[peer]) {
    const int pid = map_->control(peer)->pid.load();
    if (!Alive(pid)) {
      throw PeerFailure(fmt::format(
          "rank {} (pid {}) exited while this rank waited for it {} (shared-memory collective)",
          peer, pid, what));
    }
  }
  if (std::chrono::steady_clock::now() >= deadline_) {
    throw Timeout(fmt::format(
        "rank {} did not arrive in time: this rank waited for it {} (shared-memory collective); "
        "it is hung or stopped; raise COHORT_TIMEOUT if it is only slow",
        peer, what));
  }
}

}  // namespace cohort::collectives
