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

# The demo model's greedy answer to "What is 64 + 17?" with thinking off, as transformers computed
# it (tests/demo/make_reference.py: prompt2 of tests/demo/reference.safetensors, up to its eos).
set(demo_prompt 999,306,198,417,405,220,21,19,289,220,16,22,30,1000,198,999,327,198,1022,453,1023,453)
set(demo_expected "Qwen3<Dense, Demo, bf16>: 21,19,289,220,16,22,310,220,23,16,13,1000")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "consumer test: '${cmd}' failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

# Both forward programs must print transformers' tokens (the kernels' ISA, which depends on the
# machine, is left out of the comparison).
function(run_forward exe)
  execute_process(COMMAND "${exe}" "${QWEN_SOURCE_DIR}/models/demo" "${demo_prompt}" 32
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  string(REGEX REPLACE " \\([a-z0-9]+ kernels\\)" "" got "${out}")
  if(NOT rc EQUAL 0 OR NOT got STREQUAL demo_expected)
    message(FATAL_ERROR "consumer test: ${exe} printed '${out}' (${rc}), expected '${demo_expected}'\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

# 1. Install qwen (configured as a user would, tests off) and consume it with find_package.
run(${CMAKE_COMMAND} -S "${QWEN_SOURCE_DIR}" -B "${WORK_DIR}/qwen-build" -DQWEN_BUILD_TESTS=OFF
    -DQWEN_BUILD_EXAMPLES=OFF -DQWEN_BUILD_BENCH=OFF -DQWEN_CUDA=OFF)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/qwen-build")  # qwen::cpu_models
run(${CMAKE_COMMAND} --install "${WORK_DIR}/qwen-build" --prefix "${WORK_DIR}/prefix")
run(${CMAKE_COMMAND} -S "${consumer_src}" -B "${WORK_DIR}/package" -DQWEN_CONSUMER_MODE=package
    "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
run(${CMAKE_COMMAND} --build "${WORK_DIR}/package")
run("${WORK_DIR}/package/consumer")
run("${WORK_DIR}/package/consumer_tokenizer")
run("${WORK_DIR}/package/consumer_native")
run_forward("${WORK_DIR}/package/consumer_forward")
run_forward("${WORK_DIR}/package/consumer_forward_header_only")

# 2. add_subdirectory of the source tree (qwen's tests, examples and benchmarks stay off).
run(${CMAKE_COMMAND} -S "${consumer_src}" -B "${WORK_DIR}/subdirectory" -DQWEN_CONSUMER_MODE=subdirectory
    "-DQWEN_SOURCE_DIR=${QWEN_SOURCE_DIR}" -DQWEN_CUDA=OFF)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/subdirectory")
run("${WORK_DIR}/subdirectory/consumer")
run("${WORK_DIR}/subdirectory/consumer_tokenizer")
run("${WORK_DIR}/subdirectory/consumer_native")
run_forward("${WORK_DIR}/subdirectory/consumer_forward")
run_forward("${WORK_DIR}/subdirectory/consumer_forward_header_only")
message(STATUS "consumer test: find_package and add_subdirectory both work")
