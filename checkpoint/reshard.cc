#include "checkpoint/reshard.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/error.h"

namespace cohort::checkpoint {
namespace {

Manifest ReadSnapshotManifest(const RunDir& run, const std::string& name) {
  auto manifest = ReadManifest(run, name);
  if (!manifest) {
    throw DataLoss(fmt::format("{} has no {}: it is incomplete (its save did not finish)",
                               run.Uri(name), kManifestName));
  }
  if (!IsShardedLayout(manifest->layout)) {
    throw InvalidArgument(
        fmt::format("{} is a {} snapshot, not a sharded one: load it with the data-parallel resume",
                    run.Uri(name), manifest->layout.value("kind", "?")));
  }
  return std::move(*manifest);
}

// The snapshot a run's folder resumes from: `latest` when it names a complete one, else the
// newest complete one.
std::string NewestComplete(const RunDir& run) {
  const std::vector<std::string> candidates = ResumeCandidates(run);
  if (candidates.empty()) throw DataLoss(fmt::format("{} has no complete snapshot", run.Uri()));
  return candidates.front();
}

}  // namespace

ShardedReader::ShardedReader(const RunDir& run, const std::string& name)
    : run_(run),
      name_(name),
      manifest_(ReadSnapshotManifest(run, name)),
      layout_(ShardedLayout::Parse(manifest_, run.Uri(name + "/" + kManifestName))) {}

ShardedReader ShardedReader::Open(const std::string& uri) {
  Location loc = ResolveUri(uri);
  const RunDir run = loc.run();
  const std::string name = loc.snapshot ? *loc.snapshot : NewestComplete(run);
  ShardedReader reader(run, name);
  reader.owned_ = std::move(loc.store);
  return reader;
}

void ShardedReader::CheckObjectSize(int rank) {
  if (!sized_.insert(rank).second) return;
  const ShardEntry* entry = manifest_.Find(rank);
  const std::string rel = name_ + "/" + entry->object;
  const auto head = run_.store->Head(run_.Key(rel));
  if (!head) throw DataLoss(fmt::format("{}: missing", run_.Uri(rel)));
  if (head->size != entry->size) {
    throw DataLoss(fmt::format("{}: {} bytes but the manifest says {} ({})", run_.Uri(rel),
                               head->size, entry->size,
                               head->size < entry->size ? "truncated" : "too long"));
  }
}

std::string ShardedReader::Fetch(const StoredBlock& stored, uint64_t nbytes, uint64_t first,
                                 uint64_t end, const std::string& tensor, uint64_t* fetched_first) {
  CheckObjectSize(stored.rank);
  const uint64_t block = layout_.digest_block;
  const uint64_t b0 = first / block, b1 = (end - 1) / block + 1;  // blocks [b0, b1)
  const uint64_t start = b0 * block, length = std::min(b1 * block, nbytes) - start;
  const std::string rel = name_ + "/" + manifest_.Find(stored.rank)->object;
  std::string bytes = run_.store->GetRange(run_.Key(rel), stored.offset + start, length);
  bytes_read_ += bytes.size();
  if (bytes.size() != length) {
    throw DataLoss(fmt::format("{}: tensor {}: read {} of {} bytes at offset {} (truncated)",
                               run_.Uri(rel), tensor, bytes.size(), length, stored.offset + start));
  }
  const DigestAlgorithm algorithm = DigestAlgorithmOf(stored.digests.at(b0));
  for (uint64_t b = b0; b < b1; ++b) {
    const uint64_t at = (b - b0) * block;
    const size_t size = static_cast<size_t>(std::min(block, length - at));
    const std::string digest = Digest(algorithm, bytes.data() + at, size);
    if (digest != stored.digests[b]) {
      throw DataLoss(
          fmt::format("{}: tensor {}: block {} (bytes {}..{}) has digest {}, the "
                      "manifest says {} (corrupt)",
                      run_.Uri(rel), tensor, b, stored.offset + b * block,
                      stored.offset + b * block + size, digest, stored.digests[b]));
    }
  }
  *fetched_first = start;
  return bytes;
}

HostTensor ShardedReader::Read(const SliceRequest& request) {
  const auto it = layout_.tensors.find(request.name);
  if (it == layout_.tensors.end()) {
    throw InvalidArgument(fmt::format(
        "checkpoint: tensor {} is not in {} ({} global tensors); resume with the model it was "
        "saved from",
        request.name, name_, layout_.tensors.size()));
  }
  const GlobalTensor& g = it->second;
  if (g.shape != request.global_shape || g.dtype != request.dtype) {
    throw InvalidArgument(fmt::format(
        "checkpoint: tensor {} has global shape {} ({}) in {} but the model wants {} ({}); "
        "resume with the model it was saved from",
        request.name, ShapeToString(g.shape), collectives::DTypeName(g.dtype), name_,
        ShapeToString(request.global_shape), collectives::DTypeName(request.dtype)));
  }
  if (!FitsIn(request.box, g.shape)) {
    throw InvalidArgument(fmt::format("checkpoint: tensor {}: box {} is outside its shape {}",
                                      request.name, request.box.ToString(),
                                      ShapeToString(g.shape)));
  }
  HostTensor out = HostTensor::Allocate(request.name, g.dtype, request.box.sizes);
  const size_t es = collectives::ElementSize(g.dtype);
  std::vector<const Box*> done;  // boxes already copied: a replica's copy is skipped
  for (const StoredBlock& s : g.shards) {
    if (std::any_of(done.begin(), done.end(), [&](const Box* b) { return *b == s.box; })) continue;
    done.push_back(&s.box);
    const std::optional<Box> region = Intersect(s.box, request.box);
    if (!region) continue;
    const auto [first, end] = ByteSpan(s.box, *region, es);
    uint64_t fetched_first = 0;
    const uint64_t nbytes = static_cast<uint64_t>(s.box.Volume()) * es;
    const std::string bytes = Fetch(s, nbytes, first, end, request.name, &fetched_first);
    CopyRegion(bytes.data(), s.box, fetched_first, out.mutable_data(), request.box, *region, es);
  }
  return out;
}

HostTensor ShardedReader::ReadWhole(const std::string& name) {
  const auto it = layout_.tensors.find(name);
  if (it == layout_.tensors.end()) {
    throw InvalidArgument(fmt::format("checkpoint: tensor {} is not in {}", name, name_));
  }
  return Read({name, it->second.dtype, it->second.shape, Box::Whole(it->second.shape)});
}

std::optional<Shard> ShardedReader::ReadLocal(int rank) {
  const auto it = layout_.ranks.find(rank);
  if (it == layout_.ranks.end()) return std::nullopt;
  Shard shard;
  shard.step = manifest_.step;
  shard.epoch = manifest_.epoch;
  shard.attributes = it->second.attributes;
  for (const LocalTensor& t : it->second.tensors) {
    HostTensor out = HostTensor::Allocate(t.name, t.dtype, t.stored.box.sizes);
    if (out.nbytes() > 0) {
      uint64_t fetched_first = 0;
      const std::string bytes =
          Fetch(t.stored, out.nbytes(), 0, out.nbytes(), t.name, &fetched_first);
      std::copy(bytes.begin(), bytes.end(), static_cast<char*>(out.mutable_data()));
    }
    shard.tensors.push_back(std::move(out));
  }
  return shard;
}

}  // namespace cohort::checkpoint
