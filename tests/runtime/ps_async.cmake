# ps async mode end to end: fashion_mnist workers with `--ps-mode async` under `cohort launch
# --ps-servers 2` (real processes, real gRPC over 127.0.0.1), labelled multiproc.
add_executable(ps_async_train_test ps_async_train_test.cc)
target_link_libraries(ps_async_train_test PRIVATE cohort_test_util fmt::fmt
                      nlohmann_json::nlohmann_json GTest::gtest_main cohort_warnings)
add_dependencies(ps_async_train_test fashion_mnist cohort)
gtest_discover_tests(ps_async_train_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 900 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)

# PsAsyncTraining in one process against an in-process server, labelled unit.
add_executable(ps_async_training_test ps_async_training_test.cc)
target_link_libraries(ps_async_training_test PRIVATE cohort_runtime GTest::gtest_main
                      cohort_warnings)
gtest_discover_tests(ps_async_training_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit TIMEOUT 120 DISCOVERY_TIMEOUT 60)
