# Shared build helpers: warning flags, sanitizers, tests and fuzz targets.

add_library(odyssey_flags INTERFACE)
target_include_directories(odyssey_flags INTERFACE ${PROJECT_SOURCE_DIR})
target_compile_options(odyssey_flags INTERFACE
  -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wcast-align -Wformat=2
  -Wimplicit-fallthrough -Wno-missing-field-initializers
  $<$<BOOL:${ODYSSEY_WERROR}>:-Werror>)
target_compile_definitions(odyssey_flags INTERFACE _GNU_SOURCE)
target_link_libraries(odyssey_flags INTERFACE Threads::Threads)

if(ODYSSEY_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# odyssey_test(NAME SOURCES a.cc b.cc LIBS x y [LABELS l] [TIMEOUT s] [SERIAL])
# Builds a GoogleTest binary and registers each test case with CTest.
function(odyssey_test name)
  cmake_parse_arguments(T "SERIAL" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT ODYSSEY_BUILD_TESTS)
    return()
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE odyssey_flags ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set(props TIMEOUT ${T_TIMEOUT})
  if(T_LABELS)
    # gtest_discover_tests flattens lists: escape the separators to keep every label.
    string(REPLACE ";" "\\;" labels "${T_LABELS}")
    list(APPEND props LABELS "${labels}")
  endif()
  if(T_SERIAL)
    list(APPEND props RUN_SERIAL TRUE)
  endif()
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES ${props})
endfunction()

# odyssey_fuzzer(NAME SOURCES f.cc LIBS x CORPUS dir)
# With clang and ODYSSEY_FUZZ: a libFuzzer binary. Otherwise: NAME_replay, which feeds every
# seed of CORPUS plus deterministic mutations of it to the same entry point, run by CTest.
function(odyssey_fuzzer name)
  cmake_parse_arguments(F "" "CORPUS" "SOURCES;LIBS" ${ARGN})
  if(ODYSSEY_FUZZ AND CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    add_executable(${name} ${F_SOURCES})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name} PRIVATE odyssey_flags ${F_LIBS})
  elseif(ODYSSEY_BUILD_TESTS)
    add_executable(${name}_replay ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.cc)
    target_link_libraries(${name}_replay PRIVATE odyssey_flags ${F_LIBS})
    add_test(NAME fuzz_replay.${name} COMMAND ${name}_replay ${F_CORPUS})
    set_tests_properties(fuzz_replay.${name} PROPERTIES LABELS fuzz TIMEOUT 300)
  endif()
endfunction()

# Adds every immediate subfolder of the current source dir that has a CMakeLists.txt, in
# name order (tests/ and bench/ keep one subfolder per area).
function(odyssey_add_subfolders)
  file(GLOB children LIST_DIRECTORIES true RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/*)
  list(SORT children)
  foreach(child ${children})
    if(IS_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/${child} AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${child}/CMakeLists.txt)
      add_subdirectory(${child})
    endif()
  endforeach()
endfunction()
