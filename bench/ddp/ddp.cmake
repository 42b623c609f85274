# ddp_bench_worker: the cohort side of bench/ddp/ddp_bench.py (issue 4's DDP benchmark against
# PyTorch DDP); bench/ddp/torch_ddp_worker.py is the PyTorch side. Included when COHORT_WITH_TORCH.
add_executable(ddp_bench_worker ${CMAKE_CURRENT_LIST_DIR}/ddp_bench_worker.cc)
target_link_libraries(ddp_bench_worker PRIVATE cohort_runtime cohort_xxhash CLI11::CLI11
                      nlohmann_json::nlohmann_json cohort_warnings)
set_target_properties(ddp_bench_worker PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
