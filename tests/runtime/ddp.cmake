# DistributedDataParallel: equivalence with one process, between real processes (Gloo, MPI).
add_executable(ddp_worker ddp_worker.cc)
target_link_libraries(ddp_worker PRIVATE cohort_runtime CLI11::CLI11 cohort_warnings)
set_target_properties(ddp_worker PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

add_executable(ddp_test ddp_test.cc)
target_link_libraries(ddp_test PRIVATE cohort_collectives cohort_test_util GTest::gtest_main
                      cohort_warnings)
add_dependencies(ddp_test ddp_worker)
gtest_discover_tests(ddp_test TEST_PREFIX "ddp." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 180 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)

# In one process: layout, rebuild, NoSync, bad input.
add_executable(ddp_unit_test ddp_unit_test.cc)
target_link_libraries(ddp_unit_test PRIVATE cohort_runtime GTest::gtest_main cohort_warnings)
gtest_discover_tests(ddp_unit_test TEST_PREFIX "ddp." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)
