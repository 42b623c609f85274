#include "checkpoint/layout.h"

#include <fmt/format.h>

#include "checkpoint/shard_file.h"
#include "common/error.h"
#include "common/hex.h"

namespace cohort::checkpoint {
namespace {

using nlohmann::json;

bool IsGlobalName(const std::string& name) {
  return name.rfind("model/", 0) == 0 || name.rfind("optimizer/", 0) == 0;
}

uint64_t Blocks(uint64_t nbytes, uint64_t block) { return (nbytes + block - 1) / block; }

std::vector<std::string> BlockDigests(const void* data, uint64_t nbytes, DigestAlgorithm algorithm,
                                      uint64_t block) {
  std::vector<std::string> out;
  const auto* p = static_cast<const uint8_t*>(data);
  for (uint64_t at = 0; at < nbytes; at += block) {
    out.push_back(Digest(algorithm, p + at, static_cast<size_t>(std::min(block, nbytes - at))));
  }
  return out;
}

// "" when the distinct boxes of a tensor tile its shape (copies of one box allowed), else what
// is wrong.
std::string TilingProblem(const Shape& shape, const std::vector<StoredBlock>& shards) {
  std::vector<const StoredBlock*> distinct;
  int64_t covered = 0;
  for (const StoredBlock& s : shards) {
    if (!FitsIn(s.box, shape)) {
      return fmt::format("rank {}'s box {} does not fit the shape {}", s.rank, s.box.ToString(),
                         ShapeToString(shape));
    }
    bool copy = false;
    for (const StoredBlock* d : distinct) {
      if (d->box == s.box) {
        copy = true;
        break;
      }
      if (Intersect(d->box, s.box)) {
        return fmt::format("rank {}'s box {} overlaps rank {}'s {}", s.rank, s.box.ToString(),
                           d->rank, d->box.ToString());
      }
    }
    if (copy) continue;
    distinct.push_back(&s);
    covered += s.box.Volume();
  }
  if (covered != ShapeVolume(shape)) {
    return fmt::format("its boxes cover {} of its {} elements", covered, ShapeVolume(shape));
  }
  return "";
}

json BlockJson(const StoredBlock& b) {
  return {{"rank", b.rank},
          {"offsets", b.box.offsets},
          {"sizes", b.box.sizes},
          {"offset", b.offset},
          {"digests", b.digests}};
}

StoredBlock BlockFromJson(const json& j, int rank) {
  StoredBlock b;
  b.rank = rank;
  b.box.sizes = j.at(j.contains("sizes") ? "sizes" : "shape").get<Shape>();
  b.box.offsets = j.contains("offsets") ? j.at("offsets").get<Shape>() : Shape(b.box.Rank(), 0);
  b.offset = j.at("offset").get<uint64_t>();
  b.digests = j.at("digests").get<std::vector<std::string>>();
  return b;
}

// Checks a stored block against its shard's size and the digest block size.
void CheckStored(const StoredBlock& b, DType dtype, const ShardEntry& entry, uint64_t block,
                 const std::string& tensor) {
  const uint64_t nbytes = static_cast<uint64_t>(b.box.Volume()) * collectives::ElementSize(dtype);
  if (b.box.offsets.size() != b.box.sizes.size() || b.offset + nbytes > entry.size ||
      b.digests.size() != Blocks(nbytes, block)) {
    throw DataLoss(fmt::format(
        "tensor {} in {}: bytes [{}, +{}) with {} digest(s) do not fit the {}-byte shard", tensor,
        entry.object, b.offset, nbytes, b.digests.size(), entry.size));
  }
  for (const std::string& d : b.digests) DigestAlgorithmOf(d);
}

std::vector<uint8_t> Unhex(const std::string& text) {
  if (text.size() % 2 != 0) throw DataLoss("odd-length hex bytes");
  std::vector<uint8_t> out;
  for (size_t i = 0; i < text.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(text.substr(i, 2), nullptr, 16)));
  }
  return out;
}

}  // namespace

