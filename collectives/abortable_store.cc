#include "collectives/abortable_store.h"

#include <fmt/format.h>

#include <algorithm>

#include "collectives/store/store_errors.h"

namespace cohort::collectives {

using Clock = std::chrono::steady_clock;

AbortableStore::AbortableStore(std::shared_ptr<Store> inner, std::string abort_key, Millis slice)
    : inner_(std::move(inner)), abort_key_(std::move(abort_key)), slice_(slice) {
  if (!inner_) throw InvalidArgument("AbortableStore needs a store, got a null pointer");
}

void AbortableStore::CheckAbort() {
  if (!armed_.load()) return;
  const auto found = inner_->List(abort_key_);
  const auto it = found.find(abort_key_);
  if (it != found.end()) throw StartAborted(it->second);
}

template <typename F>
auto AbortableStore::Sliced(Millis timeout, F&& wait) {
  const auto deadline = Clock::now() + std::max(timeout, Millis(0));
  while (true) {
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (!armed_.load() || left <= slice_) return wait(std::max(left, Millis(0)));
    try {
      return wait(slice_);
    } catch (const Timeout&) {
      CheckAbort();
    }
  }
}

void AbortableStore::Set(const std::string& key, const std::string& value) {
  inner_->Set(key, value);
}

std::string AbortableStore::Get(const std::string& key, Millis timeout) {
  if (timeout <= Millis(0)) return inner_->Get(key, timeout);
  try {
    return Sliced(timeout, [&](Millis t) { return inner_->Get(key, t); });
  } catch (const StartAborted&) {
    throw;
  } catch (const Timeout&) {
    // The whole wait the caller asked for, not the clock: the slices' deadlines can end it a
    // fraction of a millisecond early, which read "timed out after 199 ms" for 200 ms.
    ThrowGetTimeout("store", key, timeout);
  }
}

void AbortableStore::Wait(const std::vector<std::string>& keys, Millis timeout) {
  if (timeout <= Millis(0)) return inner_->Wait(keys, timeout);
  try {
    Sliced(timeout, [&](Millis t) { inner_->Wait(keys, t); });
  } catch (const StartAborted&) {
    throw;
  } catch (const Timeout&) {
    std::vector<std::string> missing;
    for (const auto& k : keys) {
      if (!inner_->List(k).count(k)) missing.push_back(k);
    }
    ThrowWaitTimeout("store", missing, keys.size(), timeout);
  }
}

int64_t AbortableStore::Add(const std::string& key, int64_t delta) {
  return inner_->Add(key, delta);
}

std::string AbortableStore::CompareSet(const std::string& key, const std::string& expected,
                                       const std::string& desired) {
  return inner_->CompareSet(key, expected, desired);
}

bool AbortableStore::Delete(const std::string& key) { return inner_->Delete(key); }

std::map<std::string, std::string> AbortableStore::List(const std::string& prefix) {
  return inner_->List(prefix);
}

bool AbortableStore::Arrive(const std::string& prefix, int rank, int size,
                            const std::string& nonce) {
  return inner_->Arrive(prefix, rank, size, nonce);
}

bool AbortableStore::Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                          Millis timeout) {
  if (!armed_.load()) return inner_->Join(prefix, rank, size, nonce, timeout);
  return Store::Join(prefix, rank, size, nonce, timeout);
}

}  // namespace cohort::collectives
