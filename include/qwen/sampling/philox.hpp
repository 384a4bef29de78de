// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator. The output is a pure function of (key, counter), so a request's draw
// at step n depends on its seed and n only -- not on the batch it shares, the thread that runs
// it or how many draws other requests made. cuRAND and PyTorch's CUDA generator use the same
// function, which lets the CUDA sampler reproduce these draws.
#pragma once

#include <array>
#include <cstdint>

namespace qwen::sampling {

using PhiloxCounter = std::array<std::uint32_t, 4>;
using PhiloxKey = std::array<std::uint32_t, 2>;

[[nodiscard]] constexpr PhiloxCounter philox4x32_10(PhiloxCounter c, PhiloxKey k) noexcept {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;  // round multipliers
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;  // Weyl key increments
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{m0} * c[0], p1 = std::uint64_t{m1} * c[2];
    const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += w0;
    k[1] += w1;
  }
  return c;
}

// What a draw is for; part of the counter so that future uses get streams of their own.
enum class DrawPurpose : std::uint32_t { token = 0 };

// The uniform double in [0, 1) (53 random bits) for draw `step` of the stream keyed by `seed`;
// `round` numbers the extra draws of one step (the top_p rejection sampler may need several).
[[nodiscard]] constexpr double uniform_draw(std::uint64_t seed, std::uint64_t step, std::uint32_t round = 0,
                                            DrawPurpose purpose = DrawPurpose::token) noexcept {
  const PhiloxCounter out = philox4x32_10(
      {static_cast<std::uint32_t>(step), static_cast<std::uint32_t>(step >> 32), static_cast<std::uint32_t>(purpose), round},
      {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
  const std::uint64_t bits = (std::uint64_t{out[0]} << 32 | out[1]) >> 11;
  return static_cast<double>(bits) * 0x1p-53;
}

}  // namespace qwen::sampling
