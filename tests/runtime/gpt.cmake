# The gpt example end to end under `cohort launch`: pp x tp and dp x tp against one process.
add_executable(gpt_test gpt_test.cc)
target_link_libraries(gpt_test PRIVATE cohort_test_util GTest::gtest_main cohort_warnings)
add_dependencies(gpt_test gpt cohort)
gtest_discover_tests(gpt_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 300 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)

# Sharded gpt snapshots resumed at other layouts (and refused, and fallen back from).
include(${CMAKE_SOURCE_DIR}/tests/checkpoint/moto_fixture.cmake)
add_executable(gpt_resume_test gpt_resume_test.cc)
target_link_libraries(gpt_resume_test PRIVATE cohort_moto_fixture cohort_test_util nlohmann_json::nlohmann_json fmt::fmt
                                              GTest::gtest_main cohort_warnings)
add_dependencies(gpt_resume_test gpt cohort)
gtest_discover_tests(gpt_resume_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 300 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
