// Property tests of qwen/core/numeric.hpp that need no CUDA. The expectations come from an
// independent model: each format's values are computed from their fields with std::ldexp in
// double, and float -> narrow conversion is "the nearest value in the sorted table of all codes,
// ties to the even code", found by binary search. The bit-for-bit comparison with CUDA's own
// conversions is tests/cuda/test_numeric_cuda_reference.cpp.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "qwen/core/numeric.hpp"

namespace {

using qwen::bf16;
using qwen::fp16;
using qwen::fp8_e4m3;
using qwen::Saturation;

constexpr std::uint32_t float_bits(float x) { return std::bit_cast<std::uint32_t>(x); }
constexpr float bits_float(std::uint32_t u) { return std::bit_cast<float>(u); }

// Compile-time spot checks: the conversions are constexpr.
static_assert(bf16::from_float(1.0f).bits == 0x3f80);
static_assert(bf16::from_bits(0x3f80).to_float() == 1.0f);
static_assert(fp16::from_float(1.0f).bits == 0x3c00);
static_assert(fp16::from_bits(0x0001).to_float() == 0x1p-24f);
static_assert(fp8_e4m3::from_float(448.0f, Saturation::none).bits == 0x7e);
static_assert(fp8_e4m3::from_bits(0x01).to_float() == 0x1p-9f);
static_assert(qwen::to_float(fp8_e4m3{0x38}) == 1.0f);

// One narrow binary format described by its fields, independently of numeric.hpp.
struct Format {
  int exp_bits;
  int mant_bits;
  std::uint32_t max_finite_code;  // largest finite magnitude code
  [[nodiscard]] int bias() const { return (1 << (exp_bits - 1)) - 1; }
  [[nodiscard]] std::uint32_t sign_bit() const { return 1u << (exp_bits + mant_bits); }
  // Value of a magnitude code read with the plain IEEE field formula, ignoring special values;
  // max_finite_code + 1 reads as the next step up (2^128 for bf16, 2^16 for fp16, 480 for e4m3).
  [[nodiscard]] double value(std::uint32_t code) const {
    const int field = static_cast<int>(code >> mant_bits);
    const double mantissa = static_cast<double>(code & ((1u << mant_bits) - 1));
    if (field == 0) return std::ldexp(mantissa, 1 - bias() - mant_bits);
    return std::ldexp(1.0 + std::ldexp(mantissa, -mant_bits), field - bias());
  }
};
const Format bf16_format{8, 7, 0x7f7f};
const Format fp16_format{5, 10, 0x7bff};
const Format e4m3_format{4, 3, 0x7e};

// Nearest magnitude code to |x| (finite), ties to the even code; may return max_finite_code + 1
// (the "next step up") and returns max_finite_code + 2 for anything beyond that step.
std::uint32_t nearest_code(const Format& f, const std::vector<double>& table, double magnitude) {
  const auto above = std::lower_bound(table.begin(), table.end(), magnitude);
  if (above == table.end()) return f.max_finite_code + 2;
  const auto hi = static_cast<std::uint32_t>(above - table.begin());
  if (*above == magnitude || hi == 0) return hi;
  const std::uint32_t lo = hi - 1;
  const double to_lo = magnitude - table[lo];
  const double to_hi = table[hi] - magnitude;
  if (to_lo != to_hi) return to_lo < to_hi ? lo : hi;
  return (lo % 2 == 0) ? lo : hi;
}

std::vector<double> code_table(const Format& f) {
  std::vector<double> table;
  for (std::uint32_t c = 0; c <= f.max_finite_code + 1; ++c) table.push_back(f.value(c));
  return table;
}

// Expected bits of from_float(x) under the model. For bf16/fp16 the next step up is infinity.
std::uint32_t expected_ieee(const Format& f, const std::vector<double>& table, float x, std::uint32_t nan_bits) {
  if (std::isnan(x)) return nan_bits;
  const std::uint32_t sign = std::signbit(x) ? f.sign_bit() : 0;
  const std::uint32_t inf_code = f.max_finite_code + 1;
  if (std::isinf(x)) return sign | inf_code;
  return sign | std::min(nearest_code(f, table, std::fabs(static_cast<double>(x))), inf_code);
}

std::uint32_t expected_e4m3(const std::vector<double>& table, float x, Saturation saturation) {
  if (std::isnan(x)) return 0x7f;
  const std::uint32_t sign = std::signbit(x) ? 0x80 : 0;
  std::uint32_t code = std::isinf(x) ? 0xff : nearest_code(e4m3_format, table, std::fabs(static_cast<double>(x)));
  if (code > 0x7e) code = saturation == Saturation::finite ? 0x7e : 0x7f;
  return sign | code;
}

// Floats to convert: random bit patterns (every exponent, NaNs and infinities included), random
// values whose exponent lies in [min_exp, max_exp] (the interesting range of the target), and
// every halfway point between adjacent codes with its float neighbours, both signs.
std::vector<float> probe_floats(const std::vector<double>& table, int min_exp, int max_exp) {
  std::vector<float> xs;
  std::mt19937_64 rng(0x5eed'0001);
  for (int i = 0; i < 200'000; ++i) xs.push_back(bits_float(static_cast<std::uint32_t>(rng())));
  for (int i = 0; i < 200'000; ++i) {
    const auto r = rng();
    const int exponent = min_exp + static_cast<int>((r >> 32) % static_cast<std::uint64_t>(max_exp - min_exp + 1));
    const auto mantissa = static_cast<std::uint32_t>(r & 0x7f'ffffu);
    const std::uint32_t sign = (r >> 31) & 1u ? 0x8000'0000u : 0u;
    xs.push_back(bits_float(sign | (static_cast<std::uint32_t>(exponent + 127) << 23) | mantissa));
  }
  for (std::size_t c = 0; c + 1 < table.size(); ++c) {
    const auto mid = static_cast<float>((table[c] + table[c + 1]) / 2);
    REQUIRE(static_cast<double>(mid) == (table[c] + table[c + 1]) / 2);  // halfway points are floats
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY), static_cast<float>(table[c])})
      for (float s : {x, -x}) xs.push_back(s);
  }
  for (float x : {0.0f, -0.0f, INFINITY, -INFINITY, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min()})
    for (float s : {x, -x}) xs.push_back(s);
  for (std::uint32_t nan : {0x7fc0'0000u, 0xffc0'0000u, 0x7f80'0001u, 0xff80'0001u, 0x7fa0'0000u, 0x7fff'ffffu})
    xs.push_back(bits_float(nan));
  return xs;
}

}  // namespace

