# The install tests: Norma installed from its build tree to a scratch prefix,
# then used from there as a user would. One prefix serves every step after
# MODE=install (ctest runs that first: the fixture norma_installed).
#   cmake -DMODE=<mode> -DNORMA_BUILD_DIR=<build> -DCONSUMER_SOURCE_DIR=<tests/consumer>
#         -DWORK_DIR=<scratch dir> [-DCMAKE_CXX_COMPILER=<c++>] -P run.cmake
# MODE:
#   install     install to WORK_DIR/prefix (after removing WORK_DIR)
#   headers     every public header installed is reachable from norma.h, none includes
#               <nlohmann/json.hpp>, the CLI's headers are not installed (public_headers.cmake)
#   cmake       find_package(norma) with MPI's packages hidden; build and run consumer and everything
#   mpi         find_package(norma COMPONENTS mpi); build and run mpi_consumer
#   pkg-config  g++ with `pkg-config --cflags --libs norma` (everything.cpp) and norma-mpi (mpi_main.cpp)
# Any failing step fails.
cmake_minimum_required(VERSION 3.25)  # policies for script mode
foreach(var MODE NORMA_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: pass -D${var}=...")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)

function(step what)
  message(STATUS "install test: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install test: ${what} failed (${rc})")
  endif()
endfunction()

set(compiler)
if(CMAKE_CXX_COMPILER)
  set(compiler -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
else()
  set(CMAKE_CXX_COMPILER c++)
endif()

# Configures, builds and runs the consumer project in WORK_DIR/<name>. Only the
# prefix may provide norma: no package registry, no build tree.
function(consumer name)
  set(build ${WORK_DIR}/${name})
  file(REMOVE_RECURSE ${build})
  step("configure the consumer (${name})"
    ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${build} -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF ${compiler} ${ARGN})
  file(STRINGS ${build}/CMakeCache.txt norma_dir REGEX "^norma_DIR:")
  string(FIND "${norma_dir}" "norma_DIR:PATH=${prefix}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "install test: norma was not found in ${prefix}: ${norma_dir}")
  endif()
  step("build the consumer (${name})" ${CMAKE_COMMAND} --build ${build})
  set(${name}_build ${build} PARENT_SCOPE)
endfunction()

if(MODE STREQUAL "install")
  file(REMOVE_RECURSE ${WORK_DIR})
  step("install Norma to ${prefix}" ${CMAKE_COMMAND} --install ${NORMA_BUILD_DIR} --prefix ${prefix})
elseif(MODE STREQUAL "headers")
  set(INCLUDE_DIR ${prefix}/include)
  include(${CMAKE_CURRENT_LIST_DIR}/public_headers.cmake)
elseif(MODE STREQUAL "cmake")
  # MPI hidden: a consumer that does not ask for the component needs no MPI.
  consumer(cmake -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)
  step("run consumer" ${cmake_build}/consumer)
  step("run everything" ${cmake_build}/everything)
elseif(MODE STREQUAL "mpi")
  consumer(mpi -DWITH_MPI=ON)
  step("run mpi_consumer" ${mpi_build}/mpi_consumer)
elseif(MODE STREQUAL "pkg-config")
  find_program(PKG_CONFIG pkg-config REQUIRED)
  file(GLOB_RECURSE pc ${prefix}/*/norma.pc)
  if(NOT pc)
    message(FATAL_ERROR "install test: no norma.pc under ${prefix}")
  endif()
  get_filename_component(pc_dir ${pc} DIRECTORY)
  set(ENV{PKG_CONFIG_PATH} ${pc_dir})
  set(build ${WORK_DIR}/pkg-config)
  file(MAKE_DIRECTORY ${build})
  foreach(entry "norma;everything.cpp;everything" "norma-mpi;mpi_main.cpp;mpi_consumer")
    list(GET entry 0 package)
    list(GET entry 1 source)
    list(GET entry 2 program)
    execute_process(COMMAND ${PKG_CONFIG} --cflags --libs ${package} OUTPUT_VARIABLE flags
      RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "install test: pkg-config --cflags --libs ${package} failed (${rc})")
    endif()
    message(STATUS "pkg-config --cflags --libs ${package}: ${flags}")
    separate_arguments(flags UNIX_COMMAND "${flags}")
    step("compile ${source} with pkg-config ${package}"
      ${CMAKE_CXX_COMPILER} -std=c++20 -O1 ${CONSUMER_SOURCE_DIR}/${source} -o ${build}/${program} ${flags})
    step("run ${program} (pkg-config ${package})" ${build}/${program})
  endforeach()
else()
  message(FATAL_ERROR "run.cmake: unknown MODE '${MODE}'")
endif()
