// qwen's scalar conversions (qwen/core/numeric.hpp) against CUDA's, bit for bit, NaNs included.
//
// Compiled by the host C++ compiler: cuda_bf16.h, cuda_fp16.h and cuda_fp8.h declare their
// conversions __host__ __device__ and implement the host side in plain C++, so no GPU, driver or
// CUDA runtime library is needed. Without those headers the program prints SKIPPED and returns 4
// (registered in ctest as SKIP_RETURN_CODE) -- unless the environment sets
// QWEN_REQUIRE_CUDA_REFERENCE=1 (CI does, on machines with the CUDA toolkit): then it prints
// FAILED and returns 1, so that a lost include path cannot turn the check into a silent skip.
// QWEN_TEST_HIDE_CUDA_HEADERS builds it as if the headers were absent (to test exactly that).
//
// Checked:
//   narrow -> float: every bf16, fp16 and fp8 e4m3 bit pattern.
//   float -> bf16, fp16, e4m3 (__NV_SATFINITE and __NV_NOSAT): random float bit patterns (every
//   exponent), random floats in the exponent range of each target, and edge cases: +-0, +-inf,
//   NaNs with assorted payloads, every halfway point between adjacent values of each target
//   (up to the overflow point past the largest finite) and its float neighbours, float
//   subnormal/normal boundaries.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string_view>
#include <vector>

#include "qwen/core/numeric.hpp"

#if __has_include(<cuda_bf16.h>) && __has_include(<cuda_fp16.h>) && __has_include(<cuda_fp8.h>) && \
    !defined(QWEN_TEST_HIDE_CUDA_HEADERS)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#define QWEN_HAVE_CUDA_HEADERS 1
#else
#define QWEN_HAVE_CUDA_HEADERS 0
#endif

namespace {

#if QWEN_HAVE_CUDA_HEADERS

using qwen::bf16;
using qwen::fp16;
using qwen::fp8_e4m3;
using qwen::Saturation;

std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }
float float_of(std::uint32_t u) { return std::bit_cast<float>(u); }

// ---- CUDA's side -------------------------------------------------------------------------------
float cuda_bf16_to_float(std::uint16_t b) {
  __nv_bfloat16_raw raw;
  raw.x = b;
  return __bfloat162float(__nv_bfloat16(raw));
}
float cuda_fp16_to_float(std::uint16_t b) {
  __half_raw raw;
  raw.x = b;
  return __half2float(__half(raw));
}
float cuda_e4m3_to_float(std::uint8_t b) {  // e4m3 -> half is exact, as CUDA's own float conversion does
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
}
std::uint16_t cuda_float_to_bf16(float x) { return static_cast<__nv_bfloat16_raw>(__float2bfloat16(x)).x; }
std::uint16_t cuda_float_to_fp16(float x) { return static_cast<__half_raw>(__float2half_rn(x)).x; }
std::uint8_t cuda_float_to_e4m3(float x, Saturation s) {
  return __nv_cvt_float_to_fp8(x, s == Saturation::finite ? __NV_SATFINITE : __NV_NOSAT, __NV_E4M3);
}

// ---- bookkeeping -------------------------------------------------------------------------------
struct Tally {
  const char* what;
  std::uint64_t checked = 0;
  std::uint64_t mismatches = 0;

  void compare(std::uint32_t input, std::uint32_t ours, std::uint32_t cuda) {
    ++checked;
    if (ours == cuda) return;
    if (++mismatches <= 8)
      std::printf("  MISMATCH %s: input 0x%08x: qwen 0x%08x, CUDA 0x%08x\n", what, input, ours, cuda);
  }
};

// All finite values of a narrow format (both signs, one zero), sorted ascending, in double, plus
// the points one step past the largest finite value either way, where an unbounded exponent would
// put the next value (2^128 for bf16, 2^16 for fp16, 480 for e4m3): the overflow boundary is
// the halfway point to it.
std::vector<double> sorted_finite_values(std::uint32_t patterns, float (*to_float)(std::uint32_t)) {
  std::vector<double> values;
  for (std::uint32_t b = 0; b < patterns; ++b) {
    const float x = to_float(b);
    if (std::isfinite(x) && !(x == 0 && std::signbit(x))) values.push_back(x);
  }
  std::sort(values.begin(), values.end());
  const double max = values.back(), below_max = values[values.size() - 2];
  values.push_back(max + (max - below_max));
  values.insert(values.begin(), -values.back());
  return values;
}

