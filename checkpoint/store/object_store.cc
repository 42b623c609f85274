#include "checkpoint/store/object_store.h"

#include <fmt/format.h>

#include "checkpoint/store/file_store.h"
#include "checkpoint/store/memory_store.h"
#include "checkpoint/store/s3_object_store.h"
#include "common/error.h"

namespace cohort::checkpoint {

void ObjectStore::Put(const std::string& key, const void* data, size_t size) {
  auto writer = NewWriter(key);
  writer->Write(data, size);
  writer->Commit();
}

std::unique_ptr<ObjectStore> OpenObjectStore(const std::string& uri) {
  auto starts_with = [&](const char* scheme) { return uri.rfind(scheme, 0) == 0; };
  if (starts_with("file://")) {
    std::string path = uri.substr(7);
    // file://host/path is not supported; file:///abs has an empty host.
    if (path.empty() || path.front() != '/')
      throw InvalidArgument(fmt::format(
          "checkpoint URI '{}' is not of the form file:///absolute/dir (three slashes)", uri));
    return std::make_unique<FileObjectStore>(path);
  }
  if (starts_with("memory://")) return std::make_unique<MemoryObjectStore>(uri.substr(9));
  if (starts_with("s3://")) return OpenS3ObjectStore(uri, S3Options::FromEnv());
  bool has_scheme = uri.find("://") != std::string::npos;
  if (!uri.empty() && !has_scheme) return std::make_unique<FileObjectStore>(uri);
  throw InvalidArgument(fmt::format(
      "unsupported checkpoint URI '{}'; use file:///abs/dir, a plain path, s3://bucket/prefix "
      "or memory://name",
      uri));
}

}  // namespace cohort::checkpoint
