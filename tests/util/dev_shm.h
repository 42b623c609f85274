// Counts the entries of /dev/shm whose names start with a prefix: tests check that shared memory
// segments (collectives/shm/) leave no name behind.
#pragma once

#include <dirent.h>

#include <string>

namespace cohort::testing {

inline int CountDevShmEntries(const std::string& prefix) {
  int n = 0;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) n += std::string(e->d_name).rfind(prefix, 0) == 0;
    closedir(d);
  }
  return n;
}

}  // namespace cohort::testing
