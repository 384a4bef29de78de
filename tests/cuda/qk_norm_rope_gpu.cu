// The fused q_norm / k_norm + RoPE + KV append (kernels/cuda/rope.cuh) against its CPU twin, the
// composition the CPU forward pass runs, here with the double-precision oracles: rms_norm_reference
// per head, then apply_rope_reference at the token's position, then the KV write. Plain RoPE and
// YaRN frequencies; HeadDim 64, 128, 256; q/k/v as one fused row and as separate buffers; float
// and bf16 pools; a padding row (slot -1) that must write nothing.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <qwen/kernels/cpu/rms_norm.hpp>
#include <qwen/kernels/cpu/rope.hpp>
#include <qwen/kernels/cuda/rope.cuh>

#include "gpu_test.cuh"

namespace {

using qwen::bf16;
using namespace qwen::test_cuda;
namespace gpu = qwen::kernels::cuda;
namespace cpu = qwen::kernels::cpu;

// Tolerances against the double oracle. The normed values are at most about 2.6 in magnitude
// (inputs in [-1, 1] scaled to unit RMS, weights <= 1.5); the GPU's fp32 RMSNorm of a head is
// within 1e-6 relative of exact (HeadDim / 32 <= 8 terms per lane, 5 warp levels, sqrt, division,
// two products: (8 + 5 + 6) * 2^-24), i.e. 2.6e-6 absolute; a rotated element sums two such
// products with cos / sin taken from the fp32 table (each within 2^-24 relative of the oracle's
// double cos / sin of the same fp32 angle): at most 2 * (2.6e-6 + 2.6 * 2^-24) + rounding, about
// 5.6e-6. Bound used: 8e-6 absolute + 4e-6 relative. A bf16 pool adds the rounding to bf16,
// which may go the other way when the fp32 values straddle a rounding boundary: one bf16 ulp,
// 2^-8 relative.
constexpr double abs_tol = 8e-6, rel_tol = 4e-6, bf16_rel_tol = 1.0 / 256;

template <class T>
std::vector<T> from_floats(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return to_bf16(v);
}

template <class T>
std::vector<float> as_floats(const std::vector<T>& v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return to_float(v);
}

struct Case {
  std::int64_t n;
  int heads, kv_heads;
  bool fused;  // q, k, v inside one [n, (heads + 2 kv_heads) * HeadDim] row
  bool yarn;
};

template <int HeadDim, class W, class KV>
void check_case(std::mt19937& rng, const Case& c) {
  constexpr int d = HeadDim;
  const std::int64_t n = c.n, q_width = std::int64_t{c.heads} * d, kv_width = std::int64_t{c.kv_heads} * d;
  const std::int64_t num_slots = 4 * 16;  // 4 blocks of 16

  // Inputs: the fused row [q | k | v], split into separate buffers when !fused.
  const std::int64_t row = q_width + 2 * kv_width;
  const std::vector<float> qkv = random_floats(rng, static_cast<std::size_t>(n * row));
  const std::vector<W> q_norm = from_floats<W>(random_floats(rng, d, 0.5f, 1.5f));
  const std::vector<W> k_norm = from_floats<W>(random_floats(rng, d, 0.5f, 1.5f));
  std::vector<std::int32_t> positions(static_cast<std::size_t>(n));
  std::uniform_int_distribution<std::int32_t> position(0, c.yarn ? 120000 : 40000);
  for (auto& p : positions) p = position(rng);
  positions[0] = 0;
  std::vector<std::int32_t> slots(static_cast<std::size_t>(num_slots));
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(static_cast<std::size_t>(n));
  if (n > 2) slots[1] = -1;  // a padding row: nothing may be written for it

  cpu::YarnParams yarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 32768;
  const cpu::RopeFrequencies frequencies = c.yarn ? cpu::make_rope_frequencies(1e6, d, yarn) : cpu::make_rope_frequencies(1e6, d);
  std::vector<float> cos_sin(static_cast<std::size_t>(n * d));
  cpu::rope_cos_sin(frequencies, positions.data(), n, cos_sin.data());

  // The oracle: q and k heads normed and rotated in double; the pools written at the slots.
  std::vector<float> q(static_cast<std::size_t>(n * q_width)), k(static_cast<std::size_t>(n * kv_width)), v(k.size());
  for (std::int64_t t = 0; t < n; ++t) {
    const float* src = qkv.data() + t * row;
    std::copy_n(src, q_width, q.begin() + t * q_width);
    std::copy_n(src + q_width, kv_width, k.begin() + t * kv_width);
    std::copy_n(src + q_width + kv_width, kv_width, v.begin() + t * kv_width);
  }
  std::vector<float> q_expected(q.size()), k_expected(k.size());
  cpu::rms_norm_reference(q.data(), n * c.heads, d, q_norm.data(), 1e-6f, q_expected.data());
  cpu::rms_norm_reference(k.data(), n * c.kv_heads, d, k_norm.data(), 1e-6f, k_expected.data());
  cpu::apply_rope_reference(q_expected.data(), n, c.heads, positions.data(), frequencies);
  cpu::apply_rope_reference(k_expected.data(), n, c.kv_heads, positions.data(), frequencies);

  const std::size_t pool_size = static_cast<std::size_t>(num_slots * kv_width);
  std::vector<float> key_expected(pool_size, std::nanf("")), value_expected(pool_size, std::nanf(""));
  std::vector<bool> written(static_cast<std::size_t>(num_slots), false);
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int32_t s = slots[static_cast<std::size_t>(t)];
    if (s < 0) continue;
    written[static_cast<std::size_t>(s)] = true;
    std::copy_n(k_expected.begin() + t * kv_width, kv_width, key_expected.begin() + s * kv_width);
    std::copy_n(v.begin() + t * kv_width, kv_width, value_expected.begin() + s * kv_width);
  }

