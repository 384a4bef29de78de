// kernels/cpu/linear.hpp: the fast path against the double-accumulating reference over ragged
// shapes for every weight format, batch invariance (bit for bit, across n, sub-batches and thread
// counts; a non-finite token leaks into no other token), exact decoding of every fp8 code and of
// bf16 patterns, the wide-scale fp8 path, the many-token (widened) path, and the argument checks.
// kernels/cpu/thread_pool.hpp is checked here too, since linear is its main user.
//
// Tolerance, derived from the kernel's summation order: each output is a chain of
// m = ceil(in / width) fused multiply-adds per lane (one rounding each) and a tree of log2(width)
// additions; the products' weights are exact (bf16, fp8 with bf16 scale) or rounded once in the
// same way as the reference (fp8 with float scale). Recursive summation with m + log2(width)
// roundings is off the exact sum by at most gamma = (m + log2(width)) u / (1 - ...) times
// Σ|x·w|, u = 2^-24; the reference adds one more rounding (double -> float). So
//   |fast - reference| <= (ceil(in / width) + log2(width) + 2) · 2^-24 · Σ_k |x_k · w_k|
// with one rounding of slack. The tests never loosen it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <qwen/core/error.hpp>
#include <qwen/core/numeric.hpp>
#include <qwen/kernels/cpu/linear.hpp>
#include <qwen/kernels/cpu/thread_pool.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sanitized.hpp"

namespace {

using qwen::bf16;
using qwen::fp8_e4m3;
namespace cpu = qwen::kernels::cpu;
using Lanes = cpu::linear_detail::Lanes;

using qwen_test::sanitized;

// Token counts: one, the tile remainders, several tiles. The sanitizer build (tests/sanitized.hpp)
// keeps 1, 2, 3, 7 and 17 (every remainder path and more than one tile) and drops the 64- and
// 97-row batches, which only repeat those tiles and cost most of the double reference's time.
const std::int64_t ns_full[] = {1, 2, 3, 7, 17, 64, 97};
const std::span<const std::int64_t> ns(ns_full, sanitized ? 5 : std::size(ns_full));
const std::int64_t ins[] = {1, 17, 97, 128, 255, 1024};
const std::int64_t outs[] = {1, 17, 97, 128, 255, 300};

constexpr std::uint32_t poison_bits = 0x7fc0'dead;
std::vector<float> poisoned(std::int64_t count) {
  return std::vector<float>(static_cast<std::size_t>(count), std::bit_cast<float>(poison_bits));
}

// Activations uniform in [-1, 1]; the first element of every row is 0.5, 0.75 or 1, so that no
// row is all zeros.
std::vector<float> random_x(std::mt19937& rng, std::int64_t n, std::int64_t in) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n * in));
  for (auto& v : x) v = dist(rng);
  for (std::int64_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i * in)] = 0.5f + 0.25f * static_cast<float>(i % 3);
  return x;
}

// One weight of each format with its decoded fp32 values (the exact W the kernel multiplies by).
struct Weight {
  virtual ~Weight() = default;
  std::vector<float> decoded;  // [out, in]
  virtual void fast(const float* x, std::int64_t n, std::int64_t in, std::int64_t out, float* y, cpu::ThreadPool& pool) const = 0;
  virtual void reference(const float* x, std::int64_t n, std::int64_t in, std::int64_t out, float* y) const = 0;
};

template <class W>
struct PlainWeight final : Weight {
  std::vector<W> w;
  PlainWeight(std::mt19937& rng, std::int64_t out, std::int64_t in) {
    std::normal_distribution<float> dist(0.0f, 0.05f);
    for (std::int64_t i = 0; i < out * in; ++i) {
      if constexpr (std::is_same_v<W, float>)
        w.push_back(dist(rng));
      else
        w.push_back(bf16::from_float(dist(rng)));
      decoded.push_back(qwen::to_float(w.back()));
    }
  }
  void fast(const float* x, std::int64_t n, std::int64_t in, std::int64_t out, float* y, cpu::ThreadPool& pool) const override {
    cpu::linear(x, n, in, w.data(), out, y, pool);
  }
  void reference(const float* x, std::int64_t n, std::int64_t in, std::int64_t out, float* y) const override {
    cpu::linear_reference(x, n, in, w.data(), out, y);
  }
};

