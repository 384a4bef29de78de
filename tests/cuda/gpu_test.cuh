// What the GPU tests (tests/cuda/*_gpu.cu, label [cuda]) share: device buffers filled from host
// vectors, CUDA error checks that fail the test, random inputs, and one comparison against a CPU
// result with a tolerance stated by the caller.
//
// The tests run only where gpu_main.cu finds a device; without one the program reports
// "SKIPPED: no CUDA device: N GPU tests skipped" and ctest counts it as skipped.
#pragma once

#include <cuda_runtime.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qwen/core/numeric.hpp"

namespace qwen::test_cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) FAIL(what << ": " << cudaGetErrorString(status));
}

// Device memory holding a copy of a host vector (or count poisoned elements).
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : size_(host.size()) {
    check(cudaMalloc(&data_, bytes()), "cudaMalloc");
    if (!host.empty()) check(cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  // count elements, every byte 0xff (a NaN in float and bf16): an unwritten output shows.
  explicit DeviceBuffer(std::size_t count) : size_(count) {
    check(cudaMalloc(&data_, bytes()), "cudaMalloc");
    check(cudaMemset(data_, 0xff, bytes()), "cudaMemset");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(data_); }
  [[nodiscard]] T* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] std::vector<T> to_host() const {
    check(cudaDeviceSynchronize(), "kernel");
    std::vector<T> host(size_);
    if (size_ > 0) check(cudaMemcpy(host.data(), data_, size_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return host;
  }

 private:
  [[nodiscard]] std::size_t bytes() const { return std::max<std::size_t>(size_, 1) * sizeof(T); }
  T* data_ = nullptr;
  std::size_t size_;
};

inline std::vector<float> random_floats(std::mt19937& rng, std::size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](float x) { return bf16::from_float(x); });
  return out;
}

inline std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](bf16 x) { return x.to_float(); });
  return out;
}

// |got - expected| <= abs_tol + rel_tol * |expected| element by element (NaN never passes);
// reports the count and the first few failures, then fails the test when there is any.
inline void require_close(const std::vector<float>& got, const std::vector<float>& expected, double abs_tol, double rel_tol,
                          const std::string& what) {
  REQUIRE(got.size() == expected.size());
  std::size_t bad = 0;
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double diff = std::abs(static_cast<double>(got[i]) - expected[i]);
    const double limit = abs_tol + rel_tol * std::abs(static_cast<double>(expected[i]));
    if (!(diff <= limit)) {
      if (++bad <= 5) UNSCOPED_INFO(what << ": element " << i << " gpu " << got[i] << " cpu " << expected[i]);
    } else {
      worst = std::max(worst, diff);
    }
  }
  INFO(what << ": " << bad << " of " << got.size() << " elements outside " << abs_tol << " + " << rel_tol
            << " * |cpu| (largest passing difference " << worst << ")");
  CHECK(bad == 0);
}

// Bit equality (a float's or a bf16's bits).
template <class T>
void require_equal_bits(const std::vector<T>& got, const std::vector<T>& expected, const std::string& what) {
  REQUIRE(got.size() == expected.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &expected[i], sizeof(T)) != 0 && ++bad <= 5)
      UNSCOPED_INFO(what << ": element " << i << " differs");
  INFO(what << ": " << bad << " of " << got.size() << " elements differ");
  CHECK(bad == 0);
}

}  // namespace qwen::test_cuda
