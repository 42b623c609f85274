#include "runtime/pipeline_transport.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <mutex>

#include "common/env.h"
#include "common/error.h"

namespace cohort::runtime {

namespace {

constexpr int64_t kHeaderMagic = 0x636f686f72747070;  // "cohortpp"
constexpr int64_t kHeaderWords = 16;
constexpr int64_t kHeaderFixed = 5;  // magic, dtype, row dims, batch, micro-batches

// Tensors that a failed group's backend may still read or write (a receive posted but never
// completed). They stay alive until the process ends: the group cannot be used again anyway,
// and freeing them could let a late message land in reused memory.
void KeepForever(std::vector<at::Tensor> tensors) {
  static std::mutex mu;
  static auto* kept = new std::vector<at::Tensor>();
  std::lock_guard<std::mutex> lock(mu);
  for (auto& t : tensors) kept->push_back(std::move(t));
}

}  // namespace

std::string ActivationHeader::Describe() const {
  std::vector<std::string> dims = {"*"};
  for (int64_t d : row_shape) dims.push_back(std::to_string(d));
  return fmt::format("[{}] {}", fmt::join(dims, ", "),
                     c10::toString(static_cast<c10::ScalarType>(dtype)));
}

bool ActivationHeader::operator==(const ActivationHeader& o) const {
  return dtype == o.dtype && row_shape == o.row_shape && batch == o.batch &&
         micro_batches == o.micro_batches;
}

struct PipelineTransport::State {
  struct Pending {
    at::Tensor tensor;
    int peer = -1;
    uint32_t tag = 0;
    std::string what;
    collectives::WorkPtr work;  // null until posted
  };
  std::vector<Pending> queued;  // not posted yet
  std::vector<Pending> posted;  // posted sends, waited for by Flush
  std::vector<at::Tensor> receiving;
};

PipelineTransport::PipelineTransport(std::shared_ptr<ProcessGroup> pp)
    : pp_(std::move(pp)), state_(std::make_unique<State>()) {
  if (!pp_) throw InvalidArgument("pipeline: the pp process group is null");
}

PipelineTransport::~PipelineTransport() = default;

std::string PipelineTransport::StageName(int stage) const {
  return fmt::format("stage {} (global rank {})", stage, pp_->GlobalRank(stage));
}

void PipelineTransport::QueueSend(const at::Tensor& t, int dst, uint32_t tag,
                                  const std::string& what) {
  state_->queued.push_back({t.contiguous(), dst, tag, what, nullptr});
}

void PipelineTransport::Receive(const at::Tensor& t, int src, uint32_t tag,
                                const std::string& what) {
  std::vector<collectives::P2POp> ops;
  for (const auto& q : state_->queued) ops.push_back(SendOp(q.tensor, q.peer, q.tag));
  ops.push_back(RecvOp(t, src, tag));
  std::vector<collectives::WorkPtr> works;
  try {
    works = pp_->BatchSendRecv(ops);
  } catch (const std::exception& e) {
    Rethrow(e, "posting the receive of " + what + " from", src);
  }
  for (size_t i = 0; i < state_->queued.size(); ++i) {
    state_->queued[i].work = works[i];
    state_->posted.push_back(std::move(state_->queued[i]));
  }
  state_->queued.clear();
  state_->receiving = {t};
  try {
    works.back()->Wait();
  } catch (const std::exception& e) {
    Rethrow(e, "receiving " + what + " from", src);
  }
  state_->receiving.clear();
}

void PipelineTransport::Post() {
  if (state_->queued.empty()) return;
  std::vector<collectives::P2POp> ops;
  for (const auto& q : state_->queued) ops.push_back(SendOp(q.tensor, q.peer, q.tag));
  std::vector<collectives::WorkPtr> works;
  try {
    works = pp_->BatchSendRecv(ops);
  } catch (const std::exception& e) {
    Rethrow(e, "posting the send of " + state_->queued.front().what + " to",
            state_->queued.front().peer);
  }
  for (size_t i = 0; i < works.size(); ++i) {
    state_->queued[i].work = works[i];
    state_->posted.push_back(std::move(state_->queued[i]));
  }
  state_->queued.clear();
}

void PipelineTransport::Flush() {
  Post();
  for (auto& p : state_->posted) {
    try {
      p.work->Wait();
    } catch (const std::exception& e) {
      Rethrow(e, "sending " + p.what + " to", p.peer);
    }
  }
  state_->posted.clear();
}

void PipelineTransport::SendHeader(const ActivationHeader& header, int dst) {
  const auto dims = static_cast<int64_t>(header.row_shape.size());
  if (dims > kHeaderWords - kHeaderFixed) {
    throw InvalidArgument(
        fmt::format("pipeline {}: its output has {} dimensions; a stage may send at most {}",
                    StageName(stage()), dims + 1, kHeaderWords - kHeaderFixed + 1));
  }
  at::Tensor t = at::empty({kHeaderWords}, at::kLong);
  int64_t* w = t.data_ptr<int64_t>();
  std::fill(w, w + kHeaderWords, 0);
  w[0] = kHeaderMagic;
  w[1] = header.dtype;
  w[2] = dims;
  w[3] = header.batch;
  w[4] = header.micro_batches;
  for (int64_t i = 0; i < dims; ++i) w[kHeaderFixed + i] = header.row_shape[i];
  QueueSend(t, dst, kHeaderTag, "the activation header");
}

ActivationHeader PipelineTransport::ReceiveHeader(int src) {
  at::Tensor t = at::empty({kHeaderWords}, at::kLong);
  Receive(t, src, kHeaderTag, "the activation header");
  const int64_t* w = t.data_ptr<int64_t>();
  const int64_t dims = w[2];
  if (w[0] != kHeaderMagic || dims < 0 || dims > kHeaderWords - kHeaderFixed) {
    throw DataLoss(fmt::format(
        "pipeline {}: what {} sent ahead of its activations is not a pipeline header; do all "
        "ranks run the same program?",
        StageName(stage()), StageName(src)));
  }
  ActivationHeader h;
  h.dtype = static_cast<int>(w[1]);
  h.batch = w[3];
  h.micro_batches = static_cast<int>(w[4]);
  h.row_shape.assign(w + kHeaderFixed, w + kHeaderFixed + dims);
  return h;
}

double PipelineTransport::AllReduce(double value) {
  if (stages() == 1) return value;
  at::Tensor t = at::empty({1}, at::kDouble);
  *t.data_ptr<double>() = value;
  try {
    pp_->AllReduce(t)->Wait();
  } catch (const std::exception& e) {
    Rethrow(e, "sharing the loss with", stages() - 1);
  }
  return *t.data_ptr<double>();
}

std::string PipelineTransport::FailureKey() const {
  const std::string group = pp_->Group().empty() ? "world" : pp_->Group();
  return fmt::format("cohort/{}/{}/pipeline/{}/first-failure", env::kRunId.Str("default"),
                     env::kRestart.Int(0), group);
}

std::string PipelineTransport::FirstFailure() const {
  if (!pp_->store()) return "";
  try {
    return pp_->store()->Get(FailureKey(), std::chrono::milliseconds(0));
  } catch (const std::exception&) {
    return "";  // nobody recorded one (or the store is gone too)
  }
}

void PipelineTransport::Fail(const std::string& message) {
  if (pp_->store()) {
    try {
      pp_->store()->CompareSet(FailureKey(), "", message);
    } catch (const std::exception&) {
      // The store is unreachable: this rank's own error still says what happened here.
    }
  }
  std::vector<at::Tensor> live = std::move(state_->receiving);
  for (auto* list : {&state_->queued, &state_->posted}) {
    for (auto& p : *list) live.push_back(std::move(p.tensor));
    list->clear();
  }
  KeepForever(std::move(live));
}

void PipelineTransport::Rethrow(const std::exception& e, const std::string& what, int peer) {
  std::string message = fmt::format("pipeline {}: {} {} failed: {}", StageName(stage()), what,
                                    StageName(peer), e.what());
  const std::string first = FirstFailure();
  if (!first.empty() && first != message) {
    message += "; the pipeline's first failure: " + first;
  }
  const auto* error = dynamic_cast<const cohort::Error*>(&e);
  ThrowError(error ? error->kind() : ErrorKind::kPeerFailure, message);
}

}  // namespace cohort::runtime
