// kernels/cpu/linear.hpp on Qwen3-0.6B / 1.7B projection shapes, against the speed of light of
// this machine measured in the same process on the same ThreadPool (all cores; bench/probes.hpp):
//
//   Decode (n = 1 and 4 tokens): memory-bound. bytes_per_second = weight bytes (+ fp8 scales)
//     read per second; bandwidth_fraction = that / read_probe (a vectorised read of a buffer far
//     larger than the caches). The weight is cycled through enough copies (>= 1 GiB in all) that
//     every call streams it from DRAM, as a decode step over a whole model does.
//   Batch (n = 8 ... 256 tokens, 0.6B shapes): a decode step of many sequences or a short
//     prefill chunk; weights from DRAM as in decode. Both fractions are reported: which one
//     binds moves with n.
//   Prefill (n = 512 tokens): compute-bound. flops_per_second = 2·n·in·out per second;
//     peak_fraction = that / the larger of fma_probe (independent fp32 FMAs on registers) and
//     dot_probe (independent _mm512_dpbf16_ps on registers), both reported (probes.hpp); where the
//     machine has AMX-BF16, amx_bf16_probe (tile products on registers) is reported too, not
//     divided by (no qwen kernel uses AMX).
//
// Weights are random and generated at run time.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <qwen/core/numeric.hpp>
#include <qwen/kernels/cpu/linear.hpp>
#include <qwen/kernels/cpu/thread_pool.hpp>

#include "probes.hpp"

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip -Wmaybe-uninitialized
// when inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace {

namespace cpu = qwen::kernels::cpu;
using Clock = std::chrono::steady_clock;

cpu::ThreadPool& pool() {
  static cpu::ThreadPool p(0);
  return p;
}

using qwen::bench::seconds_since;

// ---- weights -----------------------------------------------------------------------------------

std::uint64_t next_random(std::uint64_t& state) {  // xorshift64*
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return state * 0x2545'F491'4F6C'DD1Dull;
}

enum class Format { bf16, fp8 };

// `copies` independent random weights of [out, in], so that consecutive calls read DRAM.
struct WeightCopies {
  std::int64_t out, in;
  std::vector<std::vector<qwen::bf16>> bf16;
  std::vector<std::vector<qwen::fp8_e4m3>> fp8;
  std::vector<std::vector<qwen::bf16>> scale;
  WeightCopies(Format format, std::int64_t out_, std::int64_t in_, int copies) : out(out_), in(in_) {
    std::uint64_t state = 0x9e37'79b9'7f4a'7c15ull ^ static_cast<std::uint64_t>(out * 131 + in);
    const auto count = static_cast<std::size_t>(out * in);
    for (int c = 0; c < copies; ++c) {
      if (format == Format::bf16) {
        auto& w = bf16.emplace_back(count);
        // Random sign and mantissa, exponent around 2^-5..2^-6: typical projection weights.
        for (auto& v : w) v = qwen::bf16::from_bits(static_cast<std::uint16_t>(0x3c80u | (next_random(state) & 0x807fu)));
      } else {
        auto& w = fp8.emplace_back(count);
        for (auto& v : w) {
          auto code = static_cast<std::uint8_t>(next_random(state));
          v = qwen::fp8_e4m3::from_bits((code & 0x7f) == 0x7f ? 0 : code);
        }
        auto& s = scale.emplace_back(static_cast<std::size_t>(((out + 127) / 128) * ((in + 127) / 128)));
        for (auto& v : s) v = qwen::bf16::from_float(1e-3f);
      }
    }
  }
  [[nodiscard]] std::size_t copies() const { return bf16.empty() ? fp8.size() : bf16.size(); }
  // Bytes one call reads from W (and its scales).
  [[nodiscard]] double bytes() const {
    return bf16.empty() ? static_cast<double>(out * in) + static_cast<double>(scale[0].size() * sizeof(qwen::bf16))
                        : static_cast<double>(out * in * 2);
  }
  void run(std::size_t copy, const float* x, std::int64_t n, float* y) const {
    if (!bf16.empty())
      cpu::linear(x, n, in, bf16[copy].data(), out, y, pool());
    else
      cpu::linear_fp8(x, n, in, fp8[copy].data(), scale[copy].data(), out, y, pool());
  }
};

