#include "collectives/mesh.h"

#include <fmt/format.h>

#include <cctype>
#include <set>

#include "common/error.h"

namespace cohort::collectives {
namespace {

bool GoodName(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

}  // namespace

MeshShape::MeshShape(std::vector<MeshDim> dims) : dims_(std::move(dims)) {
  if (dims_.empty()) throw InvalidArgument("mesh: the shape has no dimensions; give e.g. dp=2");
  std::set<std::string> seen;
  for (const MeshDim& d : dims_) {
    if (!GoodName(d.name)) {
      throw InvalidArgument(fmt::format(
          "mesh: dimension name '{}' is not usable; use letters, digits and '_'", d.name));
    }
    if (!seen.insert(d.name).second) {
      throw InvalidArgument(fmt::format("mesh: dimension '{}' appears twice", d.name));
    }
    if (d.size < 1) {
      throw InvalidArgument(
          fmt::format("mesh: dimension {} has size {}; sizes must be at least 1", d.name, d.size));
    }
  }
}

MeshShape MeshShape::Parse(const std::string& text) {
  std::vector<MeshDim> dims;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    const size_t eq = item.find('=');
    int size = 0;
    try {
      size_t used = 0;
      if (eq != std::string::npos) size = std::stoi(item.substr(eq + 1), &used);
      if (eq == std::string::npos || used != item.size() - eq - 1) throw std::invalid_argument("");
    } catch (const std::exception&) {
      throw InvalidArgument(
          fmt::format("mesh: '{}' in '{}' is not NAME=SIZE; write the shape as e.g. dp=2,pp=2,tp=2",
                      item, text));
    }
    dims.push_back({item.substr(0, eq), size});
    pos = comma + 1;
  }
  return MeshShape(std::move(dims));
}

int MeshShape::Ranks() const {
  int n = 1;
  for (const MeshDim& d : dims_) n *= d.size;
  return n;
}

bool MeshShape::Has(const std::string& name) const {
  for (const MeshDim& d : dims_) {
    if (d.name == name) return true;
  }
  return false;
}

int MeshShape::IndexOf(const std::string& name) const {
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (dims_[i].name == name) return static_cast<int>(i);
  }
  throw InvalidArgument(fmt::format("mesh: no dimension '{}' in {}", name, ToString()));
}

int MeshShape::SizeOf(const std::string& name) const {
  return Has(name) ? dims_[IndexOf(name)].size : 1;
}

std::vector<int> MeshShape::Coords(int rank) const {
  if (rank < 0 || rank >= Ranks()) {
    throw InvalidArgument(
        fmt::format("mesh: rank {} is outside {} ({} ranks)", rank, ToString(), Ranks()));
  }
  std::vector<int> c(dims_.size());
  for (size_t i = dims_.size(); i-- > 0;) {
    c[i] = rank % dims_[i].size;
    rank /= dims_[i].size;
  }
  return c;
}

int MeshShape::RankOf(const std::vector<int>& coords) const {
  if (coords.size() != dims_.size()) {
    throw InvalidArgument(fmt::format("mesh: {} coordinates for the {} dimensions of {}",
                                      coords.size(), dims_.size(), ToString()));
  }
  int rank = 0;
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (coords[i] < 0 || coords[i] >= dims_[i].size) {
      throw InvalidArgument(fmt::format("mesh: coordinate {} is outside dimension {} of size {}",
                                        coords[i], dims_[i].name, dims_[i].size));
    }
    rank = rank * dims_[i].size + coords[i];
  }
  return rank;
}

int MeshShape::ColorAlong(int rank, int d) const {
  // The other coordinates, row-major: groups are numbered 0, 1, ... in order of their smallest
  // rank.
  const std::vector<int> c = Coords(rank);
  int color = 0;
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (static_cast<int>(i) == d) continue;
    color = color * dims_[i].size + c[i];
  }
  return color;
}

std::string MeshShape::ToString() const {
  std::string s;
  for (const MeshDim& d : dims_) s += fmt::format("{}{}={}", s.empty() ? "" : ",", d.name, d.size);
  return s;
}

Mesh::Mesh(MeshShape shape, std::vector<int> coords,
           std::vector<std::unique_ptr<Communicator>> groups)
    : shape_(std::move(shape)), coords_(std::move(coords)), groups_(std::move(groups)) {}

std::unique_ptr<Mesh> Mesh::Create(Communicator& world, const MeshShape& shape) {
  if (shape.Ranks() != world.Size()) {
    throw InvalidArgument(
        fmt::format("mesh: {} needs {} ranks but the job has {}; choose sizes whose product is {}",
                    shape.ToString(), shape.Ranks(), world.Size(), world.Size()));
  }
  const std::vector<int> coords = shape.Coords(world.Rank());
  std::vector<std::unique_ptr<Communicator>> groups;
  for (size_t d = 0; d < shape.dims().size(); ++d) {
    const int color = shape.ColorAlong(world.Rank(), static_cast<int>(d));
    const std::string name = fmt::format("{}-{}", shape.dims()[d].name, color);
    groups.push_back(world.Split(color, coords[d], name));
  }
  return std::unique_ptr<Mesh>(new Mesh(shape, coords, std::move(groups)));
}

int Mesh::Coord(const std::string& dim) const {
  return shape_.Has(dim) ? coords_[static_cast<size_t>(shape_.IndexOf(dim))] : 0;
}

Communicator& Mesh::Group(const std::string& dim) {
  auto& g = groups_[static_cast<size_t>(shape_.IndexOf(dim))];
  if (!g) throw InvalidArgument(fmt::format("mesh: group {} was released", dim));
  return *g;
}

std::unique_ptr<Communicator> Mesh::Release(const std::string& dim) {
  auto& g = groups_[static_cast<size_t>(shape_.IndexOf(dim))];
  if (!g) throw InvalidArgument(fmt::format("mesh: group {} was released", dim));
  return std::move(g);
}

}  // namespace cohort::collectives
