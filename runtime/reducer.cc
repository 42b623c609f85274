#include "runtime/reducer.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "common/error.h"
#include "common/log.h"
#include "common/timeline.h"

namespace cohort::runtime {

using collectives::ReduceOp;

struct DistributedDataParallel::Reducer::Bucket {
  std::vector<size_t> params;    // parameter indices, in the order they are packed
  std::vector<int64_t> offsets;  // element offset of each parameter in flat
  int64_t numel = 0;
  at::Tensor flat;  // the gradients, contiguous; dtype and device of the parameters
  at::Tensor wire;  // flat in fp16/bf16 when compressing, else undefined
  size_t pending = 0;
  collectives::WorkPtr work;
  at::Tensor Slice(size_t slot, const at::Tensor& param) const {
    return flat.narrow(0, offsets[slot], param.numel()).view(param.sizes());
  }
  // The same memory as Slice(), as a tensor that is not an autograd view: it becomes the
  // parameter's .grad, so backward accumulates straight into the bucket (no copy per step), and
  // the optimizer's zero_grad() may detach_() it, which a view would refuse.
  at::Tensor Alias(size_t slot, const at::Tensor& param) const {
    std::vector<int64_t> strides(param.dim(), 1);
    for (int64_t d = param.dim() - 2; d >= 0; --d) strides[d] = strides[d + 1] * param.size(d + 1);
    at::Tensor t = at::empty({0}, flat.options());
    t.set_(flat.storage(), flat.storage_offset() + offsets[slot], param.sizes(), strides);
    return t;
  }
};

struct DistributedDataParallel::Reducer::Accumulators {
  std::vector<std::shared_ptr<torch::autograd::Node>> nodes;
};

// Fires after a parameter's gradient accumulator ran: the gradient in .grad is final.
class DistributedDataParallel::Reducer::Hook : public torch::autograd::FunctionPostHook {
 public:
  Hook(Reducer* reducer, size_t index) : reducer_(reducer), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    reducer_->MarkReady(index_);
    return outputs;
  }

 private:
  Reducer* reducer_;
  size_t index_;
};

namespace {

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

at::ScalarType WireType(GradCompression c) {
  return c == GradCompression::kFloat16 ? at::kHalf : at::kBFloat16;
}

}  // namespace