void run_linear(benchmark::State& state, Format format, std::int64_t out, std::int64_t in, std::int64_t n) {
  const double one_copy = static_cast<double>(out * in) * (format == Format::bf16 ? 2.0 : 1.0);
  // Decode and small batches cycle through >= 1 GiB of weights, as a step over a whole model
  // does; prefill reuses one (its time is compute).
  const int copies = n <= 256 ? static_cast<int>(std::max(2.0, std::ceil(static_cast<double>(1 << 30) / one_copy))) : 1;
  const WeightCopies weights(format, out, in, copies);
  std::vector<float> x(static_cast<std::size_t>(n * in)), y(static_cast<std::size_t>(n * out));
  std::uint64_t seed = 12345;
  for (auto& v : x) v = static_cast<float>(static_cast<std::int64_t>(next_random(seed) % 2001) - 1000) * 1e-3f;

  const qwen::bench::ComputePeak peak = qwen::bench::compute_peak(pool());
  const double bandwidth = qwen::bench::read_bandwidth(pool());
  for (std::size_t c = 0; c < weights.copies(); ++c) weights.run(c, x.data(), n, y.data());  // warm the pool and page tables
  double seconds = 0;
  std::size_t copy = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    weights.run(copy, x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    seconds += seconds_since(t0);
    copy = (copy + 1) % weights.copies();
  }
  const double calls = static_cast<double>(state.iterations());
  const double bytes_per_second = weights.bytes() * calls / seconds;
  const double flops_per_second = 2.0 * static_cast<double>(n * in * out) * calls / seconds;
  state.counters["bytes_per_second"] = bytes_per_second;
  state.counters["bandwidth_fraction"] = bytes_per_second / bandwidth;
  state.counters["read_probe"] = bandwidth;
  state.counters["flops_per_second"] = flops_per_second;
  state.counters["peak_fraction"] = flops_per_second / peak.best();
  state.counters["fma_probe"] = peak.fp32_fma;
  if (peak.bf16_dot > 0) state.counters["dot_probe"] = peak.bf16_dot;  // absent: no AVX512_BF16
  if (n >= 512)
    if (const double amx = qwen::bench::amx_bf16_peak(pool()); amx > 0) state.counters["amx_bf16_probe"] = amx;  // not a divisor
  state.counters["us_per_call"] = seconds / calls * 1e6;
  state.SetLabel(std::string(cpu::linear_isa) + ", " + std::to_string(pool().size()) + " threads");
}

struct Shape {
  const char* model;
  const char* name;
  std::int64_t out, in;
};
// Qwen3-0.6B: hidden 1024, q 2048, kv 1024, intermediate 3072, vocab 151936 (tied lm_head).
// Qwen3-1.7B: hidden 2048, q 2048, kv 1024, intermediate 6144.
constexpr Shape shapes[] = {
    {"0.6B", "q_proj", 2048, 1024},     {"0.6B", "kv_proj", 1024, 1024},  {"0.6B", "o_proj", 1024, 2048},
    {"0.6B", "gate_up_proj", 3072, 1024}, {"0.6B", "down_proj", 1024, 3072}, {"0.6B", "lm_head", 151936, 1024},
    {"1.7B", "q_proj", 2048, 2048},     {"1.7B", "gate_up_proj", 6144, 2048}, {"1.7B", "down_proj", 2048, 6144},
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  for (const Format format : {Format::bf16, Format::fp8}) {
    const std::string dtype = format == Format::bf16 ? "bf16" : "fp8";
    for (const Shape& s : shapes) {
      const std::string shape = std::string(s.model) + "/" + s.name + "/" + std::to_string(s.out) + "x" + std::to_string(s.in);
      for (std::int64_t n : {1, 4})
        benchmark::RegisterBenchmark(("LinearDecode/" + dtype + "/" + shape + "/n:" + std::to_string(n)).c_str(),
                                     [=](benchmark::State& st) { run_linear(st, format, s.out, s.in, n); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      for (std::int64_t n : {8, 16, 32, 64, 128, 256})
        if (std::string(s.model) == "0.6B" && std::string(s.name) != "lm_head")
          benchmark::RegisterBenchmark(("LinearBatch/" + dtype + "/" + shape + "/n:" + std::to_string(n)).c_str(),
                                       [=](benchmark::State& st) { run_linear(st, format, s.out, s.in, n); })
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
      if (std::string(s.name) != "lm_head")  // prefill computes logits for the last tokens only
        benchmark::RegisterBenchmark(("LinearPrefill/" + dtype + "/" + shape + "/n:512").c_str(),
                                     [=](benchmark::State& st) { run_linear(st, format, s.out, s.in, 512); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
