// What the CPU sampler's tests (test_sampler.cpp) and the GPU sampler's (cuda/sampling_gpu.cu)
// share: their test logits and their chi-square goodness-of-fit test.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace qwen::testing {

// Logits with a spread of magnitudes and some exact ties, deterministic: a logistic variate of
// the given scale; every 13th token from 7 on repeats the logit 7 places before it.
inline std::vector<float> test_logits(std::size_t n, std::uint64_t seed, float scale = 3.0f) {
  std::vector<float> row(n);
  std::uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& x : row) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    const double u = static_cast<double>(state >> 11) * 0x1p-53;
    x = static_cast<float>(scale * std::log(u / (1 - u + 1e-12) + 1e-12) / 2);
  }
  for (std::size_t i = 7; i < n; i += 13) row[i] = row[i - 7];  // ties
  return row;
}

// Upper 0.001 quantile of chi-square with df degrees of freedom: a table for small df, else
// Wilson-Hilferty with z = 3.090232 (error below 0.5% from df 10 on).
inline double chi_square_critical_001(int df) {
  static const double table[] = {10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588};
  if (df <= 10) return table[df - 1];
  const double a = 2.0 / (9.0 * df), z = 3.090232;
  return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

struct ChiSquare {
  double statistic = 0;
  int bins = 0;         // degrees of freedom + 1; a test needs at least 2
  double critical = 0;  // chi_square_critical_001(bins - 1)
};

// Pearson's chi-square of observed draw counts against the expected probabilities of `draws`
// draws. Tokens of probability 0 are left out (the caller checks they were never drawn); tokens
// expected fewer than 5 times are pooled into one bin (the approximation's usual condition), and
// a pool still under 5 joins the last regular bin, which keeps the bins a partition of the
// outcomes.
template <class Count>
ChiSquare chi_square(const std::vector<double>& expected, const std::vector<Count>& observed, double draws) {
  std::vector<double> bin_expected, bin_observed;
  double pool_expected = 0, pool_observed = 0;
  for (std::size_t t = 0; t < expected.size(); ++t) {
    if (expected[t] == 0) continue;
    const double e = draws * expected[t];
    if (e < 5) {
      pool_expected += e, pool_observed += static_cast<double>(observed[t]);
    } else {
      bin_expected.push_back(e), bin_observed.push_back(static_cast<double>(observed[t]));
    }
  }
  if (bin_expected.empty()) return {};
  if (pool_expected >= 5) {
    bin_expected.push_back(pool_expected), bin_observed.push_back(pool_observed);
  } else {
    bin_expected.back() += pool_expected, bin_observed.back() += pool_observed;
  }
  ChiSquare result;
  result.bins = static_cast<int>(bin_expected.size());
  for (std::size_t b = 0; b < bin_expected.size(); ++b) {
    const double d = bin_observed[b] - bin_expected[b];
    result.statistic += d * d / bin_expected[b];
  }
  result.critical = result.bins >= 2 ? chi_square_critical_001(result.bins - 1) : 0;
  return result;
}

}  // namespace qwen::testing
