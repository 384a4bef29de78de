// Block-FP8 weight dequantisation (kernels/cpu/fp8_dequant.hpp): the scalar reference and the
// fast path, on a 4096 x 4096 weight (one Qwen3-8B-sized projection). Each reports bytes moved
// per second (fp8 read + output written) and that as a fraction of a memcpy of the same bytes
// measured in the same process: the limit for an op that streams memory once.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <qwen/core/numeric.hpp>
#include <qwen/kernels/cpu/fp8_dequant.hpp>

namespace {

constexpr std::int64_t rows = 4096, cols = 4096;

struct Inputs {
  std::vector<qwen::fp8_e4m3> weight;
  std::vector<qwen::bf16> scale;
  Inputs() : weight(static_cast<std::size_t>(rows * cols)), scale(static_cast<std::size_t>((rows / 128) * (cols / 128))) {
    std::mt19937 rng(7);
    for (auto& w : weight) w = qwen::fp8_e4m3::from_bits(static_cast<std::uint8_t>(rng() & 0x7e));  // finite codes
    for (auto& s : scale) s = qwen::bf16::from_float(std::ldexp(1.0f, -static_cast<int>(rng() % 12)));
  }
};
const Inputs& inputs() {
  static const Inputs in;
  return in;
}

// memcpy of (fp8 bytes + output bytes) / 2 each way: the same read + write volume as the op.
double memcpy_bytes_per_second(std::size_t out_bytes) {
  static double cached[2] = {0, 0};
  double& slot = cached[out_bytes == static_cast<std::size_t>(rows * cols * 4)];
  if (slot > 0) return slot;
  const std::size_t half = (static_cast<std::size_t>(rows * cols) + out_bytes) / 2;
  std::vector<char> src(half, 1), dst(half);
  double best = 0;
  for (int rep = 0; rep < 10; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(dst.data(), src.data(), half);
    benchmark::DoNotOptimize(dst.data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(half) / s);
  }
  return slot = best;
}

template <class Out, bool Fast>
void BM_Fp8Dequant(benchmark::State& state) {
  const Inputs& in = inputs();
  std::vector<Out> out(static_cast<std::size_t>(rows * cols));
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if constexpr (Fast)
      qwen::kernels::cpu::fp8_dequant(in.weight.data(), in.scale.data(), out.data(), rows, cols);
    else
      qwen::kernels::cpu::fp8_dequant_reference(in.weight.data(), in.scale.data(), out.data(), rows, cols);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double bytes = static_cast<double>(rows * cols) * (1 + sizeof(Out));
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
  state.counters["bytes_per_second"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  const double limit = memcpy_bytes_per_second(static_cast<std::size_t>(rows * cols) * sizeof(Out));
  state.counters["memcpy_bytes_per_second"] = limit;
  state.counters["bandwidth_fraction"] = bytes * static_cast<double>(state.iterations()) / seconds / limit;
  state.SetLabel(Fast ? std::string(qwen::kernels::cpu::fp8_dequant_isa) : "scalar reference");
}


}  // namespace

BENCHMARK(BM_Fp8Dequant<float, false>)->Name("Fp8Dequant/reference/f32")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Fp8Dequant<float, true>)->Name("Fp8Dequant/fast/f32")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Fp8Dequant<qwen::bf16, false>)->Name("Fp8Dequant/reference/bf16")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Fp8Dequant<qwen::bf16, true>)->Name("Fp8Dequant/fast/bf16")->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
