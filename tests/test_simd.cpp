// kernels/cpu/simd.hpp, the one lane type of the CPU kernels: every kernel names the same level;
// the fp8 decode (both forms) against fp8_e4m3::to_float for every code in every lane, partial
// loads included; bf16 loads and the bf16 store against numeric.hpp; sum / reduce_add /
// reduce_rows against a scalar model of the fixed tree, bit for bit. Built for this machine's
// target and for the AVX2 and baseline ones (qwen-tests-kernels-*), so each level is checked.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <qwen/core/numeric.hpp>
#include <qwen/kernels/cpu/attention.hpp>
#include <qwen/kernels/cpu/fp8_dequant.hpp>
#include <qwen/kernels/cpu/linear.hpp>
#include <qwen/kernels/cpu/sampling_scan.hpp>
#include <qwen/kernels/cpu/simd.hpp>

namespace {

using qwen::bf16;
using qwen::fp8_e4m3;
namespace cpu = qwen::kernels::cpu;
namespace simd = cpu::simd;
using Simd = simd::Simd;
constexpr int width = Simd::width;

std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }

std::vector<float> lanes_of(Simd::V v) {
  std::vector<float> out(width);
  Simd::store(out.data(), v);
  return out;
}

// The tree Simd documents: pairs (l, l + w/2) for w = width, width/2, ..., 2.
float tree_model(std::vector<float> x) {
  for (std::size_t w = x.size(); w > 1; w /= 2)
    for (std::size_t l = 0; l < w / 2; ++l) x[l] = x[l] + x[l + w / 2];
  return x[0];
}

// Floats of widely spread magnitudes and both signs, so that the order of additions shows.
std::vector<float> spread_values(std::mt19937& rng, std::size_t n) {
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = std::ldexp(mantissa(rng), static_cast<int>(rng() % 40) - 20) * (rng() % 2 ? -1.0f : 1.0f);
  return x;
}

}  // namespace

TEST_CASE("simd: every CPU kernel is compiled for the one vector level", "[simd]") {
  STATIC_REQUIRE(std::is_same_v<cpu::linear_detail::Lanes, Simd>);
  STATIC_REQUIRE(std::is_same_v<cpu::attention_detail::Simd, Simd>);
  STATIC_REQUIRE(std::is_same_v<cpu::sampling_scan::Simd, Simd>);
  const std::string_view isa = Simd::isa;
  CHECK(cpu::linear_isa == isa);
  CHECK(cpu::fp8_dequant_isa == isa);
  CHECK((isa == "avx512" || isa == "avx2" || isa == "portable"));
#if defined(QWEN_EXPECTED_ISA)
  CHECK(isa == QWEN_EXPECTED_ISA);
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  CHECK(isa == "avx512");
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  CHECK(isa == "avx2");
#endif
  SUCCEED("vector level: " << isa << ", " << width << " lanes");
}

TEST_CASE("simd: the fp8 lane decode equals fp8_e4m3::to_float for every code, every lane, every count", "[simd]") {
  // Window o holds codes o, o + 1, ...: over all o every code visits every lane.
  for (int o = 0; o < 256; ++o) {
    std::uint8_t codes[width];
    for (int l = 0; l < width; ++l) codes[l] = static_cast<std::uint8_t>(o + l);
    for (int count = 0; count <= width; ++count) {
      const auto scaled = lanes_of(count == width ? Simd::load_fp8_scaled(codes) : Simd::load_fp8_scaled(codes, count));
      const auto exact = lanes_of(count == width ? Simd::load_fp8(codes) : Simd::load_fp8(codes, count));
      for (int l = 0; l < width; ++l) {
        INFO("code 0x" << std::hex << int(codes[l]) << std::dec << ", lane " << l << ", count " << count);
        if (l >= count) {
          REQUIRE(bits_of(scaled[l]) == 0);  // +0
          REQUIRE(bits_of(exact[l]) == 0);
          continue;
        }
        const float value = fp8_e4m3::from_bits(codes[l]).to_float();
        // load_fp8: fp8_e4m3::to_float itself, NaN codes (0x7fffffff) included.
        REQUIRE(bits_of(exact[l]) == bits_of(value));
        // load_fp8_scaled: value * 2^-8 (exact); the NaN codes give +-480 * 2^-8.
        const bool nan_code = (codes[l] & 0x7f) == 0x7f;
        const float expected = nan_code ? ((codes[l] & 0x80) ? -simd::fp8_nan_scaled : simd::fp8_nan_scaled)
                                        : value / simd::fp8_exponent_offset;
        REQUIRE(bits_of(scaled[l]) == bits_of(expected));
        REQUIRE(bits_of(simd::fp8_scaled_lane(codes[l])) == bits_of(expected));
        if ((codes[l] & 0x7f) != 0) REQUIRE(std::fpclassify(scaled[l]) == FP_NORMAL);  // no subnormal operand
      }
    }
  }
  CHECK(simd::fp8_nan_scaled * simd::fp8_exponent_offset == simd::fp8_nan_decoded);
  CHECK(fp8_e4m3::from_bits(0x7e).to_float() < simd::fp8_nan_decoded);  // no finite code decodes there
}

