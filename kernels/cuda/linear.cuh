// A Linear layer without bias on the GPU (twin of kernels/cpu/linear.hpp, plain weights only):
//
//   y[n, out] = x[n, in] · W[out, in]ᵀ
//
// Contract (the CPU one, with the differences stated here)
//   x:  fp32 [n, in], row-major, row stride in, device memory.
//   W:  [out, in] row-major, device memory, used in place; bf16 (the dense checkpoints) or float
//       (fp32 checkpoints).
//   y:  fp32 [n, ldy] row-major, device memory; columns [0, out) of every row are overwritten and
//       columns [out, ldy) are not touched. ldy == out is the plain form; ldy > out lets several
//       projections of the same x (q, k, v) land side by side in one buffer: pass y + column
//       offset and the buffer's row length as ldy. y must not overlap x, W or the bf16 scratch
//       (checked over the span [y, y + (n-1)·ldy + out)).
//   n >= 0 (0 enqueues nothing and checks no pointer, as on the CPU), in >= 1, out >= 1,
//   ldy >= out, and in, out, ldy, n <= INT_MAX (cuBLAS's extents are int). Violations throw
//   InvalidArgument naming the values before anything is enqueued; a failing cuBLAS call throws
//   CublasError naming cuBLAS's status. The return value is the CUDA status of what was enqueued
//   (cudaSuccess when there was nothing to do); errors during execution surface at the next
//   synchronisation, as usual.
//
// Numerics
//   bf16 W: x is first rounded to bf16 (RNE, NaN -> 0x7fff; convert_to_bf16 below) into the
//     caller's scratch, then one cuBLAS GEMM multiplies bf16 by bf16 with fp32 accumulation
//     (CUBLAS_COMPUTE_32F) and fp32 output. Rounding the activations to bf16 before the product is
//     what transformers does for a bf16 model (the Linear runs in the weight's dtype), but it is a
//     difference from the CPU twin, which multiplies fp32 x by the bf16 W: the two differ by
//     Σ (x - bf16(x))·W, up to 2^-8 · Σ|x·W| (bf16's unit roundoff). Each product of two bf16
//     is exact in fp32; only the fp32 summation rounds (on tensor cores, possibly by truncation
//     rather than to nearest).
//   float W: cublasGemmEx in fp32 with CUBLAS_COMPUTE_32F under CUBLAS_PEDANTIC_MATH, so neither
//     TF32 tensor cores nor any fp32 emulation (bf16x9) is used, whatever the handle's math mode
//     was or the environment asks for: every product and sum is an fp32 FMA/addition.
//   Summation order: cuBLAS's, chosen per shape (tiling, split-K), so unlike the CPU twin the
//   result is not batch invariant: y[i, j] may differ in the last bits between two calls with
//   different n. For the same shape, GPU and cuBLAS version it is reproducible run to run.
//   tests/cuda/linear_gpu.cu bounds the error against a double reference.
//
// Mapping onto column-major cuBLAS
//   A row-major [r, c] matrix with row stride ld is, read as column-major, its transpose: a
//   [c, r] matrix with leading dimension ld. So in cuBLAS's eyes
//     W (row-major [out, in], stride in)  is  Wᵀ [in, out], lda = in
//     x (row-major [n, in],   stride in)  is  xᵀ [in, n],   ldb = in
//     y (row-major [n, out],  stride ldy) is  yᵀ [out, n],  ldc = ldy
//   and y = x·Wᵀ  <=>  yᵀ = W·xᵀ = (Wᵀ)ᵀ · xᵀ, i.e. C = op(A)·op(B) with
//     A = W, transa = T (op(A) = W [out, in]),  B = x, transb = N (op(B) = xᵀ [in, n]),  C = y,
//     m = out, n = n, k = in, lda = in (>= k), ldb = in (>= k), ldc = ldy (>= m).
//   (This "TN" form is the one cuBLAS's tensor-core kernels handle natively.) Verified when this
//   was written by emulating column-major GEMM on the host with exactly these arguments against
//   the naive row-major product, including ldy > out with y offset into a wider buffer.
//
// cuBLAS state
//   The caller owns the handle (CublasHandle below, or its own; created on the device the calls
//   run on). Each call sets on it: the stream, the workspace, host pointer mode and the math
//   mode; the handle must therefore not be used by two host threads at once. Since
//   cublasSetStream resets the workspace to cuBLAS's own pool, the workspace is set after the
//   stream, on every call. The caller provides that workspace (LinearWorkspace::cublas), so no
//   call allocates and a step of them can be captured in a CUDA graph:
//   linear_cublas_workspace_bytes (32 MiB, NVIDIA's recommendation for Hopper; 4 MiB is the one
//   for earlier GPUs) is the size to allocate; it must be 256-byte aligned (cudaMalloc is). A
//   smaller workspace is accepted, but some GEMMs may then fail (CUBLAS_STATUS_ALLOC_FAILED) or
//   run slower.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include <qwen/kernels/cuda/common.cuh>