// Random finite codes (every code but the two NaNs, subnormals included) and per-block scales.
// Scales of 2^120 and more exercise the path for scales whose product with 2^8 overflows; codes
// are then limited to exponent fields <= max_exponent so that the products stay finite.
template <class Scale>
struct Fp8Weight final : Weight {
  std::vector<fp8_e4m3> w;
  std::vector<Scale> scale;
  Fp8Weight(std::mt19937& rng, std::int64_t out, std::int64_t in, float scale_min = 0.001f, float scale_max = 0.05f,
            int max_exponent = 15) {
    const std::int64_t rows = (out + 127) / 128, cols = (in + 127) / 128;
    std::uniform_real_distribution<float> magnitude(scale_min, scale_max);
    for (std::int64_t i = 0; i < rows * cols; ++i) {
      if constexpr (std::is_same_v<Scale, float>)
        scale.push_back(magnitude(rng));  // a full 24-bit significand: float(q) * s rounds
      else
        scale.push_back(bf16::from_float(magnitude(rng)));
    }
    for (std::int64_t i = 0; i < out * in; ++i) {
      std::uint8_t code = static_cast<std::uint8_t>(rng());
      if ((code & 0x7f) == 0x7f) code ^= 1;
      if (((code >> 3) & 0xf) > max_exponent) code = static_cast<std::uint8_t>((code & 0x87) | (max_exponent << 3));
      w.push_back(fp8_e4m3::from_bits(code));
    }
    for (std::int64_t r = 0; r < out; ++r)
      for (std::int64_t c = 0; c < in; ++c)
        decoded.push_back(w[static_cast<std::size_t>(r * in + c)].to_float() *
                          qwen::to_float(scale[static_cast<std::size_t>((r / 128) * cols + c / 128)]));
  }
  void fast(const float* x, std::int64_t n, std::int64_t in, std::int64_t out, float* y, cpu::ThreadPool& pool) const override {
    cpu::linear_fp8(x, n, in, w.data(), scale.data(), out, y, pool);
  }
  void reference(const float* x, std::int64_t n, std::int64_t in, std::int64_t out, float* y) const override {
    cpu::linear_fp8_reference(x, n, in, w.data(), scale.data(), out, y);
  }
};

std::unique_ptr<Weight> make_weight(int format, std::mt19937& rng, std::int64_t out, std::int64_t in) {
  switch (format) {
    case 0: return std::make_unique<PlainWeight<float>>(rng, out, in);
    case 1: return std::make_unique<PlainWeight<bf16>>(rng, out, in);
    case 2: return std::make_unique<Fp8Weight<bf16>>(rng, out, in);
    default: return std::make_unique<Fp8Weight<float>>(rng, out, in);
  }
}
const char* const format_names[] = {"float", "bf16", "fp8 + bf16 scales", "fp8 + float scales"};

// Checks fast against reference with the tolerance derived at the top of this file.
void check_against_reference(const Weight& weight, const std::vector<float>& x, std::int64_t n, std::int64_t in,
                             std::int64_t out, const std::vector<float>& fast, const std::vector<float>& reference) {
  const double u = std::ldexp(1.0, -24);
  const double roundings = static_cast<double>((in + Lanes::width - 1) / Lanes::width) + std::log2(Lanes::width) + 2;
  bool any_nonzero = false;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < out; ++j) {
      double magnitude = 0;
      for (std::int64_t k = 0; k < in; ++k)
        magnitude += std::abs(static_cast<double>(x[static_cast<std::size_t>(i * in + k)]) *
                              weight.decoded[static_cast<std::size_t>(j * in + k)]);
      const float f = fast[static_cast<std::size_t>(i * out + j)], r = reference[static_cast<std::size_t>(i * out + j)];
      INFO("y[" << i << ", " << j << "]: fast " << f << ", reference " << r << ", Σ|x·w| " << magnitude);
      REQUIRE(std::isfinite(f));
      REQUIRE(std::abs(static_cast<double>(f) - r) <= roundings * u * magnitude);
      any_nonzero = any_nonzero || f != 0.0f;
    }
  REQUIRE(any_nonzero);
}

bool same_bits(const float* a, const float* b, std::int64_t count) { return std::memcmp(a, b, static_cast<std::size_t>(count) * sizeof(float)) == 0; }

}  // namespace

