// kernels/cuda/sampling.cuh against the CPU sampler (qwen/sampling/row_sampler.hpp) and a naive
// double-precision reference of the rules (a full sort of the row, as tests/test_sampler.cpp):
//   1. the device Philox uniform equals sampling::uniform_draw bit for bit;
//   2. greedy (and top_k = 1) tokens equal the CPU sampler's, ties and -0 / +0 included, and
//      rows the CPU sampler rejects give invalid_token;
//   3. draws over many steps: never outside the reference's kept set, equal to the id-order
//      inverse CDF of the reference wherever u is not within rounding of a boundary, and a
//      chi-square test against the reference distribution (the CPU test's method, p = 0.001);
//   4. a row's token does not depend on its batch, its position in it, or the run;
//   5. host-side contract errors.
// The test rows are checked to keep their top_p and min_p boundaries away from rounding, so
// that the reference's kept set is the one both samplers must find.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <qwen/kernels/cuda/sampling.cuh>
#include <qwen/sampling/row_sampler.hpp>

#include "../sampling_test_support.hpp"
#include "gpu_test.cuh"

namespace {

using qwen::kernels::cuda::RowSamplingParams;
using qwen::kernels::cuda::sample_tokens;
using qwen::sampling::SamplingParams;
using qwen::test_cuda::check;
using qwen::test_cuda::DeviceBuffer;

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

__global__ void uniform_draw_kernel(const std::uint64_t* seed, const std::uint64_t* step, const std::uint32_t* round,
                                    double* out, std::int64_t n) {
  const std::int64_t i = std::int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) out[i] = qwen::kernels::cuda::uniform_draw(seed[i], step[i], round[i]);
}

using qwen::testing::test_logits;

// Token ids in rank order: higher logit first, equal logits by lower id.
std::vector<std::size_t> rank_order(const std::vector<float>& row) {
  std::vector<std::size_t> order(row.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return row[a] > row[b]; });
  return order;
}

// The filtered, renormalised distribution the rules define, in double (as naive_distribution
// in tests/test_sampler.cpp). margin, when given, receives how far (relative to the mass it is
// compared with) the nearest top_p and min_p decisions are from flipping: the test rows need
// it well above float rounding for the kept set to be unambiguous.
std::vector<double> reference_distribution(const std::vector<float>& row, const SamplingParams& p, double* margin = nullptr) {
  const std::size_t n = row.size();
  const std::vector<std::size_t> order = rank_order(row);
  std::size_t kept = p.top_k > 0 ? std::min<std::size_t>(n, static_cast<std::size_t>(p.top_k)) : n;
  const double top = row[order[0]];
  std::vector<double> w(n, 0.0);
  double mass = 0;
  for (std::size_t r = 0; r < kept; ++r) mass += w[order[r]] = std::exp((row[order[r]] - top) / p.temperature);
  double closest = std::numeric_limits<double>::infinity();
  if (p.top_p < 1) {
    double before = 0;
    for (std::size_t r = 0; r < kept; ++r) {
      if (w[order[r]] > 0) closest = std::min(closest, std::abs(before - p.top_p * mass) / mass);
      if (before >= p.top_p * mass) {
        for (std::size_t q = r; q < kept; ++q) w[order[q]] = 0;
        break;
      }
      before += w[order[r]];
    }
  }
  double total = 0;
  for (double& x : w) {
    if (x > 0 && p.min_p > 0) closest = std::min(closest, std::abs(x - p.min_p));
    if (x < p.min_p) x = 0;  // the best token's weight is 1
    total += x;
  }
  for (double& x : w) x /= total;
  if (margin) *margin = closest;
  return w;
}

RowSamplingParams device_params(const SamplingParams& p, std::int64_t vocab, std::uint64_t seed, std::uint64_t step) {
  return qwen::kernels::cuda::row_sampling_params(p, vocab, seed, step);
}

SamplingParams make_params(double temperature, int top_k = 0, double top_p = 1.0, double min_p = 0.0) {
  SamplingParams p;
  p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
  return p;
}

