# `cmake --install build --prefix P`: cohort's headers, static libraries, the `cohort` command
# and a CMake package, so that a training program outside this tree builds with
#   find_package(cohort CONFIG REQUIRED)
#   target_link_libraries(train PRIVATE cohort::runtime)
# cohort::runtime brings libtorch, the checkpoints and the collectives; cohort::collectives is
# the torch-free layer alone. Included last from the top-level CMakeLists.txt, once every target
# exists. Nothing here changes how the tree itself builds.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(COHORT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/cohort)

# Every library a program links, as cohort::<name> (cohort_foo -> cohort::foo): the link closure
# of cohort_runtime and cohort_collectives, walked here so that a library someone adds to them
# is exported without editing this file. It includes the interface helpers static libraries list
# privately ($<LINK_ONLY:cohort_warnings>): CMake needs them in the export set to write it, and
# as link-only entries their flags never reach the user.
function(cohort_link_closure out)
  set(seen)
  set(todo ${ARGN})
  while(todo)
    list(POP_FRONT todo t)
    string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" t "${t}")
    if(NOT TARGET ${t} OR t IN_LIST seen)
      continue()
    endif()
    get_target_property(imported ${t} IMPORTED)
    if(imported)
      continue()  # a dependency's own target (torch, gloo, gRPC::grpc++): the config finds it
    endif()
    list(APPEND seen ${t})
    get_target_property(type ${t} TYPE)
    set(deps)
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(deps ${t} LINK_LIBRARIES)
    endif()
    get_target_property(ideps ${t} INTERFACE_LINK_LIBRARIES)
    foreach(d IN LISTS deps ideps)
      if(d AND NOT d MATCHES "-NOTFOUND$")
        list(APPEND todo ${d})
      endif()
    endforeach()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

set(cohort_roots cohort_collectives)
if(TARGET cohort_runtime)
  list(APPEND cohort_roots cohort_runtime)
endif()
cohort_link_closure(cohort_export_targets ${cohort_roots})
foreach(target IN LISTS cohort_export_targets)
  string(REGEX REPLACE "^cohort_" "" name ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${name})
  # In the tree, headers come from the directory-wide include_directories(); installed, from P/include.
  get_target_property(type ${target} TYPE)
  if(NOT type STREQUAL "INTERFACE_LIBRARY")
    target_include_directories(${target} INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  endif()
endforeach()

install(TARGETS ${cohort_export_targets} EXPORT cohortTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT cohortTargets NAMESPACE cohort:: DESTINATION ${COHORT_INSTALL_CMAKEDIR})

# The commands: `cohort`, and `cohort-export` (with its skeletons), which `cohort model
# register` runs from cohort's own directory.
# Installed, they keep the RUNPATH to the libraries outside the system directories (Open MPI's,
# CUDA's, HDF5's serial folder) that CMake would otherwise strip.
set_target_properties(cohort PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
install(TARGETS cohort RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET cohort-export)
  set_target_properties(cohort-export PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
  install(TARGETS cohort-export RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(DIRECTORY ${CMAKE_BINARY_DIR}/bin/skeletons DESTINATION ${CMAKE_INSTALL_BINDIR}
          OPTIONAL)
endif()

# Headers, included from the prefix's include/ as in the tree ("runtime/trainer.h"). Every
# header of the four library layers goes: the public ones include their neighbours.
foreach(layer common collectives checkpoint runtime)
  install(DIRECTORY ${CMAKE_SOURCE_DIR}/${layer}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/${layer}
          FILES_MATCHING PATTERN "*.h")
endforeach()
# Generated: collectives/config.h and the store's and ps's protobuf headers.
install(DIRECTORY ${CMAKE_BINARY_DIR}/collectives/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/collectives
        FILES_MATCHING PATTERN "*.h" PATTERN "CMakeFiles" EXCLUDE)

# The package: cohortConfig.cmake finds the same dependencies this build used.
set(COHORT_CONFIG_WITH_PROMETHEUS OFF)
if(TARGET prometheus-cpp::pull)
  set(COHORT_CONFIG_WITH_PROMETHEUS ON)
endif()
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/cohortConfig.cmake.in
                              ${CMAKE_BINARY_DIR}/cmake/cohortConfig.cmake
                              INSTALL_DESTINATION ${COHORT_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/cohortConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/cmake/cohortConfig.cmake
              ${CMAKE_BINARY_DIR}/cmake/cohortConfigVersion.cmake
        DESTINATION ${COHORT_INSTALL_CMAKEDIR})
