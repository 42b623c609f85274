#include "collectives/mpi/mpi_communicator.h"

#include <fmt/format.h>

#include <climits>
#include <cstring>
#include <mutex>

#include "collectives/mpi/mpi_env.h"
#include "collectives/reduce.h"
#include "common/check_mpi.h"
#include "common/log.h"

namespace cohort::collectives {
namespace {

// MPI has no 16-bit float types: f16 and bf16 travel as a 16-bit type of our own and reduce
// through user-defined ops that widen to float (one op per dtype and reduction).
struct HalfOps {
  MPI_Datatype type = MPI_DATATYPE_NULL;
  MPI_Op ops[2][5] = {};  // [bf16?][ReduceOp]
};

template <ReduceOp R, DType D>
void HalfUserOp(void* in, void* inout, int* len, MPI_Datatype*) {
  // MPI's contract: inout = in (op) inout.
  ReduceInto(R, D, inout, in, inout, static_cast<size_t>(*len));
}

template <DType D>
void CreateOps(MPI_Op* ops) {
  COHORT_CHECK_MPI(MPI_Op_create(&HalfUserOp<ReduceOp::kSum, D>, 1, &ops[0]));
  COHORT_CHECK_MPI(MPI_Op_create(&HalfUserOp<ReduceOp::kSum, D>, 1, &ops[1]));  // avg: sum
  COHORT_CHECK_MPI(MPI_Op_create(&HalfUserOp<ReduceOp::kMin, D>, 1, &ops[2]));
  COHORT_CHECK_MPI(MPI_Op_create(&HalfUserOp<ReduceOp::kMax, D>, 1, &ops[3]));
  COHORT_CHECK_MPI(MPI_Op_create(&HalfUserOp<ReduceOp::kProduct, D>, 1, &ops[4]));
}

const HalfOps& GetHalfOps() {
  static HalfOps h;
  static std::once_flag once;
  std::call_once(once, [] {
    COHORT_CHECK_MPI(MPI_Type_contiguous(1, MPI_UINT16_T, &h.type));
    COHORT_CHECK_MPI(MPI_Type_commit(&h.type));
    CreateOps<DType::kFloat16>(h.ops[0]);
    CreateOps<DType::kBFloat16>(h.ops[1]);
    MpiEnv::BeforeFinalize([] {
      for (auto& per_dtype : h.ops) {
        for (MPI_Op& op : per_dtype) MPI_Op_free(&op);
      }
      MPI_Type_free(&h.type);
    });
  });
  return h;
}

MPI_Datatype ToMpi(DType d) {
  switch (d) {
    case DType::kFloat32:
      return MPI_FLOAT;
    case DType::kFloat64:
      return MPI_DOUBLE;
    case DType::kInt32:
      return MPI_INT32_T;
    case DType::kInt64:
      return MPI_INT64_T;
    case DType::kUInt8:
      return MPI_UINT8_T;
    case DType::kFloat16:
    case DType::kBFloat16:
      return GetHalfOps().type;
  }
  throw Internal("mpi: unknown dtype");
}

MPI_Op ToMpi(ReduceOp op, DType d) {
  if (d == DType::kFloat16 || d == DType::kBFloat16) {
    return GetHalfOps().ops[d == DType::kBFloat16][static_cast<int>(op)];
  }
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMin:
      return MPI_MIN;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kProduct:
      return MPI_PROD;
  }
  throw Internal("mpi: unknown reduce op");
}

int Count(size_t n, const Op& op) {
  if (n > static_cast<size_t>(INT_MAX)) {
    throw InvalidArgument(
        fmt::format("mpi: {} has {} elements per rank; MPI counts stop at {}; "
                    "split it into smaller tensors",
                    op.Describe(), n, INT_MAX));
  }
  return static_cast<int>(n);
}

}  // namespace

std::string MpiCommunicator::UnavailableReason(const CommConfig& config) {
  if (!MpiEnv::Launched()) {
    return "not started by mpirun (no OMPI_COMM_WORLD_SIZE); run the job with mpirun";
  }
  return "";
}

