#include "collectives/ps/wire.h"

#include <grpcpp/support/slice.h>

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

}  // namespace cohort::collectives::ps
