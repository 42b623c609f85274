// The parameter server's matching and combining (PushTable), in one process with fake waiting
// calls: results in rank order whatever order the pushes arrive in, and the one-line failures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "collectives/ps/ps_communicator.h"
#include "collectives/ps/push_combine.h"
#include "collectives/ps/push_table.h"
#include "collectives/ps/wire.h"
#include "collectives/tensor_view.h"

namespace cohort::testing {
namespace {

namespace pb = ::cohort::ps;
using collectives::DType;
using collectives::ps::PushTable;
using ::testing::HasSubstr;

class FakeCall : public PushTable::Waiter {
 public:
  explicit FakeCall(pb::PushRequest req) : req_(std::move(req)) {}
  const pb::PushRequest& Request() const override { return req_; }
  void Answer(const grpc::Status& status, std::shared_ptr<const std::string> result) override {
    ++answers;
    this->status = status;
    data = result ? *result : "";
  }
  int answers = 0;
  grpc::Status status;
  std::string data;

 private:
  pb::PushRequest req_;
};

pb::PushRequest Push(int rank, int world, const std::vector<float>& v, uint64_t seq = 1) {
  pb::PushRequest p;
  p.set_scope("test/scope");
  p.set_seq(seq);
  p.set_rank(rank);
  p.set_world(world);
  p.set_kind(pb::REDUCE);
  p.set_dtype(static_cast<int>(DType::kFloat32));
  p.set_total(v.size());
  p.set_count(v.size());
  p.set_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
  return p;
}

float First(const std::string& data) {
  float f;
  std::memcpy(&f, data.data(), sizeof(f));
  return f;
}

// (1e8 + -1e8) + 1 = 1 in float, but 1e8 + (-1e8 + 1) = 0: only rank order gives 1.
TEST(PsPushTable, SumsInRankOrderWhateverTheArrivalOrder) {
  const std::vector<std::vector<float>> inputs = {{1e8f}, {-1e8f}, {1.0f}};
  std::vector<int> order = {0, 1, 2};
  do {
    PushTable table;
    std::vector<std::unique_ptr<FakeCall>> calls;
    for (int r = 0; r < 3; ++r) calls.push_back(std::make_unique<FakeCall>(Push(r, 3, inputs[r])));
    for (int r : order) table.Push(calls[r].get());
    for (auto& c : calls) {
      ASSERT_EQ(c->answers, 1);
      ASSERT_TRUE(c->status.ok()) << c->status.error_message();
      EXPECT_EQ(First(c->data), 1.0f);
    }
    EXPECT_EQ(table.Pending(), 0u);
  } while (std::next_permutation(order.begin(), order.end()));
}

TEST(PsPushTable, MismatchFailsEveryRankNamingBoth) {
  PushTable table;
  FakeCall a(Push(1, 2, {1, 2, 3})), b(Push(0, 2, {1, 2}));
  table.Push(&a);
  table.Push(&b);
  for (FakeCall* c : {&a, &b}) {
    ASSERT_EQ(c->answers, 1);
    EXPECT_EQ(c->status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(c->status.error_message(),
                HasSubstr("rank 0 called allreduce f32[2] sum but rank 1 called allreduce f32[3] "
                          "sum"));
  }
  FakeCall late(Push(0, 2, {1, 2, 3}));  // the round failed: a late push fails at once
  table.Push(&late);
  EXPECT_EQ(late.answers, 1);
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(PsPushTable, AbandonAndLeaveFailThePendingPushes) {
  PushTable table;
  FakeCall a(Push(0, 3, {1})), b(Push(1, 3, {1}));
  table.Push(&a);
  table.Push(&b);
  table.Abandon(&b);
  for (FakeCall* c : {&a, &b}) {
    EXPECT_EQ(c->answers, 1);
    EXPECT_THAT(c->status.error_message(), HasSubstr("rank 1 gave up on it"));
  }
  FakeCall c(Push(0, 3, {1}, 2));
  table.Push(&c);
  table.Left("test/scope", 2);
  EXPECT_EQ(c.answers, 1);
  EXPECT_THAT(c.status.error_message(), HasSubstr("rank 2 left this communicator"));
  FakeCall d(Push(1, 3, {1}, 3));  // later collectives of that communicator fail at once
  table.Push(&d);
  EXPECT_EQ(d.answers, 1);
  EXPECT_EQ(d.status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(table.Pending(), 0u);
}

TEST(PsPushTable, MalformedAndDuplicatePushesAreRefused) {
  PushTable table;
  pb::PushRequest bad = Push(0, 2, {1, 2});
  bad.set_count(3);  // 3 elements announced, 2 sent
  FakeCall malformed(bad);
  table.Push(&malformed);
  EXPECT_THAT(malformed.status.error_message(), HasSubstr("sent 8 bytes for 3 elements"));
  FakeCall first(Push(0, 2, {1})), twice(Push(0, 2, {1}));
  table.Push(&first);
  table.Push(&twice);
  EXPECT_EQ(first.answers, 0);  // still waiting for rank 1
  EXPECT_THAT(twice.status.error_message(), HasSubstr("rank 0 pushed it twice"));
  table.Abandon(&first);
}

// The hand-written wire format against protobuf's own: an answer built with a shared data field
// parses as a PullReply, and a PullReply's encoding, cut into slices anywhere, is found again.
TEST(PsWire, SharedFieldAndSplitSlicesRoundTrip) {
  auto data = std::make_shared<const std::string>(std::string(300, 'x') + "end");
  grpc::ByteBuffer buf = collectives::ps::WithSharedBytesField("", 1, data);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(buf.Dump(&slices).ok());
  std::string flat;
  for (const auto& sl : slices) flat.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  pb::PullReply reply;
  ASSERT_TRUE(reply.ParseFromString(flat));
  EXPECT_EQ(reply.data(), *data);

  const std::string encoded = reply.SerializeAsString();
  for (size_t cut : {size_t{1}, size_t{2}, size_t{3}, encoded.size() - 1}) {
    std::vector<grpc::Slice> parts = {grpc::Slice(encoded.substr(0, cut)),
                                      grpc::Slice(encoded.substr(cut))};
    size_t offset = 0, len = 0;
    ASSERT_TRUE(collectives::ps::FindOnlyBytesField(parts, 1, &offset, &len)) << cut;
    ASSERT_EQ(len, data->size());
    std::string got(len, '\0');
    collectives::ps::CopyFromSlices(parts, offset, len, got.data());
    EXPECT_EQ(got, *data) << cut;
  }
  size_t offset = 0, len = 0;
  EXPECT_FALSE(collectives::ps::FindOnlyBytesField({grpc::Slice(std::string("\x08\x01"))}, 1,
                                                   &offset, &len));
}

// Slices of `bytes` cut every `step` bytes (the last one shorter), with an empty one in front.
std::vector<grpc::Slice> CutEvery(const std::string& bytes, size_t step) {
  std::vector<grpc::Slice> slices = {grpc::Slice(std::string())};
  for (size_t at = 0; at < bytes.size(); at += step) {
    slices.emplace_back(bytes.substr(at, step));
  }
  return slices;
}

// The server's split of a push (ps_server.cc): the fields but data parse back to the same
// request, and data is found in place, however the encoding is cut into slices and wherever the
// data field sits (the client writes it last; protobuf writes it in field order).
TEST(PsWire, SplitFindsTheDataFieldInPlaceAcrossSlices) {
  pb::PushRequest push = Push(1, 3, {1.5f, -2.0f, 3.25f, 7.0f, 11.0f});
  push.set_root(2);  // a field after data in field order
  const std::string data = push.data();
  for (const bool last : {false, true}) {
    std::string encoded = push.SerializeAsString();
    if (last) {  // the header, then data appended, as Exchange::Encode writes it
      pb::PushRequest header = push;
      header.clear_data();
      encoded = header.SerializeAsString();
      collectives::ps::AppendBytesFieldHeader(encoded, 12, data.size());
      encoded += data;
    }
    for (size_t step : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, encoded.size()}) {
      const auto slices = CutEvery(encoded, step);
      std::string rest;
      size_t offset = 0, len = 0;
      ASSERT_TRUE(collectives::ps::SplitBytesField(slices, 12, &rest, &offset, &len)) << step;
      pb::PushRequest got;
      ASSERT_TRUE(got.ParseFromString(rest));
      EXPECT_TRUE(got.data().empty());
      got.set_data(data);
      EXPECT_EQ(got.SerializeAsString(), push.SerializeAsString()) << step;
      ASSERT_EQ(len, data.size());
      std::string joined;
      for (auto run : collectives::ps::SpansOf(slices, offset, len)) joined.append(run);
      EXPECT_EQ(joined, data) << step << (last ? " last" : " in order");
    }
  }
  std::string rest;
  size_t offset = 9, len = 9;
  const std::string barrier = Push(0, 2, {}).SerializeAsString();  // no data field at all
  ASSERT_TRUE(collectives::ps::SplitBytesField(CutEvery(barrier, 2), 12, &rest, &offset, &len));
  EXPECT_EQ(offset + len, 0u);
  EXPECT_EQ(rest, barrier);
  const std::string whole = push.SerializeAsString();
  EXPECT_FALSE(collectives::ps::SplitBytesField({grpc::Slice(whole.substr(0, whole.size() - 1))},
                                                12, &rest, &offset, &len));  // truncated
  EXPECT_FALSE(collectives::ps::SplitBytesField({grpc::Slice(std::string("\x0b\x00"))}, 12,
                                                &rest, &offset, &len));  // a group
}

// Combine reads each rank's data where it lies, in runs of any length and alignment (elements
// cut between runs): the same bits as one contiguous buffer gives, for every dtype's width.
TEST(PsCombine, RunsOfAnyAlignmentReduceAsOneBuffer) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64, DType::kBFloat16, DType::kInt64,
                      DType::kUInt8}) {
    const size_t es = collectives::ElementSize(dtype), count = 1031;
    std::vector<std::string> bytes(3);
    for (int r = 0; r < 3; ++r) {
      bytes[r].resize(count * es);
      for (size_t i = 0; i < bytes[r].size(); ++i)
        bytes[r][i] = static_cast<char>(i % es == es - 1 ? (r + 1) : (i * 7 + r) % 31);
    }
    std::vector<pb::PushRequest> reqs(3);
    std::vector<const pb::PushRequest*> pushes;
    for (int r = 0; r < 3; ++r) {
      reqs[r].set_rank(r);
      reqs[r].set_world(3);
      reqs[r].set_kind(pb::REDUCE);
      reqs[r].set_dtype(static_cast<int>(dtype));
      reqs[r].set_reduce(static_cast<int>(collectives::ReduceOp::kSum));
      reqs[r].set_count(count);
      pushes.push_back(&reqs[r]);
    }
    std::vector<std::vector<std::string_view>> whole, cut;
    // Cut runs start at odd offsets into a buffer one byte past an aligned start.
    std::vector<std::string> shifted(3);
    for (int r = 0; r < 3; ++r) {
      whole.push_back({bytes[r]});
      shifted[r] = "x" + bytes[r];
      std::vector<std::string_view> runs;
      const std::string_view all(shifted[r].data() + 1, bytes[r].size());
      for (size_t at = 0, step = 1; at < all.size(); at += step, step = step % 13 + 2)
        runs.push_back(all.substr(at, std::min(step, all.size() - at)));
      cut.push_back(runs);
    }
    const std::string want = collectives::ps::Combine(pushes, whole);
    EXPECT_EQ(collectives::ps::Combine(pushes, cut), want) << collectives::DTypeName(dtype);
    EXPECT_EQ(want.size(), count * es);
  }
}

// Partitions: 4 MiB ones for a large tensor; a tensor with fewer such partitions than servers is
// cut into one piece per server (every server works), but not below 64 KiB; one server: as set.
TEST(PsPartitions, SpreadOverEveryServerButNotIntoCrumbs) {
  using collectives::ps::PartitionElements;
  constexpr size_t kMiB = 1 << 20, k4 = 4 * kMiB;
  EXPECT_EQ(PartitionElements(64 * kMiB / 4, 4, k4, 2), kMiB);  // 16 partitions of 4 MiB
  EXPECT_EQ(PartitionElements(kMiB / 4, 4, k4, 1), kMiB);       // one server: one partition
  EXPECT_EQ(PartitionElements(kMiB / 4, 4, k4, 2), kMiB / 8);   // 1 MiB: two of 512 KiB
  EXPECT_EQ(PartitionElements(kMiB / 4, 4, k4, 4), kMiB / 16);  // four of 256 KiB
  EXPECT_EQ(PartitionElements(2, 4, k4, 4), 16384u);            // 8 B: one partition
  EXPECT_EQ(PartitionElements(100000, 4, k4, 4), 25000u);       // 400 KB: four of 100 KB
  EXPECT_EQ(PartitionElements(40000, 4, k4, 4), 16384u);        // 160 KB: 64 KiB pieces
  EXPECT_EQ(PartitionElements(1031, 8, 1000, 3), 125u);         // as set: 1000-byte ones
  EXPECT_EQ(PartitionElements(5 * kMiB, 1, k4, 3), (5 * kMiB + 2) / 3);  // 5 MiB: 3 pieces
  EXPECT_EQ(PartitionElements(12 * kMiB, 1, k4, 3), k4);                 // 12 MiB: 3 of 4 MiB
}

}  // namespace
}  // namespace cohort::testing