MpiCommunicator::MpiCommunicator(const CommConfig& config) : ThreadedCommunicator(config) {
  if (auto why = UnavailableReason(config); !why.empty()) throw Unavailable(why);
  MpiEnv::Ensure();
  int rank = 0, size = 0;
  COHORT_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  COHORT_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
  if (rank != Rank() || size != Size()) {
    throw InvalidArgument(fmt::format(
        "mpi: this process is rank {} of {} in MPI_COMM_WORLD but was configured as rank {} of "
        "{}; the launcher's world must match mpirun's (-np)",
        rank, size, Rank(), Size()));
  }
  // Our own communicator, so cohort's traffic never matches the program's own MPI calls.
  MPI_Comm comm = MPI_COMM_NULL;
  COHORT_CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  Adopt(comm);
}

MpiCommunicator::MpiCommunicator(const CommConfig& config, MPI_Comm comm)
    : ThreadedCommunicator(config) {
  int rank = 0, size = 0;
  COHORT_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  COHORT_CHECK_MPI(MPI_Comm_size(comm, &size));
  if (rank != Rank() || size != Size()) {
    MPI_Comm_free(&comm);
    throw Internal(fmt::format("mpi: MPI_Comm_split made rank {} of {}, expected rank {} of {}",
                               rank, size, Rank(), Size()));
  }
  Adopt(comm);
}

std::unique_ptr<Communicator> MpiCommunicator::CreateGroup(const SplitInfo& info) {
  if (!MpiEnv::ThreadMultiple()) {
    throw Unsupported(
        "mpi: groups need MPI_THREAD_MULTIPLE (each group calls MPI from its own thread), but "
        "MPI was initialized at a lower level; let cohort initialize MPI, or call "
        "MPI_Init_thread with MPI_THREAD_MULTIPLE");
  }
  MPI_Comm comm = MPI_COMM_NULL;
  // Keys: the new ranks are the positions in info.members, which Split ordered already.
  int key = 0;
  if (info.color != kNoColor) key = info.config.rank;
  COHORT_CHECK_MPI(
      MPI_Comm_split(comm_, info.color == kNoColor ? MPI_UNDEFINED : info.color, key, &comm));
  if (info.color == kNoColor) return nullptr;
  return std::unique_ptr<Communicator>(new MpiCommunicator(info.config, comm));
}

void MpiCommunicator::Adopt(MPI_Comm comm) {
  comm_ = comm;
  COHORT_CHECK_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  int* tag_ub = nullptr;
  int found = 0;
  COHORT_CHECK_MPI(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &found));
  if (found && tag_ub) tag_ub_ = *tag_ub;
  GetHalfOps();
  StartWorker();
}

MpiCommunicator::~MpiCommunicator() {
  if (MpiEnv::Stuck()) {
    // The worker is blocked inside MPI for good; joining it would hang this process.
    COHORT_ERROR(kMpi, "an MPI operation is stuck on a hung peer; aborting the MPI job");
    MpiEnv::Abort(1);
  }
  StopWorker();
  MPI_Comm_free(&comm_);
}

void MpiCommunicator::OnWaitTimeout(Work& work) {
  // The worker thread is blocked inside MPI (on this op or one before it) and cannot be freed.
  if (!work.IsCompleted()) MpiEnv::MarkStuck();
  Communicator::OnWaitTimeout(work);  // not ThreadedCommunicator's: MPI never ends it by itself
}

void MpiCommunicator::OnInlineStuck(const Op& op) {
  MpiEnv::MarkStuck();
  // Blame logs the error line that names the ranks that never arrived.
  Blame(op, ErrorKind::kTimeout,
        fmt::format("timed out after {:.1f} s", op.timeout.count() / 1000.0));
  COHORT_ERROR(kMpi,
               "the calling thread is blocked inside MPI and cannot be released; aborting "
               "the MPI job");
  MpiEnv::Abort(1);
}

std::unique_ptr<ThreadedCommunicator::Pending> MpiCommunicator::Run(const Op& op) {
  switch (op.type) {
    case OpType::kAllReduce:
      RunAllReduce(op);
      break;
    case OpType::kBroadcast:
      COHORT_CHECK_MPI(
          MPI_Bcast(op.out.data, Count(op.out.count, op), ToMpi(op.out.dtype), op.peer, comm_));
      break;
    case OpType::kAllGather: {
      const bool in_place = static_cast<char*>(op.out.data) + Rank() * op.in.bytes() ==
                            static_cast<char*>(op.in.data);
      const int n = Count(op.in.count, op);
      const MPI_Datatype t = ToMpi(op.in.dtype);
      COHORT_CHECK_MPI(
          MPI_Allgather(in_place ? MPI_IN_PLACE : op.in.data, n, t, op.out.data, n, t, comm_));
      break;
    }
    case OpType::kReduceScatter:
      RunReduceScatter(op);
      break;
    case OpType::kSend:
    case OpType::kRecv:
      return PostSendRecv(op);
    case OpType::kBarrier:
      COHORT_CHECK_MPI(MPI_Barrier(comm_));
      break;
  }
  return nullptr;
}

