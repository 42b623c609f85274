// A Store that talks to a GrpcStoreServer. The first call waits for the server to come up
// (workers often start before the process that hosts the store), retrying the connection with
// backoff until the connect timeout; later calls fail fast with Unavailable if the server goes
// away. Safe to use from many threads at once.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "collectives/store/store.h"

namespace cohort::collectives {

class GrpcStoreClient : public Store {
 public:
  // A client of the store at address ("host:port"), sending token with every call (none when
  // empty). Does not connect yet. Throws InvalidArgument for a malformed address or a token that
  // is not printable ASCII.
  GrpcStoreClient(std::string address, std::string token,
                  Millis connect_timeout = std::chrono::seconds(60));
  ~GrpcStoreClient() override;

  // Every operation throws Unavailable when the store cannot be reached (naming the address and
  // how long it tried), Unauthenticated when it refuses the token, and Timeout from Get and Wait
  // naming the keys still missing.
  void Set(const std::string& key, const std::string& value) override;
  std::string Get(const std::string& key, Millis timeout) override;
  int64_t Add(const std::string& key, int64_t delta) override;
  std::string CompareSet(const std::string& key, const std::string& expected,
                         const std::string& desired) override;
  bool Delete(const std::string& key) override;
  void Wait(const std::vector<std::string>& keys, Millis timeout) override;
  std::map<std::string, std::string> List(const std::string& prefix) override;
  // One round trip each (the server counts, and for Join waits); a server without the call (an
  // older cohort) gets the default sequences of Store::Join and Store::Arrive.
  bool Arrive(const std::string& prefix, int rank, int size, const std::string& nonce) override;
  bool Join(const std::string& prefix, int rank, int size, const std::string& nonce,
            Millis timeout) override;

  // Waits (up to the connect timeout) until the server accepts connections; every operation
  // calls it first. Throws Unavailable naming the address and how long it tried.
  void Connect();

  // "host:port" of the store.
  const std::string& address() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::collectives
