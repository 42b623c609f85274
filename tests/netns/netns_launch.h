// One `cohort launch` per namespace node: the flags every node of a job shares, the env a clean
// test needs, and node 0's address as the rendezvous endpoint.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/util/launch_env.h"
#include "tests/util/netns.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {

using Env = std::map<std::string, std::string>;

// The launcher's test environment (LauncherTestEnv) with this harness's token and run id.
inline Env CleanLaunchEnv(const Env& extra) {
  return LauncherTestEnv(
      {{"COHORT_LOG_LEVEL", "warn"}, {"COHORT_TOKEN", "netns-t0k"}, {"COHORT_RUN_ID", "netns-job"}},
      extra);
}

inline int CountOf(const std::string& s, const std::string& text) {
  int n = 0;
  for (size_t at = s.find(text); at != std::string::npos; at = s.find(text, at + 1)) ++n;
  return n;
}

class NodeLaunch {
 public:
  // flags: shared by every node (--nproc-per-node 2 ...); --nnodes, --node-rank and
  // --rdzv-endpoint (node 0's address, port 29500: each node has its ports to itself) are added.
  NodeLaunch(const NetnsCluster& cluster, std::vector<std::string> flags, Env env = {})
      : cluster_(cluster),
        flags_(std::move(flags)),
        env_(CleanLaunchEnv(env)),
        endpoint_(cluster.node(0).address + ":29500") {}

  // Points every node at another rendezvous (etcd's host:port, say).
  void set_endpoint(std::string endpoint) { endpoint_ = std::move(endpoint); }

  std::unique_ptr<Subprocess> Start(int node, const std::vector<std::string>& program) const {
    return StartAs(node, node, program);
  }
  // The launcher on `node` claiming node rank `rank`.
  std::unique_ptr<Subprocess> StartAs(int node, int rank,
                                      const std::vector<std::string>& program) const {
    std::vector<std::string> argv = {BinPath("cohort"), "launch", "--nnodes",
                                     std::to_string(cluster_.size()), "--node-rank",
                                     std::to_string(rank), "--rdzv-endpoint", endpoint_};
    argv.insert(argv.end(), flags_.begin(), flags_.end());
    argv.push_back("--");
    argv.insert(argv.end(), program.begin(), program.end());
    return cluster_.Start(node, argv, env_);
  }

  // Starts every node, then waits for all with one deadline.
  std::vector<ProcessResult> RunAll(const std::vector<std::string>& program,
                                    std::chrono::milliseconds timeout) const {
    std::vector<std::unique_ptr<Subprocess>> nodes;
    for (int i = 0; i < cluster_.size(); ++i) nodes.push_back(Start(i, program));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<ProcessResult> results;
    for (auto& p : nodes) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      results.push_back(p->Wait(std::max(left, std::chrono::milliseconds(1))));
    }
    return results;
  }

 private:
  const NetnsCluster& cluster_;
  std::vector<std::string> flags_;
  Env env_;
  std::string endpoint_;
};

// The matrix on every dtype would take minutes over TCP; these cover reduce, gather and
// broadcast paths at sizes that take one and several messages.
inline const std::vector<std::string> kMatrix = {
    BinPath("collective_worker"), "--backend", "gloo", "--mode", "matrix", "--counts",
    "0,7,1031", "--dtypes", "f32,i64"};

// A long loop of 4 MiB all-reduces (no victim): runs until a fault is injected from outside.
inline const std::vector<std::string> kLoop = {
    BinPath("collective_worker"), "--backend", "gloo", "--mode", "kill", "--victim", "-1",
    "--at", "100000"};

// Every node exited 0 and each of its two workers printed its matrix line with 0 failures.
// Skips the test, with the reason, where this machine cannot make network namespaces.
class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = NetnsCluster::UnavailableReason(); !why.empty()) {
      GTEST_SKIP() << "network namespaces unavailable: " << why;
    }
  }
};

// Node `node`'s output holds the matrix line ("rank R of W (backend): N checks, 0 failed") of
// every rank in ranks, and the node exited 0.
inline void ExpectRanksPassed(const ProcessResult& r, int node, const std::vector<int>& ranks,
                              int world, const std::string& backend) {
  EXPECT_EQ(r.exit_code, 0) << "node " << node << ":\n" << r.output;
  for (int rank : ranks) {
    const std::string line =
        fmt::format("[rank {}] rank {} of {} ({}): ", rank, rank, world, backend);
    const size_t at = r.output.find(line);
    ASSERT_NE(at, std::string::npos) << r.output;
    EXPECT_NE(r.output.substr(at + line.size(), 40).find(" checks, 0 failed"), std::string::npos)
        << r.output.substr(at, 80);
  }
}

// Every node (2 gloo ranks each) passed the matrix.
inline void ExpectMatrixPassed(const std::vector<ProcessResult>& r, int world) {
  for (size_t n = 0; n < r.size(); ++n) {
    const int first = static_cast<int>(n) * 2;
    ExpectRanksPassed(r[n], static_cast<int>(n), {first, first + 1}, world, "gloo");
  }
}

}  // namespace cohort::testing