#if defined(QWEN_EXPECTED_ISA)
TEST_CASE("linear: compiled for the intended vector path", "[linear]") { REQUIRE(cpu::linear_isa == QWEN_EXPECTED_ISA); }
#endif

TEST_CASE("linear: fast path equals the double reference over ragged shapes, every weight format", "[linear]") {
  std::mt19937 rng(20240611);
  cpu::ThreadPool pool(2);
  for (int format = 0; format < 4; ++format)
    for (std::int64_t in : ins)
      for (std::int64_t out : outs) {
        const auto weight = make_weight(format, rng, out, in);
        for (std::int64_t n : ns) {
          INFO(format_names[format] << ", isa " << cpu::linear_isa << ", n " << n << ", in " << in << ", out " << out);
          const std::vector<float> x = random_x(rng, n, in);
          std::vector<float> fast = poisoned(n * out), reference = poisoned(n * out);
          weight->fast(x.data(), n, in, out, fast.data(), pool);
          weight->reference(x.data(), n, in, out, reference.data());
          check_against_reference(*weight, x, n, in, out, fast, reference);
        }
      }
}

TEST_CASE("linear: fp8 block scales of 2^120 and more (whose product with 2^8 overflows) take the wide path", "[linear]") {
  std::mt19937 rng(7);
  cpu::ThreadPool pool(2);
  const std::int64_t n = 5, in = 300, out = 260;
  const Fp8Weight<float> wide(rng, out, in, 0x1p120f, 0x1p121f, 3);
  Fp8Weight<bf16> mixed(rng, out, in, 0.001f, 0.05f, 3);
  mixed.scale[1] = bf16::from_float(0x1p121f);  // one block of the first chunk
  for (std::int64_t r = 0; r < out; ++r)
    for (std::int64_t c = 128; c < 256; ++c)
      if (r < 128) mixed.decoded[static_cast<std::size_t>(r * in + c)] = mixed.w[static_cast<std::size_t>(r * in + c)].to_float() * 0x1p121f;
  for (const Weight* weight : {static_cast<const Weight*>(&wide), static_cast<const Weight*>(&mixed)}) {
    const std::vector<float> x = random_x(rng, n, in);
    std::vector<float> fast = poisoned(n * out), reference = poisoned(n * out);
    weight->fast(x.data(), n, in, out, fast.data(), pool);
    weight->reference(x.data(), n, in, out, reference.data());
    check_against_reference(*weight, x, n, in, out, fast, reference);
  }
}

TEST_CASE("linear: every fp8 code and many bf16 patterns are decoded exactly", "[linear]") {
  // W = one code per column; x = one-hot rows, so y[i, j] = W[j, i] with a single nonzero product.
  // Compared as values: a -0 weight gives +0 once the other (+0) products are added.
  cpu::ThreadPool pool(2);
  const std::int64_t in = 256, n = 256;
  std::vector<float> x(static_cast<std::size_t>(n * in), 0.0f);
  for (std::int64_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i * in + i)] = 1.0f;

  SECTION("fp8, both scale dtypes, scales 1, 2^-10 and 3") {
    const std::int64_t out = 3 * 128;  // three chunks with different scales
    std::vector<fp8_e4m3> w(static_cast<std::size_t>(out * in));
    for (std::int64_t r = 0; r < out; ++r)
      for (std::int64_t c = 0; c < in; ++c) {
        const auto code = static_cast<std::uint8_t>((c + r) & 0xff);
        w[static_cast<std::size_t>(r * in + c)] = fp8_e4m3::from_bits((code & 0x7f) == 0x7f ? 0 : code);
      }
    const float block_scales[] = {1.0f, 0x1p-10f, 3.0f};
    std::vector<float> scale_f;
    std::vector<bf16> scale_b;
    for (float s : block_scales)
      for (int c = 0; c < 2; ++c) {
        scale_f.push_back(s);
        scale_b.push_back(bf16::from_float(s));
      }
    std::vector<float> y_f = poisoned(n * out), y_b = poisoned(n * out);
    cpu::linear_fp8(x.data(), n, in, w.data(), scale_f.data(), out, y_f.data(), pool);
    cpu::linear_fp8(x.data(), n, in, w.data(), scale_b.data(), out, y_b.data(), pool);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < out; ++j) {
        const fp8_e4m3 q = w[static_cast<std::size_t>(j * in + i)];
        const float expected = q.to_float() * block_scales[j / 128];
        INFO("code 0x" << std::hex << int{q.bits} << std::dec << ", row " << j);
        REQUIRE(y_f[static_cast<std::size_t>(i * out + j)] == expected);
        REQUIRE(y_b[static_cast<std::size_t>(i * out + j)] == expected);
      }
  }
  SECTION("bf16: 2^16 / 64 patterns per row, all finite ones reachable over the rows") {
    const std::int64_t out = 256;
    std::vector<bf16> w(static_cast<std::size_t>(out * in));
    for (std::int64_t r = 0; r < out; ++r)
      for (std::int64_t c = 0; c < in; ++c) {
        auto bits = static_cast<std::uint16_t>(r * in + c);
        if ((bits & 0x7f80) == 0x7f80) bits = 0x3f80;  // skip inf and NaN
        w[static_cast<std::size_t>(r * in + c)] = bf16::from_bits(bits);
      }
    std::vector<float> y = poisoned(n * out);
    cpu::linear(x.data(), n, in, w.data(), out, y.data(), pool);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < out; ++j) {
        const float expected = w[static_cast<std::size_t>(j * in + i)].to_float();
        REQUIRE(y[static_cast<std::size_t>(i * out + j)] == expected);
      }
  }
}

