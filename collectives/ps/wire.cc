#include "collectives/ps/wire.h"

#include <grpcpp/support/slice.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace cohort::collectives::ps {

void AppendBytesFieldHeader(std::string& out, int field, uint64_t len) {
  uint64_t key = (static_cast<uint64_t>(field) << 3) | 2;  // wire type 2: length-delimited
  for (uint64_t v : {key, len}) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  }
}

grpc::ByteBuffer WithSharedBytesField(std::string head, int field,
                                      std::shared_ptr<const std::string> data) {
  std::vector<grpc::Slice> slices;
  if (!data || data->empty()) {
    slices.emplace_back(head);
    return grpc::ByteBuffer(slices.data(), slices.size());
  }
  AppendBytesFieldHeader(head, field, data->size());
  slices.emplace_back(head);
  // The slice holds its own reference to data, dropped when gRPC is done sending it.
  auto* keep = new std::shared_ptr<const std::string>(data);
  slices.emplace_back(
      const_cast<char*>(data->data()), data->size(),
      [](void* p) { delete static_cast<std::shared_ptr<const std::string>*>(p); }, keep);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

bool FindOnlyBytesField(const std::vector<grpc::Slice>& slices, int field, size_t* offset,
                        size_t* len) {
  size_t total = 0;
  for (const auto& s : slices) total += s.size();
  *offset = *len = 0;
  if (total == 0) return true;
  // The key and the length: at most 11 bytes, possibly spread over slices.
  uint8_t head[11] = {};
  const size_t got = std::min(total, sizeof(head));
  CopyFromSlices(slices, 0, got, head);
  uint64_t n = 0;
  size_t at = 1;
  for (int shift = 0; at < got && shift < 64; shift += 7) {
    const uint8_t b = head[at++];
    n |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) break;
  }
  if (head[0] != ((static_cast<uint64_t>(field) << 3) | 2) || at + n != total) return false;
  *offset = at;
  *len = n;
  return true;
}

void CopyFromSlices(const std::vector<grpc::Slice>& slices, size_t from, size_t n, void* dst) {
  char* out = static_cast<char*>(dst);
  for (const auto& s : slices) {
    if (n == 0) return;
    if (from >= s.size()) {
      from -= s.size();
      continue;
    }
    const size_t take = std::min(n, s.size() - from);
    std::memcpy(out, s.begin() + from, take);
    out += take;
    n -= take;
    from = 0;
  }
}

}  // namespace cohort::collectives::ps
