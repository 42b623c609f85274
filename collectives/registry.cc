#include "collectives/registry.h"

#include <fmt/format.h>

#include "collectives/auto_fallback.h"
#include "collectives/config.h"
#include "collectives/sigpipe.h"
#include "common/log.h"

#if COHORT_HAVE_GLOO
#include "collectives/gloo/gloo_communicator.h"
#endif
#if COHORT_HAVE_MPI
#include "collectives/mpi/mpi_communicator.h"
#endif
#if COHORT_HAVE_NCCL
#include "collectives/nccl/nccl_communicator.h"
#endif
#include "collectives/ps/ps_communicator.h"

namespace cohort::collectives {
namespace {

template <typename T>
std::unique_ptr<Communicator> Make(const CommConfig& config) {
  return std::make_unique<T>(config);
}

}  // namespace

const std::vector<BackendEntry>& Backends() {
  static const std::vector<BackendEntry> backends = {
#if COHORT_HAVE_NCCL
    {"nccl",
     [](const CommConfig& c, DeviceType d) {
       if (d != DeviceType::kCUDA) return std::string("nccl moves CUDA tensors only");
       return NcclCommunicator::UnavailableReason(c);
     },
     &Make<NcclCommunicator>},
#endif
#if COHORT_HAVE_MPI
    {"mpi",
     [](const CommConfig& c, DeviceType d) {
       if (d != DeviceType::kCPU) return std::string("mpi here moves CPU tensors only");
       return MpiCommunicator::UnavailableReason(c);
     },
     &Make<MpiCommunicator>},
#endif
#if COHORT_HAVE_GLOO
    {"gloo",
     [](const CommConfig& c, DeviceType d) {
       if (d != DeviceType::kCPU) return std::string("gloo here moves CPU tensors only");
       return GlooCommunicator::UnavailableReason(c);
     },
     &Make<GlooCommunicator>},
#endif
    // Last: the fallback where no collective backend can run. Always built (gRPC is required).
    {"ps",
     [](const CommConfig& c, DeviceType d) {
       if (d != DeviceType::kCPU) return std::string("ps moves CPU tensors only");
       return ps::PsCommunicator::UnavailableReason(c);
     },
     &Make<ps::PsCommunicator>},
  };
  return backends;
}

std::string BackendNames() {
  std::string names;
  for (const auto& b : Backends()) names += (names.empty() ? "" : ", ") + std::string(b.name);
  return names;
}

namespace {

const BackendEntry* Find(const std::string& name) {
  for (const auto& b : Backends()) {
    if (name == b.name) return &b;
  }
  return nullptr;
}

// auto with parameter servers configured: the first collective backend that can run here,
// started on every rank with their agreement, or ps on every rank (auto_fallback.h).
std::unique_ptr<Communicator> AutoWithPsFallback(const BackendEntry& ps, const CommConfig& config,
                                                 DeviceType devices) {
  std::string reasons;
  for (const auto& b : Backends()) {
    if (&b == &ps) continue;
    if (std::string why = b.unavailable(config, devices); !why.empty()) {
      reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", b.name, why);
      continue;
    }
    return StartAgreeingOrFallBack(b.name, b.create, "", ps.create, config);
  }
  return StartAgreeingOrFallBack("every collective backend", nullptr, reasons, ps.create, config);
}

}  // namespace

std::unique_ptr<Communicator> CreateCommunicator(const std::string& backend,
                                                 const CommConfig& config, DeviceType devices) {
  IgnoreSigpipe();  // every backend's sockets: a dead peer must be an error, not a signal
  if (backend != "auto") {
    const BackendEntry* b = Find(backend);
    if (!b) {
      throw InvalidArgument(
          fmt::format("unknown or not built backend '{}'; this build has: {}, or auto", backend,
                      BackendNames()));
    }
    if (auto why = b->unavailable(config, devices); !why.empty()) {
      throw Unavailable(fmt::format("backend {} cannot run: {}", backend, why));
    }
    return b->create(config);
  }
  const BackendEntry* ps = Find("ps");
  if (ps->unavailable(config, devices).empty()) return AutoWithPsFallback(*ps, config, devices);
  // Without servers each rank tries the next backend on its own (the original error stands when
  // none can start).
  std::string reasons;
  for (const auto& b : Backends()) {
    if (&b == ps) continue;
    std::string why = b.unavailable(config, devices);
    if (why.empty()) {
      try {
        auto comm = b.create(config);
        if (!reasons.empty()) COHORT_DEBUG(kColl, "backend auto chose {} ({})", b.name, reasons);
        return comm;
      } catch (const cohort::Timeout&) {
        throw;  // peers are waiting on this backend; switching now would strand them
      } catch (const std::exception& e) {
        why = fmt::format("failed to start: {}", e.what());
        COHORT_WARN(kColl, "backend {} {}; trying the next one", b.name, why);
      }
    }
    reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", b.name, why);
  }
  throw Unavailable(fmt::format("no backend can run: {}", reasons));
}

}  // namespace cohort::collectives
