# The libtorch half of tests/serving (included when COHORT_WITH_TORCH and cohort-export exist).
add_executable(serving_export_test export_test.cc)
target_link_libraries(serving_export_test PRIVATE cohort_serving_torch cohort_fashion_mnist_model
                      cohort_serving_test_util GTest::gtest_main cohort_warnings)
add_dependencies(serving_export_test serving_skeletons)
gtest_discover_tests(serving_export_test TEST_PREFIX "serving." PROPERTIES LABELS unit TIMEOUT 120
                     DISCOVERY_TIMEOUT 60)

# `cohort model` end to end, on moto: one add_test so that the binary starts one moto server.
include(${CMAKE_SOURCE_DIR}/tests/checkpoint/moto_fixture.cmake)
add_executable(serving_model_command_test model_command_test.cc)
target_link_libraries(serving_model_command_test PRIVATE cohort_checkpoint
                      cohort_fashion_mnist_model cohort_serving_test_util cohort_moto_fixture
                      cohort_mlflow_double yaml-cpp ${TORCH_LIBRARIES} GTest::gtest_main
                      cohort_warnings)
add_dependencies(serving_model_command_test cohort cohort-export serving_skeletons)
add_test(NAME serving.ModelCommand COMMAND serving_model_command_test)
set_tests_properties(serving.ModelCommand PROPERTIES LABELS "s3" TIMEOUT 300)
