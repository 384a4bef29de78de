// A prototype, not part of the library or the build: a Linear y[n, out] = x[n, in] · W[out, in]ᵀ
// on the AMX tile unit that keeps fp32 accuracy. W (bf16, row-major) is used in place as the tile
// product's first operand (16 rows × 32 k per tile, row stride in·2 bytes); each fp32 x is split
// by truncation into three bf16 parts (hi + mid + lo = x exactly), so each product of a part with
// a bf16 weight is exact in fp32, and three tdpbf16ps per tile accumulate them in fp32.
// One thread, naive blocking (2 × 2 output tiles of 16 × 16, x re-packed every call), shape of
// Qwen3-0.6B's gate/up projection (3072 × 1024) at 512 tokens. See docs/performance.md.
//
//   g++ -std=c++20 -O2 -march=native bench/experiments/amx_linear_prototype.cpp -o /tmp/amx_linear && /tmp/amx_linear
//
// Needs AMX-BF16 (Sapphire Rapids or later) and Linux >= 5.16 (the tile state is requested with
// arch_prctl). Measured 2026-12-03 on the 2-core development Xeon: 187.5 useful GFLOP/s on one
// thread, x's packing included (183.5 on a rerun); max |y - exact| = 4.3e-8 · Σ|x·w| over a sample of outputs.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
static uint16_t bf16_trunc(float f, float* rest) {
  uint32_t b; memcpy(&b, &f, 4); uint32_t h = b & 0xffff0000u; float hf; memcpy(&hf, &h, 4); *rest = f - hf; return uint16_t(h >> 16);
}
struct alignas(64) Cfg { uint8_t palette = 1, start = 0, r[14] = {}; uint16_t colsb[16] = {}; uint8_t rows[16] = {}; };
// x [n][in] fp32 -> packed [tokblock][kstep][part][16 kpairs][16 tokens][2]
int main() {
  if (syscall(SYS_arch_prctl, 0x1023, 18)) { puts("no amx"); return 1; }
  const int out = 3072, in = 1024, n = 512;
  std::mt19937 rng(1); std::uniform_real_distribution<float> d(-1, 1);
  std::vector<uint16_t> w(size_t(out) * in); std::vector<float> x(size_t(n) * in), y(size_t(n) * out);
  for (auto& v : w) { float f = d(rng) * 0.05f; float r; v = bf16_trunc(f, &r); }
  for (auto& v : x) v = d(rng);
  const int ksteps = in / 32, tblocks = n / 16;
  std::vector<uint16_t> xp(size_t(tblocks) * ksteps * 3 * 512);
  auto pack = [&] {
    for (int tb = 0; tb < tblocks; ++tb) for (int ks = 0; ks < ksteps; ++ks) for (int t = 0; t < 16; ++t) for (int kk = 0; kk < 32; ++kk) {
      float f = x[size_t(tb * 16 + t) * in + ks * 32 + kk], r1, r2, r3;
      uint16_t h = bf16_trunc(f, &r1), m = bf16_trunc(r1, &r2), l = bf16_trunc(r2, &r3);
      uint16_t* base = &xp[((size_t(tb) * ksteps + ks) * 3) * 512];
      const int idx = (kk / 2) * 32 + t * 2 + (kk % 2);
      base[idx] = h; base[512 + idx] = m; base[1024 + idx] = l;
    }
  };
  Cfg c; for (int i = 0; i < 8; ++i) { c.colsb[i] = 64; c.rows[i] = 16; } _tile_loadconfig(&c);
  auto run = [&] {
    pack();
    for (int rb = 0; rb < out; rb += 32) for (int tb = 0; tb < tblocks; tb += 2) {
      _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
      for (int ks = 0; ks < ksteps; ++ks) {
        _tile_loadd(4, &w[size_t(rb) * in + ks * 32], in * 2);
        _tile_loadd(5, &w[size_t(rb + 16) * in + ks * 32], in * 2);
        for (int p = 0; p < 3; ++p) {
          _tile_loadd(6, &xp[((size_t(tb) * ksteps + ks) * 3 + p) * 512], 64);
          _tile_loadd(7, &xp[((size_t(tb + 1) * ksteps + ks) * 3 + p) * 512], 64);
          _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
      }
      // C tile [16 out rows][16 tokens]: store transposed into y[token][row]
      alignas(64) float cbuf[4][256];
      _tile_stored(0, cbuf[0], 64); _tile_stored(1, cbuf[1], 64); _tile_stored(2, cbuf[2], 64); _tile_stored(3, cbuf[3], 64);
      for (int q = 0; q < 4; ++q) for (int r = 0; r < 16; ++r) for (int t = 0; t < 16; ++t)
        y[size_t(tb * 16 + (q & 1) * 16 + t) * out + rb + (q >> 1) * 16 + r] = cbuf[q][r * 16 + t];
    }
  };
  run();
  double best = 1e9;
  for (int rep = 0; rep < 5; ++rep) { auto t0 = std::chrono::steady_clock::now(); run(); best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); }
  printf("one thread: %.1f useful GFLOP/s (%.2f ms)\n", 2.0 * n * out * in / best / 1e9, best * 1e3);
  double worst = 0;
  for (int i = 0; i < n; i += 37) for (int j = 0; j < out; j += 13) {
    double s = 0, mag = 0;
    for (int k = 0; k < in; ++k) { uint32_t b = uint32_t(w[size_t(j) * in + k]) << 16; float wf; memcpy(&wf, &b, 4); s += double(x[size_t(i) * in + k]) * wf; mag += std::fabs(double(x[size_t(i) * in + k]) * wf); }
    worst = std::max(worst, std::fabs(y[size_t(i) * out + j] - s) / mag);
  }
  printf("max |y - exact| / sum|x w| = %.3g (2^-24 = %.3g; fp32 dot-form bound (64+4+2) 2^-24 = %.3g)\n", worst, std::ldexp(1.0, -24), 70 * std::ldexp(1.0, -24));
}
