#include "collectives/store/store.h"

namespace cohort::collectives {

bool Store::Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                 Millis timeout) {
  if (!Arrive(prefix, rank, size, nonce)) return false;
  Get(prefix + "all", timeout);
  return true;
}

bool Store::Arrive(const std::string& prefix, int rank, int size, const std::string& nonce) {
  return ArriveAt(*this, prefix, rank, size, nonce);
}

}  // namespace cohort::collectives
