// EtcdStore's channel to etcd and its stubs, shared by the store's translation units
// (etcd_store.cc, etcd_join.cc, etcd_watch.cc); not for use outside them.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "collectives/store/etcd_rpc.grpc.pb.h"
#include "collectives/store/etcd_store.h"

namespace cohort::collectives {

struct EtcdStore::Stubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  std::unique_ptr<etcdserverpb::Auth::Stub> auth;
};

}  // namespace cohort::collectives