TEST_CASE("numeric: known values", "[numeric]") {
  // bf16
  CHECK(bf16::from_float(1.0f).bits == 0x3f80);
  CHECK(bf16::from_float(-2.0f).bits == 0xc000);
  CHECK(bf16::from_float(0x1p-133f).bits == 0x0001);                // smallest subnormal
  CHECK(bf16::from_float(0x1.fep127f).bits == 0x7f7f);              // largest finite
  CHECK(bf16::from_bits(0x7f7f).to_float() == 0x1.fep127f);
  CHECK(bf16::from_float(0x1.ffp127f).bits == 0x7f80);              // the overflow tie rounds to inf
  CHECK(bf16::from_float(std::nextafter(0x1.ffp127f, 0.0f)).bits == 0x7f7f);
  CHECK(bf16::from_float(-INFINITY).bits == 0xff80);
  CHECK(bf16::from_float(bits_float(0xffc0'1234u)).bits == 0x7fff);  // NaN: canonical, sign dropped
  CHECK(float_bits(bf16::from_bits(0xff81).to_float()) == 0xff81'0000u);  // NaN payload kept
  CHECK(float_bits(bf16::from_float(-0.0f).to_float()) == 0x8000'0000u);

  // fp16
  CHECK(fp16::from_float(1.0f).bits == 0x3c00);
  CHECK(fp16::from_float(65504.0f).bits == 0x7bff);
  CHECK(fp16::from_float(65519.996f).bits == 0x7bff);
  CHECK(fp16::from_float(65520.0f).bits == 0x7c00);
  CHECK(fp16::from_float(0x1p-24f).bits == 0x0001);
  CHECK(fp16::from_float(0x1p-14f).bits == 0x0400);                 // smallest normal
  CHECK(fp16::from_float(0x1.ff8p-15f).bits == 0x03ff);             // largest subnormal
  CHECK(fp16::from_float(0x1.ffcp-15f).bits == 0x0400);             // it + half a quantum: tie, to even 0x400
  CHECK(fp16::from_bits(0x03ff).to_float() == 0x1.ff8p-15f);
  CHECK(fp16::from_bits(0xfc00).to_float() == -INFINITY);
  CHECK(float_bits(fp16::from_bits(0xfe01).to_float()) == 0x7fff'ffffu);
  CHECK(fp16::from_float(NAN).bits == 0x7fff);

  // fp8 e4m3
  for (Saturation s : {Saturation::finite, Saturation::none}) {
    CHECK(fp8_e4m3::from_float(1.0f, s).bits == 0x38);
    CHECK(fp8_e4m3::from_float(-448.0f, s).bits == 0xfe);
    CHECK(fp8_e4m3::from_float(464.0f, s).bits == 0x7e);             // tie between 448 and 480: even
    CHECK(fp8_e4m3::from_float(0x1p-9f, s).bits == 0x01);
    CHECK(fp8_e4m3::from_float(0x1.cp-7f, s).bits == 0x07);          // largest subnormal 7 * 2^-9
    CHECK(fp8_e4m3::from_float(0x1p-6f, s).bits == 0x08);            // smallest normal
    CHECK(fp8_e4m3::from_float(-NAN, s).bits == 0x7f);
  }
  CHECK(fp8_e4m3::from_float(std::nextafter(464.0f, INFINITY), Saturation::finite).bits == 0x7e);
  CHECK(fp8_e4m3::from_float(std::nextafter(464.0f, INFINITY), Saturation::none).bits == 0x7f);
  CHECK(fp8_e4m3::from_float(-1e30f, Saturation::finite).bits == 0xfe);
  CHECK(fp8_e4m3::from_float(-1e30f, Saturation::none).bits == 0xff);
  CHECK(fp8_e4m3::from_float(INFINITY, Saturation::finite).bits == 0x7e);
  CHECK(fp8_e4m3::from_float(INFINITY, Saturation::none).bits == 0x7f);
  CHECK(fp8_e4m3::from_float(-INFINITY, Saturation::none).bits == 0xff);
  CHECK(fp8_e4m3::from_bits(0x7e).to_float() == 448.0f);
  CHECK(fp8_e4m3::from_bits(0x80).to_float() == 0.0f);
  CHECK(std::signbit(fp8_e4m3::from_bits(0x80).to_float()));
  CHECK(std::isnan(fp8_e4m3::from_bits(0xff).to_float()));
}

TEST_CASE("numeric: round to nearest even, ties built by hand", "[numeric]") {
  // Halfway between 1 and the next value (1 + 2^-M): 1 is even and wins; halfway between
  // 1 + 2^-M and 1 + 2^(1-M): the upper one is even and wins; one float ulp off a tie decides.
  CHECK(bf16::from_float(1.0f + 0x1p-8f).bits == 0x3f80);
  CHECK(bf16::from_float(1.0f + 3 * 0x1p-8f).bits == 0x3f82);
  CHECK(bf16::from_float(std::nextafter(1.0f + 0x1p-8f, 2.0f)).bits == 0x3f81);
  CHECK(bf16::from_float(std::nextafter(1.0f + 3 * 0x1p-8f, 0.0f)).bits == 0x3f81);
  CHECK(bf16::from_float(-(1.0f + 0x1p-8f)).bits == 0xbf80);
  CHECK(bf16::from_float(3 * 0x1p-134f).bits == 0x0002);  // subnormal tie between 1 and 2 quanta

  CHECK(fp16::from_float(1.0f + 0x1p-11f).bits == 0x3c00);
  CHECK(fp16::from_float(1.0f + 3 * 0x1p-11f).bits == 0x3c02);
  CHECK(fp16::from_float(std::nextafter(1.0f + 0x1p-11f, 2.0f)).bits == 0x3c01);
  CHECK(fp16::from_float(0x1p-25f).bits == 0x0000);       // half the smallest subnormal: to 0
  CHECK(fp16::from_float(std::nextafter(0x1p-25f, 1.0f)).bits == 0x0001);
  CHECK(fp16::from_float(3 * 0x1p-25f).bits == 0x0002);
  CHECK(fp16::from_float(-3 * 0x1p-25f).bits == 0x8002);

  for (Saturation s : {Saturation::finite, Saturation::none}) {
    CHECK(fp8_e4m3::from_float(1.0f + 0x1p-4f, s).bits == 0x38);
    CHECK(fp8_e4m3::from_float(1.0f + 3 * 0x1p-4f, s).bits == 0x3a);
    CHECK(fp8_e4m3::from_float(std::nextafter(1.0f + 0x1p-4f, 2.0f), s).bits == 0x39);
    CHECK(fp8_e4m3::from_float(0x1p-10f, s).bits == 0x00);
    CHECK(fp8_e4m3::from_float(std::nextafter(0x1p-10f, 1.0f), s).bits == 0x01);
    CHECK(fp8_e4m3::from_float(3 * 0x1p-10f, s).bits == 0x02);
    CHECK(fp8_e4m3::from_float(15 * 0x1p-10f, s).bits == 0x08);  // largest subnormal + half: to the normal 2^-6
  }
}

TEST_CASE("numeric: every pattern to float matches the field formula and round-trips", "[numeric]") {
  struct Case {
    const Format* format;
    std::uint32_t patterns;
    float (*to_float)(std::uint32_t);
    std::uint32_t (*from_float)(float);
  };
  const Case cases[] = {
      {&bf16_format, 1u << 16, [](std::uint32_t b) { return bf16::from_bits(static_cast<std::uint16_t>(b)).to_float(); },
       [](float x) -> std::uint32_t { return bf16::from_float(x).bits; }},
      {&fp16_format, 1u << 16, [](std::uint32_t b) { return fp16::from_bits(static_cast<std::uint16_t>(b)).to_float(); },
       [](float x) -> std::uint32_t { return fp16::from_float(x).bits; }},
      {&e4m3_format, 1u << 8, [](std::uint32_t b) { return fp8_e4m3::from_bits(static_cast<std::uint8_t>(b)).to_float(); },
       [](float x) -> std::uint32_t { return fp8_e4m3::from_float(x, Saturation::finite).bits; }},
      {&e4m3_format, 1u << 8, [](std::uint32_t b) { return fp8_e4m3::from_bits(static_cast<std::uint8_t>(b)).to_float(); },
       [](float x) -> std::uint32_t { return fp8_e4m3::from_float(x, Saturation::none).bits; }},
  };
  for (const Case& c : cases) {
    const Format& f = *c.format;
    const std::uint32_t inf_code = f.max_finite_code + 1;
    const bool has_inf = f.exp_bits != 4;  // e4m3fn spends the top code on NaN instead
    std::uint32_t checked = 0, nans = 0;
    for (std::uint32_t b = 0; b < c.patterns; ++b) {
      const std::uint32_t code = b & (f.sign_bit() - 1);
      const float x = c.to_float(b);
      const bool expect_nan = has_inf ? code > inf_code : code == inf_code;
      if (expect_nan) {
        CHECK(std::isnan(x));
        ++nans;
        continue;
      }
      double expected = (has_inf && code == inf_code) ? INFINITY : f.value(code);
      if (b & f.sign_bit()) expected = -expected;
      CHECK(static_cast<double>(x) == expected);
      CHECK(std::signbit(x) == ((b & f.sign_bit()) != 0));
      CHECK(c.from_float(x) == b);
      ++checked;
    }
    CHECK(checked + nans == c.patterns);
  }
}

TEST_CASE("numeric: to_float is strictly monotonic over codes and odd in the sign", "[numeric]") {
  auto check = [](std::uint32_t max_code, std::uint32_t sign_bit, auto to_float) {
    for (std::uint32_t c = 0; c <= max_code; ++c) {
      if (c > 0) CHECK(to_float(c - 1) < to_float(c));
      CHECK(to_float(c | sign_bit) == -to_float(c));
    }
  };
  check(0x7f80, 0x8000, [](std::uint32_t b) { return bf16::from_bits(static_cast<std::uint16_t>(b)).to_float(); });
  check(0x7c00, 0x8000, [](std::uint32_t b) { return fp16::from_bits(static_cast<std::uint16_t>(b)).to_float(); });
  check(0x7e, 0x80, [](std::uint32_t b) { return fp8_e4m3::from_bits(static_cast<std::uint8_t>(b)).to_float(); });
}

TEST_CASE("numeric: from_float equals the nearest-even model on random and halfway floats", "[numeric]") {
  const auto bf16_table = code_table(bf16_format);
  const auto fp16_table = code_table(fp16_format);
  const auto e4m3_table = code_table(e4m3_format);

  std::size_t count = 0;
  for (float x : probe_floats(bf16_table, -126, 127)) {
    const std::uint32_t got = bf16::from_float(x).bits;
    const std::uint32_t want = expected_ieee(bf16_format, bf16_table, x, 0x7fff);
    if (got != want) FAIL_CHECK("bf16 from " << std::hexfloat << x << ": got " << got << ", want " << want);
    ++count;
  }
  for (float x : probe_floats(fp16_table, -26, 17)) {
    const std::uint32_t got = fp16::from_float(x).bits;
    const std::uint32_t want = expected_ieee(fp16_format, fp16_table, x, 0x7fff);
    if (got != want) FAIL_CHECK("fp16 from " << std::hexfloat << x << ": got " << got << ", want " << want);
    ++count;
  }
  for (float x : probe_floats(e4m3_table, -11, 10)) {
    for (Saturation s : {Saturation::finite, Saturation::none}) {
      const std::uint32_t got = fp8_e4m3::from_float(x, s).bits;
      const std::uint32_t want = expected_e4m3(e4m3_table, x, s);
      if (got != want)
        FAIL_CHECK("e4m3 (" << (s == Saturation::finite ? "satfinite" : "nosat") << ") from " << std::hexfloat << x
                            << ": got " << got << ", want " << want);
      ++count;
    }
  }
  CHECK(count > 1'500'000);
}

TEST_CASE("numeric: from_float is monotonic", "[numeric]") {
  // Sorted random finite floats must map to non-decreasing values.
  std::mt19937_64 rng(0x5eed'0002);
  std::vector<float> xs;
  while (xs.size() < 100'000) {
    const float x = bits_float(static_cast<std::uint32_t>(rng()));
    if (std::isfinite(x)) xs.push_back(x);
  }
  std::sort(xs.begin(), xs.end());
  for (std::size_t i = 1; i < xs.size(); ++i) {
    CHECK(bf16::from_float(xs[i - 1]).to_float() <= bf16::from_float(xs[i]).to_float());
    CHECK(fp16::from_float(xs[i - 1]).to_float() <= fp16::from_float(xs[i]).to_float());
    CHECK(fp8_e4m3::from_float(xs[i - 1], Saturation::finite).to_float() <=
          fp8_e4m3::from_float(xs[i], Saturation::finite).to_float());
  }
}

TEST_CASE("numeric: span conversions", "[numeric]") {
  const std::vector<float> in = {1.0f, -0.5f, 1.0f + 0x1p-8f, 3e38f};
  std::vector<qwen::bf16> mid(in.size(), bf16{0xdead});
  qwen::to_bf16(in, mid);
  for (std::size_t i = 0; i < in.size(); ++i) CHECK(mid[i].bits == bf16::from_float(in[i]).bits);
  std::vector<float> out(in.size(), NAN);
  qwen::to_float(std::span<const bf16>(mid), out);
  for (std::size_t i = 0; i < in.size(); ++i) CHECK(out[i] == mid[i].to_float());

  std::vector<qwen::bf16> short_out(3);
  CHECK_THROWS_AS(qwen::to_bf16(in, short_out), qwen::InvalidArgument);
  CHECK_THROWS_WITH(qwen::to_bf16(in, short_out), Catch::Contains("4 inputs, 3 outputs"));
  CHECK_THROWS_AS(qwen::to_float(std::span<const bf16>(mid), std::span<float>(out).first(2)), qwen::InvalidArgument);
}
