// What every CUDA kernel of qwen shares: element loads and stores for the two storage types
// (float and qwen::bf16, whose bits are bfloat16's), warp and block reductions, launch checks.
//
// Conventions of kernels/cuda (each header is the twin of the one of the same name in
// kernels/cpu, whose contract it keeps unless it says otherwise):
//   - Pointers are device pointers; extents are std::int64_t; every launcher takes a
//     cudaStream_t and returns the launch's cudaError_t (cudaSuccess when there is nothing to
//     do). Contract violations that the host can see (negative extents, null pointers, shapes a
//     kernel was not instantiated for) throw qwen::InvalidArgument before anything is enqueued.
//   - No launcher allocates or synchronises, so a step made of them can be captured in a CUDA
//     graph.
//   - Built without --use_fast_math: expf, rsqrtf and divisions are the accurate ones, so the
//     tolerances against the CPU twins written in tests/cuda hold.
//   - A kernel that is not a template is `static`: the headers are compiled into every
//     translation unit that includes them, and two definitions of one non-template __global__
//     function (its host stub) would collide at link time. (qwen-test-cuda links several units
//     that include the same kernels, so a missing `static` fails its build.)
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <concepts>
#include <cstdint>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"

namespace qwen::kernels::cuda {

// The element types a kernel reads or writes: fp32, and bf16 as qwen stores it (raw bits).
template <class T>
concept StorageFloat = std::same_as<T, float> || std::same_as<T, bf16>;

// Named apart from qwen::to_float (host only), which argument-dependent lookup would also find.
__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ float widen(bf16 x) { return __uint_as_float(static_cast<unsigned>(x.bits) << 16); }

// Round to nearest even; a NaN is stored as 0x7fff, as qwen::bf16::from_float does on the host.
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(bf16* p, float v) {
  p->bits = isnan(v) ? std::uint16_t{0x7fff} : __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

template <StorageFloat T>
__device__ __forceinline__ T from_float(float v) {
  T out;
  store(&out, v);
  return out;
}

inline constexpr int warp_size = 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = warp_size / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = warp_size / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the Threads threads of a block (Threads a multiple of 32, at most 1024); every thread
// gets the result. Uses Threads / 32 floats of shared memory; ends with a barrier, so it can be called
// again right away.
template <int Threads>
__device__ __forceinline__ float block_sum(float v) {
  static_assert(Threads % warp_size == 0 && Threads <= 1024, "block_sum: Threads must be a multiple of 32, at most 1024");
  constexpr int warps = Threads / warp_size;
  v = warp_sum(v);
  if constexpr (warps == 1) {
    return v;
  } else {
    __shared__ float partial[warps];
    const int lane = static_cast<int>(threadIdx.x) % warp_size, warp = static_cast<int>(threadIdx.x) / warp_size;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float total = 0;
#pragma unroll
    for (int w = 0; w < warps; ++w) total += partial[w];  // the same order in every thread
    __syncthreads();
    return total;
  }
}

// The largest grid x extent; kernels with more items than this stride over the rest.
inline constexpr std::int64_t max_grid_x = (std::int64_t{1} << 31) - 1;

// [a, a + a_bytes) and [b, b + b_bytes) share a byte. Device pointers compare as plain addresses:
// CUDA gives host and devices one virtual address space.
[[nodiscard]] inline bool overlaps(const void* a, std::int64_t a_bytes, const void* b, std::int64_t b_bytes) noexcept {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a), b0 = reinterpret_cast<std::uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && a0 < b0 + static_cast<std::uintptr_t>(b_bytes) && b0 < a0 + static_cast<std::uintptr_t>(a_bytes);
}

// Throws InvalidArgument naming the op and the extent when one is negative.
inline void check_extent(const char* op, const char* name, std::int64_t value) {
  if (value < 0) throw_error<InvalidArgument>(op, ": ", name, " is ", value, ", must be >= 0");
}

}  // namespace qwen::kernels::cuda
