// The namespace harness itself: nodes reach each other by address and by name, each has its own
// hostname and /dev/shm, a cut link stops traffic, and everything is gone afterwards (also what a
// killed test process left behind).
#include "tests/util/netns.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <sys/wait.h>

#include <filesystem>
#include <thread>

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

#define SKIP_WITHOUT_NETNS()                                                 \
  do {                                                                       \
    if (auto why = NetnsCluster::UnavailableReason(); !why.empty()) {        \
      GTEST_SKIP() << "network namespaces unavailable: " << why;             \
    }                                                                        \
  } while (0)

ProcessResult RunIn(const NetnsCluster& c, int i, std::vector<std::string> argv) {
  return c.Start(i, argv)->Wait(20s);
}

bool NamespaceExists(const std::string& name) {
  return RunIp({"netns", "list"}).find(name) != std::string::npos;
}

// Whether a TCP connection from node `from` to host:port succeeds within 2 s (bash's /dev/tcp).
bool Connects(const NetnsCluster& c, int from, const std::string& host, int port) {
  auto r = RunIn(c, from, {"/usr/bin/timeout", "2", "/bin/bash", "-c",
                           fmt::format("exec 3<>/dev/tcp/{}/{}", host, port)});
  return r.exit_code == 0;
}

// A listener in node i on port 29500 (a standalone `cohort store`).
std::unique_ptr<Subprocess> Listen(const NetnsCluster& c, int i) {
  auto p = c.Start(i, {BinPath("cohort"), "store", "--host", "0.0.0.0", "--port", "29500"},
                   {{"COHORT_TOKEN", "x"}});
  EXPECT_TRUE(p->AwaitLine("cohort store listening on", 10s)) << p->Output();
  return p;
}

TEST(Netns, NodesReachEachOtherByAddressAndName) {
  SKIP_WITHOUT_NETNS();
  NetnsCluster c(3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.node(i).address, "10.77.0." + std::to_string(i + 1));
  auto server = Listen(c, 1);
  EXPECT_TRUE(Connects(c, 0, c.node(1).address, 29500));
  EXPECT_TRUE(Connects(c, 2, "node1", 29500));
  EXPECT_FALSE(Connects(c, 2, "node0", 29500));  // nothing listens there
  auto r = RunIn(c, 2, {"/usr/bin/getent", "hosts", "node1"});
  EXPECT_EQ(r.output, "10.77.0.2       node1\n");
}

TEST(Netns, EachNodeHasItsHostnameAndItsOwnShm) {
  SKIP_WITHOUT_NETNS();
  NetnsCluster c(2);
  auto r = RunIn(c, 1, {"/bin/hostname"});
  EXPECT_EQ(r.output, "node1\n");
  // A file in node 0's /dev/shm is not in node 1's, nor in the machine's.
  const std::string name = "/dev/shm/cohort-netns-test-" + std::to_string(::getpid());
  r = RunIn(c, 0, {"/bin/sh", "-c", "touch " + name + " && ls " + name});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunIn(c, 1, {"/bin/ls", name});
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_FALSE(std::filesystem::exists(name));
}

TEST(Netns, TheMachineIsNotReachableFromANode) {
  SKIP_WITHOUT_NETNS();
  NetnsCluster c(1);
  // No route out: the node only knows its /24 behind the bridge.
  auto r = RunIn(c, 0, {"/usr/sbin/ip", "route", "get", "1.1.1.1"});
  EXPECT_NE(r.exit_code, 0) << r.output;
}

TEST(Netns, CutLinkStopsTrafficAndRestoringItBringsItBack) {
  SKIP_WITHOUT_NETNS();
  NetnsCluster c(2);
  auto server = Listen(c, 1);
  c.SetLinkUp(1, false);
  EXPECT_FALSE(Connects(c, 0, c.node(1).address, 29500));
  c.SetLinkUp(1, true);
  EXPECT_TRUE(Connects(c, 0, c.node(1).address, 29500));
}

TEST(Netns, KillAllEndsEveryProcessInTheNode) {
  SKIP_WITHOUT_NETNS();
  NetnsCluster c(1);
  auto p = c.Start(0, {"/bin/sh", "-c", "sleep 60 & sleep 60 & wait"});
  for (int i = 0; i < 100 && c.Pids(0).size() < 3; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(c.Pids(0).size(), 3u);
  EXPECT_EQ(c.KillAll(0, SIGKILL), 3);
  auto r = p->Wait(10s);
  EXPECT_EQ(r.signal, SIGKILL);
  EXPECT_LT(r.seconds, 5);
}

TEST(Netns, EverythingIsRemovedAfterwards) {
  SKIP_WITHOUT_NETNS();
  std::vector<std::string> names;
  {
    NetnsCluster c(2);
    auto p = c.Start(1, {"/bin/sleep", "60"});  // still running when the cluster goes
    for (int i = 0; i < 2; ++i) names.push_back(c.node(i).netns);
    p.release();  // leaked on purpose: the cluster must kill it
  }
  for (const auto& n : names) {
    EXPECT_FALSE(NamespaceExists(n)) << n;
    EXPECT_FALSE(std::filesystem::exists("/etc/netns/" + n)) << n;
  }
}

// A test process killed before its destructors ran leaves namespaces named with its pid; the
// next cluster removes them.
TEST(Netns, WhatAKilledTestLeftBehindIsRemovedByTheNext) {
  SKIP_WITHOUT_NETNS();
  const pid_t child = ::fork();
  if (child == 0) {
    NetnsCluster c(2);
    ::kill(::getpid(), SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  const std::string left = "cohort-t" + std::to_string(child) + "-";  // any of its names
  ASSERT_TRUE(NamespaceExists(left));
  EXPECT_GE(NetnsCluster::RemoveStale(), 3);  // the bridge and both nodes
  EXPECT_FALSE(NamespaceExists(left));
}

}  // namespace
}  // namespace cohort::testing
