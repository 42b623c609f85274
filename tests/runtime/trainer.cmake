# The Trainer (progress line, metrics, the loop in-process at world 1 and as threads over Gloo),
# the Fashion-MNIST IDX reader, and the fashion_mnist example end to end under `cohort launch`
# (MultiprocFashionMnist*: real processes, labelled multiproc).
add_executable(runtime_trainer_test trainer_test.cc progress_test.cc idx_test.cc
                                    fashion_mnist_test.cc)
target_link_libraries(runtime_trainer_test PRIVATE cohort_runtime cohort_fashion_mnist_data
                      cohort_test_util nlohmann_json::nlohmann_json GTest::gtest_main
                      cohort_warnings)
add_dependencies(runtime_trainer_test fashion_mnist cohort)

gtest_discover_tests(runtime_trainer_test TEST_PREFIX "runtime." TEST_FILTER "-Multiproc*"
                     NO_PRETTY_VALUES PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)
gtest_discover_tests(runtime_trainer_test TEST_PREFIX "runtime." TEST_FILTER "Multiproc*"
                     NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 180 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)

# The Trainer's MLflow run end to end: fashion_mnist against the MLflow double (tests/tracking).
add_executable(tracking_train_test tracking_train_test.cc)
target_link_libraries(tracking_train_test PRIVATE cohort_mlflow_double cohort_test_util fmt::fmt
                      nlohmann_json::nlohmann_json GTest::gtest_main cohort_warnings)
add_dependencies(tracking_train_test fashion_mnist ckpt_train_worker cohort)
gtest_discover_tests(tracking_train_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 300 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)

# COHORT_TIMELINE: a 3-rank job's Chrome trace, checked by Python's json module.
add_executable(timeline_run_test timeline_run_test.cc)
target_link_libraries(timeline_run_test PRIVATE cohort_test_util GTest::gtest_main cohort_warnings)
target_compile_definitions(timeline_run_test PRIVATE
                           COHORT_CHECK_TIMELINE="${CMAKE_CURRENT_SOURCE_DIR}/check_timeline.py")
add_dependencies(timeline_run_test ckpt_train_worker cohort)
gtest_discover_tests(timeline_run_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 180 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