json ShardedLayoutSpec(const MeshSizes& mesh, uint64_t digest_block) {
  if (mesh.dp < 1 || mesh.pp < 1 || mesh.tp < 1 || digest_block == 0) {
    throw InvalidArgument(
        fmt::format("sharded layout dp={},pp={},tp={} digest block {}: sizes "
                    "must be >= 1 and the block > 0",
                    mesh.dp, mesh.pp, mesh.tp, digest_block));
  }
  return {{"kind", "sharded"},
          {"mesh", {{"dp", mesh.dp}, {"pp", mesh.pp}, {"tp", mesh.tp}}},
          {"digest_block", digest_block}};
}

bool IsShardedLayout(const json& layout) {
  return layout.is_object() && layout.value("kind", "") == "sharded";
}

json DescribeContents(const Shard& shard, const EncodedShard& encoded, DigestAlgorithm algorithm,
                      uint64_t digest_block) {
  json tensors = json::array();
  for (const HostTensor& t : shard.tensors) {
    json j = {{"name", t.name()},
              {"dtype", collectives::DTypeName(t.dtype())},
              {"shape", t.shape()},
              {"offset", encoded.TensorOffset(t.name())},
              {"digests", BlockDigests(t.data(), t.nbytes(), algorithm, digest_block)}};
    if (IsGlobalName(t.name())) {
      const auto it = shard.slices.find(t.name());
      const TensorSlice slice = it != shard.slices.end()
                                    ? it->second
                                    : TensorSlice{t.shape(), Shape(t.shape().size(), 0)};
      if (!FitsIn(Box{slice.offsets, t.shape()}, slice.global_shape)) {
        throw InvalidArgument(
            fmt::format("tensor {}: its slice {} (shape {}) does not fit the global shape {}",
                        t.name(), Box{slice.offsets, t.shape()}.ToString(),
                        ShapeToString(t.shape()), ShapeToString(slice.global_shape)));
      }
      j["global_shape"] = slice.global_shape;
      j["offsets"] = slice.offsets;
    }
    tensors.push_back(std::move(j));
  }
  for (const auto& [name, slice] : shard.slices) {
    if (!shard.Find(name) || !IsGlobalName(name)) {
      throw InvalidArgument(fmt::format(
          "Shard::slices names '{}', which is not a model/ or optimizer/ tensor of the shard",
          name));
    }
  }
  return {{"tensors", tensors}, {"attributes", AttributesToJson(shard.attributes)}};
}

void FinalizeShardedManifest(Manifest& manifest) {
  json layout_tensors = json::object();
  for (ShardEntry& entry : manifest.shards) {
    json local = json::array();
    for (json& t : entry.contents.at("tensors")) {
      if (!t.contains("global_shape")) {
        local.push_back(std::move(t));
        continue;
      }
      const std::string name = t.at("name").get<std::string>();
      json& g = layout_tensors[name];
      if (g.is_null())
        g = {{"dtype", t.at("dtype")}, {"shape", t.at("global_shape")}, {"shards", json::array()}};
      if (g.at("dtype") != t.at("dtype") || g.at("shape") != t.at("global_shape")) {
        throw InvalidArgument(
            fmt::format("tensor {}: rank {} saved it as {} {} but another rank as {} {}", name,
                        entry.rank, t.at("dtype").get<std::string>(), t.at("global_shape").dump(),
                        g.at("dtype").get<std::string>(), g.at("shape").dump()));
      }
      StoredBlock b = BlockFromJson(t, entry.rank);
      g.at("shards").push_back(BlockJson(b));
    }
    entry.contents["tensors"] = std::move(local);
  }
  for (const auto& [name, g] : layout_tensors.items()) {
    std::vector<StoredBlock> blocks;
    for (const json& s : g.at("shards"))
      blocks.push_back(BlockFromJson(s, s.at("rank").get<int>()));
    const std::string problem = TilingProblem(g.at("shape").get<Shape>(), blocks);
    if (!problem.empty()) {
      throw InvalidArgument(fmt::format("sharded save of tensor {}: {}", name, problem));
    }
  }
  manifest.layout["tensors"] = std::move(layout_tensors);
  manifest.format_version = kManifestFormatVersion;
}

