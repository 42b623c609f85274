# The libtorch half of tests/serving (included when COHORT_WITH_TORCH and cohort-export exist).
add_executable(serving_export_test export_test.cc)
target_link_libraries(serving_export_test PRIVATE cohort_serving_torch cohort_fashion_mnist_model
                      cohort_serving_test_util GTest::gtest_main cohort_warnings)
add_dependencies(serving_export_test serving_skeletons)
gtest_discover_tests(serving_export_test TEST_PREFIX "serving." PROPERTIES LABELS unit TIMEOUT 120
                     DISCOVERY_TIMEOUT 60)
