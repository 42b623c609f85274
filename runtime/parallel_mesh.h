// ParallelMesh: the data-, pipeline- and tensor-parallel process groups of one rank, built in one
// call from a layout "dp=2,pp=2,tp=2" over the job's process group (collectives/mesh.h states
// the rank order: tp fastest, then pp, then dp). A dimension the layout leaves out has size 1
// and a group of one rank.
//
//   auto mesh = ParallelMesh::Create(pg, {2, 2, 2});   // 8 ranks
//   mesh->tp()  // ColumnParallelLinear / RowParallelLinear
//   mesh->pp()  // Pipeline (stage = mesh->pp_rank())
//   mesh->dp()  // DistributedDataParallel over each stage's replicas
#pragma once

#include <memory>
#include <string>

#include "runtime/process_group.h"

namespace cohort::runtime {

struct ParallelLayout {
  int dp = 1;
  int pp = 1;
  int tp = 1;
  int Ranks() const { return dp * pp * tp; }
  // "dp=2,pp=2,tp=2".
  std::string ToString() const;
  // Parses "dp=2,pp=2,tp=2" (any subset, any order of keys; missing ones are 1). Throws
  // InvalidArgument.
  static ParallelLayout Parse(const std::string& text);
};

class ParallelMesh {
 public:
  // Collective over world. Throws InvalidArgument when layout.Ranks() != world->Size(), saying
  // which product was expected.
  static std::shared_ptr<ParallelMesh> Create(std::shared_ptr<ProcessGroup> world,
                                              const ParallelLayout& layout);

  const ParallelLayout& layout() const { return layout_; }
  ProcessGroup& world() { return *world_; }
  const std::shared_ptr<ProcessGroup>& dp() const { return dp_; }
  const std::shared_ptr<ProcessGroup>& pp() const { return pp_; }
  const std::shared_ptr<ProcessGroup>& tp() const { return tp_; }
  int dp_rank() const { return dp_->Rank(); }
  int pp_rank() const { return pp_->Rank(); }
  int tp_rank() const { return tp_->Rank(); }

 private:
  ParallelMesh() = default;
  ParallelLayout layout_;
  std::shared_ptr<ProcessGroup> world_, dp_, pp_, tp_;
};

}  // namespace cohort::runtime
