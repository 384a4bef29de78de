# ctest "cuda: a spilling kernel fails the build": compiles spill_probe.cu with the project's CUDA
# options (QWEN_CUDA_OPTIONS) and requires ptxas to refuse it for a spill.
#   cmake -DNVCC=... -DOPTIONS=... -DSOURCE=spill_probe.cu -DOUTPUT=... -P check_spill_guard.cmake
execute_process(COMMAND ${NVCC} ${OPTIONS} -arch=sm_80 -c ${SOURCE} -o ${OUTPUT}
  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(result EQUAL 0)
  message(FATAL_ERROR "spill_probe.cu compiled: the CUDA options do not make register spills fail the build")
endif()
if(NOT err MATCHES "spill" AND NOT out MATCHES "spill")
  message(FATAL_ERROR "spill_probe.cu failed for another reason than a spill:\n${out}${err}")
endif()
message(STATUS "spill guard works: ${err}")
