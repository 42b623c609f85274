// The Trainer on a small synthetic regression task: a world of one in-process (steps, samples,
// metrics, progress, stop, max_steps, resume, bad input), and three ranks as threads over Gloo
// with DDP (every rank takes the same steps, a stop asked of one rank stops all after the same
// step, the reported loss is the mean over ranks, the replicas stay equal).
#include "runtime/trainer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "collectives/config.h"
#include "collectives/registry.h"
#include "collectives/store/memory_store.h"
#include "common/error.h"
#include "runtime/ddp.h"
#include "runtime/process_group.h"
#include "tests/util/scoped_env.h"

namespace cohort::runtime {
namespace {

using namespace std::chrono_literals;

// y = x . (1, -2, 0.5, 3) + 0.25 on inputs that need no random generator (threads share torch's).
struct Task {
  at::Tensor x, y;
  torch::nn::Linear model{nullptr};
  std::shared_ptr<torch::optim::SGD> optimizer;
  std::vector<std::vector<size_t>> batches;  // every batch the loss was asked for, in order
  std::vector<double> losses;

  explicit Task(size_t n, double lr = 0.05) {
    x = at::empty({static_cast<int64_t>(n), 4});
    for (int64_t i = 0; i < x.size(0); ++i) {
      for (int64_t j = 0; j < 4; ++j) x[i][j] = std::sin(0.7 * i + 1.3 * j);
    }
    y = at::matmul(x, at::tensor({1.0f, -2.0f, 0.5f, 3.0f}).reshape({4, 1})) + 0.25;
    model = torch::nn::Linear(4, 1);
    // The same start everywhere (DDP would broadcast rank 0's anyway).
    torch::NoGradGuard no_grad;
    model->weight.fill_(0.1);
    model->bias.fill_(0);
    optimizer =
        std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(lr));
  }

  Trainer::LossFn Loss() {
    return [this](const std::vector<size_t>& idx) {
      batches.push_back(idx);
      const at::Tensor i = at::tensor(std::vector<int64_t>(idx.begin(), idx.end()));
      at::Tensor loss = torch::nn::functional::mse_loss(model->forward(x.index_select(0, i)),
                                                        y.index_select(0, i));
      losses.push_back(loss.item<double>());
      return loss;
    };
  }
};

std::shared_ptr<ProcessGroup> SoloGroup() {
  auto store = std::make_shared<collectives::MemoryStore>();
  collectives::CommConfig c;
  c.store = store;
  return std::make_shared<ProcessGroup>(store, collectives::CreateCommunicator("auto", c));
}

TrainerOptions Options(int epochs, size_t batch) {
  TrainerOptions o;
  o.epochs = epochs;
  o.batch_size = batch;
  o.seed = 7;
  o.progress = false;
  return o;
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("cohort-trainer-" + std::to_string(::getpid()) + "-" + name))
      .string();
}

// ---- a world of one ----

TEST(Trainer, CountsStepsAndSamplesAndLearns) {
  Task task(101);  // prime: the last batch of each epoch is short (1 example)
  Trainer trainer(SoloGroup(), nullptr, task.optimizer, Options(2, 10));
  const TrainResult r = trainer.Fit(101, task.Loss());
  EXPECT_EQ(r.steps, 22);
  EXPECT_EQ(r.samples, 202);
  EXPECT_GT(r.seconds, 0);
  EXPECT_GT(r.samples_per_second, 0);
  EXPECT_NEAR(r.samples_per_second, r.samples / r.seconds, 1e-6 * r.samples_per_second);
  ASSERT_EQ(task.losses.size(), 22u);
  EXPECT_DOUBLE_EQ(r.last_loss, task.losses.back());
  EXPECT_LT(task.losses.back(), 0.1 * task.losses.front());
  // Each epoch visits every example once, in a different order.
  std::multiset<size_t> epoch0, epoch1;
  for (size_t b = 0; b < 22; ++b) {
    EXPECT_EQ(task.batches[b].size(), (b % 11 == 10) ? 1u : 10u) << b;
    for (size_t i : task.batches[b]) (b < 11 ? epoch0 : epoch1).insert(i);
  }
  EXPECT_EQ(epoch0.size(), 101u);
  EXPECT_EQ(std::set<size_t>(epoch0.begin(), epoch0.end()).size(), 101u);
  EXPECT_EQ(epoch0, epoch1);
  EXPECT_NE(task.batches[0], task.batches[11]);
  const TrainerState s = trainer.State();
  EXPECT_EQ(s.step, 22);
  EXPECT_EQ(s.epoch, 1);
  EXPECT_EQ(s.sampler.position, 101u);
  EXPECT_EQ(s.world, 1);
  // Everything done: a second Fit has nothing left.
  EXPECT_EQ(trainer.Fit(101, task.Loss()).steps, 0);
}

