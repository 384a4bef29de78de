// kernels/cpu/fp8_dequant.hpp: the fast version against the scalar reference (bit for bit), the
// reference against a naive computation in double that decodes fp8 and rounds to bf16 on its
// own (no numeric.hpp), and the checked TensorView entry point's errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <type_traits>
#include <vector>

#include <qwen/kernels/cpu/fp8_dequant.hpp>

namespace {

using qwen::bf16;
using qwen::DType;
using qwen::fp8_e4m3;
using qwen::TensorView;
namespace cpu = qwen::kernels::cpu;

const std::int64_t ragged_sizes[] = {1, 17, 97, 128, 255, 300};

// Poison: NaN patterns the kernel never produces (its NaNs are 0x7fffffff / 0x7fff).
constexpr std::uint32_t poison_f32 = 0x7fc0'dead;
constexpr std::uint16_t poison_bf16 = 0xffc1;

template <class Out>
std::vector<Out> poisoned(std::int64_t n) {
  if constexpr (std::is_same_v<Out, float>)
    return std::vector<float>(static_cast<std::size_t>(n), std::bit_cast<float>(poison_f32));
  else
    return std::vector<bf16>(static_cast<std::size_t>(n), bf16{poison_bf16});
}

std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }
constexpr std::uint32_t canonical_nan_f32 = 0x7fff'ffff;
// The bits, with every float NaN folded into one pattern.
std::uint32_t folded_bits(float x) { return std::isnan(x) && bits_of(x) != poison_f32 ? canonical_nan_f32 : bits_of(x); }
std::uint32_t folded_bits(bf16 x) { return x.bits; }
std::uint32_t bits_of(bf16 x) { return x.bits; }

// ---- the naive model, independent of numeric.hpp -----------------------------------------------
double e4m3_value(std::uint8_t code) {  // NaN for S.1111.111
  const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
  double v = exponent == 0 ? std::ldexp(mantissa, -9) : std::ldexp(8 + mantissa, exponent - 10);
  if ((code & 0x7f) == 0x7f) v = NAN;
  return (code & 0x80) ? -v : v;
}
double scale_value(float s) { return s; }
double scale_value(bf16 s) { return std::bit_cast<float>(static_cast<std::uint32_t>(s.bits) << 16); }

// x rounded to bf16 (8 significant bits, exponent >= -126 with subnormal quantum 2^-133),
// ties to even, via nearbyint in the default rounding mode; returns the bf16 bits.
std::uint16_t bf16_model(float x) {
  if (std::isnan(x)) return 0x7fff;
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (std::isinf(x)) return sign | 0x7f80;
  if (x == 0) return sign;
  const double a = std::fabs(static_cast<double>(x));
  const int quantum = std::max(std::ilogb(a) - 7, -133);
  const double q = std::ldexp(std::nearbyint(std::ldexp(a, -quantum)), quantum);
  if (q > 0x1.fep127) return sign | 0x7f80;
  return sign | static_cast<std::uint16_t>(bits_of(static_cast<float>(q)) >> 16);
}

// The product is exact in double (4 x 24 significant bits), so one rounding to float equals the
// kernel's single float multiplication. Float NaNs are compared as NaN (the payload is not part
// of the contract); bf16 NaN must be 0x7fff.
template <std::int64_t Block, class Scale, class Out>
std::uint32_t naive_bits(const std::vector<fp8_e4m3>& w, const std::vector<Scale>& s, std::int64_t cols,
                         std::int64_t r, std::int64_t c) {
  const std::int64_t scale_cols = (cols + Block - 1) / Block;
  const double product = e4m3_value(w[r * cols + c].bits) * scale_value(s[(r / Block) * scale_cols + c / Block]);
  const auto f = static_cast<float>(product);
  if constexpr (std::is_same_v<Out, float>)
    return std::isnan(f) ? canonical_nan_f32 : bits_of(f);
  else
    return bf16_model(f);
}

// ---- random inputs -----------------------------------------------------------------------------
std::vector<fp8_e4m3> random_weight(std::mt19937_64& rng, std::int64_t n) {
  std::vector<fp8_e4m3> w(static_cast<std::size_t>(n));
  for (auto& x : w) x = fp8_e4m3::from_bits(static_cast<std::uint8_t>(rng()));  // every code, NaN included
  return w;
}

