# cmake -DQWEN_SOURCE_DIR=... -DWORK_DIR=... -P run_consumer_test.cmake
# Installs qwen into a scratch prefix, then builds and runs the consumer project against the
# installed package (find_package) and against the source tree (add_subdirectory).
foreach(var QWEN_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer_test.cmake: ${var} is not set")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")
set(consumer_src "${QWEN_SOURCE_DIR}/tests/consumer")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "consumer test: '${cmd}' failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

# 1. Install qwen (configured as a user would, tests off) and consume it with find_package.
run(${CMAKE_COMMAND} -S "${QWEN_SOURCE_DIR}" -B "${WORK_DIR}/qwen-build" -DQWEN_BUILD_TESTS=OFF
    -DQWEN_BUILD_EXAMPLES=OFF -DQWEN_BUILD_BENCH=OFF -DQWEN_CUDA=OFF)
run(${CMAKE_COMMAND} --install "${WORK_DIR}/qwen-build" --prefix "${WORK_DIR}/prefix")
run(${CMAKE_COMMAND} -S "${consumer_src}" -B "${WORK_DIR}/package" -DQWEN_CONSUMER_MODE=package
    "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
run(${CMAKE_COMMAND} --build "${WORK_DIR}/package")
run("${WORK_DIR}/package/consumer")
run("${WORK_DIR}/package/consumer_tokenizer")
run("${WORK_DIR}/package/consumer_native")

# 2. add_subdirectory of the source tree (qwen's tests, examples and benchmarks stay off).
run(${CMAKE_COMMAND} -S "${consumer_src}" -B "${WORK_DIR}/subdirectory" -DQWEN_CONSUMER_MODE=subdirectory
    "-DQWEN_SOURCE_DIR=${QWEN_SOURCE_DIR}" -DQWEN_CUDA=OFF)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/subdirectory")
run("${WORK_DIR}/subdirectory/consumer")
run("${WORK_DIR}/subdirectory/consumer_tokenizer")
run("${WORK_DIR}/subdirectory/consumer_native")
message(STATUS "consumer test: find_package and add_subdirectory both work")
