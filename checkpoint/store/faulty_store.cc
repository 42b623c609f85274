#include "checkpoint/store/faulty_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

namespace cohort::checkpoint {
namespace {

using Op = FaultyObjectStore::Op;
using Cut = FaultyObjectStore::Cut;

// Forwards to the inner writer, except for the bytes past the cut point.
class FaultyWriter : public ObjectWriter {
 public:
  FaultyWriter(FaultyObjectStore* store, std::unique_ptr<ObjectWriter> inner, std::string key,
               bool cut, Cut how, std::optional<uint64_t> keep)
      : store_(store),
        inner_(std::move(inner)),
        key_(std::move(key)),
        cut_(cut),
        how_(how),
        keep_(keep) {}

  void Write(const void* data, size_t size) override {
    store_->Enter(Op::kWrite, key_);
    const char* p = static_cast<const char*>(data);
    if (!cut_) return inner_->Write(p, size);
    if (!keep_) {  // random cut: decided at Commit
      buffer_.append(p, size);
      return;
    }
    uint64_t room = *keep_ > written_ ? *keep_ - written_ : 0;
    uint64_t n = std::min<uint64_t>(room, size);
    if (n > 0) inner_->Write(p, n);
    written_ += n;
    if (n < size) {
      if (!counted_) store_->CountInjected();
      counted_ = true;
      if (how_ == Cut::kThrowMidWrite) {
        failed_ = true;
        throw Unavailable(fmt::format("injected fault: write of '{}' to {} cut after {} bytes",
                                      key_, store_->Uri(), *keep_));
      }
    }
  }

  void Commit() override {
    store_->Enter(Op::kCommit, key_);
    if (failed_)
      throw Unavailable(fmt::format("injected fault: '{}' was cut short and cannot commit", key_));
    if (cut_ && !keep_) {
      uint64_t keep = store_->DrawCut(buffer_.size());
      inner_->Write(buffer_.data(), keep);
      store_->CountInjected();
      if (how_ == Cut::kThrowMidWrite)
        throw Unavailable(fmt::format("injected fault: write of '{}' to {} cut after {} bytes",
                                      key_, store_->Uri(), keep));
    }
    inner_->Commit();
  }

 private:
  FaultyObjectStore* store_;
  std::unique_ptr<ObjectWriter> inner_;
  std::string key_;
  bool cut_;
  Cut how_;
  std::optional<uint64_t> keep_;
  uint64_t written_ = 0;
  std::string buffer_;
  bool counted_ = false;
  bool failed_ = false;
};

}  // namespace

const char* FaultyObjectStore::OpName(Op op) {
  static const char* names[kNumOps] = {"NewWriter", "Write", "Commit", "Get",
                                       "GetRange",  "Head",  "List",   "Delete"};
  return names[static_cast<int>(op)];
}

FaultyObjectStore::FaultyObjectStore(std::shared_ptr<ObjectStore> inner, uint64_t seed)
    : inner_(std::move(inner)), rng_(seed) {}

void FaultyObjectStore::FailNth(Op op, int n, ErrorKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& f = ops_[static_cast<int>(op)];
  f.fail_at = n > 0 ? f.calls + n : 0;
  f.fail_kind = kind;
}

void FaultyObjectStore::FailRandomly(Op op, double probability, ErrorKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& f = ops_[static_cast<int>(op)];
  f.fail_probability = probability;
  f.random_kind = kind;
}

void FaultyObjectStore::CutWrite(int n, Cut how, std::optional<uint64_t> keep) {
  std::lock_guard<std::mutex> lock(mu_);
  cut_at_ = n > 0 ? writers_ + n : 0;
  cut_how_ = how;
  cut_keep_ = keep;
}

void FaultyObjectStore::Delay(Op op, std::chrono::milliseconds delay,
                              std::chrono::milliseconds jitter) {
  std::lock_guard<std::mutex> lock(mu_);
  ops_[static_cast<int>(op)].delay = delay;
  ops_[static_cast<int>(op)].jitter = jitter;
}

void FaultyObjectStore::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& f : ops_) {
    int calls = f.calls;
    f = OpFaults();
    f.calls = calls;
  }
  cut_at_ = 0;
}

int FaultyObjectStore::Calls(Op op) const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_[static_cast<int>(op)].calls;
}

int FaultyObjectStore::Injected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return injected_;
}

void FaultyObjectStore::CountInjected() {
  std::lock_guard<std::mutex> lock(mu_);
  ++injected_;
}

uint64_t FaultyObjectStore::DrawCut(uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  return size == 0 ? 0 : rng_() % size;
}

void FaultyObjectStore::Enter(Op op, const std::string& what) {
  std::chrono::milliseconds sleep{0};
  std::optional<ErrorKind> fail;
  int call = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& f = ops_[static_cast<int>(op)];
    call = ++f.calls;
    sleep = f.delay;
    if (f.jitter.count() > 0)
      sleep += std::chrono::milliseconds(rng_() % static_cast<uint64_t>(f.jitter.count()));
    if (call == f.fail_at) {
      fail = f.fail_kind;
    } else if (f.fail_probability > 0 &&
               std::uniform_real_distribution<double>(0, 1)(rng_) < f.fail_probability) {
      fail = f.random_kind;
    }
    if (fail) ++injected_;
  }
  if (sleep.count() > 0) std::this_thread::sleep_for(sleep);
  if (fail)
    ThrowError(*fail, fmt::format("injected fault: {} of '{}' on {} (call {})", OpName(op), what,
                                  inner_->Uri(), call));
}

std::string FaultyObjectStore::Uri() const { return inner_->Uri(); }

std::unique_ptr<ObjectWriter> FaultyObjectStore::NewWriter(const std::string& key) {
  Enter(Op::kNewWriter, key);
  bool cut;
  Cut how;
  std::optional<uint64_t> keep;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cut = ++writers_ == cut_at_;
    how = cut_how_;
    keep = cut_keep_;
  }
  return std::make_unique<FaultyWriter>(this, inner_->NewWriter(key), key, cut, how, keep);
}

std::optional<std::string> FaultyObjectStore::Get(const std::string& key) {
  Enter(Op::kGet, key);
  return inner_->Get(key);
}

std::string FaultyObjectStore::GetRange(const std::string& key, uint64_t offset, uint64_t length) {
  Enter(Op::kGetRange, key);
  return inner_->GetRange(key, offset, length);
}

std::optional<ObjectInfo> FaultyObjectStore::Head(const std::string& key) {
  Enter(Op::kHead, key);
  return inner_->Head(key);
}

std::vector<ObjectInfo> FaultyObjectStore::List(const std::string& prefix) {
  Enter(Op::kList, prefix);
  return inner_->List(prefix);
}

void FaultyObjectStore::Delete(const std::string& key) {
  Enter(Op::kDelete, key);
  inner_->Delete(key);
}

}  // namespace cohort::checkpoint