// Checkpoint-like scales (2^-16 .. 2^-2, random sign and mantissa); every eighth block, never the
// first, gets one that pushes products into float subnormals or past float's range.
template <class Scale>
std::vector<Scale> random_scales(std::mt19937_64& rng, std::int64_t n) {
  std::vector<Scale> s(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < s.size(); ++i) {
    const std::uint64_t r = rng();
    int exponent = -16 + static_cast<int>(r % 15);
    if (i % 8 == 7) exponent = (r >> 16) % 2 ? -145 : 121;
    const float mantissa = 1.0f + static_cast<float>((r >> 20) & 0x7f'ffff) * 0x1p-23f;
    const float f = std::ldexp(mantissa, exponent) * ((r >> 60) & 1 ? -1.0f : 1.0f);
    if constexpr (std::is_same_v<Scale, float>)
      s[i] = f;
    else
      s[i] = bf16::from_float(f);
  }
  return s;
}

template <std::int64_t Block, class Scale, class Out>
void check_sizes(std::mt19937_64& rng, std::int64_t rows, std::int64_t cols) {
  const std::int64_t n = rows * cols;
  const auto w = random_weight(rng, n);
  const auto s = random_scales<Scale>(rng, ((rows + Block - 1) / Block) * ((cols + Block - 1) / Block));
  auto reference = poisoned<Out>(n);
  auto fast = poisoned<Out>(n);
  cpu::fp8_dequant_reference<Block>(w.data(), s.data(), reference.data(), rows, cols);
  cpu::fp8_dequant<Block>(w.data(), s.data(), fast.data(), rows, cols);

  // ordinary: elements whose block has a checkpoint-like scale; most of them must be nonzero.
  std::int64_t fast_mismatch = 0, naive_mismatch = 0, nan_out = 0, nan_in = 0, ordinary = 0, ordinary_nonzero = 0;
  const std::int64_t scale_cols = (cols + Block - 1) / Block;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::uint32_t ref = bits_of(reference[r * cols + c]);
      fast_mismatch += bits_of(fast[r * cols + c]) != ref;  // exact bits, NaN payloads included
      naive_mismatch += naive_bits<Block, Scale, Out>(w, s, cols, r, c) != folded_bits(reference[r * cols + c]);
      const float value = qwen::to_float(reference[r * cols + c]);
      nan_out += std::isnan(value);
      nan_in += (w[r * cols + c].bits & 0x7f) == 0x7f;
      const double scale = std::fabs(scale_value(s[(r / Block) * scale_cols + c / Block]));
      if (scale >= 0x1p-16 && scale < 0x1p-1) {
        ++ordinary;
        ordinary_nonzero += value != 0;
      }
    }
  }
  INFO("rows " << rows << " cols " << cols << " block " << Block << " scale " << (std::is_same_v<Scale, float> ? "f32" : "bf16")
               << " out " << (std::is_same_v<Out, float> ? "f32" : "bf16") << " isa " << cpu::fp8_dequant_isa);
  CHECK(fast_mismatch == 0);
  CHECK(naive_mismatch == 0);
  CHECK(nan_out == nan_in);  // also fails on any poison left behind
  CHECK(ordinary > 0);
  CHECK(ordinary_nonzero >= ordinary * 9 / 10);  // not all zero: only codes 0x00 / 0x80 give 0
}

}  // namespace

#if defined(QWEN_EXPECTED_ISA)
TEST_CASE("fp8_dequant: compiled for the intended vector path", "[fp8_dequant]") {
  REQUIRE(cpu::fp8_dequant_isa == QWEN_EXPECTED_ISA);
}
#endif