ShardedLayout ShardedLayout::Parse(const Manifest& manifest, const std::string& what) {
  ShardedLayout out;
  try {
    const json& l = manifest.layout;
    if (!IsShardedLayout(l)) throw DataLoss("its layout is not sharded");
    const json& mesh = l.at("mesh");
    out.mesh = {mesh.value("dp", 1), mesh.value("pp", 1), mesh.value("tp", 1)};
    if (out.mesh.dp < 1 || out.mesh.pp < 1 || out.mesh.tp < 1 ||
        out.mesh.Ranks() != manifest.world_size) {
      throw DataLoss(
          fmt::format("mesh {} does not match world size {}", mesh.dump(), manifest.world_size));
    }
    out.digest_block = l.at("digest_block").get<uint64_t>();
    if (out.digest_block == 0) throw DataLoss("digest_block is 0");
    for (const auto& [name, g] : l.at("tensors").items()) {
      GlobalTensor t;
      t.name = name;
      t.dtype = collectives::ParseDType(g.at("dtype").get<std::string>());
      t.shape = g.at("shape").get<Shape>();
      for (const json& s : g.at("shards")) {
        StoredBlock b = BlockFromJson(s, s.at("rank").get<int>());
        const ShardEntry* entry = manifest.Find(b.rank);
        if (!entry)
          throw DataLoss(fmt::format("tensor {} names rank {}, which has no shard", name, b.rank));
        CheckStored(b, t.dtype, *entry, out.digest_block, name);
        t.shards.push_back(std::move(b));
      }
      const std::string problem = TilingProblem(t.shape, t.shards);
      if (!problem.empty()) throw DataLoss(fmt::format("tensor {}: {}", name, problem));
      out.tensors.emplace(name, std::move(t));
    }
    for (const ShardEntry& entry : manifest.shards) {
      RankContents& rc = out.ranks[entry.rank];
      if (entry.contents.is_null()) continue;
      for (const json& j : entry.contents.at("tensors")) {
        LocalTensor t;
        t.name = j.at("name").get<std::string>();
        t.dtype = collectives::ParseDType(j.at("dtype").get<std::string>());
        t.stored = BlockFromJson(j, entry.rank);
        CheckStored(t.stored, t.dtype, entry, out.digest_block, t.name);
        rc.tensors.push_back(std::move(t));
      }
      rc.attributes = AttributesFromJson(entry.contents.value("attributes", json::object()));
    }
  } catch (const json::exception& e) {
    throw DataLoss(fmt::format("{} has a bad sharded layout: {}", what, e.what()));
  } catch (const Error& e) {
    throw DataLoss(fmt::format("{} has a bad sharded layout: {}", what, e.what()));
  }
  return out;
}

json AttributesToJson(const std::map<std::string, AttrValue>& attributes) {
  json out = json::object();
  for (const auto& [key, value] : attributes) {
    if (auto* i = std::get_if<int64_t>(&value)) out[key] = {{"int", *i}};
    if (auto* d = std::get_if<double>(&value)) out[key] = {{"float", *d}};
    if (auto* s = std::get_if<std::string>(&value)) out[key] = {{"text", *s}};
    if (auto* b = std::get_if<Blob>(&value)) out[key] = {{"bytes", Hex(b->bytes.data(), b->bytes.size())}};
  }
  return out;
}

std::map<std::string, AttrValue> AttributesFromJson(const json& j) {
  std::map<std::string, AttrValue> out;
  for (const auto& [key, v] : j.items()) {
    if (v.contains("int")) {
      out[key] = v.at("int").get<int64_t>();
    } else if (v.contains("float")) {
      out[key] = v.at("float").get<double>();
    } else if (v.contains("text")) {
      out[key] = v.at("text").get<std::string>();
    } else if (v.contains("bytes")) {
      out[key] = Blob{Unhex(v.at("bytes").get<std::string>())};
    } else {
      throw DataLoss(
          fmt::format("attribute {} is {}, not int, float, text or bytes", key, v.dump()));
    }
  }
  return out;
}

}  // namespace cohort::checkpoint
