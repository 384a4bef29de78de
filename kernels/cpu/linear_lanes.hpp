// The vector layer of kernels/cpu/linear.hpp: kernels/cpu/simd.hpp's one lane type, under the
// names linear uses (Lanes, fp8_exponent_offset, QWEN_LINEAR_AVX512 / QWEN_LINEAR_AVX2 for its
// tile shapes). What linear relies on, all documented there:
//   load(float* / bf16* [, count])     exact, ragged tails zero-filled, nothing read past count
//   load_fp8_scaled(u8* [, count])     fp8 e4m3 code -> value * 2^-8, exact (subnormals
//                                      included), every lane a normal fp32; the NaN codes 0x7f /
//                                      0xff give +-480 * 2^-8 (linear does not propagate them)
//   mul, fma                           one rounding each (fma: two on the portable level)
//   sum                                the fixed tree, the same bits for every caller
#pragma once

#include <qwen/kernels/cpu/simd.hpp>

#if defined(QWEN_SIMD_AVX512)
#define QWEN_LINEAR_AVX512 1
#elif defined(QWEN_SIMD_AVX2)
#define QWEN_LINEAR_AVX2 1
#endif

namespace qwen::kernels::cpu::linear_detail {

using Lanes = simd::Simd;
using simd::fp8_exponent_offset;

}  // namespace qwen::kernels::cpu::linear_detail