TEST_CASE("simd: float and bf16 loads are exact, partial loads zero-fill", "[simd]") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    float f[width];
    bf16 h[width];
    for (int l = 0; l < width; ++l) {
      f[l] = std::bit_cast<float>(static_cast<std::uint32_t>(rng()));  // any pattern, NaN included
      h[l] = bf16::from_bits(static_cast<std::uint16_t>(rng()));
    }
    for (int count = 0; count <= width; ++count) {
      const auto fl = lanes_of(count == width ? Simd::load(f) : Simd::load(f, count));
      const auto hl = lanes_of(count == width ? Simd::load(h) : Simd::load(h, count));
      for (int l = 0; l < width; ++l) {
        INFO("lane " << l << ", count " << count);
        REQUIRE(bits_of(fl[l]) == (l < count ? bits_of(f[l]) : 0u));
        REQUIRE(bits_of(hl[l]) == (l < count ? static_cast<std::uint32_t>(h[l].bits) << 16 : 0u));
      }
    }
  }
}

TEST_CASE("simd: the bf16 store is bf16::from_float on every lane", "[simd]") {
  std::mt19937 rng(11);
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::max(), -std::numeric_limits<float>::denorm_min(),
                            std::bit_cast<float>(0x3f80'8000u),  // halfway, rounds down to even
                            std::bit_cast<float>(0x3f81'8000u),  // halfway, rounds up to even
                            std::bit_cast<float>(0x7f7f'8000u),  // halfway past the largest bf16: inf
                            std::bit_cast<float>(0xffc0'1234u),  // negative NaN with payload
                            std::bit_cast<float>(0x7f80'0001u)}; // signalling NaN
  for (int trial = 0; trial < 20000; ++trial) {
    float f[width];
    for (int l = 0; l < width; ++l) {
      const std::uint32_t r = static_cast<std::uint32_t>(rng());
      f[l] = r % 7 == 0 ? specials[r % std::size(specials)] : std::bit_cast<float>(r);
    }
    bf16 out[width];
    Simd::store(out, Simd::load(f));
    for (int l = 0; l < width; ++l) {
      INFO("input 0x" << std::hex << bits_of(f[l]));
      REQUIRE(out[l].bits == bf16::from_float(f[l]).bits);
    }
  }
}

TEST_CASE("simd: sum, reduce_add and reduce_rows add in the one documented tree, bit for bit", "[simd]") {
  std::mt19937 rng(3);
  int order_matters = 0;  // vectors where adding left to right gives other bits: the test has power
  for (int trial = 0; trial < 20000; ++trial) {
    const auto x = spread_values(rng, width);
    const Simd::V v = Simd::load(x.data());
    const float model = tree_model(x);
    INFO("trial " << trial);
    REQUIRE(bits_of(Simd::reduce_add(v)) == bits_of(model));
    REQUIRE(bits_of(Simd::sum(v)) == bits_of(model));
    float sequential = 0;
    for (float e : x) sequential += e;
    order_matters += bits_of(sequential) != bits_of(model);
  }
  CHECK(order_matters > 1000);

  for (int trial = 0; trial < 2000; ++trial) {
    const auto x = spread_values(rng, static_cast<std::size_t>(simd::reduce_rows_count * width));
    Simd::V rows[simd::reduce_rows_count];
    for (int s = 0; s < simd::reduce_rows_count; ++s) rows[s] = Simd::load(x.data() + s * width);
    float out[simd::reduce_rows_count];
    Simd::reduce_rows(rows, out);
    for (int s = 0; s < simd::reduce_rows_count; ++s) {
      INFO("trial " << trial << ", row " << s);
      REQUIRE(bits_of(out[s]) == bits_of(Simd::reduce_add(rows[s])));
    }
  }
}

TEST_CASE("simd: fma, reduce_max and first", "[simd]") {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    const auto a = spread_values(rng, width), b = spread_values(rng, width), c = spread_values(rng, width);
    const auto fused = lanes_of(Simd::fma(Simd::load(a.data()), Simd::load(b.data()), Simd::load(c.data())));
    const auto fmadd = lanes_of(Simd::fmadd(Simd::load(a.data()), Simd::load(b.data()), Simd::load(c.data())));
    float largest = a[0];
    for (int l = 0; l < width; ++l) {
      // One rounding on the vector levels, two (product, then sum) on the portable one.
      float expected = std::fma(a[l], b[l], c[l]);
      if (Simd::isa == "portable") {
        const volatile float product = a[l] * b[l];
        expected = product + c[l];
      }
      REQUIRE(bits_of(fused[l]) == bits_of(expected));
      REQUIRE(bits_of(fmadd[l]) == bits_of(expected));
      largest = std::max(largest, a[l]);
    }
    REQUIRE(Simd::reduce_max(Simd::load(a.data())) == largest);
    REQUIRE(bits_of(Simd::first(Simd::load(a.data()))) == bits_of(a[0]));
  }
}
