// `cohort launch --ps-servers N`: the launcher runs N `cohort ps-server` shards beside its workers
// and gives every worker COHORT_PS_SERVERS. Existing workers run unchanged on the ps backend:
// collective_worker's matrix, and ddp_worker's DDP equivalence (the same check the gloo run
// passes, against the same one-process reference).
#include <dirent.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/collectives/ps_servers.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

// Variables of the machine running the tests that would change what the launcher derives.
Env Clean() {
  Env e = {{"COHORT_LOG_LEVEL", "warn"}, {"OPENBLAS_NUM_THREADS", "1"}, {"OMP_NUM_THREADS", "1"}};
  for (const char* v :
       {"COHORT_NNODES", "COHORT_NODE_RANK", "COHORT_NPROC_PER_NODE", "COHORT_RDZV_ENDPOINT",
        "COHORT_RUN_ID", "COHORT_TOKEN", "COHORT_BACKEND", "COHORT_PS_SERVERS", "MASTER_ADDR",
        "MASTER_PORT", "JOB_COMPLETION_INDEX", "PET_NNODES", "PET_NPROC_PER_NODE", "RANK",
        "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"}) {
    e[v] = "";  // empty counts as unset
  }
  return e;
}

ProcessResult Launch(std::vector<std::string> flags, std::vector<std::string> program) {
  std::vector<std::string> argv = {BinPath("cohort"), "launch"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back("--");
  argv.insert(argv.end(), program.begin(), program.end());
  Subprocess p(argv, Clean());
  return p.Wait(120s);
}

int Count(const std::string& s, const std::string& text) {
  int n = 0;
  for (size_t at = s.find(text); at != std::string::npos; at = s.find(text, at + 1)) ++n;
  return n;
}

TEST(PsLaunch, CollectiveMatrixOnTwoServers) {
  auto r = Launch({"--backend", "ps", "--ps-servers", "2", "--nproc-per-node", "3"},
                  {BinPath("collective_worker"), "--backend", "ps", "--mode", "matrix", "--skip",
                   "reducescatter,sendrecv", "--counts", "0,1,7,1031"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("started 2 ps-servers on 127.0.0.1:"), std::string::npos) << r.output;
  EXPECT_EQ(Count(r.output, " of 3 (ps): 560 checks, 0 failed"), 3) << r.output;
}

// The RESULT lines of ddp_worker: rank -> "max_diff_ref=... rank_spread=...".
std::map<int, std::string> DdpResults(const std::string& out, const std::string& backend) {
  std::map<int, std::string> results;
  std::regex line("RESULT rank=(\\d+) world=3 backend=(\\w+) (max_diff_ref=\\S+ rank_spread=\\S+)");
  for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it) {
    EXPECT_EQ((*it)[2].str(), backend);
    results[std::stoi((*it)[1])] = (*it)[3];
  }
  return results;
}

TEST(PsLaunch, DdpOnPsEqualsDdpOnGloo) {
#ifndef COHORT_HAVE_DDP_WORKER
  GTEST_SKIP() << "built without libtorch (COHORT_WITH_TORCH=OFF): no ddp_worker";
#endif
  const std::vector<std::string> tiny = {BinPath("ddp_worker"),
                                         "--bucket-bytes",
                                         "1",
                                         "--first-bucket-bytes",
                                         "1",
                                         "--expect-buckets",
                                         "10"};
  auto ps = Launch({"--backend", "ps", "--ps-servers", "2", "--nproc-per-node", "3"}, tiny);
  auto gloo = Launch({"--backend", "gloo", "--nproc-per-node", "3"}, tiny);
  ASSERT_EQ(ps.exit_code, 0) << ps.output;
  ASSERT_EQ(gloo.exit_code, 0) << gloo.output;
  // ddp_worker checks its parameters against the one-process reference (--tol) and that the
  // ranks agree exactly; both backends must also land at the same distance from it.
  const auto on_ps = DdpResults(ps.output, "ps");
  const auto on_gloo = DdpResults(gloo.output, "gloo");
  ASSERT_EQ(on_ps.size(), 3u) << ps.output;
  EXPECT_EQ(on_ps, on_gloo) << ps.output << gloo.output;
  for (const auto& [rank, result] : on_ps)
    EXPECT_NE(result.find("rank_spread=0"), std::string::npos);
}

// The pid of the child of `parent` whose command line has every one of words, or -1.
pid_t ChildWith(pid_t parent, const std::vector<std::string>& words) {
  DIR* proc = ::opendir("/proc");
  pid_t found = -1;
  for (dirent* e = ::readdir(proc); e && found < 0; e = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream stat(fmt::format("/proc/{}/stat", pid));
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream cmd(fmt::format("/proc/{}/cmdline", pid));
    std::string args((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    for (char& c : args) c = c == '\0' ? ' ' : c;
    bool all = true;
    for (const auto& w : words) all = all && args.find(w) != std::string::npos;
    if (all) found = pid;
  }
  ::closedir(proc);
  return found;
}

// A ps-server SIGKILLed mid-run stops the group; the restart runs on a fresh set of servers.
// servers: the launcher's flags that start them; started: the line it says each time; shard:
// the one killed.
void ExpectDeadServerRestartsTheGroup(const std::vector<std::string>& servers,
                                      const std::string& started, int shard) {
  std::vector<std::string> argv = {BinPath("cohort"), "launch", "--backend", "ps"};
  argv.insert(argv.end(), servers.begin(), servers.end());
  argv.insert(argv.end(), {"--nproc-per-node", "2", "--max-restarts", "1", "--grace-period", "2",
                           "--", BinPath("collective_worker"), "--backend", "ps", "--mode",
                           "hang", "--victim", "-1", "--at", "60"});
  Subprocess launcher(argv, Clean());
  // Both ranks: the kill comes after each has printed its line once (the count below).
  ASSERT_TRUE(launcher.AwaitLine("rank 0 completed op 2", 60s)) << launcher.Output();
  ASSERT_TRUE(launcher.AwaitLine("rank 1 completed op 2", 60s)) << launcher.Output();
  const pid_t server = ChildWith(launcher.pid(), {"ps-server", fmt::format("--shard {} ", shard)});
  ASSERT_GT(server, 0) << launcher.Output();
  ::kill(server, SIGKILL);
  auto r = launcher.Wait(120s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(fmt::format("ps-server shard {} was killed by signal 9 (SIGKILL)", shard)),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("restarting the group: attempt 2 of 2"), std::string::npos) << r.output;
  EXPECT_EQ(Count(r.output, started), 2) << r.output;
  EXPECT_EQ(Count(r.output, "rank 1 completed op 2"), 2) << r.output;
}

TEST(PsLaunch, DeadServerRestartsTheGroupOnFreshServers) {
  ExpectDeadServerRestartsTheGroup({"--ps-servers", "2"}, "started 2 ps-servers on 127.0.0.1:", 1);
}

// --ps-servers-per-node on one node: the same, with the node's own server.
TEST(PsLaunch, DeadServerOfThisNodeRestartsTheGroupOnAFreshOne) {
  ExpectDeadServerRestartsTheGroup({"--ps-servers-per-node", "1"},
                                   "started 1 ps-server (shard 0) on 127.0.0.1:", 0);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Training on ps with snapshots every 2 steps: a ps-server SIGKILLed mid-run (after step 7) stops
// the group within seconds, the launcher restarts it on fresh servers, and it resumes from
// `latest` and ends bitwise where an uninterrupted run on ps ends. (Workers naming a killed
// server on their own: ps.Ps.KilledServerIsNamedByEveryRank.)
TEST(PsLaunch, DeadServerRestartResumesFromLatest) {
#ifndef COHORT_HAVE_CKPT_WORKER
  GTEST_SKIP() << "built without libtorch (COHORT_WITH_TORCH=OFF): no ckpt_train_worker";
#endif
  char tmpl[] = "/tmp/ps-resume-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  Env env = Clean();
  env["COHORT_CHECKPOINT_EVERY"] = "2";
  auto launch = [&](std::vector<std::string> flags, const std::string& dump) {
    std::vector<std::string> argv = {BinPath("cohort"), "launch", "--backend",        "ps",
                                     "--ps-servers",    "2",      "--nproc-per-node", "2"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.insert(argv.end(), {"--", BinPath("ckpt_train_worker"), "--steps", "12", "--slow-ms",
                             "150", "--dump", dir + "/" + dump});
    return std::make_unique<Subprocess>(argv, env);
  };
  auto straight = launch({}, "straight")->Wait(120s);
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  auto job = launch(
      {"--checkpoint-uri", "file://" + dir + "/ckpt", "--max-restarts", "1", "--grace-period", "2"},
      "restarted");
  ASSERT_TRUE(job->AwaitLine("] step 7", 60s)) << job->Output();
  const pid_t server = ChildWith(job->pid(), {"ps-server", "--shard 1 "});
  ASSERT_GT(server, 0) << job->Output();
  const auto killed = std::chrono::steady_clock::now();
  ::kill(server, SIGKILL);
  ASSERT_TRUE(job->AwaitLine("restarting the group: attempt 2 of 2", 30s)) << job->Output();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  auto r = job->Wait(120s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LT(secs, 10.0) << r.output;  // the workers' timeout is 300 s
  EXPECT_NE(r.output.find("ps-server shard 1 was killed by signal 9 (SIGKILL)"), std::string::npos)
      << r.output;
  // The launcher stops the workers (SIGTERM) when the server dies; a worker between two steps
  // leaves a snapshot of its last one (7, or 8 when the kill landed later), one mid-push exits
  // with the server's error and the newest periodic snapshot (6, or 4 while the save of 6 was
  // in flight) is `latest`. Either way the job continues from it.
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(r.output, m, std::regex("\\[rank 0\\] resumed from step ([0-9]+)\n")))
      << r.output;
  EXPECT_GE(std::stoi(m[1]), 4) << r.output;
  EXPECT_LE(std::stoi(m[1]), 8) << r.output;
  EXPECT_TRUE(ReadFile(dir + "/straight") == ReadFile(dir + "/restarted"));
  EXPECT_FALSE(ReadFile(dir + "/straight").empty());
  std::filesystem::remove_all(dir);
}

// Parameter servers that run on their own (as Kubernetes parameter-server pods do: the launcher
// is given COHORT_PS_SERVERS, it does not start them) end once the job has succeeded: the
// launcher of rank 0 tells them (PsService.Finish) and each exits 0, so that a parameter-server
// Job completes. A launcher with a wrong token is refused and they keep serving; a failed job
// does not end them either (a restart still needs them).
TEST(PsLaunch, StandaloneServersExitOnceTheJobSucceeds) {
  PsServerProcs servers(2, "t0k");
  auto run = [&](const std::string& token, const std::vector<std::string>& program) {
    std::vector<std::string> argv = {BinPath("cohort"), "launch", "--backend", "ps",
                                     "--nproc-per-node", "2", "--"};
    argv.insert(argv.end(), program.begin(), program.end());
    Env env = Clean();
    env["COHORT_PS_SERVERS"] = servers.List();
    env["COHORT_TOKEN"] = token;
    Subprocess p(argv, env);
    return p.Wait(120s);
  };
  const ProcessResult wrong = run("wrong", {"/bin/true"});
  EXPECT_EQ(wrong.exit_code, 0) << wrong.output;
  EXPECT_EQ(Count(wrong.output, "could not tell a ps-server the job finished"), 2) << wrong.output;
  EXPECT_NE(wrong.output.find("refused Finish"), std::string::npos) << wrong.output;
  const ProcessResult failed = run("t0k", {"/bin/sh", "-c", "exit 5"});
  EXPECT_NE(failed.exit_code, 0) << failed.output;
  EXPECT_EQ(failed.output.find("that the job finished"), std::string::npos) << failed.output;
  // Both servers still serve: this job's collectives run on them.
  const ProcessResult ok = run("t0k", {BinPath("collective_worker"), "--backend", "ps", "--mode",
                                       "matrix", "--skip", "reducescatter,sendrecv", "--counts",
                                       "0,7"});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(Count(ok.output, " of 2 (ps): "), 2) << ok.output;
  EXPECT_NE(ok.output.find("told 2 ps-servers that the job finished"), std::string::npos)
      << ok.output;
  for (int i : {0, 1}) {
    const ProcessResult s = servers.Wait(i, 10s);
    EXPECT_EQ(s.exit_code, 0) << s.output;
    EXPECT_NE(s.output.find("finished; exiting"), std::string::npos) << s.output;
  }
}

TEST(PsLaunch, BackendsComeFromTheRegistry) {
  auto unknown = Launch({"--backend", "carrier-pigeon"}, {"/bin/true"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown.output;
  EXPECT_NE(unknown.output.find("is not a backend of this build; use auto or one of:"),
            std::string::npos)
      << unknown.output;
  EXPECT_NE(unknown.output.find("gloo, ps"), std::string::npos) << unknown.output;
  auto no_servers = Launch({"--backend", "ps"}, {"/bin/true"});
  EXPECT_EQ(no_servers.exit_code, 2) << no_servers.output;
  EXPECT_NE(no_servers.output.find("needs parameter servers: add --ps-servers N"),
            std::string::npos)
      << no_servers.output;
}

}  // namespace
}  // namespace cohort::testing