  // The GPU: pools poisoned (0xff bytes: NaN) so a missing or stray write shows.
  const DeviceBuffer<float> d_qkv(qkv), d_q(q), d_k(k), d_v(v);
  const DeviceBuffer<W> d_q_norm(q_norm), d_k_norm(k_norm);
  const DeviceBuffer<float> d_cos_sin(cos_sin);
  const DeviceBuffer<std::int32_t> d_slots(slots);
  const DeviceBuffer<KV> d_key(pool_size), d_value(pool_size);
  gpu::QkNormRopeShape shape{.n = n, .num_heads = c.heads, .num_kv_heads = c.kv_heads, .num_slots = num_slots, .eps = 1e-6f};
  float* q_ptr = d_q.data();
  const float *k_ptr = d_k.data(), *v_ptr = d_v.data();
  if (c.fused) {
    q_ptr = d_qkv.data();
    k_ptr = d_qkv.data() + q_width;
    v_ptr = d_qkv.data() + q_width + kv_width;
    shape.q_stride = shape.k_stride = shape.v_stride = row;
  } else {
    shape.q_stride = q_width;
    shape.k_stride = shape.v_stride = kv_width;
  }
  check(gpu::qk_norm_rope_write_kv<d>(q_ptr, k_ptr, v_ptr, d_q_norm.data(), d_k_norm.data(), d_cos_sin.data(), d_slots.data(),
                                      d_key.data(), d_value.data(), shape, nullptr),
        "qk_norm_rope_write_kv launch");

  std::vector<float> q_got(q.size());
  if (c.fused) {
    const std::vector<float> qkv_got = d_qkv.to_host();
    for (std::int64_t t = 0; t < n; ++t) {
      std::copy_n(qkv_got.begin() + t * row, q_width, q_got.begin() + t * q_width);
      // k and v are read only: they must be unchanged.
      REQUIRE(std::equal(qkv_got.begin() + t * row + q_width, qkv_got.begin() + (t + 1) * row, qkv.begin() + t * row + q_width));
    }
  } else {
    q_got = d_q.to_host();
  }
  require_close(q_got, q_expected, abs_tol, rel_tol, "q normed and rotated");

