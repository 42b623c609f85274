# Prometheus metrics: the sink in one process (unit), and a real Prometheus server scraping a
# fashion_mnist job under `cohort launch` (multiproc; skipped when Debian's prometheus is absent).
find_library(COHORT_HTTPLIB_LIBRARY cpp-httplib REQUIRED)
add_executable(runtime_prometheus_test prometheus_sink_test.cc)
target_compile_definitions(runtime_prometheus_test PRIVATE CPPHTTPLIB_OPENSSL_SUPPORT
                           CPPHTTPLIB_ZLIB_SUPPORT CPPHTTPLIB_BROTLI_SUPPORT)
target_link_libraries(runtime_prometheus_test PRIVATE cohort_runtime cohort_test_util
                      ${COHORT_HTTPLIB_LIBRARY} GTest::gtest_main cohort_warnings)
gtest_discover_tests(runtime_prometheus_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)

add_executable(prometheus_scrape_test prometheus_test.cc)
# The flags Debian's libcpp-httplib was built with (its pkg-config file).
target_compile_definitions(prometheus_scrape_test PRIVATE CPPHTTPLIB_OPENSSL_SUPPORT
                           CPPHTTPLIB_ZLIB_SUPPORT CPPHTTPLIB_BROTLI_SUPPORT)
target_link_libraries(prometheus_scrape_test PRIVATE cohort_common cohort_test_util fmt::fmt
                      nlohmann_json::nlohmann_json ${COHORT_HTTPLIB_LIBRARY} GTest::gtest_main
                      cohort_warnings)
add_dependencies(prometheus_scrape_test fashion_mnist cohort)
gtest_discover_tests(prometheus_scrape_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 120 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
# The restart count's job is two shell sleeps (0.4 CPU-seconds in 11 s): it can run beside another.
cohort_waiting_tests(prometheus_scrape_test_TESTS "CountsTheLaunchersRestarts")
