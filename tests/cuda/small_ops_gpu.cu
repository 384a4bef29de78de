// The elementwise and row ops on the GPU against their CPU twins: embedding (bit for bit),
// RMSNorm and the fused residual add + RMSNorm, SiLU x up (both layouts), add and gather_rows, against the
// double-precision oracles of kernels/cpu, on ragged shapes; plus the host-side errors.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <qwen/kernels/cpu/embedding.hpp>
#include <qwen/kernels/cpu/rms_norm.hpp>
#include <qwen/kernels/cpu/silu_mul.hpp>
#include <qwen/kernels/cuda/elementwise.cuh>
#include <qwen/kernels/cuda/embedding.cuh>
#include <qwen/kernels/cuda/rms_norm.cuh>
#include <qwen/kernels/cuda/silu_mul.cuh>

#include "gpu_test.cuh"

namespace {

using qwen::bf16;
using namespace qwen::test_cuda;
namespace gpu = qwen::kernels::cuda;
namespace cpu = qwen::kernels::cpu;

template <class W>
std::vector<W> as_weights(const std::vector<float>& v) {
  if constexpr (std::is_same_v<W, float>)
    return v;
  else
    return to_bf16(v);
}

// RMSNorm against the double oracle. fp32 error budget of the GPU version for dim <= 8192:
// each thread sums at most 32 squares, then 5 warp levels and 8 warps: the sum's relative error
// is below (32 + 5 + 8) * 2^-24 = 2.7e-6 (positive terms); inv inherits half of it plus two
// roundings (sqrt, division), and the scaling adds two more: below 1.6e-6. Bound used: 4e-6
// relative, plus 1e-30 absolute for exact zeros.
constexpr double rms_rel = 4e-6, rms_abs = 1e-30;

template <class W>
void check_rms_norm(std::mt19937& rng, std::int64_t rows, std::int64_t dim) {
  const std::vector<float> x = random_floats(rng, static_cast<std::size_t>(rows * dim), -3.0f, 3.0f);
  const std::vector<W> weight = as_weights<W>(random_floats(rng, static_cast<std::size_t>(dim), 0.5f, 1.5f));
  const float eps = 1e-6f;
  std::vector<float> expected(x.size());
  cpu::rms_norm_reference(x.data(), rows, dim, weight.data(), eps, expected.data());

  const DeviceBuffer<float> d_x(x);
  const DeviceBuffer<W> d_w(weight);
  const DeviceBuffer<float> d_out(x.size());
  check(gpu::rms_norm(d_x.data(), rows, dim, d_w.data(), eps, d_out.data(), nullptr), "rms_norm launch");
  require_close(d_out.to_host(), expected, rms_abs, rms_rel, "rms_norm");

  // In place (out aliases x), as the forward pass calls it for q_norm and the final norm.
  check(gpu::rms_norm(d_x.data(), rows, dim, d_w.data(), eps, d_x.data(), nullptr), "rms_norm in place launch");
  require_close(d_x.to_host(), expected, rms_abs, rms_rel, "rms_norm in place");
}

template <class W>
void check_add_rms_norm(std::mt19937& rng, std::int64_t rows, std::int64_t dim) {
  const std::vector<float> residual = random_floats(rng, static_cast<std::size_t>(rows * dim), -3.0f, 3.0f);
  const std::vector<float> x = random_floats(rng, residual.size(), -1.0f, 1.0f);
  const std::vector<W> weight = as_weights<W>(random_floats(rng, static_cast<std::size_t>(dim), 0.5f, 1.5f));
  const float eps = 1e-6f;
  std::vector<float> added(residual.size());
  for (std::size_t i = 0; i < added.size(); ++i) added[i] = residual[i] + x[i];  // the CPU backend's add, in fp32
  std::vector<float> expected(added.size());
  cpu::rms_norm_reference(added.data(), rows, dim, weight.data(), eps, expected.data());

  const DeviceBuffer<float> d_residual(residual), d_x(x);
  const DeviceBuffer<W> d_w(weight);
  const DeviceBuffer<float> d_out(residual.size());
  check(gpu::add_rms_norm(d_residual.data(), d_x.data(), rows, dim, d_w.data(), eps, d_out.data(), nullptr), "add_rms_norm launch");
  require_equal_bits(d_residual.to_host(), added, "add_rms_norm residual");
  require_close(d_out.to_host(), expected, rms_abs, rms_rel, "add_rms_norm out");
}

// SiLU x up against the double oracle: expf is within 2 ulp, then 1 + e, the division and the
// product round once each: at most 3.5 ulp of fp32 (4.2e-7 relative). Bound used: 1e-6
// relative; 1e-30 absolute for the gates below -88 where expf(-g) overflows and the result is
// a signed zero while the exact value is a denormal.
constexpr double silu_rel = 1e-6, silu_abs = 1e-30;

std::vector<float> gates(std::mt19937& rng, std::size_t n) {
  std::vector<float> g = random_floats(rng, n, -20.0f, 20.0f);
  const float extremes[] = {-100.0f, -88.5f, -87.0f, -0.0f, 0.0f, 1e-30f, 87.0f, 88.5f, 100.0f};
  for (std::size_t i = 0; i < g.size() && i < std::size(extremes); ++i) g[i * 7 % g.size()] = extremes[i];
  return g;
}

}  // namespace

