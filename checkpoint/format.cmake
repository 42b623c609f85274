# The snapshot format and the checkpoint API: HDF5 shards, manifest with digests, `latest`,
# retention, multi-rank save through the rendezvous store, the async saver and the loader.
add_library(cohort_checkpoint STATIC
  ${CMAKE_CURRENT_LIST_DIR}/async_saver.cc
  ${CMAKE_CURRENT_LIST_DIR}/catalog.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpointer.cc
  ${CMAKE_CURRENT_LIST_DIR}/digest.cc
  ${CMAKE_CURRENT_LIST_DIR}/hdf5_util.cc
  ${CMAKE_CURRENT_LIST_DIR}/host_buffer_pool.cc
  ${CMAKE_CURRENT_LIST_DIR}/loader.cc
  ${CMAKE_CURRENT_LIST_DIR}/manifest.cc
  ${CMAKE_CURRENT_LIST_DIR}/save_stats.cc
  ${CMAKE_CURRENT_LIST_DIR}/shard.cc
  ${CMAKE_CURRENT_LIST_DIR}/shard_file.cc)
target_link_libraries(cohort_checkpoint
  PUBLIC cohort_objstore cohort_collectives nlohmann_json::nlohmann_json hdf5::hdf5
  PRIVATE cohort_xxhash OpenSSL::Crypto cohort_warnings)
# Sharded snapshots: boxes, the manifest's layout, resharding reads and consolidation.
target_sources(cohort_checkpoint PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/box.cc
  ${CMAKE_CURRENT_LIST_DIR}/consolidate.cc
  ${CMAKE_CURRENT_LIST_DIR}/layout.cc
  ${CMAKE_CURRENT_LIST_DIR}/reshard.cc)
