// kernels/cuda/linear.cuh against an independent double-precision reference, and its
// convert_to_bf16 against qwen::bf16::from_float bit for bit.
//
// The CPU twin (kernels/cpu/linear.hpp) multiplies fp32 x by the weights; the GPU op with bf16
// weights first rounds x to bf16 (its contract says why), so each dtype is compared with its own
// exact product, summed in double:
//   bf16 W:  Σ_k bf16(x[i, k]) · W[j, k]      (bf16(x) by qwen::bf16::from_float on the host)
//   float W: Σ_k x[i, k] · W[j, k]
//
// Tolerances, per element (never a flat one): |y - reference| <= c · in · 2^-24 · Σ_k |x·W|,
// with the sum of magnitudes taken from the same reference. Why: y is `in` products summed in
// fp32 in an order cuBLAS chooses (tiles, split-K). Whatever the order, the path from one product
// to the result passes through at most `in` roundings, each adding at most u times the magnitude
// of the partial sum it rounds, which is at most Σ|x·W|; so |error| <= γ_in · Σ|x·W| with
// γ_in = in·u / (1 - in·u) <= 1.001 · in · u for in <= 4096 (u = 2^-24, round to nearest).
//   float W, c = 2: CUBLAS_PEDANTIC_MATH, so plain fp32 FMAs (one rounding per product and
//     sum); a kernel that rounds each product before adding it has up to `in` more roundings,
//     hence 2 rather than 1.001. TF32 (10-bit mantissas, about 2^-10 per product) would exceed this
//     by orders of magnitude for the small `in` of the sweep.
//   bf16 W, c = 3: bf16·bf16 products are exact in fp32 (8-bit significands), so only additions
//     round, but on tensor cores not to nearest: NVIDIA does not specify the MMA's internal
//     arithmetic, and measurements (Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of
//     NVIDIA tensor cores", PeerJ CS 2021) show the g products of one MMA and the accumulator
//     aligned to the largest exponent and added with truncation (u = 2^-23). Each of the g + 1
//     addends and the normalised sum then loses less than one ulp of the group's largest
//     magnitude (<= Σ|x·W|): at most (g + 2) · 2^-23 · Σ|x·W| per MMA, in/g MMAs, in total
//     (1 + 2/g) · 2 · in · 2^-24 · Σ|x·W| <= 3 · in · 2^-24 · Σ|x·W| for g >= 4 (bf16 MMAs take
//     k = 8 or 16).
//   The double reference's own error (about in · 2^-53 · Σ|x·W|) is negligible against these.
// The bound is rigorous, so a failure is a bug, not noise; it is loose for large `in` (typical
// errors grow like sqrt(in)), which is why the sweep includes in = 1 and 33, where it is tight.
// Every output must also be finite, and the outputs not all zero.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <qwen/kernels/cuda/linear.cuh>

#include "gpu_test.cuh"