namespace {

// For every weight format and [in, out] shape: n random token rows computed together on each
// pool, and in sub-batches of each step, equal the rows computed one at a time on one thread, bit
// for bit; and those agree with the reference (within the tolerance above).
void check_batch_invariance(std::mt19937& rng, std::int64_t n, std::span<const std::array<std::int64_t, 2>> shapes,
                            std::span<cpu::ThreadPool* const> pools, std::span<const std::int64_t> steps) {
  cpu::ThreadPool one(1);
  for (int format = 0; format < 4; ++format)
    for (const auto& [in, out] : shapes) {
      INFO(format_names[format] << ", in " << in << ", out " << out);
      const auto weight = make_weight(format, rng, out, in);
      const std::vector<float> x = random_x(rng, n, in);
      // Row by row, alone, on one thread: the value every other call must reproduce.
      std::vector<float> alone = poisoned(n * out);
      for (std::int64_t i = 0; i < n; ++i) weight->fast(x.data() + i * in, 1, in, out, alone.data() + i * out, one);
      for (cpu::ThreadPool* pool : pools) {
        INFO("threads " << pool->size());
        std::vector<float> batched = poisoned(n * out);
        weight->fast(x.data(), n, in, out, batched.data(), *pool);
        REQUIRE(same_bits(batched.data(), alone.data(), n * out));
        for (const std::int64_t step : steps) {
          INFO("sub-batches of " << step);
          std::vector<float> pieces = poisoned(n * out);
          for (std::int64_t i = 0; i < n; i += step)
            weight->fast(x.data() + i * in, std::min(step, n - i), in, out, pieces.data() + i * out, *pool);
          REQUIRE(same_bits(pieces.data(), alone.data(), n * out));
        }
      }
      std::vector<float> reference = poisoned(n * out);
      weight->reference(x.data(), n, in, out, reference.data());
      check_against_reference(*weight, x, n, in, out, alone, reference);
    }
}

}  // namespace

TEST_CASE("linear: batch invariance, bit for bit across n, sub-batches and thread counts", "[linear]") {
  // in = 3000 makes multi-token tiles save their accumulators between k-blocks while one-token
  // tiles do not; out = 17 and 128 (one chunk) make the pool split tokens instead of rows.
  std::mt19937 rng(99);
  cpu::ThreadPool pool1(1), pool2(2), pool3(3);
  cpu::ThreadPool* const pools[] = {&pool1, &pool2, &pool3};
  // Under the sanitizers (no optimisation) fewer rows: the same tiles, sub-batches of 7 and 2
  // (the way chunked prefill and small decode batches cut them) with a remainder each, and the
  // same k-blocks.
  const std::int64_t n = sanitized ? 15 : 97;
  const std::array<std::int64_t, 2> shapes[] = {{255, 300}, {1024, 17}, {3000, 128}, {1024, 1000}};
  const std::int64_t steps[] = {7, 2};
  check_batch_invariance(rng, n, shapes, pools, steps);
}

