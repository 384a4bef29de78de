// Speed-of-light probes measured in the benchmark's own process, so that every figure can be
// reported as a fraction of what this machine can do right now:
//   read_bandwidth():  bytes/s of a vectorised sum over a 1 GiB buffer (far larger than the
//                      caches), on every thread of the pool (the floor for decode, which streams
//                      weights); best of 3 passes
//   bf16_dot_peak():   flop/s of independent AVX-512 BF16 dot products (vdpbf16ps) on registers,
//                      on every thread (2 flops per bf16 pair); best of 3
//   fp32_fma_peak():   flop/s of independent fp32 FMAs (vfmadd on zmm registers where AVX-512 is
//                      compiled in, else the compiler's best for a scalar chain) on every thread;
//                      best of 3. On AVX-512 machines without BF16 or with two FMA ports it is
//                      the higher of the two (twice the dot product's on the development VM)
//   compute_peak():    both, and the larger: the ceiling that every compute fraction divides by,
//                      whichever instruction the kernels use
//   amx_bf16_peak():   flop/s of AMX bf16 tile products where the machine has them (reported
//                      beside the others; no qwen kernel uses AMX)
// Neither is cached: on a shared machine the bandwidth moves by a third between minutes, so a
// benchmark probes right before and right after its timed loop and divides by the larger value
// (bracket_probe), which keeps the fraction from flattering the code.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <qwen/kernels/cpu/thread_pool.hpp>

#if defined(__AMX_TILE__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace qwen::bench {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline double read_bandwidth(kernels::cpu::ThreadPool& pool) {
  constexpr std::size_t bytes = std::size_t{1} << 30;
  constexpr std::size_t count = bytes / sizeof(float);
  static const std::unique_ptr<float[]> buffer = [&] {  // made and touched once per process
    std::unique_ptr<float[]> b(new float[count]);
    pool.parallel_for(static_cast<std::int64_t>(count), 1 << 20, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) b[static_cast<std::size_t>(i)] = static_cast<float>(i & 7);
    });
    return b;
  }();
  std::atomic<float> sink{0};
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(static_cast<std::int64_t>(count), 1 << 20, [&](std::int64_t b, std::int64_t e) {
      float acc[16] = {};
      std::int64_t i = b;
      for (; i + 16 <= e; i += 16)
        for (int l = 0; l < 16; ++l) acc[l] += buffer[static_cast<std::size_t>(i + l)];
      float total = 0;
      for (float a : acc) total += a;
      sink.fetch_add(total, std::memory_order_relaxed);
    });
    best = std::max(best, static_cast<double>(bytes) / seconds_since(t0));
  }
  return best;
}

// The best of 3 rates of `per_thread()` run once on every thread of the pool at the same time,
// each run counting `flops_per_thread` flops.
template <class PerThread>
double register_peak(kernels::cpu::ThreadPool& pool, double flops_per_thread, PerThread&& per_thread) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(pool.size(), 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t thread = b; thread < e; ++thread) per_thread();
    });
    best = std::max(best, static_cast<double>(pool.size()) * flops_per_thread / seconds_since(t0));
  }
  return best;
}

inline double bf16_dot_peak(kernels::cpu::ThreadPool& pool) {
#if defined(__AVX512BF16__)
  constexpr std::int64_t iterations = 20'000'000 / 12;
  // Each vdpbf16ps: 32 bf16 pairs, a multiply and an add each.
  return register_peak(pool, static_cast<double>(iterations) * 12 * 32 * 2, [] {
    // 12 independent accumulators hide the instruction's latency.
    __m512 acc[12];
    for (auto& a : acc) a = _mm512_setzero_ps();
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3f00);
    for (std::int64_t i = 0; i < iterations; ++i) {
      // Fully unrolled so that the accumulators live in registers (a loop over the array keeps
      // them in memory at -O2, and the probe would measure store-forwarding instead).
#pragma GCC unroll 12
      for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], x, y);
    }
    __m512 total = acc[0];
    for (int j = 1; j < 12; ++j) total = _mm512_add_ps(total, acc[j]);
    float keep[16];
    _mm512_storeu_ps(keep, total);
    volatile float sink = keep[0];
    (void)sink;
  });
