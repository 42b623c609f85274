# The NCCL backend, included by collectives/CMakeLists.txt when COHORT_WITH_CUDA is ON. Plain C++
# against the CUDA runtime and NCCL: no kernels, so no nvcc. CUDAToolkit, COHORT_NCCL_INCLUDE_DIR
# and COHORT_NCCL_LIBRARY come from cmake/Dependencies.cmake.
target_sources(cohort_collectives PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/cuda_device.cc
  ${CMAKE_CURRENT_LIST_DIR}/nccl_communicator.cc
  ${CMAKE_CURRENT_LIST_DIR}/nccl_progress.cc)
# SYSTEM: third-party headers stay out of cohort's -Werror. PUBLIC: users of cohort_collectives
# (tests, runtime/) include common/check_cuda.h and allocate device memory themselves.
target_include_directories(cohort_collectives SYSTEM PUBLIC ${COHORT_NCCL_INCLUDE_DIR})
target_link_libraries(cohort_collectives PUBLIC CUDA::cudart ${COHORT_NCCL_LIBRARY})
