# The GPU machine's measurements for scripts/device-check (issue 16): NCCL all-reduce at one rank
# and GPU-to-host checkpoint staging (CUDA runtime, no libtorch; with COHORT_WITH_CUDA), and the
# Fashion-MNIST CNN's training step on one device with cohort's DDP (libtorch; runs on the CPU
# too), which bench/gpu/torch_cnn_step.py measures for PyTorch. Included by bench/CMakeLists.txt.
if(COHORT_WITH_CUDA)
  add_executable(nccl_bench ${CMAKE_CURRENT_LIST_DIR}/nccl_bench.cc)
  target_link_libraries(nccl_bench PRIVATE cohort_collectives CLI11::CLI11
                        nlohmann_json::nlohmann_json cohort_warnings)
  add_executable(staging_bench ${CMAKE_CURRENT_LIST_DIR}/staging_bench.cc)
  target_link_libraries(staging_bench PRIVATE cohort_checkpoint cohort_collectives CLI11::CLI11
                        nlohmann_json::nlohmann_json cohort_warnings)
  set_target_properties(nccl_bench staging_bench PROPERTIES
                        RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
endif()
if(COHORT_WITH_TORCH AND TARGET cohort_fashion_mnist_model)
  add_executable(cnn_step_worker ${CMAKE_CURRENT_LIST_DIR}/cnn_step_worker.cc)
  target_link_libraries(cnn_step_worker PRIVATE cohort_runtime cohort_fashion_mnist_model
                        CLI11::CLI11 nlohmann_json::nlohmann_json cohort_warnings)
  # libtorch_cuda has no symbol this program calls: where the linker defaults to --as-needed
  # (Ubuntu), it would be dropped and libtorch would see no GPU.
  target_link_options(cnn_step_worker PRIVATE "LINKER:--no-as-needed")
  set_target_properties(cnn_step_worker PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
endif()