TEST_CASE("cuda embedding equals the cpu twin bit for bit", "[cuda]") {
  std::mt19937 rng(11);
  for (const std::int64_t hidden : {1, 64, 1000, 1027}) {
    const std::int64_t vocab = 997;
    const std::vector<float> table = random_floats(rng, static_cast<std::size_t>(vocab * hidden));
    const std::vector<bf16> table_bf16 = to_bf16(table);
    for (const std::int64_t n : {1, 7, 300}) {
      std::vector<std::int32_t> tokens(static_cast<std::size_t>(n));
      std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(vocab - 1));
      for (auto& t : tokens) t = pick(rng);
      tokens.front() = 0;
      tokens.back() = static_cast<std::int32_t>(vocab - 1);
      const DeviceBuffer<std::int32_t> d_tokens(tokens);

      std::vector<float> expected(static_cast<std::size_t>(n * hidden));
      cpu::embedding(table.data(), vocab, hidden, tokens.data(), n, expected.data());
      const DeviceBuffer<float> d_table(table), d_out(expected.size());
      check(gpu::embedding(d_table.data(), vocab, hidden, d_tokens.data(), n, d_out.data(), nullptr), "embedding launch");
      require_equal_bits(d_out.to_host(), expected, "embedding float table");

      cpu::embedding(table_bf16.data(), vocab, hidden, tokens.data(), n, expected.data());
      const DeviceBuffer<bf16> d_table_bf16(table_bf16);
      const DeviceBuffer<float> d_out_bf16(expected.size());
      check(gpu::embedding(d_table_bf16.data(), vocab, hidden, d_tokens.data(), n, d_out_bf16.data(), nullptr), "embedding launch");
      require_equal_bits(d_out_bf16.to_host(), expected, "embedding bf16 table");
    }
  }
}

