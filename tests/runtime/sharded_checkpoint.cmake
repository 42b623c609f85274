# runtime/sharded_state: capture and restore of sharded model and optimizer state.
add_executable(sharded_state_test sharded_state_test.cc)
target_link_libraries(sharded_state_test PRIVATE cohort_runtime GTest::gtest_main cohort_warnings)
gtest_discover_tests(sharded_state_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit TIMEOUT 60 DISCOVERY_TIMEOUT 60)
