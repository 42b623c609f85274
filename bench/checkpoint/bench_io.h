// Pieces of the checkpoint benchmark: the state (many tensors of mixed sizes and dtypes), the raw
// sequential write/read baseline, page-cache dropping, and the torch.save/torch.load worker.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/shard.h"

namespace cohort::bench {

// A training-like state of about `bytes`: a few large embedding-like f32 tensors, ~100 medium
// f32/bf16 layers, and many small tensors (biases, norms, i64 step counters), 4 KiB..64 MiB.
checkpoint::Shard MakeState(uint64_t bytes, uint64_t seed);
// {"tensors": [{"name", "dtype", "shape"}...]}: what torch_side.py rebuilds.
std::string StateSpecJson(const checkpoint::Shard& state);

// Writes every tensor's bytes, in order, to path (created or truncated) with large write()s,
// then fsyncs the file and its directory. Returns seconds.
double RawWrite(const std::string& path, const checkpoint::Shard& state);
// Drops path from the page cache, then reads it whole: into freshly allocated memory (as any
// loader must), or into *warm (already touched) when fresh_buffer is false. Returns seconds.
double RawRead(const std::string& path, bool fresh_buffer, std::vector<char>* warm);

// posix_fadvise(DONTNEED) on a file, or on every file under a directory (after fsync, their
// clean pages leave the page cache, so the next read comes from the disk).
void DropCache(const std::string& path);
// rm -rf path (no error when it does not exist).
void RemoveAll(const std::string& path);

// torch_side.py running under python, driven over pipes.
class TorchSide {
 public:
  TorchSide(const std::string& python, const std::string& script, const std::string& spec_path);
  ~TorchSide();
  TorchSide(const TorchSide&) = delete;
  TorchSide& operator=(const TorchSide&) = delete;
  // "save" or "load"; returns the seconds torch_side.py measured.
  double Run(const std::string& command, const std::string& path);

 private:
  std::string ReadLine();
  pid_t pid_ = -1;
  int to_ = -1;
  int from_ = -1;
  std::string pending_;
};

}  // namespace cohort::bench
