# The gpt example end to end under `cohort launch`: pp x tp and dp x tp against one process.
add_executable(gpt_test gpt_test.cc)
target_link_libraries(gpt_test PRIVATE cohort_test_util GTest::gtest_main cohort_warnings)
add_dependencies(gpt_test gpt cohort)
gtest_discover_tests(gpt_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 300 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
