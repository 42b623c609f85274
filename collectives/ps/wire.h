// The little of protocol buffers' wire format that the ps backend writes by hand, so that a
// tensor's bytes go into a message (and a server's answer out to every rank) without a copy:
// an encoded message followed by one more field is that message with the field set.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cohort::collectives::ps {

// Appends the key and the length of a bytes field number `field` holding `len` bytes.
void AppendBytesFieldHeader(std::string& out, int field, uint64_t len);

// `head` followed by bytes field `field` holding *data, which the buffer shares (kept alive by
// it, never copied). An empty data adds nothing (proto3 leaves empty fields out).
grpc::ByteBuffer WithSharedBytesField(std::string head, int field,
                                      std::shared_ptr<const std::string> data);

// `head` followed by bytes field `field` holding the len bytes at data, which the buffer points
// at (a static slice: gRPC neither copies nor frees them; they must outlive the call). len 0
// adds nothing.
grpc::ByteBuffer WithBorrowedBytesField(std::string head, int field, const void* data, size_t len);
// The same with the field's bytes the concatenation of runs, each borrowed the same way.
grpc::ByteBuffer WithBorrowedBytesField(std::string head, int field,
                                        const std::vector<std::string_view>& runs);

// Where the bytes of field `field` start in a message that holds only that field (a PullReply),
// spread over slices; false when the message is something else. An empty message: offset and
// length 0.
bool FindOnlyBytesField(const std::vector<grpc::Slice>& slices, int field, size_t* offset,
                        size_t* len);

// Splits an encoded message spread over slices into its bytes field `field` (where its bytes
// start in the concatenation, and how many; 0 and 0 when absent) and every other field, copied
// in order into *rest (so *rest is the encoding of the message without `field`). The field's
// bytes stay in the slices: nothing copies them. False when the bytes are not an encoding
// protocol buffers can read (truncated, a group, an unknown wire type).
bool SplitBytesField(const std::vector<grpc::Slice>& slices, int field, std::string* rest,
                     size_t* offset, size_t* len);

// Calls run(p, len) for each slice's part of bytes [from, from + n) of the concatenation of
// slices, in order.
template <typename Run>
void ForEachRun(const std::vector<grpc::Slice>& slices, size_t from, size_t n, Run&& run) {
  for (const auto& s : slices) {
    if (n == 0) return;
    if (from >= s.size()) {
      from -= s.size();
      continue;
    }
    const size_t take = std::min(n, s.size() - from);
    run(reinterpret_cast<const char*>(s.begin()) + from, take);
    n -= take;
    from = 0;
  }
}

// Bytes [from, from + n) of the concatenation of slices, as the runs each slice holds.
std::vector<std::string_view> SpansOf(const std::vector<grpc::Slice>& slices, size_t from,
                                      size_t n);

// Copies bytes [from, from + n) of the concatenation of slices to dst.
void CopyFromSlices(const std::vector<grpc::Slice>& slices, size_t from, size_t n, void* dst);

}  // namespace cohort::collectives::ps
