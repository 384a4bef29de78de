// The attention's input side of one layer on the GPU, in one kernel: q_norm and k_norm (RMSNorm
// over each head), RoPE on q and k, and the append of k and v to the paged KV cache. Its CPU
// twin is the composition the CPU forward pass runs (model/forward.hpp):
//   kernels/cpu/rms_norm.hpp over the n * heads rows of q (weight q_norm) and of k (k_norm),
//   kernels/cpu/rope.hpp's apply_rope<HeadDim> with the step's cos / sin table,
//   the KV write: key[slot[t]][h] = k[t, h], value[slot[t]][h] = v[t, h].
//
// Contract
//   q:     [n, num_heads, HeadDim] fp32, row stride q_stride floats (>= num_heads * HeadDim);
//          normed and rotated in place.
//   k, v:  [n, num_kv_heads, HeadDim] fp32, row strides k_stride, v_stride; read only. (With
//          one fused qkv projection of row [q | k | v], the three pointers point into that row
//          and the strides are the row's width.)
//   q_norm, k_norm: [HeadDim] float or bf16.
//   cos_sin: [n][HeadDim], per token [cos 0 .. HeadDim/2 | sin 0 .. HeadDim/2], as
//            kernels/cpu/rope.hpp's rope_cos_sin makes it on the host (plain RoPE and YaRN alike:
//            the frequencies and the attention scaling are in the table).
//   slot:  [n] int32, block * block_size + position % block_size; a negative slot means "write
//          nothing" (a padding row of a CUDA-graph bucket). Slots are checked against the pool
//          on the host when the step is planned; the kernel trusts them.
//   key, value: one layer's pools [num_slots][num_kv_heads][HeadDim] (num_slots = num_blocks *
//          block_size) of KV = float or bf16 (RNE, NaN -> 0x7fff, as qwen::bf16::from_float).
//
// Numerics: per head the sum of squares is fp32 (HeadDim / 32 terms per lane, then a warp
// tree), inv = 1 / sqrtf(mean + eps); then the CPU's expressions in the CPU's order. The CPU
// sums 16 lanes and combines them in double, so results agree to a few 1e-7 relative, not bit
// for bit (tests/cuda/qk_norm_rope_gpu.cu states the bound). V is copied: bit for bit.
//
// Design: one warp per (token, head job), blockIdx.x the token, a job being one of the num_heads q heads, the
// num_kv_heads k heads or the num_kv_heads v heads; 4 warps per block. Lane l holds elements
// l + 32 j (j < HeadDim / 32) of its head; RoPE pairs element i with i + HeadDim / 2, which is
// the same lane's element j + HeadDim / 64, so the rotation needs no shuffle or shared memory.
// HeadDim is a multiple of 64 (64, 128 and 256 instantiated by the tests; Qwen3 uses 128).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include <qwen/kernels/cuda/common.cuh>

