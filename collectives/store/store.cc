#include "collectives/store/store.h"

namespace cohort::collectives {

bool Store::Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                 Millis timeout) {
  if (!ArriveAt(*this, prefix, rank, size, nonce)) return false;
  Get(prefix + "all", timeout);
  return true;
}

}  // namespace cohort::collectives