  const std::vector<float> key_got = as_floats(d_key.to_host()), value_got = as_floats(d_value.to_host());
  std::vector<float> key_rows, key_rows_expected, value_rows, value_rows_expected;
  std::size_t stray = 0;
  for (std::int64_t s = 0; s < num_slots; ++s) {
    const auto begin = static_cast<std::size_t>(s * kv_width), end = begin + static_cast<std::size_t>(kv_width);
    if (written[static_cast<std::size_t>(s)]) {
      key_rows.insert(key_rows.end(), key_got.begin() + begin, key_got.begin() + end);
      key_rows_expected.insert(key_rows_expected.end(), key_expected.begin() + begin, key_expected.begin() + end);
      value_rows.insert(value_rows.end(), value_got.begin() + begin, value_got.begin() + end);
      value_rows_expected.insert(value_rows_expected.end(), value_expected.begin() + begin, value_expected.begin() + end);
    } else {
      for (std::size_t i = begin; i < end; ++i) stray += !std::isnan(key_got[i]) || !std::isnan(value_got[i]);
    }
  }
  INFO("pool elements written outside the step's slots: " << stray);
  CHECK(stray == 0);
  const double key_rel = std::is_same_v<KV, float> ? rel_tol : bf16_rel_tol;
  require_close(key_rows, key_rows_expected, abs_tol, key_rel, "k in the pool");
  // V is copied: exact in a float pool; in a bf16 pool, the host's rounding of the same value.
  if constexpr (std::is_same_v<KV, float>) {
    require_equal_bits(value_rows, value_rows_expected, "v in the pool");
  } else {
    std::vector<float> rounded(value_rows_expected.size());
    std::transform(value_rows_expected.begin(), value_rows_expected.end(), rounded.begin(),
                   [](float x) { return bf16::from_float(x).to_float(); });
    require_equal_bits(value_rows, rounded, "v in the bf16 pool");
  }
}

template <int HeadDim>
void check_all(std::mt19937& rng) {
  for (const Case& c : {Case{1, 2, 1, true, false}, Case{5, 4, 2, false, false}, Case{37, 16, 8, true, true}, Case{9, 8, 1, false, true}}) {
    check_case<HeadDim, float, float>(rng, c);
    check_case<HeadDim, bf16, bf16>(rng, c);
    check_case<HeadDim, bf16, float>(rng, c);
  }
}

}  // namespace

TEST_CASE("cuda qk_norm_rope_write_kv matches q_norm, k_norm, RoPE and the KV write of the cpu oracle", "[cuda]") {
  std::mt19937 rng(21);
  check_all<128>(rng);
  check_all<64>(rng);
  check_all<256>(rng);
}

TEST_CASE("cuda qk_norm_rope_write_kv checks its arguments", "[cuda]") {
  const DeviceBuffer<float> d(std::vector<float>(4096, 0.5f));
  const DeviceBuffer<std::int32_t> d_slots(std::vector<std::int32_t>{0});
  const gpu::QkNormRopeShape good{.n = 1, .num_heads = 2, .num_kv_heads = 1, .q_stride = 256, .k_stride = 128, .v_stride = 128,
                                  .num_slots = 4, .eps = 1e-6f};
  auto launch = [&](gpu::QkNormRopeShape shape) {
    return gpu::qk_norm_rope_write_kv<128>(d.data(), d.data(), d.data(), d.data(), d.data(), d.data(), d_slots.data(), d.data(),
                                           d.data(), shape, nullptr);
  };
  check(launch(good), "qk_norm_rope_write_kv launch");
  check(cudaDeviceSynchronize(), "qk_norm_rope_write_kv");
  auto bad = good;
  bad.num_heads = 3;  // not a multiple of num_kv_heads
  CHECK_THROWS_AS(launch(bad), qwen::InvalidArgument);
  bad = good;
  bad.q_stride = 255;
  CHECK_THROWS_AS(launch(bad), qwen::InvalidArgument);
  bad = good;
  bad.n = -1;
  CHECK_THROWS_AS(launch(bad), qwen::InvalidArgument);
  bad = good;
  bad.num_slots = 0;
  CHECK_THROWS_AS(launch(bad), qwen::InvalidArgument);
  bad = good;
  bad.n = 0;
  CHECK(launch(bad) == cudaSuccess);
}
