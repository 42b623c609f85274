# ProcessGroup and View (torch tensors -> collectives), DistributedSampler and its torch::data
# adapter, and the torchscript example end to end. In runtime_pg_test the unit tests run
# in-process and the Multiproc* ones start real processes over 127.0.0.1.
add_executable(process_group_worker process_group_worker.cc)
target_link_libraries(process_group_worker PRIVATE cohort_runtime cohort_warnings)
set_target_properties(process_group_worker PROPERTIES
                      RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

# DistributedSampler has no libtorch: its tests run without loading it (about 1 s of CPU per
# test process saved, times the 40 tests).
add_executable(runtime_sampler_test sampler_test.cc ${CMAKE_SOURCE_DIR}/runtime/sampler.cc)
target_link_libraries(runtime_sampler_test PRIVATE cohort_common GTest::gtest_main cohort_warnings)
gtest_discover_tests(runtime_sampler_test TEST_PREFIX "runtime." NO_PRETTY_VALUES
                     PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)

add_executable(runtime_pg_test process_group_test.cc process_group_multiproc_test.cc
                               torchscript_test.cc)
target_link_libraries(runtime_pg_test PRIVATE cohort_runtime cohort_test_util GTest::gtest_main
                      cohort_warnings)
add_dependencies(runtime_pg_test process_group_worker cohort)
if(COHORT_WITH_MPI)
  target_compile_definitions(runtime_pg_test PRIVATE MPIEXEC="${MPIEXEC_EXECUTABLE}")
endif()
if(TARGET torchscript_train)
  target_compile_definitions(runtime_pg_test PRIVATE
                             COHORT_TORCH_PYTHON="${COHORT_TORCH_PYTHON}" COHORT_HAVE_TORCHSCRIPT_EXAMPLE=1)
  add_dependencies(runtime_pg_test torchscript_train)
endif()

gtest_discover_tests(runtime_pg_test TEST_PREFIX "runtime." TEST_FILTER "-Multiproc*"
                     NO_PRETTY_VALUES PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)
gtest_discover_tests(runtime_pg_test TEST_PREFIX "runtime." TEST_FILTER "Multiproc*:-*Mpi*"
                     NO_PRETTY_VALUES
                     PROPERTIES LABELS multiproc TIMEOUT 180 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
if(COHORT_WITH_MPI)
  # A list in gtest_discover_tests' PROPERTIES (LABELS "multiproc;mpi") is split apart on the way
  # (CMake 3.25: the test got only "multiproc", and TIMEOUT and RUN_SERIAL were lost), so the two
  # labels are set by a CTest include file that runs after the discovered tests are defined.
  gtest_discover_tests(runtime_pg_test TEST_PREFIX "runtime." TEST_FILTER "Multiproc*Mpi*"
                       TEST_LIST runtime_pg_mpi_tests NO_PRETTY_VALUES
                       PROPERTIES TIMEOUT 180 RUN_SERIAL ON DISCOVERY_TIMEOUT 60)
  set(labels_file ${CMAKE_CURRENT_BINARY_DIR}/runtime_pg_mpi_labels.cmake)
  file(WRITE ${labels_file} "if(runtime_pg_mpi_tests)\n"
       "  set_tests_properties(\${runtime_pg_mpi_tests} PROPERTIES LABELS \"multiproc;mpi\")\n"
       "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${labels_file})
endif()
