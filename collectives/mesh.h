// Mesh: the groups of a parallel layout (DeviceMesh's idea). A shape names dimensions, outermost
// first, e.g. dp=2,pp=2,tp=2 on 8 ranks; Mesh::Create() splits the job's communicator once per
// dimension, so that each rank holds its group along every dimension.
//
// Rank order: row-major, the LAST dimension varies fastest:
//   rank = (c0 * s1 + c1) * s2 + c2       for coordinates (c0, c1, c2) and sizes (s0, s1, s2)
// With dp,pp,tp (Megatron's order) the ranks of one tensor-parallel group are neighbours
// (0,1 / 2,3 / ...), so they share a host first (tensor parallelism talks most), and pipeline
// stage s of data-parallel replica d holds ranks d*PP*TP + s*TP + [0, TP).
//
// Group names: "<dim>-<i>" where i numbers the groups of that dimension by their smallest rank
// (dp-0, dp-1, ...); errors in a group name it and both numberings.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"

namespace cohort::collectives {

struct MeshDim {
  std::string name;  // letters, digits, '_' ("dp", "pp", "tp")
  int size = 1;
};

class MeshShape {
 public:
  // Throws InvalidArgument for an empty shape, a size below 1, or a repeated or bad name.
  explicit MeshShape(std::vector<MeshDim> dims);
  // "dp=2,pp=2,tp=2". Throws InvalidArgument saying what is wrong with text.
  static MeshShape Parse(const std::string& text);

  const std::vector<MeshDim>& dims() const { return dims_; }
  // Product of the sizes: the ranks the mesh needs.
  int Ranks() const;
  // Index of dimension name; throws InvalidArgument listing the dimensions when there is none.
  int IndexOf(const std::string& name) const;
  bool Has(const std::string& name) const;
  // Size of a dimension (1 when the shape has no such dimension).
  int SizeOf(const std::string& name) const;
  // Coordinates of rank, one per dimension.
  std::vector<int> Coords(int rank) const;
  int RankOf(const std::vector<int>& coords) const;
  // The color of rank's group along dimension d: the same for ranks that differ only along d,
  // and the group's number i in "<dim>-<i>" (Mesh::Create splits with it, keyed by the
  // coordinate along d).
  int ColorAlong(int rank, int d) const;
  // "dp=2,pp=2,tp=2".
  std::string ToString() const;

 private:
  std::vector<MeshDim> dims_;
};

class Mesh {
 public:
  // Collective over world: builds this rank's group along every dimension (one Split each, in
  // the shape's order). Throws InvalidArgument when shape.Ranks() != world.Size(), naming both.
  static std::unique_ptr<Mesh> Create(Communicator& world, const MeshShape& shape);

  const MeshShape& shape() const { return shape_; }
  // This rank's coordinate along a dimension (0 when the shape lacks it).
  int Coord(const std::string& dim) const;
  // This rank's group along dim: the ranks whose coordinates differ only in dim.
  Communicator& Group(const std::string& dim);
  // Hands the group over (e.g. to a runtime ProcessGroup); Group(dim) then throws.
  std::unique_ptr<Communicator> Release(const std::string& dim);

 private:
  Mesh(MeshShape shape, std::vector<int> coords, std::vector<std::unique_ptr<Communicator>> groups);

  MeshShape shape_;
  std::vector<int> coords_;
  std::vector<std::unique_ptr<Communicator>> groups_;
};

}  // namespace cohort::collectives
