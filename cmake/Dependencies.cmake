# Every dependency comes from a Debian package (see scripts/setup), found with find_package.
find_package(Threads REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(fmt CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_program(COHORT_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

if(COHORT_WITH_MPI)
  find_package(MPI COMPONENTS C CXX REQUIRED)
endif()
if(COHORT_WITH_GLOO)
  find_package(Gloo CONFIG REQUIRED)
endif()

# CUDA and NCCL: the toolkit lives in /usr/local/cuda; NCCL has no CMake package.
set(COHORT_CUDA_FOUND OFF)
if(NOT DEFINED CUDAToolkit_ROOT AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CUDAToolkit_ROOT /usr/local/cuda)  # nvcc is not on PATH on Debian images
endif()
find_package(CUDAToolkit QUIET)
find_path(COHORT_NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include ENV NCCL_HOME
          PATH_SUFFIXES include)
find_library(COHORT_NCCL_LIBRARY nccl HINTS /usr/local/cuda/lib64 ENV NCCL_HOME PATH_SUFFIXES lib lib64)
if(CUDAToolkit_FOUND AND COHORT_NCCL_INCLUDE_DIR AND COHORT_NCCL_LIBRARY)
  set(COHORT_CUDA_FOUND ON)
endif()

# Compiles protos with the gRPC plugin: cohort_grpc_proto(TARGET name PROTO file.proto).
function(cohort_grpc_proto)
  cmake_parse_arguments(ARG "" "TARGET;PROTO" "" ${ARGN})
  get_filename_component(proto_abs ${ARG_PROTO} ABSOLUTE)
  file(RELATIVE_PATH proto_rel ${CMAKE_SOURCE_DIR} ${proto_abs})
  string(REGEX REPLACE "\\.proto$" "" stem ${proto_rel})
  set(out ${CMAKE_BINARY_DIR}/${stem}.pb.cc ${CMAKE_BINARY_DIR}/${stem}.pb.h
          ${CMAKE_BINARY_DIR}/${stem}.grpc.pb.cc ${CMAKE_BINARY_DIR}/${stem}.grpc.pb.h)
  add_custom_command(
    OUTPUT ${out}
    COMMAND protobuf::protoc --proto_path=${CMAKE_SOURCE_DIR} --cpp_out=${CMAKE_BINARY_DIR}
            --grpc_out=${CMAKE_BINARY_DIR} --plugin=protoc-gen-grpc=${COHORT_GRPC_CPP_PLUGIN}
            ${proto_rel}
    DEPENDS ${proto_abs} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
    COMMENT "protoc ${proto_rel}")
  add_library(${ARG_TARGET} STATIC ${out})
  target_link_libraries(${ARG_TARGET} PUBLIC gRPC::grpc++ protobuf::libprotobuf)
endfunction()

# Checkpoints: HDF5, libcurl (S3 with SigV4), XXH3 and SHA-256 digests.
find_package(HDF5 COMPONENTS C REQUIRED)
find_package(CURL REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(ZLIB REQUIRED)
# Prometheus /metrics (prometheus-cpp-dev); optional so that a machine without it still builds.
find_package(prometheus-cpp CONFIG)
if(NOT prometheus-cpp_FOUND)
  message(WARNING "prometheus-cpp not found: COHORT_METRICS_PORT will not serve metrics "
                  "(run scripts/setup, which installs prometheus-cpp-dev)")
endif()
find_path(COHORT_XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
find_library(COHORT_XXHASH_LIBRARY xxhash REQUIRED)
add_library(cohort_xxhash INTERFACE)
target_include_directories(cohort_xxhash SYSTEM INTERFACE ${COHORT_XXHASH_INCLUDE_DIR})
target_link_libraries(cohort_xxhash INTERFACE ${COHORT_XXHASH_LIBRARY})

# libtorch (Debian's libtorch-dev, CPU only) for runtime/, examples/ and the DDP benchmark. Only
# the TUs of those folders include it.
if(COHORT_WITH_TORCH)
  find_package(Torch CONFIG REQUIRED)
endif()