DistributedDataParallel::Reducer::Reducer(std::vector<at::Tensor> params,
                                          std::shared_ptr<ProcessGroup> pg, DdpOptions options)
    : params_(std::move(params)),
      pg_(std::move(pg)),
      options_(options),
      accumulators_(std::make_unique<Accumulators>()) {
  if (options_.bucket_bytes == 0 || options_.first_bucket_bytes == 0) {
    throw InvalidArgument("DDP bucket sizes must be > 0 bytes (bucket_bytes, first_bucket_bytes)");
  }
  // Reverse parameter order approximates the order backward produces gradients in.
  std::vector<size_t> order(params_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = order.size() - 1 - i;
  BuildBuckets(order);
  ready_.assign(params_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
    if (!acc) {
      throw InvalidArgument(fmt::format(
          "DDP: parameter {} has no gradient accumulator: pass leaf tensors that require grad", i));
    }
    hook_keys_.push_back(acc->add_post_hook(std::make_unique<Hook>(this, i)));
    accumulators_->nodes.push_back(std::move(acc));
  }
}

DistributedDataParallel::Reducer::~Reducer() {
  for (size_t i = 0; i < accumulators_->nodes.size(); ++i) {
    accumulators_->nodes[i]->del_post_hook(hook_keys_[i]);
  }
  // An all-reduce still in flight writes into our buffers: let it finish first.
  for (auto& b : buckets_) {
    if (b.work) {
      try {
        b.work->Wait();
      } catch (const std::exception&) {
      }
    }
  }
}

void DistributedDataParallel::Reducer::BuildBuckets(const std::vector<size_t>& order) {
  torch::NoGradGuard no_grad;
  buckets_.clear();
  locate_.assign(params_.size(), {0, 0});
  // One open bucket per (dtype, device): a bucket holds one kind of tensor.
  std::map<std::tuple<int, int, int>, size_t> open;
  for (size_t i : order) {
    const at::Tensor& p = params_[i];
    const auto key = std::make_tuple(static_cast<int>(p.scalar_type()),
                                     static_cast<int>(p.device().type()), p.device().index());
    auto it = open.find(key);
    if (it == open.end()) {
      buckets_.emplace_back();
      it = open.insert_or_assign(key, buckets_.size() - 1).first;
    }
    Bucket& b = buckets_[it->second];
    locate_[i] = {it->second, b.params.size()};
    b.params.push_back(i);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
    // PyTorch's rule: a bucket closes once it reaches its cap (the tensor that crosses the cap
    // joins it). Closing *before* that tensor instead delayed a large gradient's all-reduce until
    // the next, later gradient arrived, and hid less communication behind backward.
    const size_t limit = it->second == 0 ? options_.first_bucket_bytes : options_.bucket_bytes;
    if (static_cast<size_t>(b.numel) * p.element_size() >= limit) open.erase(it);
  }
  for (auto& b : buckets_) {
    const at::Tensor& first = params_[b.params.front()];
    b.flat = torch::zeros({b.numel}, first.options().requires_grad(false));
    if (options_.compression != GradCompression::kNone && first.scalar_type() == at::kFloat) {
      b.wire = torch::empty({b.numel}, b.flat.options().dtype(WireType(options_.compression)));
    }
    b.pending = b.params.size();
    // Gradients that already exist move into the new buffers, as views (no copy per step).
    for (size_t s = 0; s < b.params.size(); ++s) {
      at::Tensor& p = params_[b.params[s]];
      if (p.grad().defined()) {
        b.Slice(s, p).copy_(p.grad());
        p.mutable_grad() = b.Alias(s, p);
      }
    }
  }
  stats_.buckets = static_cast<int>(buckets_.size());
}

void DistributedDataParallel::Reducer::MarkReady(size_t i) {
  if (!sync_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!in_step_) {
    in_step_ = true;
    step_start_ = Clock::now();
    // Runs once backward has finished, on the thread that called backward().
    torch::autograd::Engine::get_default_engine().queue_callback([this] { Finalize(); });
  }
  if (ready_[i]) return;  // accumulated twice in one backward (reentrant graphs)
  ready_[i] = 1;
  if (!rebuilt_) arrivals_.push_back(i);
  Bucket& b = buckets_[locate_[i].first];
  --b.pending;
  // Buckets start in index order on every rank, so the collectives match across ranks.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Launch(next_launch_++);
  }
}

void DistributedDataParallel::Reducer::Launch(size_t bi) {
  torch::NoGradGuard no_grad;
  Bucket& b = buckets_[bi];
  for (size_t s = 0; s < b.params.size(); ++s) {
    at::Tensor& p = params_[b.params[s]];
    at::Tensor slot = b.Slice(s, p);
    const at::Tensor& g = p.grad();
    const bool is_view = g.defined() && g.data_ptr() == slot.data_ptr();
    if (!ready_[b.params[s]]) {
      // No gradient this step: it counts as zero. A .grad that is our view must survive that
      // when find_unused_parameters keeps unused gradients untouched.
      if (is_view && options_.find_unused_parameters) p.mutable_grad() = g.clone();
      slot.zero_();
    } else if (!is_view) {
      slot.copy_(g);
    }
  }
  if (b.wire.defined()) {
    b.wire.copy_(b.flat);
    b.work = pg_->AllReduce(b.wire, ReduceOp::kAvg);
  } else {
    b.work = pg_->AllReduce(
        b.flat, at::isFloatingType(b.flat.scalar_type()) ? ReduceOp::kAvg : ReduceOp::kSum);
  }
}