TEST_CASE("linear: the many-token path (weight rows widened to fp32 once) equals one token at a time, bit for bit", "[linear]") {
  // More tokens than widen_min_tokens take the widened path (on one thread: two threads cut a
  // single chunk's tokens in two ranges, each below the threshold); in = 3000 widens a 128-row
  // chunk in two sub-blocks (the buffer holds fewer rows), out = 130 leaves a 2-row chunk (two
  // one-row tiles with AVX-512's 4-row tiles), in = 255 a ragged last k-vector. Sub-batches of
  // widen_min_tokens + 1 mix both paths.
  using namespace cpu::linear_detail;
  std::mt19937 rng(4242);
  cpu::ThreadPool pool1(1), pool2(2);
  cpu::ThreadPool* const pools[] = {&pool1, &pool2};
  REQUIRE(widened_floats < chunk_rows * tile_floats(3000) / tile_rows);
  // A row too long for one widened tile (in > 2^16 with AVX-512's 4-row tiles) is run without
  // widening: under the sanitizers, a widening of it would be caught writing past the buffer.
  const std::int64_t too_long = widened_floats / tile_rows + 17;
  REQUIRE(tile_floats(too_long) > widened_floats);
  const std::array<std::int64_t, 2> shapes[] = {{3000, 130}, {255, 33}, {too_long, 2}};
  const std::int64_t steps[] = {widen_min_tokens + 1};
  check_batch_invariance(rng, widen_min_tokens + 3, shapes, pools, steps);
}

TEST_CASE("linear: an infinite fp8 scale gives the same bits in the many-token path as one token at a time", "[linear]") {
  // in = 300: the ragged last k-vector's unused lanes hold 0 · inf = NaN in both paths, so the
  // outputs of the infinite block's rows are NaN either way, bit for bit. The block's codes are
  // all 1.0 and x is positive, so that its real products alone would sum to +inf, not NaN.
  std::mt19937 rng(31);
  cpu::ThreadPool pool(2), one(1);
  const std::int64_t n = cpu::linear_detail::widen_min_tokens + 3, in = 300, out = 130;
  for (const float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    Fp8Weight<float> weight(rng, out, in);
    weight.scale[2] = bad;  // chunk 0, the last (ragged) column block
    for (std::int64_t r = 0; r < 128; ++r)
      for (std::int64_t c = 256; c < in; ++c) weight.w[static_cast<std::size_t>(r * in + c)] = fp8_e4m3::from_bits(0x38);
    std::vector<float> x = random_x(rng, n, in);
    for (float& v : x) v = std::abs(v) + 1e-3f;
    std::vector<float> alone = poisoned(n * out), batched = poisoned(n * out);
    for (std::int64_t i = 0; i < n; ++i) weight.fast(x.data() + i * in, 1, in, out, alone.data() + i * out, one);
    weight.fast(x.data(), n, in, out, batched.data(), pool);
    REQUIRE(std::isnan(alone[0]));  // row 0 reads the infinite block
    REQUIRE(same_bits(batched.data(), alone.data(), n * out));
  }
}

TEST_CASE("linear: a non-finite token row changes only its own outputs", "[linear]") {
  std::mt19937 rng(5);
  cpu::ThreadPool pool(2);
  const std::int64_t n = 13, in = 300, out = 260;
  for (int format = 0; format < 4; ++format) {
    INFO(format_names[format]);
    const auto weight = make_weight(format, rng, out, in);
    std::vector<float> x = random_x(rng, n, in);
    std::vector<float> clean = poisoned(n * out), dirty = poisoned(n * out);
    weight->fast(x.data(), n, in, out, clean.data(), pool);
    x[static_cast<std::size_t>(6 * in + 250)] = std::numeric_limits<float>::quiet_NaN();  // token 6, in the ragged tail's vector
    x[static_cast<std::size_t>(7 * in + 3)] = std::numeric_limits<float>::infinity();
    weight->fast(x.data(), n, in, out, dirty.data(), pool);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < out; ++j) {
        const float d = dirty[static_cast<std::size_t>(i * out + j)];
        if (i == 6)
          REQUIRE(std::isnan(d));
        else if (i == 7)
          REQUIRE(!std::isfinite(d));  // inf, or NaN where +inf and -inf products meet
        else
          REQUIRE(std::bit_cast<std::uint32_t>(d) == std::bit_cast<std::uint32_t>(clean[static_cast<std::size_t>(i * out + j)]));
      }
  }
}

