// Scopes the keys of another store: PrefixStore(store, "run7/restart0") reads and writes
// "run7/restart0/<key>", so runs and restarts sharing one store never see each other's keys.
#pragma once

#include <memory>

#include "collectives/store/store.h"

namespace cohort::collectives {

class PrefixStore : public Store {
 public:
  // Every key k becomes prefix + "/" + k in `inner`. Throws InvalidArgument on a null store.
  PrefixStore(std::shared_ptr<Store> inner, std::string prefix);

  void Set(const std::string& key, const std::string& value) override;
  std::string Get(const std::string& key, Millis timeout) override;
  int64_t Add(const std::string& key, int64_t delta) override;
  std::string CompareSet(const std::string& key, const std::string& expected,
                         const std::string& desired) override;
  bool Delete(const std::string& key) override;
  void Wait(const std::vector<std::string>& keys, Millis timeout) override;
  // Keys come back without this store's prefix.
  std::map<std::string, std::string> List(const std::string& prefix) override;
  // The inner store's Join, scoped (so a one-call Join stays one call).
  bool Arrive(const std::string& prefix, int rank, int size, const std::string& nonce) override;
  bool Join(const std::string& prefix, int rank, int size, const std::string& nonce,
            Millis timeout) override;

  // The prefix with its trailing "/".
  const std::string& prefix() const { return prefix_; }
  // The store underneath.
  const std::shared_ptr<Store>& inner() const { return inner_; }

 private:
  std::string Scoped(const std::string& key) const { return prefix_ + key; }

  std::shared_ptr<Store> inner_;
  std::string prefix_;
};

}  // namespace cohort::collectives
