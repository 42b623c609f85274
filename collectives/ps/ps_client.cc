#include "collectives/ps/ps_client.h"

#include <fmt/format.h>

#include <future>

#include "collectives/store/grpc_status.h"
#include "common/error.h"
#include "common/net.h"

namespace cohort::collectives::ps {
namespace {

namespace pb = ::cohort::ps;

std::string CheckToken(std::string token) {
  for (unsigned char c : token) {
    if (c < 0x20 || c > 0x7e) {
      throw InvalidArgument(
          "COHORT_TOKEN holds a byte that is not printable ASCII; gRPC metadata cannot carry "
          "it: use letters, digits and punctuation only (e.g. `openssl rand -hex 16`)");
    }
  }
  return token;
}

}  // namespace

PsServerClient::PsServerClient(const std::string& address, int shard, int shards, std::string token)
    : address_(net::ParseHostPort(address, "COHORT_PS_SERVERS").ToString()),
      shard_(shard),
      shards_(shards),
      token_(CheckToken(std::move(token))),
      name_(fmt::format("server {} (shard {} of {})", address_, shard, shards)) {
  grpc::ChannelArguments args = ClientChannelArguments();
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 16 << 20);
  // One channel per server and process; a distinct arg keeps gRPC from sharing the TCP
  // connection of another communicator's channel to the same server (a split group).
  args.SetInt("cohort.ps.shard", shard);
  UseReleaseAbslMutexes();
  channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  stub_ = pb::PsService::NewStub(channel_);
  generic_ = std::make_unique<grpc::GenericStub>(channel_);
}

void PsServerClient::Connect(Deadline deadline, std::chrono::milliseconds allowed) {
  const auto start = std::chrono::system_clock::now();
  if (!channel_->WaitForConnected(deadline)) {
    const double waited =
        allowed.count() > 0
            ? allowed.count() / 1000.0
            : std::chrono::duration<double>(std::chrono::system_clock::now() - start).count();
    throw Unavailable(fmt::format(
        "ps {} did not come up within {:.1f} s: start `cohort ps-server --port {} --shard {} "
        "--shards {}` there (or `cohort launch --ps-servers {}`), or fix COHORT_PS_SERVERS",
        name_, waited, net::ParseHostPort(address_, "COHORT_PS_SERVERS").port, shard_, shards_,
        shards_));
  }
  grpc::ClientContext ctx;
  if (!token_.empty()) ctx.AddMetadata("authorization", "Bearer " + token_);
  ctx.set_deadline(deadline + std::chrono::seconds(5));
  pb::HelloRequest req;
  pb::HelloReply reply;
  const grpc::Status s = stub_->Hello(&ctx, req, &reply);
  if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    throw Unauthenticated(fmt::format(
        "ps {} refused this worker: {} (gRPC PERMISSION_DENIED); give workers and servers the "
        "same COHORT_TOKEN",
        name_, s.error_message()));
  }
  CheckGrpc(s, fmt::format("ps {}: Hello", name_));
  if (reply.shard() != shard_ || reply.shards() != shards_) {
    throw InvalidArgument(fmt::format(
        "COHORT_PS_SERVERS lists {} as shard {} of {}, but it was started as shard {} of {}: list "
        "the servers in shard order, every one of them, the same on every worker",
        address_, shard_, shards_, reply.shard(), reply.shards()));
  }
}

void PsServerClient::PushPullRaw(grpc::ClientContext* ctx, const grpc::ByteBuffer* req,
                                 grpc::ByteBuffer* reply, Deadline deadline,
                                 std::function<void(grpc::Status)> done) {
  Authorize(ctx);
  ctx->set_deadline(deadline);
  CallRaw(ctx, "/cohort.ps.PsService/PushPull", req, reply, std::move(done));
}

void PsServerClient::CallRaw(grpc::ClientContext* ctx, const char* method,
                             const grpc::ByteBuffer* req, grpc::ByteBuffer* reply,
                             std::function<void(grpc::Status)> done) {
  generic_->UnaryCall(ctx, method, grpc::StubOptions(), req, reply, std::move(done));
}

bool PsServerClient::Finish(const std::string& run_id, Deadline deadline) {
  grpc::ClientContext ctx;
  Authorize(&ctx);
  ctx.set_deadline(deadline);
  pb::FinishRequest req;
  req.set_run_id(run_id);
  pb::FinishReply reply;
  const grpc::Status s = stub_->Finish(&ctx, req, &reply);
  if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    throw Unauthenticated(fmt::format("ps {} refused Finish: {}", name_, s.error_message()));
  }
  CheckGrpc(s, fmt::format("ps {}: Finish", name_));
  return reply.exits();
}

void PsServerClient::Attend(grpc::ClientContext* ctx, const pb::AttendRequest* req,
                            pb::AttendReply* reply, std::function<void(grpc::Status)> done) {
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  stub_->async()->Attend(ctx, req, reply, std::move(done));
}

std::vector<std::string> SplitServerList(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string item = list.substr(start, comma - start);
    if (!item.empty()) out.push_back(std::move(item));
    start = comma + 1;
  }
  return out;
}

std::vector<std::string> FinishServers(const std::string& list, const std::string& token,
                                       const std::string& run_id,
                                       std::chrono::milliseconds timeout) {
  const std::vector<std::string> addresses = SplitServerList(list);
  const auto deadline = std::chrono::system_clock::now() + timeout;
  std::vector<std::future<std::string>> calls;
  for (size_t i = 0; i < addresses.size(); ++i) {
    calls.push_back(std::async(std::launch::async, [&, i]() -> std::string {
      const int shards = static_cast<int>(addresses.size());
      try {
        PsServerClient(addresses[i], static_cast<int>(i), shards, token).Finish(run_id, deadline);
        return "";
      } catch (const Error& e) {
        return e.what();
      }
    }));
  }
  std::vector<std::string> failed;
  for (auto& call : calls) {
    if (std::string why = call.get(); !why.empty()) failed.push_back(std::move(why));
  }
  return failed;
}

}  // namespace cohort::collectives::ps