TEST_CASE("cuda embedding writes NaN for a token outside the vocabulary and checks its arguments", "[cuda]") {
  const std::vector<float> table = {1, 2, 3, 4, 5, 6};  // vocab 3, hidden 2
  const DeviceBuffer<float> d_table(table);
  const DeviceBuffer<std::int32_t> d_tokens(std::vector<std::int32_t>{2, 3, -1, 0});
  const DeviceBuffer<float> d_out(8);
  check(gpu::embedding(d_table.data(), 3, 2, d_tokens.data(), 4, d_out.data(), nullptr), "embedding launch");
  const std::vector<float> out = d_out.to_host();
  CHECK(out[0] == 5.0f);
  CHECK(out[1] == 6.0f);
  for (int i = 2; i < 6; ++i) CHECK(std::isnan(out[static_cast<std::size_t>(i)]));
  CHECK(out[6] == 1.0f);
  CHECK(out[7] == 2.0f);

  CHECK_THROWS_AS(gpu::embedding(d_table.data(), 3, 2, d_tokens.data(), -1, d_out.data(), nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::embedding(d_table.data(), 0, 2, d_tokens.data(), 1, d_out.data(), nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::embedding<float>(nullptr, 3, 2, d_tokens.data(), 1, d_out.data(), nullptr), qwen::InvalidArgument);
  CHECK(gpu::embedding<float>(nullptr, 3, 2, nullptr, 0, nullptr, nullptr) == cudaSuccess);
}

TEST_CASE("cuda rms_norm matches the double oracle", "[cuda]") {
  std::mt19937 rng(12);
  for (const std::int64_t rows : {1, 5, 130})
    for (const std::int64_t dim : {1, 64, 128, 1000, 1024, 5120, 8192}) {
      check_rms_norm<float>(rng, rows, dim);
      check_rms_norm<bf16>(rng, rows, dim);
    }
}

TEST_CASE("cuda add_rms_norm adds the residual bit for bit and norms it like the oracle", "[cuda]") {
  std::mt19937 rng(13);
  for (const std::int64_t rows : {1, 3, 64})
    for (const std::int64_t dim : {7, 1024, 4096}) {
      check_add_rms_norm<float>(rng, rows, dim);
      check_add_rms_norm<bf16>(rng, rows, dim);
    }
}

TEST_CASE("cuda rms_norm checks its arguments", "[cuda]") {
  const DeviceBuffer<float> d_x(std::vector<float>(8, 1.0f)), d_w(std::vector<float>(4, 1.0f)), d_out(8);
  CHECK_THROWS_AS(gpu::rms_norm(d_x.data(), -1, 4, d_w.data(), 1e-6f, d_out.data(), nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::rms_norm(d_x.data(), 2, 0, d_w.data(), 1e-6f, d_out.data(), nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::rms_norm(d_x.data(), 2, 4, d_w.data(), std::nanf(""), d_out.data(), nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::add_rms_norm(d_out.data(), d_x.data(), 2, 4, d_w.data(), 1e-6f, d_out.data(), nullptr), qwen::InvalidArgument);
  // Partial overlaps (a thread would read what another one writes): refused. out == x is fine.
  const DeviceBuffer<float> wide(std::vector<float>(24, 1.0f));
  float* base = wide.data();
  CHECK_THROWS_AS(gpu::rms_norm(base, 2, 4, d_w.data(), 1e-6f, base + 1, nullptr), qwen::InvalidArgument);
  CHECK(gpu::rms_norm(base, 2, 4, d_w.data(), 1e-6f, base, nullptr) == cudaSuccess);
  CHECK_THROWS_AS(gpu::add_rms_norm(base, d_x.data(), 2, 4, d_w.data(), 1e-6f, base + 7, nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::add_rms_norm(base, base + 1, 2, 4, d_w.data(), 1e-6f, d_out.data(), nullptr), qwen::InvalidArgument);
  CHECK(gpu::add_rms_norm(base, base + 8, 2, 4, d_w.data(), 1e-6f, base + 16, nullptr) == cudaSuccess);  // adjacent, disjoint
  check(cudaDeviceSynchronize(), "rms_norm");
  CHECK(gpu::rms_norm(d_x.data(), 0, 4, d_w.data(), 1e-6f, d_out.data(), nullptr) == cudaSuccess);
}

TEST_CASE("cuda silu_mul matches the double oracle in both layouts", "[cuda]") {
  std::mt19937 rng(14);
  for (const std::int64_t count : {1, 100, 3072 * 5 + 3}) {
    const std::vector<float> gate = gates(rng, static_cast<std::size_t>(count));
    const std::vector<float> up = random_floats(rng, gate.size(), -4.0f, 4.0f);
    std::vector<float> expected(gate.size());
    cpu::silu_mul_reference(gate.data(), up.data(), expected.data(), count);
    const DeviceBuffer<float> d_gate(gate), d_up(up), d_out(gate.size());
    check(gpu::silu_mul(d_gate.data(), d_up.data(), d_out.data(), count, nullptr), "silu_mul launch");
    require_close(d_out.to_host(), expected, silu_abs, silu_rel, "silu_mul");
    check(gpu::silu_mul(d_gate.data(), d_up.data(), d_gate.data(), count, nullptr), "silu_mul in place launch");
    require_close(d_gate.to_host(), expected, silu_abs, silu_rel, "silu_mul into gate");
  }
  for (const std::int64_t rows : {1, 9})
    for (const std::int64_t inter : {1, 3072, 3075}) {
      const std::vector<float> gate = gates(rng, static_cast<std::size_t>(rows * inter));
      const std::vector<float> up = random_floats(rng, gate.size(), -4.0f, 4.0f);
      std::vector<float> gate_up(gate.size() * 2);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < inter; ++c) {
          gate_up[static_cast<std::size_t>(r * 2 * inter + c)] = gate[static_cast<std::size_t>(r * inter + c)];
          gate_up[static_cast<std::size_t>(r * 2 * inter + inter + c)] = up[static_cast<std::size_t>(r * inter + c)];
        }
      std::vector<float> expected(gate.size());
      cpu::silu_mul_reference(gate.data(), up.data(), expected.data(), rows * inter);
      const DeviceBuffer<float> d_gate_up(gate_up), d_out(gate.size());
      check(gpu::silu_mul_fused(d_gate_up.data(), rows, inter, d_out.data(), nullptr), "silu_mul_fused launch");
      require_close(d_out.to_host(), expected, silu_abs, silu_rel, "silu_mul_fused");
    }
}

TEST_CASE("cuda silu_mul checks its arguments", "[cuda]") {
  const DeviceBuffer<float> d_gate_up(std::vector<float>(8, 1.0f));
  CHECK_THROWS_AS(gpu::silu_mul(d_gate_up.data(), d_gate_up.data(), d_gate_up.data(), -1, nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::silu_mul_fused(d_gate_up.data(), 2, 0, d_gate_up.data(), nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::silu_mul_fused(d_gate_up.data(), 2, 2, d_gate_up.data() + 1, nullptr), qwen::InvalidArgument);
  CHECK(gpu::silu_mul(nullptr, nullptr, nullptr, 0, nullptr) == cudaSuccess);
}

TEST_CASE("cuda add and gather_rows equal the cpu backend's loops bit for bit", "[cuda]") {
  std::mt19937 rng(15);
  for (const std::int64_t count : {1, 1000, 70001}) {
    const std::vector<float> x = random_floats(rng, static_cast<std::size_t>(count)), y = random_floats(rng, x.size());
    std::vector<float> expected(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) expected[i] = x[i] + y[i];
    const DeviceBuffer<float> d_x(x), d_y(y);
    check(gpu::add(d_x.data(), d_y.data(), count, nullptr), "add launch");
    require_equal_bits(d_x.to_host(), expected, "add");
  }
  const std::int64_t tokens = 37, width = 1027;
  const std::vector<float> src = random_floats(rng, static_cast<std::size_t>(tokens * width));
  const std::vector<std::int32_t> rows = {36, 0, 5, 5, 17};
  std::vector<float> expected;
  for (const std::int32_t r : rows) expected.insert(expected.end(), src.begin() + r * width, src.begin() + (r + 1) * width);
  const DeviceBuffer<float> d_src(src), d_dst(expected.size());
  const DeviceBuffer<std::int32_t> d_rows(rows);
  check(gpu::gather_rows(d_src.data(), d_rows.data(), static_cast<std::int64_t>(rows.size()), width, d_dst.data(), nullptr),
        "gather_rows launch");
  require_equal_bits(d_dst.to_host(), expected, "gather_rows");
  CHECK_THROWS_AS(gpu::add(d_src.data(), d_src.data(), -1, nullptr), qwen::InvalidArgument);
  CHECK_THROWS_AS(gpu::gather_rows(d_src.data(), d_rows.data(), 1, 0, d_dst.data(), nullptr), qwen::InvalidArgument);
}