TEST_CASE("linear: bad arguments throw InvalidArgument naming the values", "[linear]") {
  cpu::ThreadPool pool(2);
  std::vector<float> x(64, 1.0f), y(64);
  std::vector<bf16> w(64, bf16::from_float(1.0f));
  std::vector<fp8_e4m3> q(64, fp8_e4m3::from_bits(0x38));
  std::vector<float> s(4, 1.0f);
  using qwen::InvalidArgument;
  CHECK_THROWS_WITH(cpu::linear(x.data(), -1, 8, w.data(), 8, y.data(), pool), Catch::Contains("n = -1"));
  CHECK_THROWS_WITH(cpu::linear(x.data(), 1, 0, w.data(), 8, y.data(), pool), Catch::Contains("in = 0"));
  CHECK_THROWS_WITH(cpu::linear(x.data(), 1, 8, w.data(), 0, y.data(), pool), Catch::Contains("out = 0"));
  CHECK_THROWS_AS(cpu::linear(x.data(), 1, 8, w.data(), -3, y.data(), pool), InvalidArgument);
  CHECK_THROWS_AS(cpu::linear_reference(x.data(), 1, 0, w.data(), 8, y.data()), InvalidArgument);
  CHECK_THROWS_AS(cpu::linear(static_cast<const float*>(nullptr), 1, 8, w.data(), 8, y.data(), pool), InvalidArgument);
  CHECK_THROWS_AS(cpu::linear(x.data(), 1, 8, static_cast<const bf16*>(nullptr), 8, y.data(), pool), InvalidArgument);
  CHECK_THROWS_AS(cpu::linear(x.data(), 1, 8, w.data(), 8, nullptr, pool), InvalidArgument);
  CHECK_THROWS_AS(cpu::linear_fp8(x.data(), 1, 8, q.data(), static_cast<const float*>(nullptr), 8, y.data(), pool), InvalidArgument);
  CHECK_THROWS_AS(cpu::linear_fp8(x.data(), 2, 8, q.data(), s.data(), 0, y.data(), pool), InvalidArgument);
  CHECK_THROWS_AS(cpu::linear_fp8_reference(x.data(), 2, -8, q.data(), s.data(), 8, y.data()), InvalidArgument);
  // y overlapping x (in place) is refused: the kernel reads x while it writes y.
  CHECK_THROWS_WITH(cpu::linear(x.data(), 2, 8, w.data(), 8, x.data() + 4, pool), Catch::Contains("overlaps"));
  CHECK_THROWS_AS(cpu::linear_reference(x.data(), 2, 8, w.data(), 8, x.data()), InvalidArgument);
  // n = 0 is a no-op that touches nothing.
  CHECK_NOTHROW(cpu::linear(static_cast<const float*>(nullptr), 0, 8, w.data(), 8, nullptr, pool));
}

TEST_CASE("linear: ThreadPool runs each index once, on every pool size, and rethrows", "[linear]") {
  for (unsigned threads : {1u, 2u, 3u, 5u}) {
    cpu::ThreadPool pool(threads);
    REQUIRE(pool.size() == threads);
    for (std::int64_t count : {1, 2, 3, 17, 1000}) {
      for (int rep = 0; rep < 50; ++rep) {  // back-to-back calls: the spin / wake hand-over
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
        pool.parallel_for(count, 1, [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
        });
        for (auto& h : hits) REQUIRE(h.load() == 1);
      }
    }
    CHECK_THROWS_AS(pool.parallel_for(10, 1, [](std::int64_t begin, std::int64_t) {
      if (begin >= 0) throw std::runtime_error("chunk failed");
    }), std::runtime_error);
    // The pool still works after an exception.
    std::atomic<std::int64_t> total{0};
    pool.parallel_for(100, 1, [&](std::int64_t begin, std::int64_t end) { total += end - begin; });
    REQUIRE(total.load() == 100);
  }
}

