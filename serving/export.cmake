# The libtorch half of serving/: export to TorchScript, the call training programs make to
# register (register_model.h), and `cohort-export`, which `cohort model register` runs. Included
# from serving/CMakeLists.txt when COHORT_WITH_TORCH.
add_library(cohort_serving_torch STATIC export.cc register_model.cc)
target_link_libraries(cohort_serving_torch PUBLIC cohort_serving cohort_checkpoint cohort_runtime
                      ${TORCH_LIBRARIES}
                      PRIVATE fmt::fmt cohort_warnings)

add_executable(cohort-export export_main.cc)
target_link_libraries(cohort-export PRIVATE cohort_serving_torch cohort_checkpoint CLI11::CLI11
                      cohort_warnings)
set_target_properties(cohort-export PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

# Fashion-MNIST's TorchScript skeleton, scripted at build time with Debian's python3-torch (as
# examples/torchscript does), next to cohort-export where it looks by default.
set(COHORT_TORCH_PYTHON /usr/bin/python3 CACHE FILEPATH "Python with torch, for scripted models")
execute_process(COMMAND ${COHORT_TORCH_PYTHON} -c "import torch"
                RESULT_VARIABLE serving_torch_python_rc OUTPUT_QUIET ERROR_QUIET)
if(serving_torch_python_rc EQUAL 0)
  set(COHORT_FASHION_SKELETON ${CMAKE_BINARY_DIR}/bin/skeletons/fashion_cnn.pt)
  add_custom_command(
    OUTPUT ${COHORT_FASHION_SKELETON}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/bin/skeletons
    COMMAND ${COHORT_TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/examples/fashion_mnist/skeleton.py
            ${COHORT_FASHION_SKELETON}
    DEPENDS ${CMAKE_SOURCE_DIR}/examples/fashion_mnist/skeleton.py
    COMMENT "Scripting Fashion-MNIST's TorchScript skeleton")
  add_custom_target(serving_skeletons ALL DEPENDS ${COHORT_FASHION_SKELETON})
  add_dependencies(cohort-export serving_skeletons)
else()
  message(STATUS "serving: Fashion-MNIST's skeleton skipped: ${COHORT_TORCH_PYTHON} cannot import "
                 "torch (apt-get install python3-torch); pass --skeleton to cohort model register")
endif()