namespace qwen::kernels::cuda {

// ---- cuBLAS errors and handle ---------------------------------------------------------------

// A cuBLAS call returned something other than CUBLAS_STATUS_SUCCESS.
class CublasError : public Error {
 public:
  CublasError(const std::string& message, cublasStatus_t status) : Error(message), status_(status) {}
  [[nodiscard]] cublasStatus_t status() const noexcept { return status_; }

 private:
  cublasStatus_t status_;
};

// Throws CublasError "op: call failed: NAME (description)" unless status is success.
inline void check_cublas(cublasStatus_t status, const char* op, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw CublasError(qwen::detail::cat(op, ": ", call, " failed: ", cublasGetStatusName(status), " (", cublasGetStatusString(status), ")"),
                      status);
}

// Owns one cuBLAS handle, created on the current device. Destroying it synchronises the device
// (cublasDestroy does), so it belongs to a long-lived object such as a backend, not to a step.
class CublasHandle {
 public:
  CublasHandle() { check_cublas(cublasCreate(&handle_), "CublasHandle", "cublasCreate"); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  CublasHandle(CublasHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  CublasHandle& operator=(CublasHandle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~CublasHandle() { reset(); }
  [[nodiscard]] cublasHandle_t get() const noexcept { return handle_; }

 private:
  void reset() noexcept {
    if (handle_ != nullptr) cublasDestroy(handle_);  // a failure here has no one to report to
    handle_ = nullptr;
  }
  cublasHandle_t handle_ = nullptr;
};

// ---- convert_to_bf16: out[i] = bf16(in[i]), RNE, NaN -> 0x7fff (qwen::bf16::from_float's bits) -----

inline constexpr int convert_to_bf16_threads = 256;

static __global__ void __launch_bounds__(convert_to_bf16_threads)
    convert_to_bf16_kernel(const float* __restrict__ in, bf16* __restrict__ out, std::int64_t count) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) store(out + i, in[i]);
}

namespace linear_detail {

// Bounded grid; the kernel strides over the rest.
[[nodiscard]] inline unsigned convert_grid(std::int64_t count) {
  constexpr std::int64_t max_blocks = 65536;
  return static_cast<unsigned>(std::min((count + convert_to_bf16_threads - 1) / convert_to_bf16_threads, max_blocks));
}

}  // namespace linear_detail

// in: fp32 [count], out: bf16 [count], device memory, not overlapping. count >= 0 (0: nothing
// enqueued, pointers unchecked). Throws InvalidArgument for a contract violation.
[[nodiscard]] inline cudaError_t convert_to_bf16(const float* in, bf16* out, std::int64_t count, cudaStream_t stream) {
  check_extent("cuda::convert_to_bf16", "count", count);
  if (count == 0) return cudaSuccess;
  if (in == nullptr || out == nullptr)
    throw_error<InvalidArgument>("cuda::convert_to_bf16: null pointer (in ", static_cast<const void*>(in), ", out ",
                                 static_cast<const void*>(out), ", count ", count, ")");
  if (overlaps(in, count * 4, out, count * 2))
    throw_error<InvalidArgument>("cuda::convert_to_bf16: in and out overlap (count ", count, ")");
  convert_to_bf16_kernel<<<linear_detail::convert_grid(count), convert_to_bf16_threads, 0, stream>>>(in, out, count);
  return cudaGetLastError();
}

// ---- linear ---------------------------------------------------------------------------------

// linear_cublas_workspace_bytes: what to allocate for LinearWorkspace::cublas (see the top).
inline constexpr std::size_t linear_cublas_workspace_bytes = std::size_t{32} << 20;
inline constexpr std::size_t linear_cublas_workspace_alignment = 256;

// Device buffers a linear call uses, allocated once by the caller (a call never allocates).
struct LinearWorkspace {
  bf16* x_bf16 = nullptr;            // bf16 weights: x rounded to bf16, >= n·in elements; unused for float W
  std::int64_t x_bf16_capacity = 0;  // elements
  void* cublas = nullptr;            // cuBLAS's workspace, 256-byte aligned; may be null with 0 bytes
  std::size_t cublas_bytes = 0;
  // bf16 weights: x_bf16 already holds convert_to_bf16(x, n·in) (several projections of one x,
  // converted once by the caller), so the call skips the conversion. x must still be the x it
  // was converted from: its pointer is checked as usual. Ignored for float W.
  bool x_bf16_ready = false;
};

namespace linear_detail {

inline constexpr std::int64_t max_cublas_extent = INT_MAX;

template <StorageFloat W>
void check_linear(const float* x, std::int64_t n, std::int64_t in, const W* w, std::int64_t out, const float* y, std::int64_t ldy,
                  const LinearWorkspace& workspace, cublasHandle_t handle) {
  constexpr const char* op = "cuda::linear";
  if (n < 0 || in < 1 || out < 1 || ldy < out)
    throw_error<InvalidArgument>(op, ": bad shape: n = ", n, " (must be >= 0), in = ", in, ", out = ", out, " (must be >= 1), ldy = ", ldy,
                                 " (must be >= out)");
  if (n > max_cublas_extent || in > max_cublas_extent || ldy > max_cublas_extent)
    throw_error<InvalidArgument>(op, ": n = ", n, ", in = ", in, " or ldy = ", ldy, " exceeds cuBLAS's int extents (", max_cublas_extent,
                                 ")");
  if (n == 0) return;
  if (x == nullptr || w == nullptr || y == nullptr || handle == nullptr)
    throw_error<InvalidArgument>(op, ": null pointer for x [", n, ", ", in, "], W [", out, ", ", in, "], y [", n, ", ", ldy,
                                 "] or the cuBLAS handle");
  if (workspace.cublas == nullptr ? workspace.cublas_bytes != 0
                                  : reinterpret_cast<std::uintptr_t>(workspace.cublas) % linear_cublas_workspace_alignment != 0)
    throw_error<InvalidArgument>(op, ": cuBLAS workspace ", workspace.cublas, " of ", workspace.cublas_bytes,
                                 " bytes must be 256-byte aligned (or null with 0 bytes)");
  const std::int64_t y_bytes = ((n - 1) * ldy + out) * std::int64_t{4};
  const std::int64_t x_bytes = n * in * std::int64_t{4}, w_bytes = out * in * static_cast<std::int64_t>(sizeof(W));
  if (overlaps(y, y_bytes, x, x_bytes) || overlaps(y, y_bytes, w, w_bytes))
    throw_error<InvalidArgument>(op, ": y [", n, ", ", ldy, "] overlaps x [", n, ", ", in, "] or W [", out, ", ", in, "]");
  if constexpr (std::is_same_v<W, bf16>) {
    if (workspace.x_bf16 == nullptr || workspace.x_bf16_capacity < n * in)
      throw_error<InvalidArgument>(op, ": bf16 scratch for x holds ", workspace.x_bf16 == nullptr ? 0 : workspace.x_bf16_capacity,
                                   " elements, needs n * in = ", n, " * ", in, " = ", n * in);
    const std::int64_t scratch_bytes = n * in * std::int64_t{2};
    if (overlaps(workspace.x_bf16, scratch_bytes, x, x_bytes) || overlaps(workspace.x_bf16, scratch_bytes, w, w_bytes) ||
        overlaps(workspace.x_bf16, scratch_bytes, y, y_bytes))
      throw_error<InvalidArgument>(op, ": the bf16 scratch of ", n * in, " elements overlaps x, W or y");
  }
}

}  // namespace linear_detail

// y[i, 0 .. out) (rows ldy apart) = x[i, :] · Wᵀ. Shapes, numerics and cuBLAS state: see the top.
template <StorageFloat W>
[[nodiscard]] cudaError_t linear(const float* x, std::int64_t n, std::int64_t in, const W* w, std::int64_t out, float* y, std::int64_t ldy,
                                 const LinearWorkspace& workspace, cublasHandle_t handle, cudaStream_t stream) {
  constexpr const char* op = "cuda::linear";
  linear_detail::check_linear(x, n, in, w, out, y, ldy, workspace, handle);
  if (n == 0) return cudaSuccess;

  // The stream first: cublasSetStream drops any workspace set before it.
  check_cublas(cublasSetStream(handle, stream), op, "cublasSetStream");
  check_cublas(cublasSetWorkspace(handle, workspace.cublas, workspace.cublas_bytes), op, "cublasSetWorkspace");
  check_cublas(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST), op, "cublasSetPointerMode");  // alpha, beta below
  constexpr bool bf16_weights = std::is_same_v<W, bf16>;
  // bf16: tensor cores with fp32 accumulation (always allowed for bf16 inputs). float: pedantic,
  // so no TF32 and no emulation.
  check_cublas(cublasSetMathMode(handle, bf16_weights ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH), op, "cublasSetMathMode");

