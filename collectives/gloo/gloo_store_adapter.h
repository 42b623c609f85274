// Presents a cohort Store to Gloo's rendezvous (gloo::rendezvous::Store), so Gloo's TCP pairs
// find each other through our token-checked store instead of Gloo's own file or Redis stores.
#pragma once

#include <gloo/rendezvous/store.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "collectives/store/store.h"

namespace cohort::collectives {

class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  // Keys are written under prefix; waits without their own timeout use wait_timeout.
  GlooStoreAdapter(std::shared_ptr<collectives::Store> store, std::string prefix,
                   std::chrono::milliseconds wait_timeout);

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  std::vector<std::string> Scoped(const std::vector<std::string>& keys) const;

  std::shared_ptr<collectives::Store> store_;
  std::string prefix_;
  std::chrono::milliseconds wait_timeout_;
};

}  // namespace cohort::collectives