namespace qwen::kernels::cuda {

inline constexpr int qk_norm_rope_warps = 4;

struct QkNormRopeShape {
  std::int64_t n = 0;            // tokens
  int num_heads = 0;             // query heads
  int num_kv_heads = 0;
  std::int64_t q_stride = 0;     // floats between tokens' rows of q, k, v
  std::int64_t k_stride = 0;
  std::int64_t v_stride = 0;
  std::int64_t num_slots = 0;    // num_blocks * block_size of the pools
  float eps = 0;
};

namespace detail {

// Norms the head held in x (lane's elements l + 32 j) with weight, in place.
template <int HeadDim, StorageFloat W>
__device__ __forceinline__ void head_rms_norm(float (&x)[HeadDim / warp_size], const W* weight, float eps) {
  constexpr int per_lane = HeadDim / warp_size;
  const int lane = static_cast<int>(threadIdx.x) % warp_size;
  float partial = 0;
#pragma unroll
  for (int j = 0; j < per_lane; ++j) partial += x[j] * x[j];
  const float inv = 1.0f / sqrtf(warp_sum(partial) / static_cast<float>(HeadDim) + eps);
#pragma unroll
  for (int j = 0; j < per_lane; ++j) x[j] = widen(weight[lane + warp_size * j]) * (x[j] * inv);
}

// Rotates the head held in x with one token's cos | sin row.
template <int HeadDim>
__device__ __forceinline__ void head_rope(float (&x)[HeadDim / warp_size], const float* cos_sin) {
  constexpr int per_lane = HeadDim / warp_size, half = HeadDim / 2, partner = per_lane / 2;
  const int lane = static_cast<int>(threadIdx.x) % warp_size;
#pragma unroll
  for (int j = 0; j < partner; ++j) {
    const int i = lane + warp_size * j;  // < half
    const float c = cos_sin[i], s = cos_sin[half + i];
    const float a = x[j], b = x[j + partner];
    x[j] = a * c - b * s;
    x[j + partner] = b * c + a * s;
  }
}

}  // namespace detail

template <int HeadDim, StorageFloat W, StorageFloat KV>
__global__ void __launch_bounds__(qk_norm_rope_warps * warp_size)
    qk_norm_rope_write_kv_kernel(float* q, const float* k, const float* v, const W* __restrict__ q_norm, const W* __restrict__ k_norm,
                                 const float* __restrict__ cos_sin, const std::int32_t* __restrict__ slot, KV* __restrict__ key,
                                 KV* __restrict__ value, QkNormRopeShape shape) {
  static_assert(HeadDim % (2 * warp_size) == 0, "qk_norm_rope_write_kv: HeadDim must be a multiple of 64");
  constexpr int per_lane = HeadDim / warp_size;
  const std::int64_t t = blockIdx.x;
  const int job = static_cast<int>(blockIdx.y) * qk_norm_rope_warps + static_cast<int>(threadIdx.x) / warp_size;
  const int lane = static_cast<int>(threadIdx.x) % warp_size;
  const int jobs = shape.num_heads + 2 * shape.num_kv_heads;
  if (job >= jobs) return;  // whole warps leave together: the shuffles below see full warps

  const std::int32_t token_slot = slot[t];
  const std::int64_t kv_offset = static_cast<std::int64_t>(token_slot) * shape.num_kv_heads * HeadDim;
  float x[per_lane];
  if (job < shape.num_heads) {  // a query head: norm, rotate, back in place
    float* head = q + t * shape.q_stride + static_cast<std::int64_t>(job) * HeadDim;
#pragma unroll
    for (int j = 0; j < per_lane; ++j) x[j] = head[lane + warp_size * j];
    detail::head_rms_norm<HeadDim>(x, q_norm, shape.eps);
    detail::head_rope<HeadDim>(x, cos_sin + t * HeadDim);
#pragma unroll
    for (int j = 0; j < per_lane; ++j) head[lane + warp_size * j] = x[j];
  } else if (job < shape.num_heads + shape.num_kv_heads) {  // a key head: norm, rotate, to the cache
    const int h = job - shape.num_heads;
    const float* head = k + t * shape.k_stride + static_cast<std::int64_t>(h) * HeadDim;
#pragma unroll
    for (int j = 0; j < per_lane; ++j) x[j] = head[lane + warp_size * j];
    detail::head_rms_norm<HeadDim>(x, k_norm, shape.eps);
    detail::head_rope<HeadDim>(x, cos_sin + t * HeadDim);
    if (token_slot >= 0) {
      KV* dst = key + kv_offset + static_cast<std::int64_t>(h) * HeadDim;
#pragma unroll
      for (int j = 0; j < per_lane; ++j) store(dst + lane + warp_size * j, x[j]);
    }
  } else if (token_slot >= 0) {  // a value head: to the cache as it is
    const int h = job - shape.num_heads - shape.num_kv_heads;
    const float* head = v + t * shape.v_stride + static_cast<std::int64_t>(h) * HeadDim;
    KV* dst = value + kv_offset + static_cast<std::int64_t>(h) * HeadDim;
#pragma unroll
    for (int j = 0; j < per_lane; ++j) store(dst + lane + warp_size * j, head[lane + warp_size * j]);
  }
}

// Enqueues the kernel; throws InvalidArgument for a shape the host can see is wrong.
template <int HeadDim, StorageFloat W, StorageFloat KV>
[[nodiscard]] cudaError_t qk_norm_rope_write_kv(float* q, const float* k, const float* v, const W* q_norm, const W* k_norm,
                                                const float* cos_sin, const std::int32_t* slot, KV* key, KV* value,
                                                const QkNormRopeShape& shape, cudaStream_t stream) {
  constexpr const char* op = "cuda::qk_norm_rope_write_kv";
  check_extent(op, "n", shape.n);
  if (shape.num_heads <= 0 || shape.num_kv_heads <= 0 || shape.num_heads % shape.num_kv_heads != 0)
    throw_error<InvalidArgument>(op, ": num_heads ", shape.num_heads, " must be a positive multiple of num_kv_heads ", shape.num_kv_heads);
  if (shape.q_stride < std::int64_t{shape.num_heads} * HeadDim || shape.k_stride < std::int64_t{shape.num_kv_heads} * HeadDim ||
      shape.v_stride < std::int64_t{shape.num_kv_heads} * HeadDim)
    throw_error<InvalidArgument>(op, ": row strides q ", shape.q_stride, ", k ", shape.k_stride, ", v ", shape.v_stride,
                                 " are shorter than the heads (", shape.num_heads, " and ", shape.num_kv_heads, " x ", HeadDim, ")");
  if (shape.num_slots <= 0) throw_error<InvalidArgument>(op, ": num_slots ", shape.num_slots, " must be > 0");
  if (!(shape.eps >= 0.0f)) throw_error<InvalidArgument>(op, ": eps ", shape.eps, " must be >= 0");
  if (shape.n == 0) return cudaSuccess;
  if (shape.n > max_grid_x) throw_error<InvalidArgument>(op, ": n ", shape.n, " tokens exceed one launch's ", max_grid_x);
  if (q == nullptr || k == nullptr || v == nullptr || q_norm == nullptr || k_norm == nullptr || cos_sin == nullptr || slot == nullptr ||
      key == nullptr || value == nullptr)
    throw_error<InvalidArgument>(op, ": null pointer");
  const int jobs = shape.num_heads + 2 * shape.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(shape.n), static_cast<unsigned>((jobs + qk_norm_rope_warps - 1) / qk_norm_rope_warps));
  qk_norm_rope_write_kv_kernel<HeadDim><<<grid, qk_norm_rope_warps * warp_size, 0, stream>>>(q, k, v, q_norm, k_norm, cos_sin, slot,
                                                                                           key, value, shape);
  return cudaGetLastError();
}

}  // namespace qwen::kernels::cuda
