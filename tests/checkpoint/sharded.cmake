# Sharded snapshots (checkpoint/box, layout, reshard, consolidate), torch-free, in process.
add_executable(checkpoint_sharded_test ${CMAKE_CURRENT_LIST_DIR}/sharded_test.cc)
target_link_libraries(checkpoint_sharded_test PRIVATE cohort_checkpoint GTest::gtest_main
                      cohort_warnings)
gtest_discover_tests(checkpoint_sharded_test TEST_PREFIX "checkpoint." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit TIMEOUT 60 DISCOVERY_TIMEOUT 60)

# Real processes: h5py on a sharded shard file, `cohort checkpoint inspect` and `consolidate`.
add_executable(checkpoint_sharded_process_test ${CMAKE_CURRENT_LIST_DIR}/sharded_process_test.cc)
target_link_libraries(checkpoint_sharded_process_test PRIVATE cohort_checkpoint cohort_test_util
                      GTest::gtest_main cohort_warnings)
add_dependencies(checkpoint_sharded_process_test cohort)
gtest_discover_tests(checkpoint_sharded_process_test TEST_PREFIX "checkpoint." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 120 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