namespace {

using qwen::bf16;
using qwen::InvalidArgument;
using qwen::kernels::cuda::CublasHandle;
using qwen::kernels::cuda::LinearWorkspace;
using qwen::test_cuda::check;
using qwen::test_cuda::DeviceBuffer;
namespace gpu = qwen::kernels::cuda;

constexpr double c_float = 2, c_bf16 = 3;  // the tolerance constants derived above
constexpr std::uint32_t poison_bits = 0xffc0'dead;

// The exact products of one dtype, summed in double: y[i·out + j] and Σ|x·W| for i < n. The rows
// of W are split between threads (the largest shape is 133 × 5003 × 1024 products).
struct Reference {
  std::vector<double> y, abs_sum;
};

Reference reference(const std::vector<float>& x, std::int64_t n, std::int64_t in, const std::vector<float>& w, std::int64_t out) {
  Reference r{std::vector<double>(static_cast<std::size_t>(n * out)), std::vector<double>(static_cast<std::size_t>(n * out))};
  const auto rows = [&](std::int64_t j_begin, std::int64_t j_end) {
    for (std::int64_t j = j_begin; j < j_end; ++j)
      for (std::int64_t i = 0; i < n; ++i) {
        double sum = 0, abs_sum = 0;
        for (std::int64_t k = 0; k < in; ++k) {
          const double p = static_cast<double>(x[static_cast<std::size_t>(i * in + k)]) * w[static_cast<std::size_t>(j * in + k)];
          sum += p;
          abs_sum += std::abs(p);
        }
        r.y[static_cast<std::size_t>(i * out + j)] = sum;
        r.abs_sum[static_cast<std::size_t>(i * out + j)] = abs_sum;
      }
  };
  const std::int64_t threads = std::clamp<std::int64_t>(std::thread::hardware_concurrency(), 1, std::min<std::int64_t>(out, 32));
  std::vector<std::thread> pool;
  for (std::int64_t t = 0; t < threads; ++t) pool.emplace_back(rows, t * out / threads, (t + 1) * out / threads);
  for (auto& thread : pool) thread.join();
  return r;
}

std::vector<float> rounded_to_bf16(const std::vector<float>& v) { return qwen::test_cuda::to_float(qwen::test_cuda::to_bf16(v)); }

// Checks y (rows ldy apart, the op's columns starting at col0) against ref (rows out apart, the
// first n rows) within c · in · 2^-24 · Σ|x·W|; returns the largest |error| / (in · 2^-24 · Σ|x·W|).
double require_within_bound(const std::vector<float>& y, std::int64_t ldy, std::int64_t col0, const Reference& ref, std::int64_t n,
                            std::int64_t in, std::int64_t out, double c, const std::string& what) {
  std::size_t bad = 0, nonzero = 0;
  double worst = 0;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < out; ++j) {
      const float got = y[static_cast<std::size_t>(i * ldy + col0 + j)];
      const auto e = static_cast<std::size_t>(i * out + j);
      const double unit = static_cast<double>(in) * 0x1p-24 * ref.abs_sum[e];
      const double error = std::abs(static_cast<double>(got) - ref.y[e]);
      nonzero += got != 0.0f ? 1 : 0;
      if (!std::isfinite(got) || !(error <= c * unit)) {
        if (++bad <= 5)
          UNSCOPED_INFO(what << ": y[" << i << ", " << j << "] = " << got << ", reference " << ref.y[e] << ", bound " << c * unit);
      } else if (unit > 0) {
        worst = std::max(worst, error / unit);
      }
    }
  INFO(what << ": " << bad << " of " << n * out << " elements outside " << c << " · in · 2^-24 · Σ|x·W| (largest passing error " << worst
            << " of in · 2^-24 · Σ|x·W|)");
  CHECK(bad == 0);
  CHECK(nonzero > 0);
  return worst;
}

// Everything one shape needs on the device: x [max_n, in], W in both dtypes, y, the bf16 scratch.
struct Shape {
  std::vector<float> x, w;
  Reference ref_bf16, ref_float;
};

Shape make_shape(std::mt19937& rng, std::int64_t max_n, std::int64_t in, std::int64_t out) {
  Shape s;
  s.x = qwen::test_cuda::random_floats(rng, static_cast<std::size_t>(max_n * in), -2.0f, 2.0f);
  s.w = qwen::test_cuda::random_floats(rng, static_cast<std::size_t>(out * in), -0.1f, 0.1f);
  // y[i, :] depends on row i of x only, so the references of every n <= max_n are prefixes.
  s.ref_bf16 = reference(rounded_to_bf16(s.x), max_n, in, rounded_to_bf16(s.w), out);
  s.ref_float = reference(s.x, max_n, in, s.w, out);
  return s;
}

// One cuBLAS workspace of the recommended size, cudaMalloc'ed (so 256-byte aligned).
struct CublasWorkspace {
  DeviceBuffer<std::uint8_t> buffer{gpu::linear_cublas_workspace_bytes};
  [[nodiscard]] LinearWorkspace with_scratch(bf16* x_bf16, std::int64_t capacity) const {
    return {x_bf16, capacity, buffer.data(), buffer.size()};
  }
};

std::vector<float> poisoned(std::size_t count) { return std::vector<float>(count, std::bit_cast<float>(poison_bits)); }

}  // namespace

