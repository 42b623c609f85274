# Tests of the snapshot format and the checkpoint API (checkpoint/). Included by
# tests/checkpoint/CMakeLists.txt. Names start "checkpoint.".
set(COHORT_CKPT_TEST_DIR ${CMAKE_CURRENT_LIST_DIR})

# In process: shard files, digests, manifests, multi-rank saves as threads, loads, async saver.
add_executable(checkpoint_test
  ${COHORT_CKPT_TEST_DIR}/recovery_test.cc
  ${COHORT_CKPT_TEST_DIR}/shard_file_test.cc
  ${COHORT_CKPT_TEST_DIR}/snapshot_test.cc)
target_link_libraries(checkpoint_test PRIVATE cohort_checkpoint GTest::gtest_main cohort_warnings)
gtest_discover_tests(checkpoint_test TEST_PREFIX "checkpoint." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit TIMEOUT 120 DISCOVERY_TIMEOUT 60)

# Real processes: h5dump, h5py and the `cohort checkpoint` commands on snapshot files, and the
# crash-safety trials (SIGKILL of checkpoint_crash_saver at seeded random moments).
add_executable(checkpoint_crash_saver ${COHORT_CKPT_TEST_DIR}/crash_saver.cc)
target_link_libraries(checkpoint_crash_saver PRIVATE cohort_checkpoint cohort_warnings)
set_target_properties(checkpoint_crash_saver PROPERTIES
                      RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(checkpoint_process_test
  ${COHORT_CKPT_TEST_DIR}/crash_test.cc
  ${COHORT_CKPT_TEST_DIR}/process_test.cc)
target_link_libraries(checkpoint_process_test PRIVATE cohort_checkpoint cohort_test_util
                      GTest::gtest_main cohort_warnings)
add_dependencies(checkpoint_process_test checkpoint_crash_saver cohort)
gtest_discover_tests(checkpoint_process_test TEST_PREFIX "checkpoint." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 300 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
# The crash trials wait on a saver they SIGKILL at random moments (about 15% of a core).
cohort_waiting_tests(checkpoint_process_test_TESTS "^checkpoint[.]CrashSafety[.]")

# s3:// snapshots against moto (signatures checked), checked with awscli. One CTest entry: its
# tests share one moto server (see moto_fixture.h).
add_executable(checkpoint_s3_test ${COHORT_CKPT_TEST_DIR}/s3_snapshot_test.cc)
target_link_libraries(checkpoint_s3_test PRIVATE cohort_checkpoint cohort_moto_fixture
                      cohort_test_util GTest::gtest_main cohort_warnings)
add_dependencies(checkpoint_s3_test cohort)
add_test(NAME checkpoint.s3 COMMAND checkpoint_s3_test)
set_tests_properties(checkpoint.s3 PROPERTIES LABELS "multiproc;s3" TIMEOUT 300 RUN_SERIAL ON)
