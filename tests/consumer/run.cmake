# Installs Norma from its build tree to a temporary prefix, then configures,
# builds and runs tests/consumer against that prefix. Any failing step fails.
#   cmake -DNORMA_BUILD_DIR=<build> -DCONSUMER_SOURCE_DIR=<tests/consumer>
#         -DWORK_DIR=<scratch dir> [-DCMAKE_CXX_COMPILER=<c++>] -P run.cmake
cmake_minimum_required(VERSION 3.25)  # policies for script mode
foreach(var NORMA_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: pass -D${var}=...")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})

function(step what)
  message(STATUS "consumer test: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${what} failed (${rc})")
  endif()
endfunction()

set(compiler)
if(CMAKE_CXX_COMPILER)
  set(compiler -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
endif()

step("install Norma to ${prefix}"
  ${CMAKE_COMMAND} --install ${NORMA_BUILD_DIR} --prefix ${prefix})
# Only the prefix may provide norma: no package registry, no build tree.
step("configure the consumer"
  ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${build} -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF ${compiler})
file(STRINGS ${build}/CMakeCache.txt norma_dir REGEX "^norma_DIR:")
string(FIND "${norma_dir}" "norma_DIR:PATH=${prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "consumer test: norma was not found in ${prefix}: ${norma_dir}")
endif()
step("build the consumer" ${CMAKE_COMMAND} --build ${build})
step("run the consumer" ${build}/consumer)
