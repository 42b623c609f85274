// Which ranks share a host: the grouping the hierarchical collectives (hier_collectives.h) build on.
//
// A host is what shared memory can span: the host key is the hostname, the kernel's boot id and
// the device of /dev/shm, so two network-namespace "nodes" with their own hostname and their own
// /dev/shm tmpfs on one machine are two hosts, and two machines that happen to share a hostname
// are too. COHORT_HIER_HOST replaces the key (tests make several "hosts" on one machine with it).
//
// Store work is O(1) calls per rank: every rank claims "<prefix>hosts/<rank>" with its key in one
// Store::Join (which also waits for all), rank 0 reads them back with one List and publishes the
// plan, every other rank reads the plan with one Get.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace cohort::collectives {

class Store;

// This process's host key (see above).
std::string HostKey();

struct HostGroups {
  // Empty when the ranks are grouped; else why the hierarchical path is not used (one host,
  // one rank per host, COHORT_HIER=0 on some rank). The same on every rank.
  std::string why_not;
  // host_of[r]: the host of rank r, hosts numbered in the order of their lowest rank.
  std::vector<int> host_of;

  int hosts() const;
  // The ranks of host h, ascending; the first is its leader.
  std::vector<int> RanksOf(int h) const;
  // The leader (lowest rank) of every host, by host number.
  std::vector<int> Leaders() const;
};

// Collective over store: every rank of the size calls it with the same prefix. enabled: this
// rank's COHORT_HIER; one rank with it off turns the grouping off everywhere. Throws Timeout
// naming the ranks that never arrived.
HostGroups GroupByHost(Store& store, const std::string& prefix, int rank, int size, bool enabled,
                       std::chrono::milliseconds timeout);

}  // namespace cohort::collectives
