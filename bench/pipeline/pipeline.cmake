# pipeline_bench: GPipe and 1F1B bubble, throughput and peak activations (one rank per stage).
add_executable(pipeline_bench ${CMAKE_CURRENT_LIST_DIR}/pipeline_bench.cc)
target_link_libraries(pipeline_bench PRIVATE cohort_runtime CLI11::CLI11 cohort_warnings)
set_target_properties(pipeline_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
