// Asynchronous mode of the parameter server, in one process: the optimizers' maths against
// Debian's python3-torch (torch.optim.SGD and Adam, run by async_optimizer_ref.py on the same
// inputs), and a real PsServer on 127.0.0.1 with AsyncClients over real gRPC: pushes applied in
// arrival order, the staleness bound holding a pull until the slowest worker pushed, snapshots
// of the optimizer state, a restarted job's old calls and a wrong token refused, the timeout's
// message, and pipelined pushes (held for the step their answer is used for; one at a time).
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "collectives/ps/async_client.h"
#include "collectives/ps/async_optimizer.h"
#include "collectives/ps/ps.grpc.pb.h"
#include "collectives/ps/ps_client.h"
#include "collectives/ps/ps_server.h"
#include "common/error.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using collectives::ps::AsyncClient;
using collectives::ps::AsyncJob;
using collectives::ps::AsyncOptimizerConfig;
using collectives::ps::AsyncSlots;
using collectives::ps::AsyncState;
using collectives::ps::PsOptions;
using Kind = AsyncOptimizerConfig::Kind;
using ::testing::HasSubstr;

const std::string kPython = "/usr/bin/python3";  // Debian's, with python3-torch
const std::string kRef = COHORT_ASYNC_REF;

std::vector<float> Values(size_t n, uint32_t seed, float scale) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& f : v) {
    x = x * 1664525u + 1013904223u;
    f = scale * (static_cast<float>(x >> 8) / static_cast<float>(1 << 24) - 0.5f);
  }
  return v;
}

void WriteFloats(const std::string& path, const std::vector<float>& v) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
}

std::vector<float> ReadFloats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

std::string Json(const AsyncOptimizerConfig& c, size_t n, int steps) {
  return fmt::format(
      R"({{"kind":"{}","n":{},"steps":{},"lr":{:.17g},"momentum":{:.17g},"dampening":{:.17g},)"
      R"("nesterov":{},"weight_decay":{:.17g},"beta1":{:.17g},"beta2":{:.17g},"eps":{:.17g}}})",
      c.kind == Kind::kAdam ? "adam" : "sgd", n, steps, c.lr, c.momentum, c.dampening,
      c.nesterov ? "true" : "false", c.weight_decay, c.beta1, c.beta2, c.eps);
}

AsyncOptimizerConfig Sgd(double lr, double momentum, double dampening, double wd, bool nesterov) {
  AsyncOptimizerConfig c;
  c.kind = Kind::kSgd;
  c.lr = lr;
  c.momentum = momentum;
  c.dampening = dampening;
  c.weight_decay = wd;
  c.nesterov = nesterov;
  return c;
}

AsyncOptimizerConfig Adam(double lr, double beta1, double beta2, double eps, double wd) {
  AsyncOptimizerConfig c;
  c.kind = Kind::kAdam;
  c.lr = lr;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = eps;
  c.weight_decay = wd;
  return c;
}

