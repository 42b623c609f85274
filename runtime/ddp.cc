#include "runtime/ddp.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <map>

#include "common/error.h"
#include "runtime/reducer.h"

namespace cohort::runtime {

namespace {

// Copies rank 0's tensors to every rank, packed per (dtype, device) into one flat tensor each,
// so a model with hundreds of small tensors costs a few broadcasts, not hundreds.
void BroadcastFromRankZero(ProcessGroup& pg, const std::vector<at::Tensor>& tensors) {
  if (pg.Size() == 1) return;
  torch::NoGradGuard no_grad;
  std::map<std::tuple<int, int, int>, std::vector<at::Tensor>> groups;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    groups[{static_cast<int>(t.scalar_type()), static_cast<int>(t.device().type()),
            t.device().index()}]
        .push_back(t);
  }
  for (auto& [key, group] : groups) {
    std::vector<at::Tensor> flat_parts;
    for (const auto& t : group) flat_parts.push_back(t.detach().reshape({-1}));
    at::Tensor flat = torch::cat(flat_parts);
    pg.Broadcast(flat, 0)->Wait();
    int64_t offset = 0;
    for (auto& t : group) {
      t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

std::vector<at::Tensor> Trainable(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> out;
  for (const auto& p : params) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

void CheckGroup(const std::shared_ptr<ProcessGroup>& pg) {
  if (!pg) throw InvalidArgument("DistributedDataParallel needs a ProcessGroup (got null)");
}

}  // namespace

double DdpStats::OverlapFraction() const {
  if (total_comm_seconds <= 0) return 0;
  const double hidden = 1.0 - total_exposed_seconds / total_comm_seconds;
  return hidden < 0 ? 0 : hidden;
}

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<torch::nn::Module> module,
                                                 std::shared_ptr<ProcessGroup> pg,
                                                 const DdpOptions& options) {
  CheckGroup(pg);
  if (!module) throw InvalidArgument("DistributedDataParallel needs a module (got null)");
  std::vector<at::Tensor> params = module->parameters(/*recurse=*/true);
  BroadcastFromRankZero(*pg, params);
  if (options.broadcast_buffers) BroadcastFromRankZero(*pg, module->buffers(/*recurse=*/true));
  reducer_ = std::make_unique<Reducer>(Trainable(params), std::move(pg), options);
}

DistributedDataParallel::DistributedDataParallel(const torch::jit::Module& module,
                                                 std::shared_ptr<ProcessGroup> pg,
                                                 const DdpOptions& options) {
  CheckGroup(pg);
  std::vector<at::Tensor> params;
  for (const auto& p : module.parameters(/*recurse=*/true)) params.push_back(p);
  BroadcastFromRankZero(*pg, params);
  if (options.broadcast_buffers) {
    std::vector<at::Tensor> buffers;
    for (const auto& b : module.buffers(/*recurse=*/true)) buffers.push_back(b);
    BroadcastFromRankZero(*pg, buffers);
  }
  reducer_ = std::make_unique<Reducer>(Trainable(params), std::move(pg), options);
}

DistributedDataParallel::~DistributedDataParallel() = default;

DistributedDataParallel::NoSyncGuard::NoSyncGuard(DistributedDataParallel* ddp) : ddp_(ddp) {
  ddp_->reducer_->SetSync(false);
}

DistributedDataParallel::NoSyncGuard::NoSyncGuard(NoSyncGuard&& other) noexcept : ddp_(other.ddp_) {
  other.ddp_ = nullptr;
}

DistributedDataParallel::NoSyncGuard::~NoSyncGuard() {
  if (ddp_) ddp_->reducer_->SetSync(true);
}

DistributedDataParallel::NoSyncGuard DistributedDataParallel::NoSync() { return NoSyncGuard(this); }

ProcessGroup& DistributedDataParallel::process_group() { return reducer_->pg(); }

DdpStats DistributedDataParallel::Stats() const { return reducer_->Stats(); }

std::vector<std::vector<size_t>> DistributedDataParallel::BucketLayout() const {
  return reducer_->Layout();
}

}  // namespace cohort::runtime
