// kernels/cpu/sampling_scan.hpp against scalar references written here, at ragged sizes. Built
// three times (this machine's target, AVX2, baseline x86-64) so that each vector path is checked.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <qwen/kernels/cpu/sampling_scan.hpp>

namespace {

namespace scan = qwen::kernels::cpu::sampling_scan;

std::vector<float> random_values(std::size_t n, std::uint64_t seed, float lo, float hi) {
  std::vector<float> out(n);
  std::uint64_t state = seed * 0x9e3779b97f4a7c15ull + 7;
  for (auto& x : out) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    x = lo + (hi - lo) * static_cast<float>(static_cast<double>(state >> 11) * 0x1p-53);
  }
  return out;
}

}  // namespace

TEST_CASE("sampling scan: the build uses the expected vector path", "[sampling scan]") {
#if defined(QWEN_EXPECTED_ISA)
  CHECK(std::string(scan::Simd::isa) == QWEN_EXPECTED_ISA);
#else
  SUCCEED("native build: " << scan::Simd::isa);
#endif
}

TEST_CASE("sampling scan: row_max, first_index_of and the non-finite probe", "[sampling scan]") {
  for (const std::size_t n : {1ul, 7ul, 17ul, 64ul, 97ul, 255ul, 1000ul, 4099ul}) {
    std::vector<float> x = random_values(n, n, -30, 30);
    x[n / 2] = 40.0f;
    x[n - 1] = 40.0f;  // a later tie
    const auto m = scan::row_max(x.data(), static_cast<std::int64_t>(n));
    CHECK(m.max == 40.0f);
    CHECK(!m.has_non_finite);
    CHECK(scan::first_index_of(x.data(), static_cast<std::int64_t>(n), 40.0f) == static_cast<std::int64_t>(n / 2));
    for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()}) {
      std::vector<float> y = x;
      y[(n * 3) / 4] = bad;
      INFO("n " << n << ", bad " << bad);
      CHECK(scan::row_max(y.data(), static_cast<std::int64_t>(n)).has_non_finite);
    }
  }
}

TEST_CASE("sampling scan: exp_scaled and keep_at_least against std::exp", "[sampling scan]") {
  for (const std::size_t n : {1ul, 17ul, 1023ul, 1025ul, 4099ul}) {
    std::vector<float> x = random_values(n, n + 1, -100, 5);
    if (n > 1) x[0] = -std::numeric_limits<float>::infinity();  // (the max must be finite)
    const float max = scan::row_max(x.data(), static_cast<std::int64_t>(n)).max;
    std::vector<float> e(n);
    std::vector<double> blocks(static_cast<std::size_t>(scan::block_count(static_cast<std::int64_t>(n))));
    const double total = scan::exp_scaled(x.data(), static_cast<std::int64_t>(n), max, 0.7f, e.data(), blocks.data());
    double expected_total = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double ref = std::exp(static_cast<double>((x[i] - max) * 0.7f));
      expected_total += e[i];
      INFO("n " << n << ", i " << i << ", x " << x[i]);
      if (ref < 1e-37) CHECK(e[i] < 1e-37f);  // below FLT_MIN the fast exp may flush to 0
      else CHECK(std::abs(e[i] - ref) <= 4e-7 * ref);
    }
    CHECK(std::abs(total - expected_total) <= 1e-6 * expected_total);
    const std::vector<float> before = e;  // the expectation comes from the input, not the output
    const double kept = scan::keep_at_least(e.data(), static_cast<std::int64_t>(n), 0.25f, blocks.data());
    double expected_kept = 0;
    for (std::size_t i = 0; i < n; ++i) {
      INFO("i " << i << ", e " << before[i]);
      CHECK(e[i] == (before[i] >= 0.25f ? before[i] : 0.0f));
      if (before[i] >= 0.25f) expected_kept += before[i];
    }
    CHECK(std::abs(kept - expected_kept) <= 1e-6 * expected_kept);
  }
}

TEST_CASE("sampling scan: sum_ranked_before against the scalar rule, ties included", "[sampling scan]") {
  for (const std::size_t n : {1ul, 9ul, 17ul, 100ul, 1024ul, 2051ul}) {
    std::vector<float> e = random_values(n, n + 2, 0, 1);
    for (std::size_t i = 0; i < n; i += 3) e[i] = std::round(e[i] * 8) / 8;  // many exact ties
    for (const std::size_t pivot_index : {std::size_t{0}, n / 3, n - 1}) {
      for (const float floor : {0.0f, 0.3f}) {
        const float pivot = e[pivot_index];
        std::vector<double> blocks(static_cast<std::size_t>(scan::block_count(static_cast<std::int64_t>(n))), -1.0);
        const double got = scan::sum_ranked_before(e.data(), static_cast<std::int64_t>(n), pivot,
                                                   static_cast<std::int64_t>(pivot_index), floor, blocks.data());
        double expected = 0;
        for (std::size_t i = 0; i < n; ++i)
          if (e[i] >= floor && (e[i] > pivot || (e[i] == pivot && i < pivot_index))) expected += e[i];
        INFO("n " << n << ", pivot index " << pivot_index << ", floor " << floor);
        CHECK(std::abs(got - expected) <= 1e-6 * std::max(1.0, expected));
        double block_total = 0;
        for (double b : blocks) block_total += b;
        CHECK(block_total == got);
      }
    }
    // pivot < 0 admits everything above the floor.
    double all = 0;
    for (float v : e) all += v;
    CHECK(std::abs(scan::sum_ranked_before(e.data(), static_cast<std::int64_t>(n), -1.0f, 0, 0.0f) - all) <= 1e-6 * all);
  }
}

TEST_CASE("sampling scan: histogram buckets order like values and hold every element", "[sampling scan]") {
  std::vector<float> e = random_values(5000, 3, 0, 1);
  e[0] = 1.0f, e[1] = 0.0f, e[2] = 1e-30f;
  static scan::Histogram h;
  scan::histogram(e.data(), static_cast<std::int64_t>(e.size()), h);
  std::int64_t count = 0;
  double mass = 0;
  for (int b = 0; b < scan::histogram_buckets; ++b) count += h.count[b], mass += h.mass[b];
  CHECK(count == 5000);
  double expected = 0;
  for (float v : e) {
    expected += v;
    const int b = scan::bucket_of(v);
    CHECK(scan::bucket_floor(b) <= v);
    if (b + 1 < scan::histogram_buckets) CHECK(v < scan::bucket_floor(b + 1));
  }
  CHECK(std::abs(mass - expected) <= 1e-5 * expected);
  CHECK(scan::bucket_of(1.0f) == scan::histogram_buckets - 1);
}