#else
  (void)pool;
  return 0;  // no BF16 dot-product instructions on this target: no peak to compare with
#endif
}

inline double fp32_fma_peak(kernels::cpu::ThreadPool& pool) {
  constexpr int chains = 24;  // independent accumulators: more than latency x ports
  constexpr std::int64_t iterations = 5'000'000;
#if defined(__AVX512F__)
  constexpr double flops_per_fma = 32;  // 16 lanes, a multiply and an add each
#else
  constexpr double flops_per_fma = 2;
#endif
  return register_peak(pool, static_cast<double>(iterations) * chains * flops_per_fma, [] {
#if defined(__AVX512F__)
    __m512 acc[chains];
    for (int c = 0; c < chains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c) * 1e-3f);
    const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-4f);
    for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 24
      for (int c = 0; c < chains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
    }
    for (int c = 1; c < chains; ++c) acc[0] = _mm512_add_ps(acc[0], acc[c]);
    float keep[16];
    _mm512_storeu_ps(keep, acc[0]);
    volatile float sink = keep[0];
#else
    float acc[chains];
    for (int c = 0; c < chains; ++c) acc[c] = static_cast<float>(c);
    for (std::int64_t i = 0; i < iterations; ++i)
      for (int c = 0; c < chains; ++c) acc[c] = acc[c] * 0.999f + 1e-4f;
    volatile float sink = acc[0];
#endif
    (void)sink;
  });
}

// flop/s of AMX bf16 tile products (tdpbf16ps: a 16x32 bf16 tile times a 32x16 one into a 16x16
// fp32 tile, 16384 flops) on registers, 4 independent accumulator tiles, on every thread; best
// of 3. 0 where the target has no AMX-BF16 or the kernel refuses this process the tile state.
// Reported beside compute_peak, not part of it: no qwen kernel uses AMX (it multiplies bf16
// inputs only, so x would be rounded to bf16), but it is what oneDNN, and so torch's bf16
// Linear, runs on Sapphire Rapids and later Xeons.
inline double amx_bf16_peak(kernels::cpu::ThreadPool& pool) {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__linux__)
  constexpr long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
  if (syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) != 0) return 0;
  constexpr std::int64_t iterations = 2'000'000;
  return register_peak(pool, static_cast<double>(iterations) * 4 * 16384, [] {
    struct alignas(64) TileConfig {
      std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
      std::uint16_t colsb[16] = {};
      std::uint8_t rows[16] = {};
    } config;
    for (int t = 0; t < 8; ++t) {
      config.colsb[t] = 64;  // 16 fp32 or 32 bf16 per row
      config.rows[t] = 16;
    }
    _tile_loadconfig(&config);
    alignas(64) std::uint16_t ones[16 * 32];
    for (auto& v : ones) v = 0x3f80;  // bf16 1.0
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ones, 64);
    _tile_loadd(5, ones, 64);
    _tile_loadd(6, ones, 64);
    _tile_loadd(7, ones, 64);
    for (std::int64_t i = 0; i < iterations; ++i) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    alignas(64) float keep[16 * 16];
    _tile_stored(0, keep, 64);
    _tile_release();
    volatile float sink = keep[0];
    (void)sink;
  });
#else
  (void)pool;
  return 0;
#endif
}

struct ComputePeak {
  double fp32_fma = 0;
  double bf16_dot = 0;  // 0: no AVX512_BF16 on this target
  [[nodiscard]] double best() const noexcept { return std::max(fp32_fma, bf16_dot); }
};

inline ComputePeak compute_peak(kernels::cpu::ThreadPool& pool) { return {fp32_fma_peak(pool), bf16_dot_peak(pool)}; }

// The larger of two readings of a probe: of a rate, or field by field of a ComputePeak.
inline double larger(double a, double b) { return std::max(a, b); }
inline ComputePeak larger(const ComputePeak& a, const ComputePeak& b) {
  return {std::max(a.fp32_fma, b.fp32_fma), std::max(a.bf16_dot, b.bf16_dot)};
}

// The larger of a probe run right before and right after timed().
template <class Probe, class Timed>
auto bracket_probe(Probe&& probe, Timed&& timed) {
  const auto before = probe();
  timed();
  return larger(before, probe());
}

}  // namespace qwen::bench
