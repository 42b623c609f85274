#include "collectives/ps/wire.h"

#include <grpcpp/support/slice.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace cohort::collectives::ps {
namespace {

// Reads a message's wire format across slices, byte by byte for keys and lengths and by whole
// slices for skips.
class SliceReader {
 public:
  explicit SliceReader(const std::vector<grpc::Slice>& slices) : slices_(slices) {
    for (const auto& s : slices) total_ += s.size();
  }
  size_t offset() const { return offset_; }
  bool AtEnd() const { return offset_ >= total_; }
  bool Skip(uint64_t n) {
    if (n > total_ - offset_) return false;
    offset_ += n;
    while (n > 0) {
      const size_t left = slices_[slice_].size() - at_;
      const size_t take = std::min<uint64_t>(n, left);
      at_ += take;
      n -= take;
      if (at_ == slices_[slice_].size() && slice_ + 1 < slices_.size()) ++slice_, at_ = 0;
    }
    return true;
  }
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (AtEnd()) return false;
      while (at_ == slices_[slice_].size()) ++slice_, at_ = 0;  // skip empty slices
      const uint8_t b = slices_[slice_].begin()[at_];
      Skip(1);
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }

 private:
  const std::vector<grpc::Slice>& slices_;
  size_t total_ = 0, offset_ = 0, slice_ = 0, at_ = 0;
};

}  // namespace

bool SplitBytesField(const std::vector<grpc::Slice>& slices, int field, std::string* rest,
                     size_t* offset, size_t* len) {
  SliceReader r(slices);
  *offset = *len = 0;
  rest->clear();
  // The other fields are copied a run at a time: the bytes before the field, and after it.
  size_t kept = 0;  // where the run of other fields not yet copied starts
  auto keep_until = [&](size_t end) {
    const size_t old = rest->size();
    rest->resize(old + (end - kept));
    CopyFromSlices(slices, kept, end - kept, rest->data() + old);
  };
  while (!r.AtEnd()) {
    const size_t start = r.offset();
    uint64_t key = 0, v = 0;
    if (!r.Varint(&key) || (key >> 3) == 0) return false;
    switch (key & 7) {
      case 0:
        if (!r.Varint(&v)) return false;
        break;
      case 1:
        if (!r.Skip(8)) return false;
        break;
      case 5:
        if (!r.Skip(4)) return false;
        break;
      case 2:
        if (!r.Varint(&v)) return false;
        if ((key >> 3) == static_cast<uint64_t>(field)) {  // the last one counts, as in a parse
          *offset = r.offset();
          *len = v;
          if (!r.Skip(v)) return false;
          keep_until(start);
          kept = r.offset();
          continue;
        }
        if (!r.Skip(v)) return false;
        break;
      default:
        return false;
    }
  }
  keep_until(r.offset());
  return true;
}

std::vector<std::string_view> SpansOf(const std::vector<grpc::Slice>& slices, size_t from,
                                      size_t n) {
  std::vector<std::string_view> spans;
  ForEachRun(slices, from, n, [&](const char* p, size_t len) { spans.emplace_back(p, len); });
  return spans;
}

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

grpc::ByteBuffer WithBorrowedBytesField(std::string head, int field, const void* data,
                                        size_t len) {
  return WithBorrowedBytesField(std::move(head), field,
                                {std::string_view(static_cast<const char*>(data), len)});
}

grpc::ByteBuffer WithBorrowedBytesField(std::string head, int field,
                                        const std::vector<std::string_view>& runs) {
  size_t len = 0;
  for (const auto& r : runs) len += r.size();
  std::vector<grpc::Slice> slices;
  if (len > 0) AppendBytesFieldHeader(head, field, len);
  slices.emplace_back(head);
  for (const auto& r : runs) {
    if (!r.empty()) slices.emplace_back(r.data(), r.size(), grpc::Slice::STATIC_SLICE);
  }
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
  ForEachRun(slices, from, n, [&](const char* p, size_t len) {
    std::memcpy(out, p, len);
    out += len;
  });
}

}  // namespace cohort::collectives::ps
