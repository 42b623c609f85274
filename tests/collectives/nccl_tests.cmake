# The NCCL backend's tests, included from tests/collectives/CMakeLists.txt when COHORT_WITH_CUDA is
# ON. Suites named Nccl...Gpu need a GPU (label gpu; they skip, with the reason, without one);
# the rest run everywhere (label unit).
add_executable(nccl_test ${CMAKE_CURRENT_LIST_DIR}/nccl_test.cc)
target_link_libraries(nccl_test PRIVATE cohort_collectives GTest::gtest_main cohort_warnings)
gtest_discover_tests(nccl_test TEST_PREFIX "nccl." TEST_FILTER "-*NcclGpu*" PROPERTIES LABELS unit
                     DISCOVERY_TIMEOUT 60)
# One GPU per machine: run them one at a time.
gtest_discover_tests(nccl_test TEST_PREFIX "nccl." TEST_FILTER "*NcclGpu*" PROPERTIES LABELS gpu RUN_SERIAL ON
                     TIMEOUT 300 DISCOVERY_TIMEOUT 60)
