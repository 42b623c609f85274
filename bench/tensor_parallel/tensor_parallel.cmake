# tp_bench: step time of a tensor-parallel MLP block against one process, and the bytes moved
# against Megatron's formula (issue 11). Run: cohort launch --nproc-per-node 2 -- bin/tp_bench
add_executable(tp_bench ${CMAKE_CURRENT_LIST_DIR}/tp_bench.cc)
target_link_libraries(tp_bench PRIVATE cohort_runtime CLI11::CLI11 cohort_warnings)
set_target_properties(tp_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