TEST(Trainer, MetricsAreJsonLinesWithTheExpectedFields) {
  const std::string path = TempPath("metrics.jsonl");
  Task task(101);
  TrainerOptions o = Options(2, 10);
  o.metrics_path = path;
  o.progress_interval = 0;  // a report (and a metrics line) every step
  Trainer trainer(SoloGroup(), nullptr, task.optimizer, o);
  trainer.Fit(101, task.Loss());

  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 22u);
  double last_time = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& j = lines[i];
    for (const char* field : {"step", "epoch", "loss", "samples_per_second", "time"}) {
      EXPECT_TRUE(j.contains(field)) << field << " missing in " << j.dump();
    }
    EXPECT_EQ(j["step"].get<int64_t>(), static_cast<int64_t>(i) + 1);
    EXPECT_EQ(j["epoch"].get<int64_t>(), i < 11 ? 0 : 1);
    // With a report per step, the reported loss is exactly that step's.
    EXPECT_NEAR(j["loss"].get<double>(), task.losses[i], 1e-6 * (1 + task.losses[i]));
    EXPECT_GT(j["samples_per_second"].get<double>(), 0);
    EXPECT_GE(j["time"].get<double>(), last_time);
    last_time = j["time"].get<double>();
  }
  std::filesystem::remove(path);
}

TEST(Trainer, ProgressIsPlainLinesWhenNotATerminal) {
  Task task(101);
  TrainerOptions o = Options(2, 10);
  o.progress = true;
  o.progress_interval = 0;
  Trainer trainer(SoloGroup(), nullptr, task.optimizer, o);
  testing::ScopedEnv env({{"COHORT_PROGRESS", std::nullopt}});
  ::testing::internal::CaptureStdout();  // a file, not a terminal
  trainer.Fit(101, task.Loss());
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(out.find('\r'), std::string::npos) << out;
  const std::regex line(
      R"(epoch ([12])/2 step (\d+)/11 \d+ samples/s loss \d+\.\d{3} ETA \d+:\d\d)");
  std::istringstream lines(out);
  int n = 0;
  for (std::string l; std::getline(lines, l); ++n) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(l, m, line)) << "line " << n << ": '" << l << "'";
    EXPECT_EQ(std::stoi(m[1]), n < 11 ? 1 : 2) << l;
    EXPECT_EQ(std::stoi(m[2]), n % 11 + 1) << l;
  }
  EXPECT_EQ(n, 22) << out;
}

TEST(Trainer, ProgressEveryIntervalNotEveryStep) {
  Task task(101);
  TrainerOptions o = Options(2, 10);
  o.progress = true;
  o.progress_interval = 30;  // longer than the whole run
  Trainer trainer(SoloGroup(), nullptr, task.optimizer, o);
  testing::ScopedEnv env({{"COHORT_PROGRESS", "plain"}});
  ::testing::internal::CaptureStdout();
  trainer.Fit(101, task.Loss());
  const std::string out = ::testing::internal::GetCapturedStdout();
  // The first step (so a loss shows early) and the end of each epoch.
  EXPECT_EQ(out.rfind("epoch 1/2 step 1/11 ", 0), 0u) << out;
  EXPECT_NE(out.find("\nepoch 1/2 step 11/11 "), std::string::npos) << out;
  EXPECT_NE(out.find("\nepoch 2/2 step 11/11 "), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << out;
}

TEST(Trainer, ProgressRefreshesInPlaceWhenAskedToAndCanBeTurnedOff) {
  Task task(101);
  TrainerOptions o = Options(2, 10);
  o.progress = true;
  o.progress_interval = 0;
  Trainer trainer(SoloGroup(), nullptr, task.optimizer, o);
  {
    testing::ScopedEnv env({{"COHORT_PROGRESS", "tty"}});
    ::testing::internal::CaptureStdout();
    trainer.Fit(101, task.Loss());
  }
  const std::string out = ::testing::internal::GetCapturedStdout();
  // Every report rewrites the line; each epoch's last one stays, ended by a newline.
  EXPECT_EQ(std::count(out.begin(), out.end(), '\r'), 22) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  EXPECT_NE(out.find("\repoch 1/2 step 11/11 "), std::string::npos) << out;
  EXPECT_EQ(out.back(), '\n');

  Task quiet(101);
  Trainer silent(SoloGroup(), nullptr, quiet.optimizer, o);
  testing::ScopedEnv env({{"COHORT_PROGRESS", "off"}});
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(silent.Fit(101, quiet.Loss()).steps, 22);
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "");
}

