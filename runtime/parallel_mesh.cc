#include "runtime/parallel_mesh.h"

#include <fmt/format.h>

#include "collectives/mesh.h"
#include "common/error.h"

namespace cohort::runtime {

std::string ParallelLayout::ToString() const {
  return fmt::format("dp={},pp={},tp={}", dp, pp, tp);
}

ParallelLayout ParallelLayout::Parse(const std::string& text) {
  const collectives::MeshShape shape = collectives::MeshShape::Parse(text);
  for (const auto& d : shape.dims()) {
    if (d.name != "dp" && d.name != "pp" && d.name != "tp") {
      throw InvalidArgument(fmt::format(
          "layout '{}': unknown dimension '{}'; a layout has dp, pp and tp (e.g. dp=2,pp=2,tp=2)",
          text, d.name));
    }
  }
  ParallelLayout l;
  l.dp = shape.SizeOf("dp");
  l.pp = shape.SizeOf("pp");
  l.tp = shape.SizeOf("tp");
  return l;
}

std::shared_ptr<ParallelMesh> ParallelMesh::Create(std::shared_ptr<ProcessGroup> world,
                                                   const ParallelLayout& layout) {
  if (!world) throw InvalidArgument("ParallelMesh needs the job's process group, got null");
  if (layout.Ranks() != world->Size()) {
    throw InvalidArgument(fmt::format(
        "layout {} needs dp*pp*tp = {} ranks but the job has {}; choose sizes whose product is {}",
        layout.ToString(), layout.Ranks(), world->Size(), world->Size()));
  }
  const collectives::MeshShape shape({{"dp", layout.dp}, {"pp", layout.pp}, {"tp", layout.tp}});
  auto mesh = collectives::Mesh::Create(world->comm(), shape);
  auto pm = std::shared_ptr<ParallelMesh>(new ParallelMesh());
  pm->layout_ = layout;
  pm->world_ = world;
  pm->dp_ = std::make_shared<ProcessGroup>(world->store(), mesh->Release("dp"));
  pm->pp_ = std::make_shared<ProcessGroup>(world->store(), mesh->Release("pp"));
  pm->tp_ = std::make_shared<ProcessGroup>(world->store(), mesh->Release("tp"));
  return pm;
}

}  // namespace cohort::runtime
