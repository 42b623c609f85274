#include "collectives/hier/host_groups.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "collectives/store/store.h"
#include "common/env.h"
#include "common/error.h"
#include "common/net.h"

namespace cohort::collectives {
namespace {

std::string BootId() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(f, id);
  return id;
}

// Rank 0's plan from every rank's claim ("h<key>" or "off"): "+<host of rank 0>,..." or
// "-<why not>".
std::string MakePlan(const std::map<std::string, std::string>& claims, const std::string& prefix,
                     int size) {
  std::map<std::string, int> host_ids;
  std::vector<int> host_of(size), count;
  for (int r = 0; r < size; ++r) {
    auto it = claims.find(prefix + std::to_string(r));
    if (it == claims.end()) throw Internal(fmt::format("hier: rank {}'s host key is missing", r));
    if (it->second == "off") return fmt::format("-COHORT_HIER=0 on rank {}", r);
    auto [h, fresh] = host_ids.emplace(it->second, static_cast<int>(host_ids.size()));
    if (fresh) count.push_back(0);
    host_of[r] = h->second;
    ++count[h->second];
  }
  if (count.size() < 2) return "-every rank is on one host";
  if (*std::max_element(count.begin(), count.end()) < 2) return "-one rank per host";
  return "+" + fmt::format("{}", fmt::join(host_of, ","));
}

}  // namespace

std::string HostKey() {
  if (auto k = env::kHierHost.Get(); k && !k->empty()) return *k;
  struct stat st {};
  const unsigned long long shm_dev =
      stat("/dev/shm", &st) == 0 ? static_cast<unsigned long long>(st.st_dev) : 0;
  return fmt::format("{}/{}/{:x}", net::Hostname(), BootId(), shm_dev);
}

int HostGroups::hosts() const {
  return host_of.empty() ? 0 : *std::max_element(host_of.begin(), host_of.end()) + 1;
}

std::vector<int> HostGroups::RanksOf(int h) const {
  std::vector<int> ranks;
  for (int r = 0; r < static_cast<int>(host_of.size()); ++r) {
    if (host_of[r] == h) ranks.push_back(r);
  }
  return ranks;
}

std::vector<int> HostGroups::Leaders() const {
  std::vector<int> leaders(hosts(), -1);
  for (int r = static_cast<int>(host_of.size()) - 1; r >= 0; --r) leaders[host_of[r]] = r;
  return leaders;
}

HostGroups GroupByHost(Store& store, const std::string& prefix, int rank, int size, bool enabled,
                       std::chrono::milliseconds timeout) {
  const std::string hosts = prefix + "hosts/";
  const std::string claim = enabled ? "h" + HostKey() : "off";
  bool joined;
  try {
    joined = store.Join(hosts, rank, size, claim, timeout);
  } catch (const cohort::Timeout& e) {
    throw cohort::Timeout(fmt::format("hier: grouping ranks by host: {}", e.what()));
  }
  if (!joined) {
    throw InvalidArgument(fmt::format(
        "hier: rank {} already grouped under '{}': an earlier job used the same run id; give "
        "each job its own COHORT_RUN_ID, or restart the store",
        rank, hosts));
  }
  std::string plan;
  if (rank == 0) {
    plan = MakePlan(store.List(hosts), hosts, size);
    store.Set(prefix + "plan", plan);
  } else {
    plan = store.Get(prefix + "plan", timeout);
  }
  HostGroups g;
  if (plan.empty() || plan[0] != '+') {
    g.why_not = plan.empty() ? "no plan" : plan.substr(1);
    return g;
  }
  std::stringstream in(plan.substr(1));
  for (std::string id; std::getline(in, id, ',');) g.host_of.push_back(std::stoi(id));
  if (static_cast<int>(g.host_of.size()) != size) {
    throw Internal(fmt::format("hier: the plan has {} ranks, not {}", g.host_of.size(), size));
  }
  return g;
}

}  // namespace cohort::collectives
