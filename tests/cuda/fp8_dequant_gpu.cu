// kernels/cuda/fp8_dequant.cuh against its CPU twin (kernels/cpu/fp8_dequant.hpp), bit for bit
// for non-NaN results and NaN for NaN, on random inputs over ragged sizes, both scale dtypes and
// both output dtypes. Outputs are poisoned first so an unwritten element fails.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <qwen/kernels/cpu/fp8_dequant.hpp>
#include <qwen/kernels/cuda/fp8_dequant.cuh>

#include "gpu_test.cuh"

namespace {

using qwen::bf16;
using qwen::fp8_e4m3;
using qwen::test_cuda::check;
using qwen::test_cuda::DeviceBuffer;

float as_float(float x) { return x; }
float as_float(bf16 x) { return x.to_float(); }
std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }
std::uint32_t bits_of(bf16 x) { return x.bits; }

template <class Out>
Out poison() {
  if constexpr (std::is_same_v<Out, float>)
    return std::bit_cast<float>(0xffc0'dead);
  else
    return bf16{0xffc1};
}

template <class Scale>
Scale random_scale(std::mt19937_64& rng) {
  const std::uint64_t r = rng();
  const float f = std::ldexp(1.0f + static_cast<float>(r & 0x7f'ffff) * 0x1p-23f, -16 + static_cast<int>((r >> 32) % 15));
  if constexpr (std::is_same_v<Scale, float>)
    return f;
  else
    return bf16::from_float(f);
}

// Returns the number of elements compared; throws on a CUDA error, counts mismatches.
template <class Scale, class Out>
std::size_t compare(std::mt19937_64& rng, std::int64_t rows, std::int64_t cols, std::size_t& mismatches) {
  constexpr std::int64_t block = qwen::kernels::fp8_default_block;
  const auto n = static_cast<std::size_t>(rows * cols);
  std::vector<fp8_e4m3> weight(n);
  for (auto& w : weight) w = fp8_e4m3::from_bits(static_cast<std::uint8_t>(rng()));
  std::vector<Scale> scale(static_cast<std::size_t>(qwen::kernels::fp8_scale_blocks(rows, block) *
                                                    qwen::kernels::fp8_scale_blocks(cols, block)));
  for (auto& s : scale) s = random_scale<Scale>(rng);

  std::vector<Out> expected(n, poison<Out>());
  qwen::kernels::cpu::fp8_dequant(weight.data(), scale.data(), expected.data(), rows, cols);

  const DeviceBuffer<fp8_e4m3> d_weight(weight);
  const DeviceBuffer<Scale> d_scale(scale);
  const DeviceBuffer<Out> d_out(std::vector<Out>(n, poison<Out>()));
  if constexpr (std::is_same_v<Scale, float>) {
    check(qwen::kernels::cuda::fp8_dequant(d_weight.data(), d_scale.data(), d_out.data(), rows, cols, nullptr), "launch");
  } else {  // the checked TensorView entry point
    const qwen::TensorView weight_view(d_weight.data(), qwen::DType::F8_E4M3, {rows, cols});
    const qwen::TensorView scale_view(d_scale.data(), qwen::DType::BF16,
                                      {qwen::kernels::fp8_scale_blocks(rows, block), qwen::kernels::fp8_scale_blocks(cols, block)});
    check(qwen::kernels::cuda::fp8_dequant(weight_view, scale_view, std::span<Out>(d_out.data(), n), nullptr), "launch");
  }
  check(cudaDeviceSynchronize(), "fp8_dequant_kernel");
  const std::vector<Out> got = d_out.to_host();

  for (std::size_t i = 0; i < n; ++i) {
    const bool nan_expected = std::isnan(as_float(expected[i]));
    const bool ok = nan_expected ? std::isnan(as_float(got[i])) && bits_of(got[i]) != bits_of(poison<Out>())
                                 : bits_of(got[i]) == bits_of(expected[i]);
    if (!ok && ++mismatches <= 8)
      std::printf("  MISMATCH [%lld x %lld] element %zu: gpu 0x%x, cpu 0x%x\n", static_cast<long long>(rows),
                  static_cast<long long>(cols), i, static_cast<unsigned>(bits_of(got[i])),
                  static_cast<unsigned>(bits_of(expected[i])));
  }
  return n;
}

}  // namespace

TEST_CASE("cuda fp8_dequant matches the cpu twin bit for bit", "[cuda]") {
  std::mt19937_64 rng(0xf8'6b0);
  std::size_t compared = 0, mismatches = 0;
  for (std::int64_t rows : {1, 17, 97, 128, 255, 300}) {
    for (std::int64_t cols : {1, 17, 97, 128, 255, 300}) {
      compared += compare<float, float>(rng, rows, cols, mismatches);
      compared += compare<float, bf16>(rng, rows, cols, mismatches);
      compared += compare<bf16, float>(rng, rows, cols, mismatches);
      compared += compare<bf16, bf16>(rng, rows, cols, mismatches);
    }
  }
  INFO("fp8_dequant gpu vs cpu: " << compared << " elements compared, " << mismatches << " mismatches");
  CHECK(compared > 0);
  CHECK(mismatches == 0);
}
