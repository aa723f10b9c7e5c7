# One header, really: every public header of an installed Norma is reachable
# from norma/norma.h through its #include lines, no reachable header includes
# <nlohmann/json.hpp> (only <nlohmann/json_fwd.hpp>: docs/architecture.md,
# "Packaging"), and the CLI's own headers are not installed. Included by
# run.cmake (MODE=headers) with INCLUDE_DIR, the prefix's include directory.
#
# Internal headers, installed (public headers or the fast kernels include some)
# but not part of the API, so norma.h need not reach them: the kernels
# (layers/ref/, layers/fast/), the BatchNorm kernel table, the iteration and
# OpenBLAS-threads helpers of core/, SyncBatchNorm's collectives. A new header
# is public unless it is added here.
cmake_minimum_required(VERSION 3.25)  # policies when run alone: cmake -DINCLUDE_DIR=... -P
set(internal_headers
  "^layers/ref/" "^layers/fast/" "^layers/batchnorm2d_op\\.h$" "^core/iter\\.h$" "^core/blas_threads\\.h$"
  "^core/dist/batchnorm_sync\\.h$")
set(not_installed apps/cli.h apps/bench.h apps/trainer_detail.h)  # the CLI's parser, `norma bench`, the trainer's internals

set(root ${INCLUDE_DIR}/norma)
if(NOT EXISTS ${root}/norma.h)
  message(FATAL_ERROR "public headers: no ${root}/norma.h")
endif()
foreach(h IN LISTS not_installed)
  if(EXISTS ${root}/${h})
    message(FATAL_ERROR "public headers: ${h} is the CLI's own but was installed")
  endif()
endforeach()

# The headers norma.h reaches: a breadth-first walk over "..." and <norma/...> includes.
set(reached norma.h)
set(queue norma.h)
set(json_includers)
while(queue)
  list(POP_FRONT queue h)
  get_filename_component(dir ${h} DIRECTORY)
  file(STRINGS ${root}/${h} lines REGEX "^[ \t]*#[ \t]*include")
  foreach(line IN LISTS lines)
    if(line MATCHES "^[ \t]*#[ \t]*include[ \t]*<nlohmann/json\\.hpp>")
      list(APPEND json_includers ${h})
    endif()
    if(line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"" AND dir)
      set(inc ${dir}/${CMAKE_MATCH_1})
    elseif(line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
      set(inc ${CMAKE_MATCH_1})
    elseif(line MATCHES "#[ \t]*include[ \t]*<norma/([^>]+)>")
      set(inc ${CMAKE_MATCH_1})
    else()
      continue()
    endif()
    cmake_path(NORMAL_PATH inc)
    if(NOT EXISTS ${root}/${inc})
      message(FATAL_ERROR "public headers: ${h} includes ${inc}, which is not installed")
    endif()
    if(NOT inc IN_LIST reached)
      list(APPEND reached ${inc})
      list(APPEND queue ${inc})
    endif()
  endforeach()
endwhile()

file(GLOB_RECURSE installed RELATIVE ${root} ${root}/*.h)
set(unreached)
set(public 0)
foreach(h IN LISTS installed)
  set(internal FALSE)
  foreach(pattern IN LISTS internal_headers)
    if(h MATCHES "${pattern}")
      set(internal TRUE)
    endif()
  endforeach()
  if(NOT internal)
    math(EXPR public "${public} + 1")
    if(NOT h IN_LIST reached)
      list(APPEND unreached ${h})
    endif()
  endif()
endforeach()
if(unreached)
  list(JOIN unreached ", " unreached)
  message(FATAL_ERROR "public headers: not reachable from norma.h: ${unreached} "
    "(include them in norma.h, or list them as internal in tests/consumer/public_headers.cmake)")
endif()
if(json_includers)
  list(JOIN json_includers ", " json_includers)
  message(FATAL_ERROR "public headers: ${json_includers} include <nlohmann/json.hpp>; "
    "public headers use <nlohmann/json_fwd.hpp>")
endif()
list(LENGTH reached n_reached)
message(STATUS "public headers: all ${public} public headers reachable from norma.h "
  "(${n_reached} headers reached), none includes <nlohmann/json.hpp>")
