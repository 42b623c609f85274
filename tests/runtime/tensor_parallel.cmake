# Tensor parallelism (runtime/tensor_parallel.h): shards, errors and a world of one in-process;
# equivalence with one process between real processes (Gloo, MPI).
add_executable(tp_worker tp_worker.cc)
target_link_libraries(tp_worker PRIVATE cohort_runtime CLI11::CLI11 cohort_warnings)
set_target_properties(tp_worker PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

add_executable(tensor_parallel_test tensor_parallel_test.cc)
target_link_libraries(tensor_parallel_test PRIVATE cohort_collectives cohort_test_util
                      GTest::gtest_main cohort_warnings)
add_dependencies(tensor_parallel_test tp_worker)
gtest_discover_tests(tensor_parallel_test TEST_PREFIX "tp." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 120 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)

add_executable(tensor_parallel_unit_test tensor_parallel_unit_test.cc)
target_link_libraries(tensor_parallel_unit_test PRIVATE cohort_runtime GTest::gtest_main
                      cohort_warnings)
gtest_discover_tests(tensor_parallel_unit_test TEST_PREFIX "tp." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)
