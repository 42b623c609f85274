#include "common/heap.h"

#include <malloc.h>

namespace cohort {

bool KeepFreedMemory() {
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
}

}  // namespace cohort