// copies rows of `row` in device memory (the first from the host, then doubling on the device).
void fill_copies(const DeviceBuffer<float>& dst, const std::vector<float>& row, std::size_t copies) {
  const std::size_t n = row.size();
  REQUIRE(dst.size() >= n * copies);
  check(cudaMemcpy(dst.data(), row.data(), n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy row");
  for (std::size_t have = 1; have < copies;) {
    const std::size_t more = std::min(have, copies - have);
    check(cudaMemcpy(dst.data() + have * n, dst.data(), more * n * sizeof(float), cudaMemcpyDeviceToDevice), "cudaMemcpy copies");
    have += more;
  }
}

// The GPU's tokens for rows of logits ([rows, vocab] on the host) with per-row parameters.
std::vector<std::int32_t> gpu_tokens(const std::vector<float>& logits, const std::vector<RowSamplingParams>& params,
                                     std::int64_t vocab) {
  const DeviceBuffer<float> d_logits(logits);
  const DeviceBuffer<RowSamplingParams> d_params(params);
  const DeviceBuffer<std::int32_t> d_tokens(std::vector<std::int32_t>(params.size(), -7));  // -7: not written
  check(sample_tokens(d_logits.data(), d_params.data(), d_tokens.data(), static_cast<std::int64_t>(params.size()), vocab, nullptr),
        "sample_tokens launch");
  check(cudaDeviceSynchronize(), "sample_tokens_kernel");
  return d_tokens.to_host();
}

// The CPU sampler's token for a processed row (no processors at these parameters).
std::int32_t cpu_token(std::vector<float> row, const SamplingParams& p, std::uint64_t seed, std::uint64_t step) {
  qwen::sampling::RowScratch scratch;
  const std::vector<std::int32_t> output(static_cast<std::size_t>(step), 0);  // its size is the draw step
  return qwen::sampling::sample_row(row, qwen::sampling::RowRequest{&p, seed, {}, output}, scratch).token;
}

}  // namespace

TEST_CASE("cuda sampling: the device uniform draw equals the host's bit for bit", "[cuda]") {
  std::vector<std::uint64_t> seeds, steps;
  std::vector<std::uint32_t> rounds;
  const std::uint64_t edges[] = {0, 1, 2, 0xffff'ffffull, 0x1'0000'0000ull, 0x1234'5678'9abc'def0ull, ~0ull, ~0ull - 1};
  for (std::uint64_t seed : edges)
    for (std::uint64_t step : edges)
      for (std::uint32_t round : {0u, 1u, 16u, 0xffff'ffffu}) seeds.push_back(seed), steps.push_back(step), rounds.push_back(round);
  std::mt19937_64 rng(0x5a3b'1e);
  for (int i = 0; i < 200000; ++i) {
    seeds.push_back(i % 4 == 0 ? static_cast<std::uint64_t>(i) : rng());
    steps.push_back(i % 3 == 0 ? static_cast<std::uint64_t>(i) : rng() >> (rng() % 64));
    rounds.push_back(i % 5 == 0 ? static_cast<std::uint32_t>(rng()) : 0u);
  }
  const auto n = static_cast<std::int64_t>(seeds.size());
  std::vector<double> expected(seeds.size());
  for (std::size_t i = 0; i < seeds.size(); ++i) expected[i] = qwen::sampling::uniform_draw(seeds[i], steps[i], rounds[i]);
  const DeviceBuffer<std::uint64_t> d_seeds(seeds), d_steps(steps);
  const DeviceBuffer<std::uint32_t> d_rounds(rounds);
  const DeviceBuffer<double> d_out(seeds.size());
  uniform_draw_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(d_seeds.data(), d_steps.data(), d_rounds.data(), d_out.data(), n);
  check(cudaGetLastError(), "uniform_draw_kernel launch");
  const std::vector<double> got = d_out.to_host();
  qwen::test_cuda::require_equal_bits(got, expected, "uniform_draw");
  for (double u : got) REQUIRE((u >= 0 && u < 1));
}

TEST_CASE("cuda sampling: greedy and top_k 1 equal the cpu sampler's greedy token; bad rows give -1", "[cuda]") {
  std::mt19937_64 rng(0x6e'ed1);
  std::vector<std::size_t> sizes(33);
  std::iota(sizes.begin(), sizes.end(), 1);
  sizes.push_back(151936);
  const std::vector<SamplingParams> params = {make_params(0.0), make_params(0.9e-5), make_params(1.0, 1), make_params(0.7, 1, 0.5, 0.2)};
  std::size_t compared = 0, mismatches = 0;
  for (const std::size_t n : sizes) {
    const auto vocab = static_cast<std::int64_t>(n);
    std::vector<std::vector<float>> rows;
    for (int kind = 0; kind < 8; ++kind) {
      std::vector<float> row = test_logits(n, rng(), kind % 2 == 0 ? 3.0f : 0.25f);
      const auto max_at = static_cast<std::size_t>(std::max_element(row.begin(), row.end()) - row.begin());
      if (kind == 1) row[n - 1] = row[max_at];                                       // a tie after the first maximum
      if (kind == 2) std::fill(row.begin(), row.end(), 1.5f);                        // every token tied
      if (kind == 3) for (std::size_t i = 0; i < n; i += 2) row[i] = neg_inf;        // masked tokens
      if (kind == 4) for (std::size_t i = 0; i < n; ++i) row[i] = i % 3 == 1 ? 0.0f : -0.0f;  // -0 == +0
      if (kind == 5) for (auto& x : row) x = std::round(x);                          // many ties
      if (kind == 6 && n > 1) row[0] = neg_inf, row[n - 1] = row[max_at] = 7.0f;     // the maximum at both ends but 0
      if (std::all_of(row.begin(), row.end(), [](float x) { return x == neg_inf; })) row[n - 1] = -3.0f;
      rows.push_back(row);
    }
    std::vector<float> logits;
    std::vector<RowSamplingParams> device;
    std::vector<std::int32_t> expected;
    for (std::size_t r = 0; r < rows.size(); ++r)
      for (std::size_t q = 0; q < params.size(); ++q) {
        logits.insert(logits.end(), rows[r].begin(), rows[r].end());
        device.push_back(device_params(params[q], vocab, 17 + r, q));
        expected.push_back(cpu_token(rows[r], params[q], 17 + r, q));
      }
    const std::vector<std::int32_t> got = gpu_tokens(logits, device, vocab);
    for (std::size_t i = 0; i < got.size(); ++i, ++compared)
      if (got[i] != expected[i] && ++mismatches <= 8)
        UNSCOPED_INFO("vocab " << n << ", row " << i / params.size() << ", params " << i % params.size() << ": gpu " << got[i]
                               << ", cpu " << expected[i]);
  }
  INFO(compared << " greedy tokens compared, " << mismatches << " differ");
  CHECK(compared > 0);
  CHECK(mismatches == 0);

  // Rows the CPU sampler rejects: the kernel writes invalid_token, greedy or not.
  std::vector<std::vector<float>> bad = {{1.0f, std::nanf(""), 2.0f}, {1.0f, 2.0f, std::numeric_limits<float>::infinity()},
                                         {neg_inf, neg_inf, neg_inf}, {-std::nanf(""), neg_inf, 0.0f}};
  for (const auto& p : {make_params(0.0), make_params(1.0, 0, 0.9)}) {
    std::vector<float> logits;
    std::vector<RowSamplingParams> device;
    for (const auto& row : bad) {
      CHECK_THROWS_AS(cpu_token(row, p, 1, 0), qwen::InvalidArgument);
      logits.insert(logits.end(), row.begin(), row.end());
      device.push_back(device_params(p, 3, 1, 0));
    }
    for (std::int32_t token : gpu_tokens(logits, device, 3)) CHECK(token == qwen::kernels::cuda::invalid_token);
  }
}

TEST_CASE("cuda sampling: draws follow the filtered distribution (kept set, inverse CDF, chi-square p = 0.001)", "[cuda]") {
  struct Case {
    const char* name;
    SamplingParams params;
  };
  const std::vector<Case> cases = {{"T 0.7", make_params(0.7)},
                                   {"T 1, top_k 5", make_params(1.0, 5)},
                                   {"T 0.8, top_p 0.9", make_params(0.8, 0, 0.9)},
                                   {"T 1, min_p 0.1", make_params(1.0, 0, 1.0, 0.1)},
                                   {"T 0.6, top_k 20, top_p 0.95 (Qwen3 thinking)", make_params(0.6, 20, 0.95)}};
  // The CPU test's 12-token row (a tie at 2.5 straddles top_k 2's edge), a 1000-token row with
  // ties and masked tokens (6 digits of rank key: the select's low digits run), a row of
  // quarter-step logits (hundreds of exact ties, the boundary falls inside a tie group), and a
  // flat 6007-token row whose mass spreads over the draw's three 2048-token tiles (the cases
  // without a top_p or min_p boundary only: with thousands of near-equal weights one of them
  // would fall within rounding of the boundary).
  std::vector<float> masked = test_logits(1000, 21, 1.0f);
  for (std::size_t i = 5; i < masked.size(); i += 11) masked[i] = neg_inf;
  std::vector<float> quarters = test_logits(997, 22, 1.0f);
  for (auto& x : quarters) x = std::round(x * 4) / 4;
  const std::vector<float> flat = test_logits(6007, 23, 0.3f);
  const std::vector<std::pair<const char*, std::vector<float>>> rows = {
      {"12 tokens", {1.0f, 2.5f, 0.3f, 2.5f, -1.0f, 1.7f, 0.0f, 3.1f, -0.4f, 1.2f, 2.0f, -2.0f}},
      {"1000 tokens, masked", masked},
      {"997 tokens, quarter steps", quarters},
      {"6007 tokens, flat (three draw tiles)", flat}};

  // Draws: launches of `batch` rows, each a copy of the row with its own step (one seed per case).
  constexpr std::size_t batch = 20000, launches = 10, draws = batch * launches;
  for (std::size_t c = 0; c < cases.size(); ++c) {
    for (std::size_t k = 0; k < rows.size(); ++k) {
      const auto& [row_name, row] = rows[k];
      const SamplingParams& p = cases[c].params;
      if (row.size() == flat.size() && (p.top_p < 1.0 || p.min_p > 0.0)) continue;
      const auto vocab = static_cast<std::int64_t>(row.size());
      INFO("case: " << cases[c].name << ", row: " << row_name);
      double margin = 0;
      const std::vector<double> expected = reference_distribution(row, p, &margin);
      // The test's own premise: no top_p or min_p decision within 1e-5 of flipping, far above
      // what fp32 exp and sums move (about 1e-6). A failure here asks for other test logits.
      REQUIRE(margin > 1e-5);
      const std::uint64_t seed = 1000003ull * (c + 1) + k;

      const DeviceBuffer<float> d_logits(batch * row.size());
      fill_copies(d_logits, row, batch);
      std::vector<int> observed(row.size(), 0);
      std::size_t outside = 0, cdf_compared = 0, cdf_mismatches = 0;
      // The id-order CDF of the reference: a draw u must give the token whose interval holds it.
      std::vector<double> cdf(row.size());
      std::partial_sum(expected.begin(), expected.end(), cdf.begin());
      for (std::size_t launch = 0; launch < launches; ++launch) {
        std::vector<RowSamplingParams> params(batch);
        for (std::size_t i = 0; i < batch; ++i) params[i] = device_params(p, vocab, seed, launch * batch + i);
        const DeviceBuffer<RowSamplingParams> d_params(params);
        const DeviceBuffer<std::int32_t> d_tokens(batch);
        check(sample_tokens(d_logits.data(), d_params.data(), d_tokens.data(), static_cast<std::int64_t>(batch), vocab, nullptr),
              "sample_tokens launch");
        const std::vector<std::int32_t> tokens = d_tokens.to_host();
        for (std::size_t i = 0; i < batch; ++i) {
          const std::int32_t t = tokens[i];
          if (t < 0 || t >= vocab || expected[static_cast<std::size_t>(t)] == 0) {
            if (++outside <= 5) UNSCOPED_INFO("draw " << launch * batch + i << " gave token " << t << ", outside the kept set");
            continue;
          }
          ++observed[static_cast<std::size_t>(t)];
          const double u = qwen::sampling::uniform_draw(seed, launch * batch + i);
          const auto at = static_cast<std::size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
          const double lo = at == 0 ? 0.0 : cdf[at - 1];
          if (at < cdf.size() && u - lo > 1e-5 && cdf[at] - u > 1e-5) {  // not within rounding of a boundary
            ++cdf_compared;
            if (static_cast<std::size_t>(t) != at && ++cdf_mismatches <= 5)
              UNSCOPED_INFO("draw " << launch * batch + i << ": u " << u << " gave token " << t << ", the inverse CDF " << at);
          }
        }
      }
      CHECK(outside == 0);
      INFO(cdf_compared << " draws compared with the reference's id-order inverse CDF");
      CHECK(cdf_compared > draws / 2);
      CHECK(cdf_mismatches == 0);

      // Chi-square against the reference distribution, as tests/test_sampler.cpp.
      const qwen::testing::ChiSquare fit = qwen::testing::chi_square(expected, observed, static_cast<double>(draws));
      REQUIRE(fit.bins >= 2);
      INFO("chi2 = " << fit.statistic << ", df = " << fit.bins - 1 << ", critical = " << fit.critical);
      CHECK(fit.statistic < fit.critical);
    }
  }
}

TEST_CASE("cuda sampling: at Qwen3's vocabulary every draw is in the kept set", "[cuda]") {
  constexpr std::int64_t vocab = 151936;
  constexpr std::size_t copies = 512;
  const std::vector<float> row = test_logits(vocab, 77);
  const DeviceBuffer<float> d_logits(copies * static_cast<std::size_t>(vocab));
  fill_copies(d_logits, row, copies);
  for (const auto& p : {make_params(0.7), make_params(1.0, 5), make_params(0.8, 0, 0.9), make_params(1.0, 0, 1.0, 0.1),
                        make_params(0.6, 20, 0.95), make_params(1.0, 300, 0.5, 0.01), make_params(1.2, 0, 0.6)}) {
    INFO("T " << p.temperature << ", top_k " << p.top_k << ", top_p " << p.top_p << ", min_p " << p.min_p);
    double margin = 0;
    const std::vector<double> expected = reference_distribution(row, p, &margin);
    REQUIRE(margin > 1e-5);  // the test's premise, as above
    std::vector<RowSamplingParams> params(copies);
    for (std::size_t i = 0; i < copies; ++i) params[i] = device_params(p, vocab, 99, i);
    const DeviceBuffer<RowSamplingParams> d_params(params);
    const DeviceBuffer<std::int32_t> d_tokens(copies);
    check(sample_tokens(d_logits.data(), d_params.data(), d_tokens.data(), static_cast<std::int64_t>(copies), vocab, nullptr), "launch");
    std::size_t outside = 0;
    std::vector<std::int32_t> tokens = d_tokens.to_host();
    for (std::int32_t t : tokens)
      if (t < 0 || t >= vocab || expected[static_cast<std::size_t>(t)] == 0) ++outside;
    CHECK(outside == 0);
    std::sort(tokens.begin(), tokens.end());
    const auto distinct = std::unique(tokens.begin(), tokens.end()) - tokens.begin();
    std::size_t kept = 0;
    for (double x : expected) kept += x > 0;
    INFO(kept << " tokens kept, " << distinct << " distinct tokens drawn");
    CHECK(distinct > 1);  // the draws are live (every set here keeps more than one likely token)
  }
}

TEST_CASE("cuda sampling: a row's token is the same alone, in any batch, and run to run", "[cuda]") {
  constexpr std::int64_t vocab = 151936, rows = 24;
  std::vector<float> logits;
  std::vector<RowSamplingParams> params;
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<float> row = test_logits(vocab, 7000 + static_cast<std::uint64_t>(r), r % 4 == 0 ? 0.5f : 3.0f);
    if (r == 7) row[100] = std::nanf("");  // a bad row among good ones
    logits.insert(logits.end(), row.begin(), row.end());
    SamplingParams p = make_params(0.6 + 0.05 * static_cast<double>(r), r % 3 == 0 ? 20 : 0, r % 2 == 0 ? 0.95 : 1.0,
                                   r % 5 == 0 ? 0.05 : 0.0);
    if (r == 11) p.temperature = 0;
    if (r == 13) p.top_k = 300;
    params.push_back(device_params(p, vocab, 42 + static_cast<std::uint64_t>(r), 5 + static_cast<std::uint64_t>(r)));
  }
  const std::vector<std::int32_t> batch = gpu_tokens(logits, params, vocab);
  CHECK(gpu_tokens(logits, params, vocab) == batch);  // run to run
  CHECK(batch[7] == qwen::kernels::cuda::invalid_token);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::vector<float> row(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
    INFO("row " << r);
    CHECK(gpu_tokens(row, {params[static_cast<std::size_t>(r)]}, vocab) == std::vector<std::int32_t>{batch[static_cast<std::size_t>(r)]});
  }
  // Reversed, and every other row: each keeps its token.
  std::vector<float> reversed_logits;
  std::vector<RowSamplingParams> reversed_params;
  for (std::int64_t r = rows - 1; r >= 0; r -= 1) {
    reversed_logits.insert(reversed_logits.end(), logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
    reversed_params.push_back(params[static_cast<std::size_t>(r)]);
  }
  const std::vector<std::int32_t> reversed = gpu_tokens(reversed_logits, reversed_params, vocab);
  for (std::int64_t r = 0; r < rows; ++r) CHECK(reversed[static_cast<std::size_t>(rows - 1 - r)] == batch[static_cast<std::size_t>(r)]);
  std::vector<float> odd_logits;
  std::vector<RowSamplingParams> odd_params;
  for (std::int64_t r = 1; r < rows; r += 2) {
    odd_logits.insert(odd_logits.end(), logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
    odd_params.push_back(params[static_cast<std::size_t>(r)]);
  }
  const std::vector<std::int32_t> odd = gpu_tokens(odd_logits, odd_params, vocab);
  for (std::int64_t r = 1; r < rows; r += 2) CHECK(odd[static_cast<std::size_t>(r / 2)] == batch[static_cast<std::size_t>(r)]);
}

TEST_CASE("cuda sampling: host-side contract errors", "[cuda]") {
  const DeviceBuffer<float> d_logits(std::vector<float>(8, 1.0f));
  const DeviceBuffer<RowSamplingParams> d_params(std::vector<RowSamplingParams>(2));
  const DeviceBuffer<std::int32_t> d_tokens(std::vector<std::int32_t>{5, 6});
  const auto fails = [](auto call, const std::string& needle) {
    INFO("expected: " << needle);
    CHECK_THROWS_AS(call(), qwen::InvalidArgument);
    CHECK_THROWS_WITH(call(), Catch::Contains(needle));
  };
  fails([&] { return sample_tokens(nullptr, d_params.data(), d_tokens.data(), 2, 4, nullptr); }, "null pointer");
  fails([&] { return sample_tokens(d_logits.data(), nullptr, d_tokens.data(), 2, 4, nullptr); }, "null pointer");
  fails([&] { return sample_tokens(d_logits.data(), d_params.data(), nullptr, 2, 4, nullptr); }, "null pointer");
  fails([&] { return sample_tokens(d_logits.data(), d_params.data(), d_tokens.data(), -1, 4, nullptr); }, "rows is -1");
  fails([&] { return sample_tokens(d_logits.data(), d_params.data(), d_tokens.data(), 2, 0, nullptr); }, "vocab is 0");
  fails([&] { return sample_tokens(d_logits.data(), d_params.data(), d_tokens.data(), 2, -3, nullptr); }, "vocab is -3");
  fails([&] { return sample_tokens(d_logits.data(), d_params.data(), d_tokens.data(), 1, qwen::kernels::cuda::sampling_max_vocab + 1, nullptr); },
        "vocab is 8388609");
  // rows == 0: nothing enqueued, null pointers allowed, the output untouched.
  CHECK(sample_tokens(nullptr, nullptr, nullptr, 0, 4, nullptr) == cudaSuccess);
  CHECK(sample_tokens(d_logits.data(), d_params.data(), d_tokens.data(), 0, 4, nullptr) == cudaSuccess);
  CHECK(d_tokens.to_host() == std::vector<std::int32_t>{5, 6});
  // Parameters are validated on the host when they are made, naming the parameter.
  SamplingParams bad;
  bad.top_p = 0;
  CHECK_THROWS_WITH(qwen::kernels::cuda::row_sampling_params(bad, 4, 0, 0), Catch::Contains("'top_p' is 0"));
  bad = SamplingParams{};
  bad.temperature = -1;
  CHECK_THROWS_AS(qwen::kernels::cuda::row_sampling_params(bad, 4, 0, 0), qwen::InvalidArgument);
}
