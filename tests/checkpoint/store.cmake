# Object-store tests (checkpoint/store/). Included by tests/checkpoint/CMakeLists.txt.
set(COHORT_STORE_TEST_DIR ${CMAKE_CURRENT_SOURCE_DIR}/store)

# memory:// and file://, in process.
add_executable(checkpoint_store_test
  ${COHORT_STORE_TEST_DIR}/local_store_test.cc
  ${COHORT_STORE_TEST_DIR}/faulty_store_test.cc
  ${COHORT_STORE_TEST_DIR}/s3_unit_test.cc
  ${COHORT_STORE_TEST_DIR}/store_conformance.cc
  ${COHORT_STORE_TEST_DIR}/store_test_util.cc)
target_link_libraries(checkpoint_store_test PRIVATE cohort_objstore GTest::gtest_main
                      cohort_warnings)
gtest_discover_tests(checkpoint_store_test TEST_PREFIX "store." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit TIMEOUT 60 DISCOVERY_TIMEOUT 60)

# s3:// against moto (a real S3 API server, signatures checked) and file:// across SIGKILL:
# these start processes and servers.
add_executable(store_writer_child ${COHORT_STORE_TEST_DIR}/store_writer_child.cc)
target_link_libraries(store_writer_child PRIVATE cohort_objstore cohort_warnings)
set_target_properties(store_writer_child PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

find_library(COHORT_HTTPLIB_LIBRARY cpp-httplib REQUIRED)
add_executable(checkpoint_store_multiproc_test
  ${COHORT_STORE_TEST_DIR}/s3_store_test.cc
  ${COHORT_STORE_TEST_DIR}/file_crash_test.cc
  ${COHORT_STORE_TEST_DIR}/fault_proxy.cc
  ${COHORT_STORE_TEST_DIR}/store_conformance.cc
  ${COHORT_STORE_TEST_DIR}/store_test_util.cc)
# The flags Debian's libcpp-httplib was built with (its pkg-config file), so the header's
# declarations match the library.
target_compile_definitions(checkpoint_store_multiproc_test PRIVATE CPPHTTPLIB_OPENSSL_SUPPORT
                           CPPHTTPLIB_ZLIB_SUPPORT CPPHTTPLIB_BROTLI_SUPPORT)
target_link_libraries(checkpoint_store_multiproc_test PRIVATE cohort_objstore cohort_moto_fixture
                      cohort_test_util ${COHORT_HTTPLIB_LIBRARY} nlohmann_json::nlohmann_json
                      GTest::gtest_main cohort_warnings)
add_dependencies(checkpoint_store_multiproc_test store_writer_child)
# One CTest entry: its tests share one moto server (tests/checkpoint/moto_fixture.h), which
# gtest_discover_tests() would start once per test case.
add_test(NAME store.multiproc COMMAND checkpoint_store_multiproc_test)
set_tests_properties(store.multiproc PROPERTIES LABELS multiproc TIMEOUT 300 RUN_SERIAL ON)
