// A store whose blocking calls give up as soon as another process sets an abort key: the ranks
// starting a backend under COHORT_BACKEND=auto wait on each other's addresses, and when one rank
// cannot start it, the others must hear so now (and fall back with it), not at their timeout.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "collectives/store/store.h"
#include "common/error.h"

namespace cohort::collectives {

// What a wait throws when the abort key appears; what() quotes the key's value (the reason).
class StartAborted : public Unavailable {
 public:
  using Unavailable::Unavailable;
};

class AbortableStore : public Store {
 public:
  // Forwards to inner. Until Disarm(), Get, Wait and Join wait in slices of `slice` and throw
  // StartAborted between two when abort_key exists on inner. Throws InvalidArgument on null.
  AbortableStore(std::shared_ptr<Store> inner, std::string abort_key, Millis slice = Millis(50));

  // From now on every call is the inner store's (the start succeeded on every rank).
  void Disarm() { armed_.store(false); }

  void Set(const std::string& key, const std::string& value) override;
  std::string Get(const std::string& key, Millis timeout) override;
  int64_t Add(const std::string& key, int64_t delta) override;
  std::string CompareSet(const std::string& key, const std::string& expected,
                         const std::string& desired) override;
  bool Delete(const std::string& key) override;
  void Wait(const std::vector<std::string>& keys, Millis timeout) override;
  std::map<std::string, std::string> List(const std::string& prefix) override;
  // While armed, Store's own Join (inner's Arrive, then a Get), so that its wait is sliced too;
  // then inner's.
  bool Join(const std::string& prefix, int rank, int size, const std::string& nonce,
            Millis timeout) override;
  bool Arrive(const std::string& prefix, int rank, int size, const std::string& nonce) override;

 private:
  // Throws StartAborted when armed and the abort key is set.
  void CheckAbort();
  // Runs wait(slice) until it returns, checking the abort key after every slice that timed out;
  // the last slice ends at timeout, and its Timeout is the caller's.
  template <typename F>
  auto Sliced(Millis timeout, F&& wait);

  const std::shared_ptr<Store> inner_;
  const std::string abort_key_;
  const Millis slice_;
  std::atomic<bool> armed_{true};
};

}  // namespace cohort::collectives
