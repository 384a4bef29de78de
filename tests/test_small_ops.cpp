// The small CPU ops of the forward pass against their double-precision references and, for
// RoPE/YaRN, against the inverse frequencies transformers computed (tests/golden/reference/yarn).
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <vector>

#include <qwen/core/numeric.hpp>
#include <qwen/io/safetensors.hpp>
#include <qwen/kernels/cpu/embedding.hpp>
#include <qwen/kernels/cpu/moe_router.hpp>
#include <qwen/kernels/cpu/rms_norm.hpp>
#include <qwen/kernels/cpu/rope.hpp>
#include <qwen/kernels/cpu/silu_mul.hpp>

using namespace qwen;
using namespace qwen::kernels::cpu;

namespace {

std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// |a - b| <= rel * |b| + abs, element by element.
void check_close(const std::vector<float>& got, const std::vector<float>& expected, double rel, double abs) {
  REQUIRE(got.size() == expected.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(static_cast<double>(got[i]) - expected[i]) <= rel * std::abs(static_cast<double>(expected[i])) + abs)) ++bad;
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("small ops: rms_norm equals its double reference over ragged sizes, f32 and bf16 weights", "[small_ops]") {
  for (const std::int64_t dim : {1, 17, 97, 128, 255, 1024}) {
    for (const std::int64_t rows : {1, 3, 17}) {
      const auto x = random_floats(static_cast<std::size_t>(rows * dim), 11, 3.0f);
      const auto w = random_floats(static_cast<std::size_t>(dim), 12);
      std::vector<bf16> wb(w.size());
      for (std::size_t i = 0; i < w.size(); ++i) wb[i] = bf16::from_float(w[i]);
      std::vector<float> got(x.size(), NAN), expected(x.size(), NAN);
      // fp32 rounding of mean, rsqrt and two products: a few ulp.
      rms_norm(x.data(), rows, dim, w.data(), 1e-6f, got.data());
      rms_norm_reference(x.data(), rows, dim, w.data(), 1e-6f, expected.data());
      check_close(got, expected, 4e-7, 1e-30);
      rms_norm(x.data(), rows, dim, wb.data(), 1e-6f, got.data());
      rms_norm_reference(x.data(), rows, dim, wb.data(), 1e-6f, expected.data());
      check_close(got, expected, 4e-7, 1e-30);
      // In place.
      std::vector<float> in_place = x;
      rms_norm(in_place.data(), rows, dim, w.data(), 1e-6f, in_place.data());
      rms_norm(x.data(), rows, dim, w.data(), 1e-6f, got.data());
      CHECK(in_place == got);
    }
  }
}

TEST_CASE("small ops: rope frequencies equal transformers' (plain and YaRN)", "[small_ops]") {
  // Plain RoPE: inv_freq[i] = theta^(-2i/d), fp32.
  const RopeFrequencies plain = make_rope_frequencies(1e6, 128);
  REQUIRE(plain.inv_freq.size() == 64);
  for (int i = 0; i < 64; ++i)
    CHECK(std::abs(plain.inv_freq[static_cast<std::size_t>(i)] - std::pow(1e6, -2.0 * i / 128)) <= 2e-7 * std::pow(1e6, -2.0 * i / 128));
  CHECK(plain.attention_scaling == 1.0f);

  // YaRN as configured in the golden 'yarn' fixture; transformers' own inv_freq is stored there.
  const RopeFrequencies yarn = make_rope_frequencies(1e6, 128, YarnParams{4.0, 128, 32, 1, std::nullopt});
  CHECK(yarn.attention_scaling == static_cast<float>(0.1 * std::log(4.0) + 1.0));
  const auto ref = io::SafetensorsFile::open(std::filesystem::path(QWEN_GOLDEN_DIR) / "reference" / "yarn.safetensors");
  const TensorView hf = ref.view("rope.inv_freq");
  REQUIRE(hf.numel() == 64);
  int differ = 0;
  for (int i = 0; i < 64; ++i) {
    const float want = hf.as<float>(DType::F32)[i];
    const float have = yarn.inv_freq[static_cast<std::size_t>(i)];
    INFO("i = " << i << ": " << have << " vs transformers " << want);
    CHECK(std::abs(have - want) <= 2.5e-7f * want);  // at most 2 ulp (torch's fp32 pow may differ by one)
    differ += have != want;
  }
  CHECK(differ <= 8);
  CHECK(yarn.inv_freq != plain.inv_freq);
  CHECK_THROWS_AS(make_rope_frequencies(1e6, 127), InvalidArgument);
}

TEST_CASE("small ops: the rope cos / sin table and rotation equal the per-token formula bit for bit and the reference",
          "[small_ops]") {
  const RopeFrequencies plain = make_rope_frequencies(1e6, 128);
  const RopeFrequencies yarn = make_rope_frequencies(1e6, 128, YarnParams{4.0, 128, 32, 1, std::nullopt});
  constexpr int d = 128, half = d / 2;
  for (const RopeFrequencies* frequencies : {&plain, &yarn}) {
    const std::vector<std::int32_t> positions = {0, 1, 17, 97, 255, 40959, 131071};
    const auto n = static_cast<std::int64_t>(positions.size());
    const std::int64_t heads = 3;
    std::vector<float> cos_sin(static_cast<std::size_t>(n * d), NAN);
    rope_cos_sin(*frequencies, positions.data(), n, cos_sin.data());

    // The formula apply_rope used per token before the table existed, written out here: the
    // fp32 angle, cos / sin in double rounded to float and scaled, then the rotation.
    const auto x = random_floats(static_cast<std::size_t>(n * heads * d), 21);
    std::vector<float> per_token = x;
    bool table_identical = true;
    for (std::int64_t t = 0; t < n; ++t) {
      float cos_row[half], sin_row[half];
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[static_cast<std::size_t>(t)]) * frequencies->inv_freq[static_cast<std::size_t>(i)];
        cos_row[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * frequencies->attention_scaling;
        sin_row[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * frequencies->attention_scaling;
        table_identical = table_identical && std::bit_cast<std::uint32_t>(cos_row[i]) ==
                                                 std::bit_cast<std::uint32_t>(cos_sin[static_cast<std::size_t>(t * d + i)]);
        table_identical = table_identical && std::bit_cast<std::uint32_t>(sin_row[i]) ==
                                                 std::bit_cast<std::uint32_t>(cos_sin[static_cast<std::size_t>(t * d + half + i)]);
      }
      for (std::int64_t h = 0; h < heads; ++h) {
        float* v = per_token.data() + (t * heads + h) * d;
        for (int i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          const float c = cos_row[i], s = sin_row[i];
          v[i] = a * c - b * s;
          v[i + half] = b * c + a * s;
        }
      }
    }
    CHECK(table_identical);

    std::vector<float> got = x, expected = x;
    apply_rope<d>(got.data(), n, heads, cos_sin.data());
    apply_rope_reference(expected.data(), n, heads, positions.data(), *frequencies);
    CHECK(std::memcmp(got.data(), per_token.data(), got.size() * sizeof(float)) == 0);
    check_close(got, expected, 0, 1e-6);  // fp32 cos/sin and products: a few ulp of values ~4
    // Position 0 is the identity (times the attention scaling).
    for (int i = 0; i < d; ++i) CHECK(got[static_cast<std::size_t>(i)] == x[static_cast<std::size_t>(i)] * frequencies->attention_scaling);
  }
  RopeFrequencies broken = plain;
  broken.inv_freq.pop_back();
  std::vector<float> cos_sin(d);
  const std::int32_t position = 3;
  CHECK_THROWS_WITH(rope_cos_sin(broken, &position, 1, cos_sin.data()), Catch::Contains("head_dim 128 with 63 inverse frequencies"));
}

TEST_CASE("small ops: silu_mul and embedding", "[small_ops]") {
  const auto gate = random_floats(1000, 31, 4.0f), up = random_floats(1000, 32);
  std::vector<float> got(1000, NAN), expected(1000, NAN);
  silu_mul(gate.data(), up.data(), got.data(), 1000);
  silu_mul_reference(gate.data(), up.data(), expected.data(), 1000);
  check_close(got, expected, 3e-7, 1e-30);

  const auto table = random_floats(7 * 5, 33);
  std::vector<bf16> table_bf16(table.size());
  for (std::size_t i = 0; i < table.size(); ++i) table_bf16[i] = bf16::from_float(table[i]);
  const std::vector<std::int32_t> tokens = {6, 0, 3, 3};
  std::vector<float> out(4 * 5, NAN);
  embedding(table_bf16.data(), 7, 5, tokens.data(), 4, out.data());
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < 5; ++i) CHECK(out[static_cast<std::size_t>(t * 5 + i)] == table_bf16[static_cast<std::size_t>(tokens[t] * 5 + i)].to_float());
  const std::vector<std::int32_t> bad = {1, 7};
  CHECK_THROWS_WITH(embedding(table.data(), 7, 5, bad.data(), 2, out.data()),
                    Catch::Contains("token id 7 at index 1 is outside the vocabulary [0, 7)"));
}