void MpiCommunicator::RunAllReduce(const Op& op) {
  const int n = Count(op.in.count, op);
  COHORT_CHECK_MPI(MPI_Allreduce(op.InPlace() ? MPI_IN_PLACE : op.in.data, op.out.data, n,
                                 ToMpi(op.in.dtype), ToMpi(op.reduce, op.in.dtype), comm_));
  if (op.reduce == ReduceOp::kAvg) FinishAverage(op.out.dtype, op.out.data, op.out.count, Size());
}

void MpiCommunicator::RunReduceScatter(const Op& op) {
  const int n = Count(op.out.count, op);
  char* in = static_cast<char*>(op.in.data);
  char* out = static_cast<char*>(op.out.data);
  const bool in_place = in + Rank() * op.out.bytes() == out;
  const MPI_Datatype t = ToMpi(op.in.dtype);
  const MPI_Op mop = ToMpi(op.reduce, op.in.dtype);
  if (in_place) {
    // MPI's in-place form takes the input from, and leaves the result at the start of, the
    // receive buffer; ours leaves it at this rank's slice.
    COHORT_CHECK_MPI(MPI_Reduce_scatter_block(MPI_IN_PLACE, in, n, t, mop, comm_));
    if (Rank() != 0) std::memmove(out, in, op.out.bytes());
  } else {
    COHORT_CHECK_MPI(MPI_Reduce_scatter_block(in, out, n, t, mop, comm_));
  }
  if (op.reduce == ReduceOp::kAvg) FinishAverage(op.out.dtype, out, op.out.count, Size());
}

namespace {

// A posted MPI_Isend or MPI_Irecv; tested by the worker between operations.
class MpiRequest : public ThreadedCommunicator::Pending {
 public:
  MpiRequest(MPI_Request req, const Op& op) : req_(req), op_(op) {}
  ~MpiRequest() override {
    if (req_ != MPI_REQUEST_NULL) Cancel();
  }

  bool Test() override {
    int done = 0;
    MPI_Status status;
    COHORT_CHECK_MPI(MPI_Test(&req_, &done, &status));
    if (!done) return false;
    if (op_.type == OpType::kRecv) {
      int got = 0;
      COHORT_CHECK_MPI(MPI_Get_count(&status, ToMpi(op_.out.dtype), &got));
      if (static_cast<size_t>(got) != op_.out.count) {
        throw InvalidArgument(fmt::format("rank {} sent {} elements but this recv expected {}",
                                          op_.peer, got, op_.out.count));
      }
    }
    return true;
  }

  void Cancel() override {
    MPI_Cancel(&req_);
    MPI_Request_free(&req_);
    req_ = MPI_REQUEST_NULL;
  }

 private:
  MPI_Request req_;
  const Op op_;
};

}  // namespace

std::unique_ptr<ThreadedCommunicator::Pending> MpiCommunicator::PostSendRecv(const Op& op) {
  MPI_Request req = MPI_REQUEST_NULL;
  if (op.tag > static_cast<uint32_t>(tag_ub_)) {
    throw InvalidArgument(
        fmt::format("mpi: tag {} is above this MPI's limit (MPI_TAG_UB = {}); "
                    "use a smaller tag",
                    op.tag, tag_ub_));
  }
  const int tag = static_cast<int>(op.tag);
  if (op.type == OpType::kSend) {
    COHORT_CHECK_MPI(MPI_Isend(op.in.data, Count(op.in.count, op), ToMpi(op.in.dtype), op.peer, tag,
                               comm_, &req));
  } else {
    COHORT_CHECK_MPI(MPI_Irecv(op.out.data, Count(op.out.count, op), ToMpi(op.out.dtype), op.peer,
                               tag, comm_, &req));
  }
  return std::make_unique<MpiRequest>(req, op);
}

}  // namespace cohort::collectives