TEST_CASE("linear: ThreadPool refuses more than max_threads, and a thread the system refuses is an error, not a hang", "[linear]") {
  CHECK_THROWS_WITH(cpu::ThreadPool(cpu::ThreadPool::max_threads + 1),
                    Catch::Contains("ThreadPool: 1025 threads requested, at most 1024 are supported"));
  if (sanitized) {
    SUCCEED("skipped under the sanitizers: the address-space limit below would break their shadow memory");
    return;
  }
  // In a child process whose address space is limited to what it uses now plus 64 MiB, thread
  // stacks (8 MiB each by default) run out after a few threads: the pool must stop the ones it
  // started and throw. alarm() turns a hang into a failure.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::alarm(30);
    std::ifstream statm("/proc/self/statm");
    unsigned long pages = 0;
    statm >> pages;
    const rlim_t limit = pages * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + (64ul << 20);
    const rlimit as{limit, limit};
    if (::setrlimit(RLIMIT_AS, &as) != 0) ::_exit(3);
    try {
      cpu::ThreadPool pool(200);
      ::_exit(4);  // all 200 started: the limit did not bite
    } catch (const qwen::Error& e) {
      const std::string m = e.what();
      ::_exit(m.find("ThreadPool: 200 threads requested, but the system refused to start thread ") != std::string::npos ? 0 : 5);
    } catch (...) {
      ::_exit(6);
    }
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  INFO("child status " << status << " (exit 3: setrlimit failed, 4: no thread refused, 5: wrong message, 6: other error)");
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("linear: linear_fused computes q/k/v- and gate/up-like groups bit for bit as separate products", "[linear]") {
  // Three weights of ragged heights sharing one x (as q, k and v do), then two (gate and up), for
  // each weight format, several n (decode and prefill tiles) and thread counts; every output is
  // compared exactly with a separate linear() of the same weight, and all of them are written.
  std::mt19937 rng(4242);
  const std::vector<unsigned> thread_counts = sanitized ? std::vector<unsigned>{3} : std::vector<unsigned>{1, 2, 3};
  const std::vector<std::int64_t> in_values = sanitized ? std::vector<std::int64_t>{97, 3000} : std::vector<std::int64_t>{97, 256, 3000};
  for (const unsigned threads : thread_counts) {
    cpu::ThreadPool pool(threads);
    for (const std::int64_t in : in_values) {
      const std::int64_t heights[3] = {300, 17, 128};
      const std::int64_t n_values[] = {1, 5, 17};
      // bf16
      std::vector<std::vector<bf16>> w(3);
      std::vector<std::vector<float>> wf(3);
      // fp8 with bf16 scales; one chunk of weight 2 gets a wide scale (>= 2^120)
      std::vector<std::vector<fp8_e4m3>> q(3);
      std::vector<std::vector<bf16>> s(3);
      std::normal_distribution<float> dist(0.0f, 0.05f);
      std::uniform_int_distribution<int> code(0, 255);
      for (int p = 0; p < 3; ++p) {
        for (std::int64_t i = 0; i < heights[p] * in; ++i) {
          w[static_cast<std::size_t>(p)].push_back(bf16::from_float(dist(rng)));
          wf[static_cast<std::size_t>(p)].push_back(dist(rng));
          auto c = static_cast<std::uint8_t>(code(rng));
          if ((c & 0x7f) == 0x7f) c = 0x38;  // no NaN codes
          q[static_cast<std::size_t>(p)].push_back(fp8_e4m3::from_bits(c));
        }
        const std::int64_t scales = (heights[p] + 127) / 128 * ((in + 127) / 128);
        for (std::int64_t i = 0; i < scales; ++i) s[static_cast<std::size_t>(p)].push_back(bf16::from_float(std::ldexp(1.0f, -8 + static_cast<int>(i % 5))));
      }
      s[2][0] = bf16::from_float(0x1p121f);
      std::vector<cpu::Fp8Scales> prepared;
      for (int p = 0; p < 3; ++p) prepared.push_back(cpu::prepare_fp8_scales(s[static_cast<std::size_t>(p)].data(), heights[p], in));
      REQUIRE(prepared[2].wide[0] == 1);
      REQUIRE(prepared[0].wide[0] == 0);
      for (const std::int64_t n : n_values) {
        INFO("threads " << threads << ", in " << in << ", n " << n);
        const std::vector<float> x = random_x(rng, n, in);
        auto check = [&]<class View>(const std::array<View, 3>& views, const char* format) {
          INFO(format);
          std::vector<std::vector<float>> fused, alone;
          for (int p = 0; p < 3; ++p) {
            fused.push_back(poisoned(n * heights[p]));
            alone.push_back(poisoned(n * heights[p]));
            cpu::linear(x.data(), n, views[static_cast<std::size_t>(p)], alone.back().data(), pool);
          }
          cpu::linear_fused(x.data(), n, in, views, std::array<float*, 3>{fused[0].data(), fused[1].data(), fused[2].data()}, pool);
          const std::array<View, 2> pair{views[0], views[1]};
          std::vector<float> g = poisoned(n * heights[0]), u = poisoned(n * heights[1]);
          cpu::linear_fused(x.data(), n, in, pair, std::array<float*, 2>{g.data(), u.data()}, pool);
          for (int p = 0; p < 3; ++p) {
            REQUIRE(std::memcmp(fused[static_cast<std::size_t>(p)].data(), alone[static_cast<std::size_t>(p)].data(),
                                fused[static_cast<std::size_t>(p)].size() * sizeof(float)) == 0);
            for (float v : fused[static_cast<std::size_t>(p)]) REQUIRE(std::bit_cast<std::uint32_t>(v) != poison_bits);
          }
          REQUIRE(std::memcmp(g.data(), alone[0].data(), g.size() * sizeof(float)) == 0);
          REQUIRE(std::memcmp(u.data(), alone[1].data(), u.size() * sizeof(float)) == 0);
        };
        std::array<cpu::PlainLinear<bf16>, 3> bf16_views;
        std::array<cpu::PlainLinear<float>, 3> f32_views;
        std::array<cpu::Fp8Linear, 3> fp8_views;
        for (int p = 0; p < 3; ++p) {
          const auto i = static_cast<std::size_t>(p);
          bf16_views[i] = {w[i].data(), heights[p], in};
          f32_views[i] = {wf[i].data(), heights[p], in};
          fp8_views[i] = cpu::fp8_linear_view(q[i].data(), prepared[i], heights[p], in);
        }
        check(bf16_views, "bf16");
        check(f32_views, "fp32");
        check(fp8_views, "fp8");
        // An fp8 model's weight that the checkpoint left in bf16 runs the bf16 path, bit for bit.
        std::array<cpu::Fp8Linear, 3> mixed = fp8_views;
        mixed[1] = cpu::Fp8Linear{nullptr, nullptr, nullptr, heights[1], in, w[1].data()};
        std::vector<float> y_mixed = poisoned(n * heights[1]), y_bf16 = poisoned(n * heights[1]);
        std::vector<float> y0 = poisoned(n * heights[0]), y2 = poisoned(n * heights[2]);
        cpu::linear_fused(x.data(), n, in, mixed, std::array<float*, 3>{y0.data(), y_mixed.data(), y2.data()}, pool);
        cpu::linear(x.data(), n, bf16_views[1], y_bf16.data(), pool);
        REQUIRE(std::memcmp(y_mixed.data(), y_bf16.data(), y_bf16.size() * sizeof(float)) == 0);
      }
    }
  }
  // Mismatched inputs and overlapping outputs are named.
  cpu::ThreadPool pool(1);
  std::vector<bf16> w(64 * 8);
  std::vector<float> x(16), y(64);
  const std::array<cpu::PlainLinear<bf16>, 2> views{cpu::PlainLinear<bf16>{w.data(), 8, 8}, cpu::PlainLinear<bf16>{w.data(), 8, 16}};
  CHECK_THROWS_WITH(cpu::linear_fused(x.data(), 1, 8, views, std::array<float*, 2>{y.data(), y.data() + 8}, pool),
                    Catch::Contains("weight 1 has 16 input columns, x has 8"));
  const std::array<cpu::PlainLinear<bf16>, 2> same{views[0], views[0]};
  CHECK_THROWS_WITH(cpu::linear_fused(x.data(), 1, 8, same, std::array<float*, 2>{y.data(), y.data() + 4}, pool),
                    Catch::Contains("outputs 0 and 1 overlap"));
}