// Runs the optimizer here and in torch over the same inputs; every parameter after every step
// and the final state agree within 1e-6 (relative, for values over 1).
void ExpectMatchesTorch(const AsyncOptimizerConfig& c) {
  constexpr size_t n = 1031;  // not a multiple of any vector width: the tails run too
  constexpr int steps = 6;
  const std::string dir = fmt::format("/tmp/cohort-async-ref-{}", ::getpid());
  std::filesystem::create_directories(dir);
  std::vector<float> p = Values(n, 1, 2.0f);
  WriteFloats(dir + "/params.bin", p);
  std::vector<float> grads;
  for (int t = 0; t < steps; ++t) {
    auto g = Values(n, 10 + static_cast<uint32_t>(t), t % 2 ? 0.02f : 3.0f);
    grads.insert(grads.end(), g.begin(), g.end());
  }
  WriteFloats(dir + "/grads.bin", grads);
  Subprocess py({kPython, kRef, Json(c, n, steps), dir}, {});
  const ProcessResult r = py.Wait(60s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<float> want = ReadFloats(dir + "/out.bin");
  std::filesystem::remove_all(dir);
  const size_t slots = c.kind == Kind::kAdam ? 2 : c.momentum != 0 ? 1 : 0;
  ASSERT_EQ(want.size(), n * (steps + slots));

  AsyncSlots state;
  size_t bitwise = 0, total = 0;
  double worst = 0;
  auto check = [&](const float* got, const float* ref, const std::string& what) {
    for (size_t i = 0; i < n; ++i) {
      const double diff = std::abs(double(got[i]) - double(ref[i]));
      const double tol = 1e-6 * std::max(1.0, std::abs(double(ref[i])));
      worst = std::max(worst, diff / std::max(1.0, std::abs(double(ref[i]))));
      bitwise += std::memcmp(&got[i], &ref[i], 4) == 0;
      ++total;
      ASSERT_LE(diff, tol) << what << " element " << i << ": " << got[i] << " vs torch " << ref[i];
    }
  };
  for (int t = 0; t < steps; ++t) {
    std::vector<float> g(grads.begin() + t * n, grads.begin() + (t + 1) * n);
    collectives::ps::ApplyOptimizer(c, p.data(), g.data(), n, state);
    check(p.data(), want.data() + t * n, fmt::format("step {} parameter", t + 1));
  }
  if (slots >= 1) check(state.slot1.data(), want.data() + steps * n, "state slot 1");
  EXPECT_EQ(state.slot1.size(), slots >= 1 ? n : 0);
  if (slots == 2) check(state.slot2.data(), want.data() + (steps + 1) * n, "state slot 2");
  EXPECT_EQ(state.steps, steps);
  std::printf("%s: %zu of %zu values bitwise equal to torch, worst relative difference %.3g\n",
              Json(c, n, steps).c_str(), bitwise, total, worst);
}

TEST(PsAsyncOptimizer, SgdWithMomentumMatchesTorch) {
  ExpectMatchesTorch(Sgd(0.1, 0.9, 0, 0, false));
}
TEST(PsAsyncOptimizer, SgdWithDampeningAndWeightDecayMatchesTorch) {
  ExpectMatchesTorch(Sgd(0.05, 0.8, 0.3, 1e-2, false));
}
TEST(PsAsyncOptimizer, SgdNesterovMatchesTorch) {
  ExpectMatchesTorch(Sgd(0.05, 0.9, 0, 1e-3, true));
}
TEST(PsAsyncOptimizer, PlainSgdMatchesTorch) { ExpectMatchesTorch(Sgd(0.3, 0, 0, 0, false)); }
TEST(PsAsyncOptimizer, AdamMatchesTorch) { ExpectMatchesTorch(Adam(1e-3, 0.9, 0.999, 1e-8, 0)); }
TEST(PsAsyncOptimizer, AdamWithWeightDecayAndOtherBetasMatchesTorch) {
  ExpectMatchesTorch(Adam(3e-2, 0.8, 0.99, 1e-3, 0.1));
}

TEST(PsAsyncOptimizer, BadOptionsAreNamed) {
  EXPECT_THAT(Sgd(-1, 0, 0, 0, false).Invalid(), HasSubstr("lr -1 is negative"));
  EXPECT_THAT(Sgd(0.1, 0, 0, 0, true).Invalid(), HasSubstr("nesterov needs momentum > 0"));
  EXPECT_THAT(Adam(0.1, 1.0, 0.9, 1e-8, 0).Invalid(), HasSubstr("betas (1, 0.9)"));
  EXPECT_EQ(Adam(0.1, 0.9, 0.999, 1e-8, 0).Invalid(), "");
}

// Servers on 127.0.0.1 in this process, and clients of a job of `world` workers.
class AsyncServers : public ::testing::Test {
 protected:
  void StartServers(int n, const std::string& token = "secret") {
    for (int i = 0; i < n; ++i) {
      servers_.push_back(std::make_unique<collectives::ps::PsServer>("127.0.0.1", 0, token, i, n));
      servers_.back()->Start();
      options_.servers.push_back(servers_.back()->Address());
    }
    options_.token = token;
    options_.partition_bytes = 64;  // 16 floats: several partitions per server
  }
  std::unique_ptr<AsyncClient> Client(int rank, int world, int staleness, size_t n,
                                      uint64_t epoch = 7, std::chrono::milliseconds timeout = 20s) {
    AsyncJob job{"job-a", epoch, rank, world, staleness};
    return std::make_unique<AsyncClient>(options_, job, n, timeout);
  }

  std::vector<std::unique_ptr<collectives::ps::PsServer>> servers_;
  PsOptions options_;
};

TEST_F(AsyncServers, PushesOfEveryWorkerAreAppliedAsTheyArrive) {
  StartServers(2);
  constexpr size_t n = 103;
  const AsyncOptimizerConfig adam = Adam(1e-2, 0.9, 0.999, 1e-8, 0.01);
  auto w0 = Client(0, 2, -1, n), w1 = Client(1, 2, -1, n);
  EXPECT_EQ(w0->Partitions(), 7u);  // 103 floats in partitions of at most 16
  std::vector<float> p = Values(n, 3, 1.0f);
  w0->Init(adam, 5, p.data(), AsyncState{});
  std::vector<float> local = p, got(n);
  AsyncSlots slots;
  for (int t = 0; t < 3; ++t) {
    for (int rank = 0; rank < 2; ++rank) {
      std::vector<float> g = Values(n, 100 + static_cast<uint32_t>(2 * t + rank), 0.5f);
      auto clocks = (rank == 0 ? w0 : w1)->Push(5 + t, g.data(), got.data());
      collectives::ps::ApplyOptimizer(adam, local.data(), g.data(), n, slots);
      EXPECT_EQ(got, local) << "step " << t << " rank " << rank;  // the same maths, bitwise
      EXPECT_EQ(clocks.max, 6 + t);
      EXPECT_EQ(clocks.min, rank == 0 ? 5 + t : 6 + t);
    }
  }
  AsyncState state;
  w1->Pull(7, got.data(), &state);
  EXPECT_EQ(got, local);
  EXPECT_EQ(state.slot1, slots.slot1);
  EXPECT_EQ(state.slot2, slots.slot2);
  EXPECT_EQ(state.opt_steps, 6);
  // A resume: the state pushed back in, the next push continues it exactly.
  auto r0 = Client(0, 2, -1, n, /*epoch=*/8);
  r0->Init(adam, 8, got.data(), state);
  std::vector<float> g = Values(n, 999, 0.5f);
  r0->Push(8, g.data(), got.data());
  collectives::ps::ApplyOptimizer(adam, local.data(), g.data(), n, slots);
  EXPECT_EQ(got, local);
}

TEST_F(AsyncServers, StalenessBoundHoldsTheFastWorkerUntilTheSlowestPushed) {
  StartServers(1);
  constexpr size_t n = 10;
  auto w0 = Client(0, 2, /*staleness=*/1, n), w1 = Client(1, 2, 1, n);
  std::vector<float> p(n, 1.0f), g(n, 0.5f), out0(n), out1(n);
  w0->Init(Sgd(0.1, 0, 0, 0, false), 0, p.data(), AsyncState{});
  w0->Pull(-1, out0.data());
  w0->Push(0, g.data(), out0.data());  // step 0: the slowest (rank 1) pushed nothing; 1 ahead: ok
  EXPECT_FLOAT_EQ(out0[0], 0.95f);
  auto second = std::async(std::launch::async, [&] { return w0->Push(1, g.data(), out0.data()); });
  EXPECT_EQ(second.wait_for(300ms), std::future_status::timeout)
      << "rank 0's answer for step 1 came before rank 1 pushed step 0";
  w1->Push(0, g.data(), out1.data());
  ASSERT_EQ(second.wait_for(5s), std::future_status::ready);
  const auto clocks = second.get();
  EXPECT_EQ(clocks.min, 1);
  EXPECT_EQ(clocks.max, 2);
  EXPECT_FLOAT_EQ(out0[0], 1.0f - 3 * 0.05f);
}

// A pipelined push (ahead 1): the worker computes step 1 while it is out and uses the answer
// for step 2, so with staleness 1 the answer waits until every worker pushed step 0.
TEST_F(AsyncServers, APipelinedPushIsHeldForTheStepItsAnswerIsUsedFor) {
  StartServers(2);
  constexpr size_t n = 37;  // 3 partitions over 2 servers
  auto w0 = Client(0, 2, /*staleness=*/1, n), w1 = Client(1, 2, 1, n);
  std::vector<float> p(n, 1.0f), g(n, 0.5f), out0(n), out1(n);
  w0->Init(Sgd(0.1, 0, 0, 0, false), 0, p.data(), AsyncState{});
  w0->StartPush(0, g.data(), /*ahead=*/1);
  EXPECT_TRUE(w0->Pushing());
  auto answer = std::async(std::launch::async, [&] { return w0->FinishPush(out0.data()); });
  EXPECT_EQ(answer.wait_for(300ms), std::future_status::timeout)
      << "a pipelined push was answered before the slowest worker pushed the step before the "
         "one its answer is used for";
  w1->Push(0, g.data(), out1.data());  // not pipelined: answered at once (bound 1)
  ASSERT_EQ(answer.wait_for(5s), std::future_status::ready);
  const auto clocks = answer.get();
  EXPECT_EQ(clocks.min, 1);
  EXPECT_EQ(clocks.max, 1);
  EXPECT_FALSE(w0->Pushing());
  for (size_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(out0[i], 0.9f) << i;  // both pushes applied
  // ASP: a pipelined push is answered at once, with what the servers hold then.
  auto a0 = Client(0, 2, /*staleness=*/-1, n, /*epoch=*/9), a1 = Client(1, 2, -1, n, 9);
  a0->Init(Sgd(0.1, 0, 0, 0, false), 0, p.data(), AsyncState{});
  a0->StartPush(0, g.data(), 1);
  a0->FinishPush(out0.data());
  EXPECT_FLOAT_EQ(out0[n - 1], 0.95f);
}

TEST_F(AsyncServers, PipeliningUnderBspAndASecondPushOutAreRefused) {
  StartServers(1);
  constexpr size_t n = 5;
  std::vector<float> p(n, 1.0f), out(n);
  auto bsp = Client(0, 1, /*staleness=*/0, n);
  bsp->Init(Sgd(0.1, 0, 0, 0, false), 0, p.data(), AsyncState{});
  try {
    bsp->StartPush(0, p.data(), /*ahead=*/1);
    FAIL() << "a pipelined push under BSP was sent: its answer would wait for the next push";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("a push 1 step ahead with staleness 0"));
  }
  EXPECT_FALSE(bsp->Pushing());
  // The server refuses it too (a client that does not check).
  ::cohort::ps::AsyncPushRequest req;
  req.mutable_key()->set_job("job-a");
  req.mutable_key()->set_epoch(7);
  req.set_step(0);
  req.set_staleness(0);
  req.set_ahead(1);
  req.set_grad(std::string(n * sizeof(float), '\0'));
  collectives::ps::PsServerClient raw(options_.servers[0], 0, 1, options_.token);
  grpc::ClientContext ctx;
  raw.Authorize(&ctx);
  ::cohort::ps::AsyncParams reply;
  const grpc::Status s =
      ::cohort::ps::PsAsyncService::NewStub(raw.Channel())->AsyncPush(&ctx, req, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("ahead 1 with staleness 0"));
  bsp->Push(0, p.data(), out.data());  // the refused push did not count: step 0 again
  EXPECT_FLOAT_EQ(out[0], 0.9f);
  bsp->StartPush(1, p.data(), 0);
  EXPECT_THROW(bsp->StartPush(2, p.data(), 0), InvalidArgument);
  try {
    bsp->Pull(1, out.data());
    FAIL() << "a pull was sent while a push was out";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("while the push of step 1 is out; FinishPush it first"));
  }
  bsp->FinishPush(out.data());
  EXPECT_FLOAT_EQ(out[0], 0.8f);
  EXPECT_THROW(bsp->FinishPush(out.data()), InvalidArgument);
}