  const void* b = x;
  if constexpr (bf16_weights) {
    if (!workspace.x_bf16_ready)
      if (const cudaError_t status = convert_to_bf16(x, workspace.x_bf16, n * in, stream); status != cudaSuccess) return status;
    b = workspace.x_bf16;
  }
  constexpr cudaDataType_t input_type = bf16_weights ? CUDA_R_16BF : CUDA_R_32F;
  const float alpha = 1.0f, beta = 0.0f;  // beta = 0: y is written, never read (NaN poison in y does not leak)
  // yᵀ [out, n] = (W as [in, out] column-major)ᵀ · (x as [in, n] column-major); see the mapping at the top.
  const auto gemm_m = static_cast<int>(out), gemm_n = static_cast<int>(n), gemm_k = static_cast<int>(in);
  const int lda = gemm_k, ldb = gemm_k, ldc = static_cast<int>(ldy);
  check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, gemm_m, gemm_n, gemm_k, &alpha, w, input_type, lda, b, input_type, ldb, &beta,
                            y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               op, "cublasGemmEx");
  return cudaSuccess;
}

// The plain form: y [n, out] with row stride out.
template <StorageFloat W>
[[nodiscard]] cudaError_t linear(const float* x, std::int64_t n, std::int64_t in, const W* w, std::int64_t out, float* y,
                                 const LinearWorkspace& workspace, cublasHandle_t handle, cudaStream_t stream) {
  return linear(x, n, in, w, out, y, out, workspace, handle, stream);
}

}  // namespace qwen::kernels::cuda
