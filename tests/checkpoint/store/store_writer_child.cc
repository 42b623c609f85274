// Child process for crash tests: streams an object to a store in 1 MiB chunks, slowly, printing
// "WRITING <n>" after each chunk and "COMMITTED" at the end, so the parent can SIGKILL it at any
// moment of the write. Usage: store_writer_child URI KEY MIB [SLEEP_MS]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "checkpoint/store/object_store.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s URI KEY MIB [SLEEP_MS]\n", argv[0]);
    return 2;
  }
  try {
    auto store = cohort::checkpoint::OpenObjectStore(argv[1]);
    int mib = std::atoi(argv[3]);
    int sleep_ms = argc > 4 ? std::atoi(argv[4]) : 10;
    auto writer = store->NewWriter(argv[2]);
    std::string chunk(1 << 20, '\0');
    for (int i = 0; i < mib; ++i) {
      for (size_t j = 0; j < chunk.size(); ++j) chunk[j] = static_cast<char>('a' + (i + j) % 26);
      writer->Write(chunk.data(), chunk.size());
      std::printf("WRITING %d\n", i);
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    }
    writer->Commit();
    std::printf("COMMITTED\n");
    std::fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "store_writer_child: %s\n", e.what());
    return 1;
  }
}
