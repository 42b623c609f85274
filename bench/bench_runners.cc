#include "bench/bench_runners.h"

#include <fmt/format.h>

#include <cstring>

#include "collectives/config.h"
#include "common/error.h"

#if COHORT_HAVE_MPI
#include <mpi.h>
#endif
#if COHORT_HAVE_GLOO
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/reduce_scatter.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include "collectives/gloo/gloo_communicator.h"
#include "collectives/gloo/gloo_store_adapter.h"
#endif

namespace cohort::bench {
namespace {

using collectives::ReduceOp;
using collectives::TensorView;

class CohortRunner : public Runner {
 public:
  explicit CohortRunner(collectives::Communicator& comm) : comm_(comm) {}
  std::string Name() const override { return std::string("cohort ") + comm_.Backend(); }

  void Run(OpType op, void* in, void* out, size_t count, DType dtype, bool in_place) override {
    const int n = comm_.Size(), r = comm_.Rank();
    const size_t es = collectives::ElementSize(dtype);
    switch (op) {
      case OpType::kAllReduce: {
        TensorView o(out, count, dtype);
        comm_.AllReduce(in_place ? o : TensorView(in, count, dtype), o, ReduceOp::kSum)->Wait();
        return;
      }
      case OpType::kAllGather: {
        TensorView o(out, count, dtype);
        TensorView i =
            in_place ? o.Slice(r * (count / n), count / n) : TensorView(in, count / n, dtype);
        comm_.AllGather(i, o)->Wait();
        return;
      }
      case OpType::kReduceScatter: {
        TensorView i(in, count, dtype);
        TensorView o =
            in_place ? i.Slice(r * (count / n), count / n) : TensorView(out, count / n, dtype);
        comm_.ReduceScatter(i, o, ReduceOp::kSum)->Wait();
        return;
      }
      case OpType::kBroadcast: {
        if (!in_place && r == 0) std::memcpy(out, in, count * es);
        comm_.Broadcast(TensorView(out, count, dtype), 0)->Wait();
        return;
      }
      default:
        throw InvalidArgument("bench: unsupported op");
    }
  }

 private:
  collectives::Communicator& comm_;
};

#if COHORT_HAVE_MPI
class RawMpi : public Runner {
 public:
  RawMpi() { MPI_Comm_dup(MPI_COMM_WORLD, &comm_); }
  ~RawMpi() override { MPI_Comm_free(&comm_); }
  std::string Name() const override { return "raw MPI"; }

  void Run(OpType op, void* in, void* out, size_t count, DType dtype, bool in_place) override {
    if (dtype != DType::kFloat32) throw InvalidArgument("bench: the raw MPI side runs f32 only");
    int n = 0, r = 0;
    MPI_Comm_size(comm_, &n);
    MPI_Comm_rank(comm_, &r);
    const int c = static_cast<int>(count), per = static_cast<int>(count / n);
    switch (op) {
      case OpType::kAllReduce:
        MPI_Allreduce(in_place ? MPI_IN_PLACE : in, out, c, MPI_FLOAT, MPI_SUM, comm_);
        return;
      case OpType::kAllGather:
        MPI_Allgather(in_place ? MPI_IN_PLACE : in, per, MPI_FLOAT, out, per, MPI_FLOAT, comm_);
        return;
      case OpType::kReduceScatter:
        MPI_Reduce_scatter_block(in_place ? MPI_IN_PLACE : in, in_place ? in : out, per, MPI_FLOAT,
                                 MPI_SUM, comm_);
        return;
      case OpType::kBroadcast:
        if (!in_place && r == 0) std::memcpy(out, in, count * 4);
        MPI_Bcast(out, c, MPI_FLOAT, 0, comm_);
        return;
      default:
        throw InvalidArgument("bench: unsupported op");
    }
  }

 private:
  MPI_Comm comm_;
};
#endif

#if COHORT_HAVE_GLOO
class RawGloo : public Runner {
 public:
  RawGloo(int rank, int size, std::shared_ptr<collectives::Store> store) {
    gloo::transport::tcp::attr attr;
    attr.hostname = collectives::GlooCommunicator::BindHost();
    attr.ai_family = AF_INET;
    device_ = gloo::transport::tcp::CreateDevice(attr);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
    collectives::GlooStoreAdapter adapter(store, "bench/raw-gloo/", std::chrono::seconds(60));
    ctx->connectFullMesh(adapter, device_);
    context_ = ctx;
  }
  std::string Name() const override { return "raw Gloo"; }

  void Run(OpType op, void* in, void* out, size_t count, DType dtype, bool in_place) override {
    if (dtype != DType::kFloat32) throw InvalidArgument("bench: the raw Gloo side runs f32 only");
    const int n = context_->size, r = context_->rank;
    float* fin = static_cast<float*>(in);
    float* fout = static_cast<float*>(out);
    const uint32_t tag = ++tag_;
    switch (op) {
      case OpType::kAllReduce: {
        gloo::AllreduceOptions o(context_);
        if (!in_place) o.setInput(fin, count);
        o.setOutput(fout, count);
        o.setReduceFunction(
            static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
        o.setTag(tag);
        gloo::allreduce(o);
        return;
      }
      case OpType::kAllGather: {
        gloo::AllgatherOptions o(context_);
        if (!in_place) o.setInput(fin, count / n);
        o.setOutput(fout, count);
        o.setTag(tag);
        gloo::allgather(o);
        return;
      }
      case OpType::kReduceScatter: {
        // Gloo's new API has no reduce-scatter; its algorithm class is what it offers.
        float* buf = in_place ? fin : fout;
        if (!in_place) std::memcpy(fout, fin, count * 4);
        std::vector<int> recv(n, static_cast<int>(count / n));
        gloo::ReduceScatterHalvingDoubling<float> rs(context_, {buf}, static_cast<int>(count),
                                                     recv);
        rs.run();
        (void)r;
        return;
      }
      case OpType::kBroadcast: {
        if (!in_place && r == 0) std::memcpy(out, in, count * 4);
        gloo::BroadcastOptions o(context_);
        o.setOutput(fout, count);
        o.setRoot(0);
        o.setTag(tag);
        gloo::broadcast(o);
        return;
      }
      default:
        throw InvalidArgument("bench: unsupported op");
    }
  }

 private:
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;
  uint32_t tag_ = 0;
};
#endif

}  // namespace

std::unique_ptr<Runner> MakeCohortRunner(collectives::Communicator& comm) {
  return std::make_unique<CohortRunner>(comm);
}

std::unique_ptr<Runner> MakeRawRunner(const std::string& backend, int rank, int size,
                                      std::shared_ptr<collectives::Store> store) {
#if COHORT_HAVE_MPI
  if (backend == "mpi") return std::make_unique<RawMpi>();
#endif
#if COHORT_HAVE_GLOO
  if (backend == "gloo") return std::make_unique<RawGloo>(rank, size, std::move(store));
#endif
  return nullptr;
}

}  // namespace cohort::bench