// A model's tensors: the gradient read from several runs, the answer written into others, the
// runs crossing partitions (3 of 16 floats or fewer) and some empty.
TEST_F(AsyncServers, APushReadsAndItsAnswerWritesTheVectorInRuns) {
  StartServers(2);
  constexpr size_t n = 37;
  auto w = Client(0, 1, -1, n);
  std::vector<float> p = Values(n, 4, 1.0f), g = Values(n, 5, 1.0f);
  const AsyncOptimizerConfig sgd = Sgd(0.1, 0.9, 0, 0.01, false);
  w->Init(sgd, 0, p.data(), AsyncState{});
  std::vector<std::vector<float>> pieces = {{}, {}, {}, {}};
  const size_t sizes[] = {0, 5, 13, 19};
  collectives::ps::ConstFloatRuns grad;
  for (size_t i = 0, at = 0; i < 4; at += sizes[i], ++i) {
    pieces[i].assign(g.begin() + static_cast<long>(at),
                     g.begin() + static_cast<long>(at + sizes[i]));
    grad.emplace_back(pieces[i].data(), sizes[i]);
  }
  std::vector<float> out1(20), out2(17);
  w->StartPush(0, grad, 0);
  w->FinishPush(collectives::ps::FloatRuns{{out1.data(), 20}, {nullptr, 0}, {out2.data(), 17}});
  AsyncSlots slots;
  std::vector<float> expect = p, g2 = g;
  collectives::ps::ApplyOptimizer(sgd, expect.data(), g2.data(), n, slots);
  out1.insert(out1.end(), out2.begin(), out2.end());
  EXPECT_EQ(out1, expect);
  try {
    w->StartPush(1, collectives::ps::ConstFloatRuns{{g.data(), n - 1}}, 0);
    FAIL() << "a push of a vector one float short was sent";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), HasSubstr("a push of 36 floats in 1 runs for a vector of 37"));
  }
  EXPECT_FALSE(w->Pushing());
}

