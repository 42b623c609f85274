# hier_netns_bench: the hierarchical all-reduce against flat Gloo TCP on namespace nodes; needs
# the netns harness of the tests (tests/util/netns.h).
if(TARGET cohort_netns_util)
  find_package(GTest REQUIRED)
  add_executable(hier_netns_bench ${CMAKE_CURRENT_LIST_DIR}/hier_netns_bench.cc)
  target_link_libraries(hier_netns_bench PRIVATE cohort_netns_util GTest::gtest CLI11::CLI11
                        fmt::fmt cohort_warnings)
  add_dependencies(hier_netns_bench cohort collectives_bench)
  set_target_properties(hier_netns_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                        ${CMAKE_BINARY_DIR}/bin)
endif()