TEST_CASE("cuda convert_to_bf16 matches bf16::from_float bit for bit", "[cuda]") {
  std::vector<std::uint32_t> bits = {
      0x0000'0000, 0x8000'0000, 0x3f80'0000, 0xbf80'0000,                                         // +-0, +-1
      0x7f80'0000, 0xff80'0000,                                                                   // +-inf
      0x7fc0'0000, 0xffc0'0000, 0x7f80'0001, 0xff80'0001, 0x7fff'ffff, 0xffff'ffff, 0x7fa0'1234,  // NaNs: quiet, signalling, payloads
      0x7f7f'ffff, 0xff7f'ffff,                            // +-FLT_MAX: beyond the bf16 rounding boundary, -> +-inf
      0x7f7f'8000, 0xff7f'8000,                            // exactly half way between the largest bf16 and inf: ties to even = inf
      0x7f7f'7fff, 0xff7f'7fff,                            // just below: the largest bf16
      0x3f80'8000, 0x3f81'8000, 0x3f80'8001, 0x3f80'7fff,  // ties to even (down, up), above and below the tie
      0x0000'0001, 0x8000'0001, 0x0000'8000, 0x0001'8000, 0x0000'8001,  // subnormals: tiny, ties, above a tie
      0x007f'ffff, 0x807f'ffff, 0x0040'0000, 0x0080'0000, 0x007f'8000,  // largest subnormal rounds up to the smallest normal
  };
  std::mt19937_64 rng(0xb'f16);
  for (int i = 0; i < (1 << 20) + 3; ++i) bits.push_back(static_cast<std::uint32_t>(rng()));  // every class, all exponents
  std::vector<float> input(bits.size());
  std::transform(bits.begin(), bits.end(), input.begin(), [](std::uint32_t b) { return std::bit_cast<float>(b); });

  const DeviceBuffer<float> d_in(input);
  // Whole array, then ragged pieces at odd offsets (unaligned starts, partial blocks).
  for (auto [offset, count] :
       {std::pair<std::int64_t, std::int64_t>{0, static_cast<std::int64_t>(input.size())}, {0, 1}, {3, 17}, {7, 255}, {1, 100'003}}) {
    const std::vector<float> piece(input.begin() + offset, input.begin() + offset + count);
    const DeviceBuffer<bf16> d_out(std::vector<bf16>(static_cast<std::size_t>(count) + 2, bf16{0xffc1}));
    check(gpu::convert_to_bf16(d_in.data() + offset, d_out.data() + 1, count, nullptr), "convert_to_bf16 launch");
    const std::vector<bf16> got = d_out.to_host();
    std::vector<bf16> expected(got.size(), bf16{0xffc1});  // the elements around the piece stay poisoned
    std::transform(piece.begin(), piece.end(), expected.begin() + 1, [](float v) { return bf16::from_float(v); });
    qwen::test_cuda::require_equal_bits(got, expected,
                                        "convert_to_bf16 offset " + std::to_string(offset) + " count " + std::to_string(count));
  }
}

TEST_CASE("cuda linear matches a double reference for bf16 and float weights", "[cuda]") {
  std::mt19937 rng(0x11'4ea7);
  const CublasHandle handle;
  const CublasWorkspace cublas_workspace;
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  constexpr std::int64_t max_n = 133;
  double worst_bf16 = 0, worst_float = 0;
  for (auto [out, in] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {17, 33}, {1024, 1024}, {3072, 1024}, {1000, 4096}, {5003, 1024}}) {
    const Shape s = make_shape(rng, max_n, in, out);
    const DeviceBuffer<float> d_x(s.x), d_w(s.w);
    const DeviceBuffer<bf16> d_w_bf16(qwen::test_cuda::to_bf16(s.w));
    const DeviceBuffer<bf16> d_scratch(static_cast<std::size_t>(max_n * in));
    const LinearWorkspace workspace = cublas_workspace.with_scratch(d_scratch.data(), max_n * in);
    for (std::int64_t n : {1, 3, 8, 64, 133}) {
      const std::string shape = "n " + std::to_string(n) + ", out " + std::to_string(out) + ", in " + std::to_string(in);
      {
        const DeviceBuffer<float> d_y(poisoned(static_cast<std::size_t>(n * out)));
        check(gpu::linear(d_x.data(), n, in, d_w_bf16.data(), out, d_y.data(), workspace, handle.get(), stream), "linear bf16");
        check(cudaStreamSynchronize(stream), "linear bf16");
        worst_bf16 = std::max(worst_bf16, require_within_bound(d_y.to_host(), out, 0, s.ref_bf16, n, in, out, c_bf16, "bf16 W, " + shape));
      }
      {
        const DeviceBuffer<float> d_y(poisoned(static_cast<std::size_t>(n * out)));
        check(gpu::linear(d_x.data(), n, in, d_w.data(), out, d_y.data(), workspace, handle.get(), stream), "linear float");
        check(cudaStreamSynchronize(stream), "linear float");
        worst_float =
            std::max(worst_float, require_within_bound(d_y.to_host(), out, 0, s.ref_float, n, in, out, c_float, "float W, " + shape));
      }
    }
  }
  check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  std::printf("cuda linear: largest error / (in · 2^-24 · Σ|x·W|): bf16 W %.3g (bound %g), float W %.3g (bound %g)\n", worst_bf16, c_bf16,
              worst_float, c_float);
}

TEST_CASE("cuda linear writes column slices of a wider y (fused q/k/v outputs)", "[cuda]") {
  std::mt19937 rng(0x9'4f5);
  const CublasHandle handle;
  const CublasWorkspace cublas_workspace;
  constexpr std::int64_t n = 5, in = 257;
  constexpr std::int64_t outs[] = {96, 17, 33};  // q, k, v: ragged widths, side by side
  constexpr std::int64_t ldy = outs[0] + outs[1] + outs[2];
  const std::vector<float> x = qwen::test_cuda::random_floats(rng, n * in);
  const DeviceBuffer<float> d_x(x);
  const DeviceBuffer<bf16> d_scratch(static_cast<std::size_t>(n * in));
  const LinearWorkspace workspace = cublas_workspace.with_scratch(d_scratch.data(), n * in);
  for (const bool bf16_weights : {true, false}) {
    const DeviceBuffer<float> d_y(poisoned(static_cast<std::size_t>(n * ldy)));
    std::int64_t col0 = 0;
    for (const std::int64_t out : outs) {
      const std::vector<float> w = qwen::test_cuda::random_floats(rng, static_cast<std::size_t>(out * in));
      const std::string what =
          std::string(bf16_weights ? "bf16" : "float") + " W, columns " + std::to_string(col0) + " + " + std::to_string(out);
      const std::vector<float> before = d_y.to_host();
      if (bf16_weights) {
        const DeviceBuffer<bf16> d_w(qwen::test_cuda::to_bf16(w));
        check(gpu::linear(d_x.data(), n, in, d_w.data(), out, d_y.data() + col0, ldy, workspace, handle.get(), nullptr), "linear");
        const std::vector<float> y = d_y.to_host();
        require_within_bound(y, ldy, col0, reference(rounded_to_bf16(x), n, in, rounded_to_bf16(w), out), n, in, out, c_bf16, what);
      } else {
        const DeviceBuffer<float> d_w(w);
        check(gpu::linear(d_x.data(), n, in, d_w.data(), out, d_y.data() + col0, ldy, workspace, handle.get(), nullptr), "linear");
        const std::vector<float> y = d_y.to_host();
        require_within_bound(y, ldy, col0, reference(x, n, in, w, out), n, in, out, c_float, what);
      }
      // Every column outside the slice keeps its bits: the earlier slices (left) and the poison
      // not yet written (right).
      const std::vector<float> y = d_y.to_host();
      std::size_t touched = 0;
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < ldy; ++j) {
          const auto e = static_cast<std::size_t>(i * ldy + j);
          if ((j < col0 || j >= col0 + out) && std::bit_cast<std::uint32_t>(y[e]) != std::bit_cast<std::uint32_t>(before[e])) ++touched;
        }
      INFO(what << ": " << touched << " elements outside the slice changed");
      CHECK(touched == 0);
      col0 += out;
    }
  }
}

TEST_CASE("cuda linear is captured in a CUDA graph and replayed", "[cuda]") {
  std::mt19937 rng(0x9'4a9);
  const CublasHandle handle;
  const CublasWorkspace cublas_workspace;
  constexpr std::int64_t n = 7, in = 1024, out = 384;
  const std::vector<float> w = qwen::test_cuda::random_floats(rng, out * in);
  const DeviceBuffer<bf16> d_w(qwen::test_cuda::to_bf16(w));
  const DeviceBuffer<float> d_x(std::vector<float>(n * in, 0.0f)), d_y(poisoned(static_cast<std::size_t>(n * out)));
  const DeviceBuffer<bf16> d_scratch(static_cast<std::size_t>(n * in));
  const LinearWorkspace workspace = cublas_workspace.with_scratch(d_scratch.data(), n * in);
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  // One call outside the capture first, so that whatever cuBLAS initialises lazily for this
  // shape (the usual practice before capturing a library call) happens before.
  check(gpu::linear(d_x.data(), n, in, d_w.data(), out, d_y.data(), workspace, handle.get(), stream), "warm-up linear");
  check(cudaStreamSynchronize(stream), "warm-up linear");

  // Global capture mode: any allocation or synchronisation inside linear fails the capture.
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
  cudaGraph_t graph = nullptr;
  try {
    check(gpu::linear(d_x.data(), n, in, d_w.data(), out, d_y.data(), workspace, handle.get(), stream), "captured linear");
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);  // leave the stream usable for the other tests
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
    throw;
  }
  check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");

  for (int replay = 0; replay < 2; ++replay) {  // new x each time: the graph reads the buffer, not a snapshot
    const std::vector<float> x = qwen::test_cuda::random_floats(rng, n * in);
    check(cudaMemcpyAsync(d_x.data(), x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
    check(cudaMemsetAsync(d_y.data(), 0xff, n * out * sizeof(float), stream), "cudaMemsetAsync");
    check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    check(cudaStreamSynchronize(stream), "graph replay");
    require_within_bound(d_y.to_host(), out, 0, reference(rounded_to_bf16(x), n, in, rounded_to_bf16(w), out), n, in, out, c_bf16,
                         "graph replay " + std::to_string(replay));
  }
  check(cudaGraphExecDestroy(exec), "cudaGraphExecDestroy");
  check(cudaGraphDestroy(graph), "cudaGraphDestroy");
  check(cudaStreamDestroy(stream), "cudaStreamDestroy");
}

TEST_CASE("cuda linear and convert_to_bf16 reject bad arguments on the host", "[cuda]") {
  const CublasHandle handle;
  const CublasWorkspace cublas_workspace;
  constexpr std::int64_t n = 2, in = 8, out = 4;
  const DeviceBuffer<float> d_x(std::vector<float>(n * in, 1.0f)), d_w_float(std::vector<float>(out * in, 0.5f));
  const DeviceBuffer<bf16> d_w(std::vector<bf16>(out * in, bf16::from_float(0.5f)));
  const DeviceBuffer<bf16> d_scratch(static_cast<std::size_t>(n * in));
  const DeviceBuffer<float> d_y(poisoned(static_cast<std::size_t>(n * out)));
  const LinearWorkspace ok = cublas_workspace.with_scratch(d_scratch.data(), n * in);
  const float* x = d_x.data();
  const bf16* w = d_w.data();
  float* y = d_y.data();
  const cublasHandle_t h = handle.get();

  SECTION("shapes") {
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, -1, in, w, out, y, ok, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, 0, w, out, y, ok, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, 0, y, ok, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, y, out - 1, ok, h, nullptr)), InvalidArgument);  // ldy < out
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, std::int64_t{INT_MAX} + 1, w, out, y, ok, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, y, std::int64_t{INT_MAX} + 1, ok, h, nullptr)), InvalidArgument);
  }
  SECTION("null pointers") {
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(nullptr, n, in, w, out, y, ok, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, static_cast<const bf16*>(nullptr), out, y, ok, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, nullptr, ok, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, y, ok, nullptr, nullptr)), InvalidArgument);
  }
  SECTION("workspaces") {
    LinearWorkspace no_scratch = ok, small_scratch = ok, misaligned = ok, null_with_bytes = ok;
    no_scratch.x_bf16 = nullptr;
    small_scratch.x_bf16_capacity = n * in - 1;
    misaligned.cublas = static_cast<std::uint8_t*>(ok.cublas) + 16;
    misaligned.cublas_bytes -= 16;
    null_with_bytes.cublas = nullptr;
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, y, no_scratch, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, y, small_scratch, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, y, misaligned, h, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, y, null_with_bytes, h, nullptr)), InvalidArgument);
    // float weights need no bf16 scratch.
    check(gpu::linear(x, n, in, d_w_float.data(), out, y, no_scratch, h, nullptr), "linear float without scratch");
    const std::vector<float> got = d_y.to_host();
    CHECK(std::all_of(got.begin(), got.end(), [](float v) { return v == 0.5f * in; }));  // exact: small integers and halves
  }
  SECTION("overlaps") {
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, n, in, w, out, const_cast<float*>(x) + 1, ok, h, nullptr)), InvalidArgument);
    LinearWorkspace scratch_on_y = ok;
    scratch_on_y.x_bf16 = reinterpret_cast<bf16*>(y);
    CHECK_THROWS_AS(static_cast<void>(gpu::linear(x, 1, in, w, out, y, scratch_on_y, h, nullptr)), InvalidArgument);
  }
  SECTION("n == 0 enqueues nothing") {
    CHECK(gpu::linear(x, 0, in, w, out, y, ok, h, nullptr) == cudaSuccess);
    CHECK(gpu::linear(static_cast<const float*>(nullptr), 0, in, static_cast<const bf16*>(nullptr), out, nullptr, LinearWorkspace{},
                      nullptr, nullptr) == cudaSuccess);
    const std::vector<float> got = d_y.to_host();
    CHECK(std::all_of(got.begin(), got.end(), [](float v) { return std::bit_cast<std::uint32_t>(v) == poison_bits; }));
  }
  SECTION("convert_to_bf16") {
    CHECK_THROWS_AS(static_cast<void>(gpu::convert_to_bf16(x, d_scratch.data(), -1, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::convert_to_bf16(nullptr, d_scratch.data(), 4, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::convert_to_bf16(x, nullptr, 4, nullptr)), InvalidArgument);
    CHECK_THROWS_AS(static_cast<void>(gpu::convert_to_bf16(x, reinterpret_cast<bf16*>(const_cast<float*>(x)), 4, nullptr)),
                    InvalidArgument);
    CHECK(gpu::convert_to_bf16(nullptr, nullptr, 0, nullptr) == cudaSuccess);
  }
  SECTION("a cuBLAS failure names the status") {
    try {
      gpu::check_cublas(CUBLAS_STATUS_INVALID_VALUE, "cuda::linear", "cublasGemmEx");
      FAIL("check_cublas did not throw");
    } catch (const gpu::CublasError& e) {
      CHECK(e.status() == CUBLAS_STATUS_INVALID_VALUE);
      CHECK(std::string(e.what()).find("cuda::linear: cublasGemmEx failed: CUBLAS_STATUS_INVALID_VALUE") != std::string::npos);
    }
  }
}

// Several projections of one x (q/k/v, gate/up) convert it once: with x_bf16_ready the call
// multiplies whatever the scratch holds. Here the scratch holds another input than x, so a call
// that converted x again would match the wrong reference.
TEST_CASE("cuda linear with x_bf16_ready multiplies the scratch the caller converted", "[cuda]") {
  std::mt19937 rng(0x4ead'0001);
  const CublasHandle handle;
  const CublasWorkspace cublas_workspace;
  constexpr std::int64_t n = 5, in = 96, out = 70;
  const std::vector<float> x = qwen::test_cuda::random_floats(rng, static_cast<std::size_t>(n * in), -2.0f, 2.0f);
  const std::vector<float> other = qwen::test_cuda::random_floats(rng, static_cast<std::size_t>(n * in), -2.0f, 2.0f);
  const std::vector<float> w = qwen::test_cuda::random_floats(rng, static_cast<std::size_t>(out * in), -0.1f, 0.1f);
  const Reference ref_other = reference(rounded_to_bf16(other), n, in, rounded_to_bf16(w), out);
  const DeviceBuffer<float> d_x(x), d_other(other), d_y(poisoned(static_cast<std::size_t>(n * out)));
  const DeviceBuffer<bf16> d_w(qwen::test_cuda::to_bf16(w)), d_scratch(static_cast<std::size_t>(n * in));
  check(gpu::convert_to_bf16(d_other.data(), d_scratch.data(), n * in, nullptr), "convert_to_bf16 launch");
  LinearWorkspace workspace = cublas_workspace.with_scratch(d_scratch.data(), n * in);
  workspace.x_bf16_ready = true;
  check(gpu::linear(d_x.data(), n, in, d_w.data(), out, d_y.data(), workspace, handle.get(), nullptr), "linear launch");
  check(cudaDeviceSynchronize(), "linear");
  require_within_bound(d_y.to_host(), out, 0, ref_other, n, in, out, c_bf16, "x_bf16_ready: the product of the scratch");
}