TEST(Trainer, RequestStopFromAStepHookStopsAfterThatStepAndFitContinues) {
  Task task(101);
  Trainer trainer(SoloGroup(), nullptr, task.optimizer, Options(2, 10));
  std::vector<int64_t> hooked;
  trainer.OnStep([&](const TrainerState& s) {
    hooked.push_back(s.step);
    if (s.step == 5) trainer.RequestStop();
  });
  TrainResult r = trainer.Fit(101, task.Loss());
  EXPECT_EQ(r.steps, 5);
  EXPECT_EQ(trainer.State().step, 5);
  EXPECT_EQ(trainer.State().sampler.position, 50u);
  EXPECT_EQ(hooked, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  // The request is used up: the next Fit trains the rest, continuing with the 6th batch.
  r = trainer.Fit(101, task.Loss());
  EXPECT_EQ(r.steps, 17);
  EXPECT_EQ(trainer.State().step, 22);

  // Together the two runs saw exactly the batches of one uninterrupted run.
  Task whole(101);
  Trainer(SoloGroup(), nullptr, whole.optimizer, Options(2, 10)).Fit(101, whole.Loss());
  EXPECT_EQ(task.batches, whole.batches);
  EXPECT_NEAR(task.losses.back(), whole.losses.back(), 1e-6);
}

TEST(Trainer, MaxStepsIsRespected) {
  Task task(101);
  TrainerOptions o = Options(5, 10);
  o.max_steps = 13;  // into the second epoch
  Trainer trainer(SoloGroup(), nullptr, task.optimizer, o);
  TrainResult r = trainer.Fit(101, task.Loss());
  EXPECT_EQ(r.steps, 13);
  EXPECT_EQ(r.samples, 121);  // 10 full batches, the short one, 2 more
  EXPECT_EQ(trainer.State().epoch, 1);
  EXPECT_EQ(trainer.Fit(101, task.Loss()).steps, 0);  // the budget is spent

  Task none(101);
  o.max_steps = 0;
  EXPECT_EQ(Trainer(SoloGroup(), nullptr, none.optimizer, o).Fit(101, none.Loss()).steps, 0);
  EXPECT_TRUE(none.batches.empty());
}

TEST(Trainer, RestoreResumesMidEpochWithTheNextUnseenBatch) {
  Task first(101);
  TrainerOptions o = Options(2, 10);
  o.max_steps = 8;
  Trainer a(SoloGroup(), nullptr, first.optimizer, o);
  a.Fit(101, first.Loss());
  const TrainerState saved = a.State();
  ASSERT_EQ(saved.step, 8);

  Task second(101);
  Trainer b(SoloGroup(), nullptr, second.optimizer, Options(2, 10));
  b.Restore(saved);
  EXPECT_EQ(b.Fit(101, second.Loss()).steps, 14);
  EXPECT_EQ(b.State().step, 22);

  Task whole(101);
  Trainer(SoloGroup(), nullptr, whole.optimizer, Options(2, 10)).Fit(101, whole.Loss());
  std::vector<std::vector<size_t>> joined = first.batches;
  joined.insert(joined.end(), second.batches.begin(), second.batches.end());
  EXPECT_EQ(joined, whole.batches);
}

TEST(Trainer, WorksWithDdpInAWorldOfOne) {
  Task task(64);
  auto pg = SoloGroup();
  auto ddp = std::make_shared<DistributedDataParallel>(task.model.ptr(), pg);
  Trainer trainer(pg, ddp, task.optimizer, Options(3, 8));
  const TrainResult r = trainer.Fit(64, task.Loss());
  EXPECT_EQ(r.steps, 24);
  EXPECT_LT(task.losses.back(), 0.5 * task.losses.front());
}

template <typename F>
std::string InvalidArgumentOf(F f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not InvalidArgument: " << e.what();
    return "";
  }
  ADD_FAILURE() << "nothing thrown";
  return "";
}

