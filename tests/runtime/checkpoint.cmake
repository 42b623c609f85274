# The Trainer's checkpoints through the real launcher (file:// and s3:// on moto).
add_executable(ckpt_train_worker ckpt_train_worker.cc)
target_link_libraries(ckpt_train_worker PRIVATE cohort_runtime CLI11::CLI11 cohort_warnings)
set_target_properties(ckpt_train_worker PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

include(${CMAKE_SOURCE_DIR}/tests/checkpoint/moto_fixture.cmake)
add_executable(checkpoint_resume_test checkpoint_resume_test.cc)
target_link_libraries(checkpoint_resume_test PRIVATE cohort_moto_fixture cohort_test_util
                      GTest::gtest_main cohort_warnings)
add_dependencies(checkpoint_resume_test ckpt_train_worker cohort)
# Each case is its own process; only the S3 case starts moto.
gtest_discover_tests(checkpoint_resume_test TEST_PREFIX "checkpoint." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 300 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
