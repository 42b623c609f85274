# checkpoint_bench: save/load of a 1 GiB state with cohort's snapshots against a raw sequential
# write/read of the same bytes and torch.save/torch.load (bench/checkpoint/torch_side.py), plus
# the async saver's stall. Run it through scripts/bench-checkpoint.
add_executable(checkpoint_bench
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint_bench.cc
  ${CMAKE_CURRENT_LIST_DIR}/bench_io.cc)
target_link_libraries(checkpoint_bench PRIVATE cohort_checkpoint CLI11::CLI11
                      nlohmann_json::nlohmann_json cohort_warnings)
target_compile_definitions(checkpoint_bench PRIVATE
                           COHORT_TORCH_SIDE="${CMAKE_CURRENT_LIST_DIR}/torch_side.py")
set_target_properties(checkpoint_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