// Each bucket's all-reduce on the timeline's "ddp buckets" track, from when the backend started
// it to when it finished.
void DistributedDataParallel::Reducer::TraceBuckets() const {
  auto us = [](collectives::Work::Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  };
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const auto [start, end] = buckets_[i].work->Times();
    const at::Tensor& t = buckets_[i].wire.defined() ? buckets_[i].wire : buckets_[i].flat;
    timeline::Complete("allreduce", "comm", us(start), us(end), "ddp buckets",
                       fmt::format("\"bucket\": {}, \"bytes\": {}", i, t.nbytes()));
  }
}

void DistributedDataParallel::Reducer::Finalize() {
  torch::NoGradGuard no_grad;
  std::lock_guard<std::mutex> lock(mu_);
  const auto backward_end = Clock::now();
  while (next_launch_ < buckets_.size()) Launch(next_launch_++);
  // Which parameters got a gradient on any rank (one extra, small all-reduce).
  at::Tensor used;
  collectives::WorkPtr used_work;
  if (options_.find_unused_parameters) {
    used =
        torch::from_blob(ready_.data(), {static_cast<int64_t>(ready_.size())}, at::kByte).clone();
    used_work = pg_->AllReduce(used, ReduceOp::kMax);
  }
  double comm = 0;
  {
    timeline::Span wait("ddp wait", "comm");
    for (auto& b : buckets_) {
      b.work->Wait();
      comm += std::chrono::duration<double>(b.work->Duration()).count();
    }
    if (used_work) used_work->Wait();
  }
  if (timeline::Enabled()) TraceBuckets();
  const double exposed = Seconds(Clock::now() - backward_end);
  for (auto& b : buckets_) {
    if (b.wire.defined()) b.flat.copy_(b.wire);
    for (size_t s = 0; s < b.params.size(); ++s) {
      const size_t i = b.params[s];
      if (used.defined() && used.data_ptr<uint8_t>()[i] == 0) continue;  // unused everywhere
      at::Tensor& g = params_[i].mutable_grad();
      if (!g.defined() || g.data_ptr() != b.Slice(s, params_[i]).data_ptr()) {
        g = b.Alias(s, params_[i]);  // the averaged gradient, where the next backward adds
      }
    }
    b.work.reset();
    b.pending = b.params.size();
  }
  std::fill(ready_.begin(), ready_.end(), 0);
  next_launch_ = 0;
  in_step_ = false;
  ++stats_.steps;
  stats_.comm_seconds = comm;
  stats_.exposed_seconds = exposed;
  stats_.total_comm_seconds += comm;
  stats_.total_exposed_seconds += exposed;
  if (!rebuilt_) {
    rebuilt_ = true;
    if (options_.rebuild_buckets) RebuildFromArrivals();
    arrivals_.clear();
    arrivals_.shrink_to_fit();
  }
}

void DistributedDataParallel::Reducer::RebuildFromArrivals() {
  // Parameters that never got a gradient go last, in reverse model order.
  std::vector<uint8_t> seen(params_.size(), 0);
  std::vector<int64_t> order;
  for (size_t i : arrivals_) {
    seen[i] = 1;
    order.push_back(static_cast<int64_t>(i));
  }
  for (size_t i = params_.size(); i-- > 0;) {
    if (!seen[i]) order.push_back(static_cast<int64_t>(i));
  }
  // Ranks may see different orders (e.g. unused parameters); rank 0's is everyone's.
  at::Tensor t = torch::from_blob(order.data(), {static_cast<int64_t>(order.size())}, at::kLong);
  pg_->Broadcast(t, 0)->Wait();
  std::vector<size_t> agreed(order.begin(), order.end());
  BuildBuckets(agreed);
  COHORT_DEBUG(kRuntime, "ddp: rebuilt {} buckets from the order gradients arrived",
               buckets_.size());
}

DdpStats DistributedDataParallel::Reducer::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::vector<std::vector<size_t>> DistributedDataParallel::Reducer::Layout() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::vector<size_t>> out;
  for (const auto& b : buckets_) out.push_back(b.params);
  return out;
}

}  // namespace cohort::runtime