// Every halfway point between adjacent values, with its float neighbours. Each halfway point of
// these formats is a float (one more significant bit, and within float's range), checked here.
bool add_halfway_points(std::vector<float>& out, const std::vector<double>& sorted) {
  for (std::size_t i = 0; i + 1 < sorted.size(); ++i) {
    const double mid = (sorted[i] + sorted[i + 1]) / 2;
    const auto m = static_cast<float>(mid);
    if (static_cast<double>(m) != mid) {
      std::printf("  halfway point %a is not a float\n", mid);
      return false;
    }
    for (float x : {m, std::nextafter(m, -INFINITY), std::nextafter(m, INFINITY)}) out.push_back(x);
  }
  return true;
}

std::vector<float> edge_floats() {
  std::vector<float> xs;
  auto both = [&](float x) {
    xs.push_back(x);
    xs.push_back(-x);
  };
  for (float x : {0.0f, INFINITY, std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::denorm_min(), std::nextafter(std::numeric_limits<float>::min(), 0.0f),
                  0x1.ffp127f, std::nextafter(0x1.ffp127f, 0.0f), 0x1.fep127f,  // bf16 overflow boundary
                  65504.0f, 65520.0f, std::nextafter(65520.0f, 0.0f), 65536.0f,   // fp16 overflow boundary
                  448.0f, 464.0f, std::nextafter(464.0f, INFINITY), 480.0f, 1e6f,   // e4m3 overflow boundary
                  0x1p-14f, 0x1p-24f, 0x1p-25f, 0x1p-6f, 0x1p-9f, 0x1p-10f, 0x1p-133f, 0x1p-134f})
    both(x);
  // NaNs: quiet and signalling, both signs, every single-bit payload and a few dense ones.
  for (std::uint32_t payload = 1; payload != 0x80'0000u; payload <<= 1) {
    xs.push_back(float_of(0x7f80'0000u | payload));
    xs.push_back(float_of(0xff80'0000u | payload));
  }
  for (std::uint32_t payload : {0x7f'ffffu, 0x40'0001u, 0x00'ffffu, 0x12'3456u, 0x3f'ffffu}) {
    xs.push_back(float_of(0x7f80'0000u | payload));
    xs.push_back(float_of(0xff80'0000u | payload));
  }
  return xs;
}

int run() {
  const auto start = std::chrono::steady_clock::now();

  // ---- every narrow pattern -> float -----------------------------------------------------------
  Tally bf16_to{"bf16->float"}, fp16_to{"fp16->float"}, e4m3_to{"e4m3->float"};
  for (std::uint32_t b = 0; b < (1u << 16); ++b) {
    const auto b16 = static_cast<std::uint16_t>(b);
    bf16_to.compare(b, bits_of(bf16::from_bits(b16).to_float()), bits_of(cuda_bf16_to_float(b16)));
    fp16_to.compare(b, bits_of(fp16::from_bits(b16).to_float()), bits_of(cuda_fp16_to_float(b16)));
  }
  for (std::uint32_t b = 0; b < (1u << 8); ++b) {
    const auto b8 = static_cast<std::uint8_t>(b);
    e4m3_to.compare(b, bits_of(fp8_e4m3::from_bits(b8).to_float()), bits_of(cuda_e4m3_to_float(b8)));
  }

  // ---- float inputs ----------------------------------------------------------------------------
  std::vector<float> inputs = edge_floats();
  const std::size_t edge_count = inputs.size();
  // Halfway points, taken from CUDA's decoding (checked exhaustively above) so they are independent of ours.
  const bool halfway_ok =
      add_halfway_points(inputs, sorted_finite_values(1u << 16, [](std::uint32_t b) { return cuda_bf16_to_float(static_cast<std::uint16_t>(b)); })) &&
      add_halfway_points(inputs, sorted_finite_values(1u << 16, [](std::uint32_t b) { return cuda_fp16_to_float(static_cast<std::uint16_t>(b)); })) &&
      add_halfway_points(inputs, sorted_finite_values(1u << 8, [](std::uint32_t b) { return cuda_e4m3_to_float(static_cast<std::uint8_t>(b)); }));
  if (!halfway_ok) return 1;
  const std::size_t halfway_count = inputs.size() - edge_count;

  std::mt19937_64 rng(20250101);
  constexpr std::size_t random_bit_patterns = 8'000'000;
  for (std::size_t i = 0; i < random_bit_patterns; ++i) inputs.push_back(float_of(static_cast<std::uint32_t>(rng())));
  // Random sign and mantissa with an exponent in [-27, 17]: the range where fp16 and e4m3 round
  // (rather than over- or underflow), which random bit patterns hit only one time in six.
  constexpr std::size_t random_in_range = 8'000'000;
  for (std::size_t i = 0; i < random_in_range; ++i) {
    const std::uint64_t r = rng();
    const auto exponent = static_cast<std::uint32_t>(-27 + 127 + static_cast<int>((r >> 32) % 45));
    inputs.push_back(float_of(static_cast<std::uint32_t>(r & 0x807f'ffffu) | (exponent << 23)));
  }

  Tally to_bf16{"float->bf16"}, to_fp16{"float->fp16"}, to_sat{"float->e4m3 satfinite"}, to_nosat{"float->e4m3 nosat"};
  for (float x : inputs) {
    const std::uint32_t in = bits_of(x);
    to_bf16.compare(in, bf16::from_float(x).bits, cuda_float_to_bf16(x));
    to_fp16.compare(in, fp16::from_float(x).bits, cuda_float_to_fp16(x));
    to_sat.compare(in, fp8_e4m3::from_float(x, Saturation::finite).bits, cuda_float_to_e4m3(x, Saturation::finite));
    to_nosat.compare(in, fp8_e4m3::from_float(x, Saturation::none).bits, cuda_float_to_e4m3(x, Saturation::none));
  }

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("float inputs: %zu edge cases, %zu halfway points and neighbours, %zu random bit patterns, %zu random in [2^-27, 2^18)\n",
              edge_count, halfway_count, random_bit_patterns, random_in_range);
  std::uint64_t total = 0, bad = 0;
  for (const Tally* t : {&bf16_to, &fp16_to, &e4m3_to, &to_bf16, &to_fp16, &to_sat, &to_nosat}) {
    std::printf("  %-24s %10llu checked, %llu mismatches\n", t->what, static_cast<unsigned long long>(t->checked),
                static_cast<unsigned long long>(t->mismatches));
    total += t->checked;
    bad += t->mismatches;
  }
  std::printf("%llu conversions compared with CUDA %d.%d in %.2f s: %s\n", static_cast<unsigned long long>(total),
              CUDART_VERSION / 1000, (CUDART_VERSION % 1000) / 10, seconds, bad == 0 ? "all equal" : "MISMATCHES");
  return bad == 0 ? 0 : 1;
}

#endif  // QWEN_HAVE_CUDA_HEADERS

}  // namespace

int main() {
#if QWEN_HAVE_CUDA_HEADERS
  return run();
#else
  const char* require = std::getenv("QWEN_REQUIRE_CUDA_REFERENCE");
  if (require != nullptr && std::string_view(require) == "1") {
    std::puts("FAILED: CUDA headers cuda_bf16.h / cuda_fp16.h / cuda_fp8.h not found, and QWEN_REQUIRE_CUDA_REFERENCE=1 "
              "forbids skipping (is the CUDA toolkit installed, and did CMake find it?)");
    return 1;
  }
  std::puts("SKIPPED: CUDA headers cuda_bf16.h / cuda_fp16.h / cuda_fp8.h not found");
  constexpr int skip_return_code = 4;  // ctest's SKIP_RETURN_CODE for this test
  return skip_return_code;
#endif
}
