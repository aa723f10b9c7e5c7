# Runs COMMAND (a list) and passes only when it exits non-zero within MAX_SECONDS,
# printing its output (the test's PASS_REGULAR_EXPRESSION checks the message).
#   cmake "-DCOMMAND=mpirun;-np;2;prog;case" -DMAX_SECONDS=60 -P expect_job_failure.cmake
cmake_minimum_required(VERSION 3.25)
string(TIMESTAMP start "%s")
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
  TIMEOUT ${MAX_SECONDS})
string(TIMESTAMP stop "%s")
math(EXPR elapsed "${stop} - ${start}")
string(REPLACE "\n" " " flat "${out} ${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "the job exited 0 after ${elapsed} s; a failing rank must make it fail\n${out}${err}")
endif()
if(NOT rc MATCHES "^[0-9]+$" OR elapsed GREATER_EQUAL ${MAX_SECONDS})
  message(FATAL_ERROR "the job did not end by itself within ${MAX_SECONDS} s (result '${rc}', ${elapsed} s)\n${out}${err}")
endif()
message("job failed as expected with exit code ${rc} after ${elapsed} s: ${flat}")
