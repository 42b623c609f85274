# Pipeline parallelism: equivalence with one process, failures and the Trainer's pluggable step
# between real processes (Gloo, MPI); schedules, micro-batches and stage cuts in one process.
add_executable(pipeline_worker pipeline_worker.cc)
target_link_libraries(pipeline_worker PRIVATE cohort_runtime CLI11::CLI11 cohort_warnings)
set_target_properties(pipeline_worker PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

add_executable(pipeline_test pipeline_test.cc)
target_link_libraries(pipeline_test PRIVATE cohort_collectives cohort_test_util GTest::gtest_main
                      cohort_warnings)
add_dependencies(pipeline_test pipeline_worker)
gtest_discover_tests(pipeline_test TEST_PREFIX "pipeline." TEST_FILTER "-*Mpi*"
                     PROPERTIES LABELS multiproc TIMEOUT 120 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
gtest_discover_tests(pipeline_test TEST_PREFIX "pipeline." TEST_FILTER "*Mpi*"
                     PROPERTIES LABELS mpi TIMEOUT 120 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)

add_executable(pipeline_unit_test pipeline_unit_test.cc)
target_link_libraries(pipeline_unit_test PRIVATE cohort_runtime GTest::gtest_main cohort_warnings)
gtest_discover_tests(pipeline_unit_test TEST_PREFIX "pipeline." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)
