# cohort_moto_fixture: a moto S3 server with signature checks on, for any checkpoint test
# (tests/checkpoint/moto_fixture.h). Included by tests/checkpoint/CMakeLists.txt.
if(NOT TARGET cohort_moto_fixture)
  add_library(cohort_moto_fixture STATIC ${CMAKE_CURRENT_LIST_DIR}/moto_fixture.cc)
  target_compile_definitions(cohort_moto_fixture PRIVATE
    COHORT_MOTO_DIR="${CMAKE_CURRENT_LIST_DIR}")
  target_link_libraries(cohort_moto_fixture PUBLIC cohort_test_util cohort_common
                        PRIVATE nlohmann_json::nlohmann_json cohort_warnings)
endif()
