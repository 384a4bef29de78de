// The GPU tests' main: with a CUDA device, Catch2 runs every test case (label [cuda]) and a
// failure fails; without one, it prints one line naming how many were skipped and returns 4,
// which ctest reports as a skip.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <cstdio>

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    const std::size_t tests = Catch::getRegistryHub().getTestCaseRegistry().getAllTests().size();
    std::printf("SKIPPED: no CUDA device: %zu GPU tests skipped (cudaGetDeviceCount: %s)\n", tests,
                status == cudaSuccess ? "0 devices" : cudaGetErrorString(status));
    return 4;
  }
  cudaDeviceProp properties{};
  if (cudaGetDeviceProperties(&properties, 0) == cudaSuccess)
    std::printf("GPU tests on %s (sm_%d%d)\n", properties.name, properties.major, properties.minor);
  return Catch::Session().run(argc, argv);
}
