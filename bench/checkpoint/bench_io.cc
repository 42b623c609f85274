#include "bench/checkpoint/bench_io.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "common/check.h"
#include "common/error.h"

extern char** environ;

namespace cohort::bench {
namespace {

using Clock = std::chrono::steady_clock;
using collectives::DType;
namespace fs = std::filesystem;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void FillPattern(checkpoint::HostTensor& t, uint64_t seed) {
  auto* p = static_cast<uint8_t*>(t.mutable_data());
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= t.nbytes(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
  for (; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(i);
}

void FsyncDirOf(const std::string& path) {
  const std::string dir = fs::path(path).parent_path().string();
  const int fd = COHORT_SYSCHECK(::open(dir.c_str(), O_RDONLY | O_DIRECTORY));
  COHORT_SYSCHECK(::fsync(fd));
  ::close(fd);
}

}  // namespace

checkpoint::Shard MakeState(uint64_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  checkpoint::Shard s;
  s.step = 1;
  uint64_t left = bytes;
  int layer = 0;
  auto add = [&](const std::string& name, DType dtype, uint64_t want_bytes) {
    const uint64_t esize = collectives::ElementSize(dtype);
    const int64_t n =
        static_cast<int64_t>(std::max<uint64_t>(1, std::min(want_bytes, left) / esize));
    auto t = checkpoint::HostTensor::Allocate(name, dtype, {n});
    FillPattern(t, seed + s.tensors.size());
    left -= std::min<uint64_t>(left, t.nbytes());
    s.tensors.push_back(std::move(t));
  };
  // 50%: embedding-like tensors of 64 MiB.
  for (int i = 0; i < 8 && left > 0; ++i)
    add(fmt::format("model/embed.{}", i), DType::kFloat32, 64ull << 20);
  // ~40%: layers of 2..6 MiB, f32 weights with bf16 optimizer moments, as mixed precision has.
  while (left > (bytes / 10) && left > 0) {
    const uint64_t size = (2ull << 20) + rng() % (4ull << 20);
    add(fmt::format("model/layer{}.weight", layer), DType::kFloat32, size);
    add(fmt::format("optimizer/{}/exp_avg", layer), DType::kBFloat16, size / 4);
    ++layer;
  }
  // The rest: small tensors of 4..256 KiB, and a step counter per layer.
  for (int i = 0; left > 0; ++i) {
    add(fmt::format("model/norm{}.weight", i), i % 3 ? DType::kFloat32 : DType::kBFloat16,
        (4ull << 10) + rng() % (252ull << 10));
    if (i < layer) add(fmt::format("optimizer/{}/step", i), DType::kInt64, 8);
  }
  return s;
}

std::string StateSpecJson(const checkpoint::Shard& state) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : state.tensors) {
    tensors.push_back(
        {{"name", t.name()}, {"dtype", collectives::DTypeName(t.dtype())}, {"shape", t.shape()}});
  }
  return nlohmann::json{{"tensors", tensors}}.dump();
}

double RawWrite(const std::string& path, const checkpoint::Shard& state) {
  const auto start = Clock::now();
  const int fd = COHORT_SYSCHECK(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
  for (const auto& t : state.tensors) {
    const auto* p = static_cast<const char*>(t.data());
    size_t left = t.nbytes();
    while (left > 0) {
      const ssize_t n = COHORT_SYSCHECK(::write(fd, p, std::min<size_t>(left, 64u << 20)));
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  COHORT_SYSCHECK(::fsync(fd));
  ::close(fd);
  FsyncDirOf(path);
  return Since(start);
}

double RawRead(const std::string& path, bool fresh_buffer, std::vector<char>* warm) {
  DropCache(path);
  const auto start = Clock::now();
  const int fd = COHORT_SYSCHECK(::open(path.c_str(), O_RDONLY));
  const size_t size = static_cast<size_t>(fs::file_size(path));
  std::unique_ptr<char[]> fresh;
  char* buf;
  if (fresh_buffer) {
    fresh.reset(new char[size]);  // untouched: its pages fault in as read() fills them
    buf = fresh.get();
  } else {
    warm->resize(size);
    buf = warm->data();
  }
  size_t done = 0;
  while (done < size) {
    const ssize_t n =
        COHORT_SYSCHECK(::read(fd, buf + done, std::min<size_t>(size - done, 64u << 20)));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  const double seconds = Since(start);
  if (done != size) throw DataLoss(fmt::format("{}: read {} of {} bytes", path, done, size));
  return seconds;
}

void DropCache(const std::string& path) {
  auto drop = [](const std::string& file) {
    const int fd = ::open(file.c_str(), O_RDONLY);
    if (fd < 0) return;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  };
  if (fs::is_directory(path)) {
    for (const auto& e : fs::recursive_directory_iterator(path)) {
      if (e.is_regular_file()) drop(e.path().string());
    }
  } else {
    drop(path);
  }
}

void RemoveAll(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

TorchSide::TorchSide(const std::string& python, const std::string& script,
                     const std::string& spec_path) {
  int in[2], out[2];
  COHORT_SYSCHECK(::pipe(in));
  COHORT_SYSCHECK(::pipe(out));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, in[1]);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  std::vector<std::string> args = {python, script, spec_path};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Large allocations always from fresh mmap'ed memory, as in a resumed process: otherwise
  // glibc's dynamic mmap threshold lets a repeated torch.load reuse the previous load's heap and
  // skip the page faults that a real resume (and every other side here) pays.
  std::vector<std::string> env_strings = {"MALLOC_MMAP_THRESHOLD_=65536"};
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "MALLOC_MMAP_THRESHOLD_=", 23) != 0) env_strings.push_back(*e);
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, python.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(in[0]);
  ::close(out[1]);
  to_ = in[1];
  from_ = out[0];
  if (rc != 0) throw Unavailable(fmt::format("cannot start {}: {}", python, std::strerror(rc)));
  const std::string ready = ReadLine();
  if (ready != "ready") {
    throw Unavailable(fmt::format("{} {} did not start: '{}'", python, script, ready));
  }
}

TorchSide::~TorchSide() {
  if (to_ >= 0) ::close(to_);
  if (from_ >= 0) ::close(from_);
  if (pid_ > 0) ::waitpid(pid_, nullptr, 0);  // it exits at EOF on stdin
}

std::string TorchSide::ReadLine() {
  for (;;) {
    const size_t nl = pending_.find('\n');
    if (nl != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      return line;
    }
    char buf[4096];
    const ssize_t n = COHORT_SYSCHECK(::read(from_, buf, sizeof(buf)));
    if (n == 0) return "<torch side exited: " + pending_ + ">";
    pending_.append(buf, static_cast<size_t>(n));
  }
}

double TorchSide::Run(const std::string& command, const std::string& path) {
  const std::string line = command + " " + path + "\n";
  if (::write(to_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    throw Unavailable("torch side: write to its stdin failed");
  }
  const std::string reply = ReadLine();
  if (reply.rfind("ok ", 0) != 0) throw Unavailable("torch side: " + reply);
  return std::stod(reply.substr(3));
}

}  // namespace cohort::bench
