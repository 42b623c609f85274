#include "checkpoint/store/memory_store.h"

#include <fmt/format.h>

#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "checkpoint/store/key.h"
#include "common/error.h"

namespace cohort::checkpoint {

struct MemoryObjectStore::Space {
  std::mutex mu;
  // Objects are immutable once committed: readers copy out of a shared_ptr, so a concurrent
  // Put of the same key never changes bytes under a reader.
  std::map<std::string, std::shared_ptr<const std::string>> objects;
};

namespace {

std::mutex& SpacesMutex() {
  static std::mutex mu;
  return mu;
}

std::map<std::string, std::shared_ptr<MemoryObjectStore::Space>>& Spaces() {
  static auto* spaces = new std::map<std::string, std::shared_ptr<MemoryObjectStore::Space>>();
  return *spaces;
}

// "name/run/step-3" -> {"name", "run/step-3/"}: as with file:// and s3://, a path under the name
// is a folder of that name's objects, so a snapshot's own URI opens onto it.
std::pair<std::string, std::string> SplitName(std::string name) {
  while (!name.empty() && name.back() == '/') name.pop_back();
  const size_t slash = name.find('/');
  if (slash == std::string::npos) return {name, ""};
  return {name.substr(0, slash), name.substr(slash + 1) + "/"};
}

class MemoryWriter : public ObjectWriter {
 public:
  MemoryWriter(std::shared_ptr<MemoryObjectStore::Space> space, std::string uri, std::string key)
      : space_(std::move(space)), uri_(std::move(uri)), key_(std::move(key)) {}

  void Write(const void* data, size_t size) override {
    CheckState();
    buffer_.append(static_cast<const char*>(data), size);
  }

  void Commit() override {
    CheckState();
    committed_ = true;
    auto object = std::make_shared<const std::string>(std::move(buffer_));
    std::lock_guard<std::mutex> lock(space_->mu);
    space_->objects[key_] = std::move(object);
  }

 private:
  void CheckState() const {
    if (committed_)
      throw InvalidArgument(fmt::format("{}: writer of '{}' used after Commit()", uri_, key_));
  }

  std::shared_ptr<MemoryObjectStore::Space> space_;
  std::string uri_;
  std::string key_;
  std::string buffer_;
  bool committed_ = false;
};

}  // namespace

MemoryObjectStore::MemoryObjectStore(const std::string& name) : name_(name) {
  while (!name_.empty() && name_.back() == '/') name_.pop_back();
  std::string space_name;
  std::tie(space_name, prefix_) = SplitName(name_);
  std::lock_guard<std::mutex> lock(SpacesMutex());
  auto& space = Spaces()[space_name];
  if (!space) space = std::make_shared<Space>();
  space_ = space;
}

MemoryObjectStore::~MemoryObjectStore() = default;

std::string MemoryObjectStore::Uri() const { return "memory://" + name_; }

std::unique_ptr<ObjectWriter> MemoryObjectStore::NewWriter(const std::string& key) {
  internal::ValidateKey(Uri(), key);
  return std::make_unique<MemoryWriter>(space_, Uri(), prefix_ + key);
}

std::optional<std::string> MemoryObjectStore::Get(const std::string& key) {
  internal::ValidateKey(Uri(), key);
  std::shared_ptr<const std::string> object;
  {
    std::lock_guard<std::mutex> lock(space_->mu);
    auto it = space_->objects.find(prefix_ + key);
    if (it == space_->objects.end()) return std::nullopt;
    object = it->second;
  }
  return *object;
}

std::string MemoryObjectStore::GetRange(const std::string& key, uint64_t offset, uint64_t length) {
  internal::ValidateKey(Uri(), key);
  std::shared_ptr<const std::string> object;
  {
    std::lock_guard<std::mutex> lock(space_->mu);
    auto it = space_->objects.find(prefix_ + key);
    if (it == space_->objects.end())
      throw InvalidArgument(fmt::format("{}: no object '{}' to read", Uri(), key));
    object = it->second;
  }
  if (offset >= object->size()) return "";
  return object->substr(offset, length);
}

std::optional<ObjectInfo> MemoryObjectStore::Head(const std::string& key) {
  internal::ValidateKey(Uri(), key);
  std::lock_guard<std::mutex> lock(space_->mu);
  auto it = space_->objects.find(prefix_ + key);
  if (it == space_->objects.end()) return std::nullopt;
  return ObjectInfo{key, it->second->size()};
}

std::vector<ObjectInfo> MemoryObjectStore::List(const std::string& prefix) {
  internal::ValidatePrefix(Uri(), prefix);
  std::vector<ObjectInfo> out;
  std::lock_guard<std::mutex> lock(space_->mu);
  const std::string full = prefix_ + prefix;
  for (auto it = space_->objects.lower_bound(full);
       it != space_->objects.end() && it->first.compare(0, full.size(), full) == 0; ++it)
    out.push_back({it->first.substr(prefix_.size()), it->second->size()});
  return out;
}

void MemoryObjectStore::Delete(const std::string& key) {
  internal::ValidateKey(Uri(), key);
  std::lock_guard<std::mutex> lock(space_->mu);
  space_->objects.erase(prefix_ + key);
}

void ClearMemoryStore(const std::string& name) {
  const auto [space_name, prefix] = SplitName(name);
  std::shared_ptr<MemoryObjectStore::Space> space;
  {
    std::lock_guard<std::mutex> lock(SpacesMutex());
    auto it = Spaces().find(space_name);
    if (it == Spaces().end()) return;
    space = it->second;
  }
  std::lock_guard<std::mutex> lock(space->mu);
  auto& objects = space->objects;
  auto it = objects.lower_bound(prefix);
  while (it != objects.end() && it->first.compare(0, prefix.size(), prefix) == 0) {
    it = objects.erase(it);
  }
}

}  // namespace cohort::checkpoint
