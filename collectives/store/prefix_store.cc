#include "collectives/store/prefix_store.h"

#include "common/error.h"

namespace cohort::collectives {

PrefixStore::PrefixStore(std::shared_ptr<Store> inner, std::string prefix)
    : inner_(std::move(inner)), prefix_(std::move(prefix) + "/") {
  if (!inner_) throw InvalidArgument("PrefixStore needs a store, got a null pointer");
}

void PrefixStore::Set(const std::string& key, const std::string& value) {
  inner_->Set(Scoped(key), value);
}

std::string PrefixStore::Get(const std::string& key, Millis timeout) {
  return inner_->Get(Scoped(key), timeout);
}

int64_t PrefixStore::Add(const std::string& key, int64_t delta) {
  return inner_->Add(Scoped(key), delta);
}

std::string PrefixStore::CompareSet(const std::string& key, const std::string& expected,
                                    const std::string& desired) {
  return inner_->CompareSet(Scoped(key), expected, desired);
}

bool PrefixStore::Delete(const std::string& key) { return inner_->Delete(Scoped(key)); }

void PrefixStore::Wait(const std::vector<std::string>& keys, Millis timeout) {
  std::vector<std::string> scoped;
  scoped.reserve(keys.size());
  for (const auto& key : keys) scoped.push_back(Scoped(key));
  inner_->Wait(scoped, timeout);
}

std::map<std::string, std::string> PrefixStore::List(const std::string& prefix) {
  std::map<std::string, std::string> out;
  for (auto& [key, value] : inner_->List(Scoped(prefix))) {
    out.emplace_hint(out.end(), key.substr(prefix_.size()), std::move(value));
  }
  return out;
}

bool PrefixStore::Arrive(const std::string& prefix, int rank, int size, const std::string& nonce) {
  return inner_->Arrive(Scoped(prefix), rank, size, nonce);
}

bool PrefixStore::Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                       Millis timeout) {
  return inner_->Join(Scoped(prefix), rank, size, nonce, timeout);
}

}  // namespace cohort::collectives