TEST_CASE("fp8_dequant: fast equals reference equals naive double, ragged sizes", "[fp8_dequant]") {
  std::mt19937_64 rng(0xf8'0001);
  for (std::int64_t rows : ragged_sizes) {
    for (std::int64_t cols : ragged_sizes) {
      check_sizes<128, float, float>(rng, rows, cols);
      check_sizes<128, float, bf16>(rng, rows, cols);
      check_sizes<128, bf16, float>(rng, rows, cols);
      check_sizes<128, bf16, bf16>(rng, rows, cols);
    }
  }
}

TEST_CASE("fp8_dequant: other block sizes", "[fp8_dequant]") {
  std::mt19937_64 rng(0xf8'0002);
  for (std::int64_t rows : {1, 33, 70}) {
    for (std::int64_t cols : {1, 31, 65, 100}) {
      check_sizes<32, bf16, bf16>(rng, rows, cols);
      check_sizes<1, float, float>(rng, rows, cols);
      check_sizes<24, float, bf16>(rng, rows, cols);
    }
  }
}

TEST_CASE("fp8_dequant: known values", "[fp8_dequant]") {
  // 2x130 weight: two column blocks; scales 0.5 and 3 for the first row block.
  std::vector<fp8_e4m3> w(2 * 130, fp8_e4m3::from_bits(0x38));  // 1.0
  w[0] = fp8_e4m3::from_bits(0x7e);                             // 448
  w[129] = fp8_e4m3::from_bits(0xb9);                           // -1.125
  const std::vector<float> s = {0.5f, 3.0f};
  std::vector<float> out(w.size(), NAN);
  cpu::fp8_dequant(w.data(), s.data(), out.data(), 2, 130);
  CHECK(out[0] == 224.0f);
  CHECK(out[1] == 0.5f);
  CHECK(out[128] == 3.0f);
  CHECK(out[129] == -3.375f);
  CHECK(out[130 + 129] == 3.0f);
}

TEST_CASE("fp8_dequant: TensorView entry point and its errors", "[fp8_dequant]") {
  std::mt19937_64 rng(0xf8'0003);
  const std::int64_t rows = 300, cols = 255;
  const auto w = random_weight(rng, rows * cols);
  const auto s = random_scales<bf16>(rng, 3 * 2);
  const TensorView weight(w.data(), DType::F8_E4M3, {rows, cols});
  const TensorView scale(s.data(), DType::BF16, {3, 2});

  auto via_view = poisoned<float>(rows * cols);
  auto via_pointer = poisoned<float>(rows * cols);
  cpu::fp8_dequant(weight, scale, std::span<float>(via_view));
  cpu::fp8_dequant_reference(w.data(), s.data(), via_pointer.data(), rows, cols);
  CHECK(std::memcmp(via_view.data(), via_pointer.data(), via_view.size() * sizeof(float)) == 0);

  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  std::span<float> out_span(out);
  using Catch::Contains;
  using qwen::InvalidArgument;
  CHECK_THROWS_AS(cpu::fp8_dequant(TensorView(w.data(), DType::U8, {rows, cols}), scale, out_span), InvalidArgument);
  CHECK_THROWS_WITH(cpu::fp8_dequant(TensorView(w.data(), DType::U8, {rows, cols}), scale, out_span),
                    Contains("weight must be F8_E4M3, is U8"));
  CHECK_THROWS_WITH(cpu::fp8_dequant(weight, TensorView(s.data(), DType::F16, {3, 2}), out_span),
                    Contains("weight_scale_inv must be F32 or BF16, is F16"));
  CHECK_THROWS_WITH(cpu::fp8_dequant(weight, TensorView(s.data(), DType::BF16, {2, 3}), out_span),
                    Contains("weight_scale_inv shape [2, 3]") && Contains("weight shape [300, 255]") &&
                        Contains("expected contiguous [3, 2]"));
  CHECK_THROWS_WITH(cpu::fp8_dequant(weight, TensorView(s.data(), DType::BF16, {3, 2}, {1, 3}), out_span),
                    Contains("(not contiguous)"));
  CHECK_THROWS_WITH(cpu::fp8_dequant(weight, TensorView(s.data(), DType::BF16, {6}), out_span),
                    Contains("weight_scale_inv shape [6]"));
  CHECK_THROWS_WITH(cpu::fp8_dequant(TensorView(w.data(), DType::F8_E4M3, {rows * cols}), scale, out_span),
                    Contains("contiguous [rows, cols] matrix, has shape [76500]"));
  CHECK_THROWS_WITH(cpu::fp8_dequant(weight, scale, out_span.first(100)),
                    Contains("output holds 100 elements, weight shape [300, 255] needs 76500"));
  // With 64-wide blocks the same scale tensor no longer fits.
  CHECK_THROWS_WITH(cpu::fp8_dequant<64>(weight, scale, out_span), Contains("expected contiguous [5, 4]"));

  CHECK_THROWS_WITH(cpu::fp8_dequant(w.data(), s.data(), out.data(), -1, cols), Contains("negative weight shape [-1, 255]"));
  CHECK_THROWS_AS(cpu::fp8_dequant_reference(w.data(), static_cast<const bf16*>(nullptr), out.data(), rows, cols),
                  InvalidArgument);
  // Empty weights are valid and write nothing.
  CHECK_NOTHROW(cpu::fp8_dequant(w.data(), s.data(), out.data(), 0, cols));
  CHECK_NOTHROW(cpu::fp8_dequant(TensorView(nullptr, DType::F8_E4M3, {0, 0}), TensorView(nullptr, DType::F32, {0, 0}),
                                 std::span<bf16>()));
}
