#include "collectives/op_counters.h"

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>

#include "common/log.h"

namespace cohort::collectives {
namespace {

constexpr int kMaxBackends = 8;
constexpr int kOpTypes = static_cast<int>(OpType::kBarrier) + 1;

struct Cell {
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> nanos{0};
};

struct Slot {
  char name[32] = {};
  std::array<Cell, kOpTypes> cells;
};

// Slots are claimed under claim_mu and published by incrementing used; a slot's name never
// changes once published, so readers scan [0, used) without a lock.
struct Table {
  std::array<Slot, kMaxBackends> slots;
  std::atomic<int> used{0};
  std::mutex claim_mu;
  bool warned = false;
};

Table& GetTable() {
  static Table* table = new Table();  // never destroyed: ops may finish during exit
  return *table;
}

Slot* Find(Table& t, const char* backend, int used) {
  for (int i = 0; i < used; ++i) {
    if (std::strcmp(t.slots[i].name, backend) == 0) return &t.slots[i];
  }
  return nullptr;
}

Slot* SlotFor(const char* backend) {
  Table& t = GetTable();
  if (Slot* s = Find(t, backend, t.used.load(std::memory_order_acquire))) return s;
  std::lock_guard<std::mutex> lock(t.claim_mu);
  const int used = t.used.load(std::memory_order_relaxed);
  if (Slot* s = Find(t, backend, used)) return s;
  if (used == kMaxBackends) {
    if (!t.warned)
      COHORT_WARN(kColl, "op counters: more than {} backends, {} not counted", kMaxBackends,
                  backend);
    t.warned = true;
    return nullptr;
  }
  std::strncpy(t.slots[used].name, backend, sizeof(t.slots[used].name) - 1);
  t.used.store(used + 1, std::memory_order_release);
  return &t.slots[used];
}

std::atomic<int64_t> g_last_heartbeat_ns{0};  // steady_clock; 0: none yet

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void OpCounters::Record(const char* backend, OpType type, uint64_t bytes,
                        std::chrono::nanoseconds duration) {
  // Backend() returns a string literal, so the same pointer means the same backend: a thread
  // that keeps using one backend skips the name comparison.
  thread_local const char* last_name = nullptr;
  thread_local Slot* last_slot = nullptr;
  if (backend != last_name) {
    last_slot = SlotFor(backend);
    last_name = backend;
  }
  Slot* slot = last_slot;
  if (!slot) return;
  Cell& c = slot->cells[static_cast<int>(type)];
  c.ops.fetch_add(1, std::memory_order_relaxed);
  c.bytes.fetch_add(bytes, std::memory_order_relaxed);
  c.nanos.fetch_add(static_cast<uint64_t>(duration.count()), std::memory_order_relaxed);
}

std::vector<OpTotals> OpCounters::Snapshot() {
  Table& t = GetTable();
  std::vector<OpTotals> out;
  const int used = t.used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    for (int k = 0; k < kOpTypes; ++k) {
      const Cell& c = t.slots[i].cells[k];
      const uint64_t ops = c.ops.load(std::memory_order_relaxed);
      if (ops == 0) continue;
      out.push_back({t.slots[i].name, static_cast<OpType>(k), ops,
                     c.bytes.load(std::memory_order_relaxed),
                     static_cast<double>(c.nanos.load(std::memory_order_relaxed)) * 1e-9});
    }
  }
  return out;
}

void OpCounters::RecordHeartbeat() {
  g_last_heartbeat_ns.store(NowNs(), std::memory_order_relaxed);
}

double OpCounters::SecondsSinceHeartbeat() {
  const int64_t last = g_last_heartbeat_ns.load(std::memory_order_relaxed);
  if (last == 0) return -1;
  return static_cast<double>(NowNs() - last) * 1e-9;
}

}  // namespace cohort::collectives
