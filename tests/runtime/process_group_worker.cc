// One rank of a real multi-process world for process_group_multiproc_test.cc: builds its
// ProcessGroup from the environment alone (COHORT_*, torchrun's MASTER_*, or mpirun's) and runs
// torch-tensor collectives through it, checking every value. Prints
// "rank R of W backend B ok" on success; exits 1 naming the first wrong value, 3 on an error.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <string>

#include "common/error.h"
#include "runtime/process_group.h"

namespace {

using cohort::collectives::ReduceOp;
using cohort::runtime::ProcessGroup;

// Throws with the first element of got that differs from want.
void ExpectEqual(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  if (got.sizes() != want.sizes()) {
    throw std::runtime_error(
        fmt::format("{}: {} elements, want {}", what, got.numel(), want.numel()));
  }
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  for (int64_t i = 0; i < g.numel(); ++i) {
    const double a = g[i].item<double>(), b = w[i].item<double>();
    if (a != b)
      throw std::runtime_error(fmt::format("{}: element {} is {}, want {}", what, i, a, b));
  }
}

void Run(ProcessGroup& pg) {
  const int r = pg.Rank(), w = pg.Size();
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  // All-reduce, sum, over a prime length: element i of rank r holds (r + 1) * i.
  {
    const int64_t n = 1031;
    at::Tensor t = at::arange(n, f32) * (r + 1);
    pg.AllReduce(t)->Wait();
    ExpectEqual(t, at::arange(n, f32) * (w * (w + 1) / 2), "all-reduce f32 sum");
  }
  // All-reduce, max, int64; and a zero-length tensor.
  {
    at::Tensor t = at::full({7}, r * 10, at::TensorOptions().dtype(at::kLong));
    pg.AllReduce(t, ReduceOp::kMax)->Wait();
    ExpectEqual(t, at::full({7}, (w - 1) * 10, at::TensorOptions().dtype(at::kLong)),
                "all-reduce i64 max");
    at::Tensor empty = at::empty({0}, f32);
    pg.AllReduce(empty)->Wait();
  }
  // All-reduce, average, bf16: (0 + 1 + ... + w-1) / w, exact in bf16 for small worlds.
  {
    at::Tensor t =
        at::full({5}, static_cast<double>(r) * 2, at::TensorOptions().dtype(at::kBFloat16));
    pg.AllReduce(t, ReduceOp::kAvg)->Wait();
    ExpectEqual(t,
                at::full({5}, static_cast<double>(w - 1), at::TensorOptions().dtype(at::kBFloat16)),
                "all-reduce bf16 avg");
  }
  // Broadcast from the last rank (not 0), float64 2-D.
  {
    const int root = w - 1;
    at::Tensor t =
        r == root ? at::arange(12, at::TensorOptions().dtype(at::kDouble)).reshape({3, 4}) + 0.5
                  : at::zeros({3, 4}, at::TensorOptions().dtype(at::kDouble));
    pg.Broadcast(t, root)->Wait();
    ExpectEqual(t.reshape({-1}), at::arange(12, at::TensorOptions().dtype(at::kDouble)) + 0.5,
                "broadcast f64");
  }
  // All-gather: rank r contributes [100 r, 100 r + 1, ..., 100 r + 6] as int32.
  {
    const auto i32 = at::TensorOptions().dtype(at::kInt);
    at::Tensor in = at::arange(7, i32) + 100 * r;
    at::Tensor out = at::full({w * 7}, -1, i32);
    pg.AllGather(in, out)->Wait();
    at::Tensor want = at::empty({w * 7}, i32);
    for (int q = 0; q < w; ++q) want.narrow(0, q * 7, 7).copy_(at::arange(7, i32) + 100 * q);
    ExpectEqual(out, want, "all-gather i32");
  }
  // A non-contiguous tensor is refused before it takes a sequence number, so the group stays in
  // step: the barrier after it must still pass.
  {
    at::Tensor t = at::zeros({4, 4}, f32).t();
    try {
      pg.AllReduce(t)->Wait();
      throw std::runtime_error("a non-contiguous all-reduce was accepted");
    } catch (const cohort::InvalidArgument& e) {
      if (std::string(e.what()).find(".contiguous()") == std::string::npos) throw;
    }
  }
  pg.Barrier();
}

}  // namespace

int main() {
  try {
    auto pg = ProcessGroup::FromEnv();
    try {
      Run(*pg);
    } catch (const cohort::Error&) {
      throw;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %d WRONG %s\n", pg->Rank(), e.what());
      return 1;
    }
    std::printf("rank %d of %d backend %s ok\n", pg->Rank(), pg->Size(), pg->Backend());
    std::fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ERROR %s\n", e.what());
    return 3;
  }
}