TEST(Trainer, BadInputIsRefusedWithOneLine) {
  Task task(10);
  auto pg = SoloGroup();
  auto has = [](const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos && s.find('\n') == std::string::npos;
  };
  EXPECT_TRUE(has(InvalidArgumentOf([&] { Trainer(nullptr, nullptr, task.optimizer, {}); }),
                  "process group is null"));
  EXPECT_TRUE(
      has(InvalidArgumentOf([&] { Trainer(pg, nullptr, nullptr, {}); }), "optimizer is null"));
  EXPECT_TRUE(has(InvalidArgumentOf([&] { Trainer(pg, nullptr, task.optimizer, Options(1, 0)); }),
                  "batch_size is 0"));
  EXPECT_TRUE(has(InvalidArgumentOf([&] { Trainer(pg, nullptr, task.optimizer, Options(-1, 4)); }),
                  "epochs is -1"));

  Trainer trainer(pg, nullptr, task.optimizer, Options(1, 4));
  EXPECT_TRUE(has(InvalidArgumentOf([&] { trainer.Fit(0, task.Loss()); }), "dataset is empty"));
  Trainer t2(pg, nullptr, task.optimizer, Options(1, 4));
  EXPECT_TRUE(has(InvalidArgumentOf([&] {
                    t2.Fit(10,
                           [&](const std::vector<size_t>&) { return task.model->forward(task.x); });
                  }),
                  "must return a scalar tensor; it returned one with 10 elements"));
  Trainer t3(pg, nullptr, task.optimizer, Options(1, 4));
  EXPECT_TRUE(has(InvalidArgumentOf([&] {
                    t3.Fit(10, [&](const std::vector<size_t>&) { return at::ones({}); });
                  }),
                  "does not require grad"));
  TrainerOptions o = Options(1, 4);
  o.metrics_path = "/nonexistent-dir/m.jsonl";
  Trainer t4(pg, nullptr, task.optimizer, o);
  EXPECT_TRUE(has(InvalidArgumentOf([&] { t4.Fit(10, task.Loss()); }),
                  "cannot write metrics to /nonexistent-dir/m.jsonl"));
}

// ---- three ranks as threads, over Gloo, with DDP ----

#if COHORT_HAVE_GLOO

struct RankRun {
  TrainResult result;
  TrainerState state;
  std::vector<double> losses;
  std::vector<at::Tensor> params;
};

// Trains `size` ranks (threads), each with its own Task, ProcessGroup and DDP; configure may
// adjust each rank's trainer (hooks) before Fit.
std::vector<RankRun> RunRanks(int size, size_t n, TrainerOptions options,
                              const std::function<void(int, Trainer&)>& configure = nullptr) {
  auto store = std::make_shared<collectives::MemoryStore>();
  std::vector<RankRun> runs(size);
  std::vector<std::exception_ptr> errors(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        collectives::CommConfig c;
        c.rank = r;
        c.size = size;
        c.store = store;
        c.timeout = 30s;
        c.heartbeat = 100ms;
        auto pg = std::make_shared<ProcessGroup>(store, collectives::CreateCommunicator("gloo", c));
        Task task(n);
        auto ddp = std::make_shared<DistributedDataParallel>(task.model.ptr(), pg);
        Trainer trainer(pg, ddp, task.optimizer, options);
        if (configure) configure(r, trainer);
        runs[r].result = trainer.Fit(n, task.Loss());
        runs[r].state = trainer.State();
        runs[r].losses = task.losses;
        for (const auto& p : task.model->parameters()) runs[r].params.push_back(p.detach().clone());
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return runs;
}

TEST(TrainerRanks, EveryRankTakesTheSameStepsAndReportsTheMeanLoss) {
  // 31 examples over 3 ranks: shares of 11 (one padded), batches 4, 4, 3.
  auto runs = RunRanks(3, 31, Options(2, 4));
  double mean_last = 0;
  for (const auto& run : runs) mean_last += run.losses.back() / 3;
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(runs[r].result.steps, 6) << r;
    EXPECT_EQ(runs[r].result.samples, 66) << r;  // 11 per rank per epoch, all ranks
    EXPECT_EQ(runs[r].state.step, 6) << r;
    EXPECT_EQ(runs[r].state.world, 3) << r;
    EXPECT_NEAR(runs[r].result.last_loss, mean_last, 1e-6) << r;
    // DDP kept the replicas equal.
    for (size_t p = 0; p < runs[0].params.size(); ++p) {
      EXPECT_TRUE(at::allclose(runs[r].params[p], runs[0].params[p], 1e-6, 1e-6)) << r;
    }
  }
  // The ranks saw different data, so their losses differ: the mean is a real average.
  EXPECT_NE(runs[0].losses.back(), runs[1].losses.back());
}

TEST(TrainerRanks, AStopAskedOfOneRankStopsEveryRankAfterTheSameStep) {
  // Reports every step: every rank stops right after the step rank 1 asked at.
  TrainerOptions o = Options(4, 4);
  o.progress_interval = 0;
  auto runs = RunRanks(3, 31, o, [](int r, Trainer& t) {
    if (r == 1)
      t.OnStep([&t](const TrainerState& s) {
        if (s.step == 2) t.RequestStop();
      });
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(runs[r].result.steps, 2) << r;

  // Reports only at epoch ends (the interval is longer than the run): the request travels with
  // the next report, and every rank stops there, after step 3, together.
  o.progress_interval = 3600;
  runs = RunRanks(3, 31, o, [](int r, Trainer& t) {
    if (r == 2)
      t.OnStep([&t](const TrainerState& s) {
        if (s.step == 2) t.RequestStop();
      });
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(runs[r].result.steps, 3) << r;
}

#endif  // COHORT_HAVE_GLOO

}  // namespace
}  // namespace cohort::runtime
