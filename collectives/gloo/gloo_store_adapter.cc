#include "collectives/gloo/gloo_store_adapter.h"

namespace cohort::collectives {

GlooStoreAdapter::GlooStoreAdapter(std::shared_ptr<collectives::Store> store, std::string prefix,
                                   std::chrono::milliseconds wait_timeout)
    : store_(std::move(store)), prefix_(std::move(prefix)), wait_timeout_(wait_timeout) {}

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  store_->Set(prefix_ + key, std::string(data.begin(), data.end()));
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  std::string v = store_->Get(prefix_ + key, wait_timeout_);
  return std::vector<char>(v.begin(), v.end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) {
  store_->Wait(Scoped(keys), wait_timeout_);
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  // Gloo passes its context timeout here; the rendezvous deadline is ours to set.
  store_->Wait(Scoped(keys), std::max(timeout, wait_timeout_));
}

std::vector<std::string> GlooStoreAdapter::Scoped(const std::vector<std::string>& keys) const {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(prefix_ + k);
  return out;
}

}  // namespace cohort::collectives