TEST_F(AsyncServers, WaitingPastTheTimeoutNamesTheBound) {
  StartServers(1);
  auto w0 = Client(0, 2, /*staleness=*/0, 4, 7, 400ms);
  std::vector<float> p(4, 1.0f), out(4);
  w0->Init(Sgd(0.1, 0, 0, 0, false), 0, p.data(), AsyncState{});
  try {
    w0->Push(0, p.data(), out.data());
    FAIL() << "the push of step 0 was answered although rank 1 never pushed";
  } catch (const Timeout& e) {
    EXPECT_THAT(e.what(), HasSubstr("push of step 0: no answer within 0.4 s (staleness 0: it waits "
                                    "until the slowest worker pushed step 0)"));
    EXPECT_THAT(e.what(), HasSubstr("partition 0"));
  }
}

TEST_F(AsyncServers, ARestartedJobRefusesTheOldEpochsCalls) {
  StartServers(1);
  std::vector<float> p(4, 1.0f), out(4);
  auto old = Client(0, 1, -1, 4, /*epoch=*/1);
  old->Init(Sgd(0.1, 0, 0, 0, false), 0, p.data(), AsyncState{});
  auto fresh = Client(0, 1, -1, 4, /*epoch=*/2);
  fresh->Init(Sgd(0.1, 0, 0, 0, false), 0, p.data(), AsyncState{});
  try {
    old->Push(0, p.data(), out.data());
    FAIL() << "a push of the old epoch was applied";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("async job job-a was restarted"));
  }
  fresh->Push(0, p.data(), out.data());
  EXPECT_FLOAT_EQ(out[0], 0.9f);
  try {  // pushed out of order
    fresh->Push(5, p.data(), out.data());
    FAIL() << "step 5 was accepted after step 0";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 0 pushed step 5, but its next step is 1"));
  }
}

TEST_F(AsyncServers, ACallWithAWrongTokenIsRefused) {
  StartServers(1, "right");
  std::vector<float> p(4, 1.0f);
  Client(0, 1, -1, 4)->Init(Sgd(0.1, 0, 0, 0, false), 0, p.data(), AsyncState{});
  // Past Hello (which checks the token too): an async call itself, with the wrong token.
  collectives::ps::PsServerClient wrong(options_.servers[0], 0, 1, "wrong");
  auto stub = ::cohort::ps::PsAsyncService::NewStub(wrong.Channel());
  grpc::ClientContext ctx;
  wrong.Authorize(&ctx);
  ::cohort::ps::AsyncPullRequest req;
  req.mutable_key()->set_job("job-a");
  req.mutable_key()->set_epoch(7);
  ::cohort::ps::AsyncParams reply;
  const grpc::Status s = stub->AsyncPull(&ctx, req, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("the call's token is wrong"));
  EXPECT_TRUE(reply.params().empty());
}

}  // namespace
}  // namespace cohort::testing