TEST_CASE("small ops: moe_route picks the top-k of the softmax and renormalises", "[small_ops]") {
  const int experts = 8, k = 2;
  const auto logits = random_floats(5 * experts, 41, 2.0f);
  std::vector<std::int32_t> ids(5 * k);
  std::vector<float> weights(5 * k);
  for (const bool norm : {true, false}) {
    moe_route(logits.data(), 5, experts, k, norm, ids.data(), weights.data());
    for (int t = 0; t < 5; ++t) {
      // Naive: softmax in double, best two by scanning.
      std::vector<double> p(experts);
      double sum = 0;
      for (int e = 0; e < experts; ++e) sum += p[static_cast<std::size_t>(e)] = std::exp(static_cast<double>(logits[static_cast<std::size_t>(t * experts + e)]));
      int best = 0, second = -1;
      for (int e = 1; e < experts; ++e)
        if (p[static_cast<std::size_t>(e)] > p[static_cast<std::size_t>(best)]) best = e;
      for (int e = 0; e < experts; ++e)
        if (e != best && (second < 0 || p[static_cast<std::size_t>(e)] > p[static_cast<std::size_t>(second)])) second = e;
      CHECK(ids[static_cast<std::size_t>(t * k)] == best);
      CHECK(ids[static_cast<std::size_t>(t * k + 1)] == second);
      const double denom = norm ? p[static_cast<std::size_t>(best)] + p[static_cast<std::size_t>(second)] : sum;
      CHECK(weights[static_cast<std::size_t>(t * k)] == Approx(p[static_cast<std::size_t>(best)] / denom).epsilon(1e-6));
      CHECK(weights[static_cast<std::size_t>(t * k + 1)] == Approx(p[static_cast<std::size_t>(second)] / denom).epsilon(1e-6));
    }
  }
  // Ties go to the lower expert id.
  const std::vector<float> tied(experts, 0.5f);
  moe_route(tied.data(), 1, experts, k, true, ids.data(), weights.data());
  CHECK(ids[0] == 0);
  CHECK(ids[1] == 1);
  CHECK(weights[0] == 0.5f);
  CHECK_THROWS_AS(moe_route(tied.data(), 1, experts, 9, true, ids.data(), weights.data()), InvalidArgument);
}
