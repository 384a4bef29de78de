// The sampler (qwen/sampling/) against naive references written here: a full sort of the row in
// double precision for the filters, element-wise fp32 arithmetic in vLLM's order for the
// processors, a double log-softmax for logprobs, and a chi-square goodness-of-fit test of
// 200,000 seeded draws against the analytically filtered distribution (20,000 in the sanitizer
// build, tests/sanitized.hpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <qwen/kernels/cpu/thread_pool.hpp>
#include <qwen/sampling/sampler.hpp>

#include "sampling_test_support.hpp"
#include "sanitized.hpp"

namespace {

using namespace qwen::sampling;

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// ---- naive references ----------------------------------------------------------------------

// The filtered, renormalised distribution of a processed row, the slow obvious way: sort every
// token by (logit desc, id asc), keep the first top_k, keep token j of the rest iff the
// probability mass ranked before it is < top_p, keep p >= min_p * p_max.
std::vector<double> naive_distribution(const std::vector<float>& row, const SamplingParams& p) {
  const std::size_t n = row.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
  std::size_t kept = p.top_k > 0 ? std::min<std::size_t>(n, static_cast<std::size_t>(p.top_k)) : n;
  const double top = row[order[0]];
  std::vector<double> w(n, 0.0);
  double mass = 0;
  for (std::size_t r = 0; r < kept; ++r) mass += w[order[r]] = std::exp((row[order[r]] - top) / p.temperature);
  double before = 0;
  for (std::size_t r = 0; r < kept && p.top_p < 1; ++r) {  // top_p = 1 is off (HF adds no warper)
    if (before >= p.top_p * mass) {
      for (std::size_t q = r; q < kept; ++q) w[order[q]] = 0;
      kept = r;
      break;
    }
    before += w[order[r]];
  }
  double total = 0;
  for (double& x : w) {
    if (x < p.min_p * 1.0) x = 0;  // w of the best token is 1
    total += x;
  }
  for (double& x : w) x /= total;
  return w;
}

// vLLM's processors on one row, element by element in fp32.
std::vector<float> naive_processed(std::vector<float> row, const SamplingParams& p, const std::vector<std::int32_t>& prompt,
                                   const std::vector<std::int32_t>& output) {
  if (static_cast<int>(output.size()) < p.min_tokens)
    for (auto t : p.stop_token_ids) row[t] = neg_inf;
  for (auto [t, bias] : p.logit_bias) row[t] += bias;
  for (std::size_t t = 0; t < row.size(); ++t) {
    const bool in_prompt = std::find(prompt.begin(), prompt.end(), static_cast<std::int32_t>(t)) != prompt.end();
    const auto count = std::count(output.begin(), output.end(), static_cast<std::int32_t>(t));
    if (in_prompt || count > 0) {
      const auto r = static_cast<float>(p.repetition_penalty);
      row[t] = row[t] > 0 ? row[t] / r : row[t] * r;
    }
    row[t] -= static_cast<float>(p.frequency_penalty) * static_cast<float>(count);
    if (count > 0) row[t] -= static_cast<float>(p.presence_penalty);
  }
  return row;
}

using qwen::testing::test_logits;

SampleResult sample_one(std::vector<float>& row, const SamplingParams& p, std::uint64_t seed,
                        const std::vector<std::int32_t>& prompt = {}, const std::vector<std::int32_t>& output = {}) {
  RowScratch scratch;
  return sample_row(row, RowRequest{&p, seed, prompt, output}, scratch);
}

}  // namespace

TEST_CASE("philox4x32-10 reproduces the Random123 known-answer vectors", "[sampler]") {
  CHECK(philox4x32_10({0, 0, 0, 0}, {0, 0}) == PhiloxCounter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(philox4x32_10({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}) == PhiloxCounter{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  CHECK(philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}) ==
        PhiloxCounter{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
  const double u = uniform_draw(7, 3);
  CHECK((u >= 0 && u < 1));
  CHECK(uniform_draw(7, 3) == u);
  CHECK(uniform_draw(7, 4) != u);
  CHECK(uniform_draw(8, 3) != u);
}

TEST_CASE("sampled frequencies match the filtered distribution (chi-square, p = 0.001)", "[sampler]") {
  struct Case {
    const char* name;
    std::vector<float> logits;
    SamplingParams params;
  };
  const std::vector<float> small = {1.0f, 2.5f, 0.3f, 2.5f, -1.0f, 1.7f, 0.0f, 3.1f, -0.4f, 1.2f, 2.0f, -2.0f};
  std::vector<Case> cases;
  const auto add = [&](const char* name, std::vector<float> logits, auto set) {
    SamplingParams p;
    set(p);
    cases.push_back({name, std::move(logits), p});
  };
  add("plain", small, [](SamplingParams&) {});
  add("temperature 0.7", small, [](SamplingParams& p) { p.temperature = 0.7; });
  add("temperature 1.8", small, [](SamplingParams& p) { p.temperature = 1.8; });
  add("top_k 2 (a tie at the edge: the lower id is kept)", small, [](SamplingParams& p) { p.top_k = 2; });
  add("top_k 6", small, [](SamplingParams& p) { p.top_k = 6; });
  add("top_p 0.8", small, [](SamplingParams& p) { p.top_p = 0.8; });
  add("top_p 0.5, temperature 0.6", small, [](SamplingParams& p) { p.top_p = 0.5, p.temperature = 0.6; });
  add("min_p 0.1", small, [](SamplingParams& p) { p.min_p = 0.1; });
  add("top_k 8 + top_p 0.9", small, [](SamplingParams& p) { p.top_k = 8, p.top_p = 0.9; });
  add("top_k 8 + top_p 0.9 + min_p 0.2, T 0.8", small, [](SamplingParams& p) { p.top_k = 8, p.top_p = 0.9, p.min_p = 0.2, p.temperature = 0.8; });
  add("top_p 0.85 + min_p 0.15", small, [](SamplingParams& p) { p.top_p = 0.85, p.min_p = 0.15; });
  // top_k above candidate_limit: the histogram path's top_k cut.
  add("vocab 400, top_k 300 + top_p 0.9", test_logits(400, 5, 0.5f), [](SamplingParams& p) { p.top_k = 300, p.top_p = 0.9; });
  // Vocabularies above candidate_limit take the histogram path (the small ones the heap).
  add("vocab 400, top_p 0.7", test_logits(400, 6, 0.5f), [](SamplingParams& p) { p.top_p = 0.7; });
  add("vocab 400, min_p 0.3, T 0.9", test_logits(400, 7, 0.5f), [](SamplingParams& p) { p.min_p = 0.3, p.temperature = 0.9; });
  // top_p without top_k above candidate_limit: the rejection sampler (p = 0.2 rejects often).
  add("vocab 400, top_p 0.2, T 0.5", test_logits(400, 8, 0.5f), [](SamplingParams& p) { p.top_p = 0.2, p.temperature = 0.5; });
  add("vocab 400, top_p 0.6 + min_p 0.4", test_logits(400, 9, 0.5f), [](SamplingParams& p) { p.top_p = 0.6, p.min_p = 0.4; });
  std::vector<float> tied = test_logits(400, 10, 0.5f);
  for (std::size_t i = 0; i < tied.size(); ++i) tied[i] = std::round(tied[i] * 4) / 4;  // many exact ties
  add("vocab 400 with ties, top_p 0.5", tied, [](SamplingParams& p) { p.top_p = 0.5; });
  // Masked rows (-inf logits) and a vocabulary that is not a multiple of any vector width.
  std::vector<float> masked = test_logits(403, 11, 0.5f);
  for (std::size_t i = 0; i < masked.size(); i += 9) masked[i] = -std::numeric_limits<float>::infinity();
  add("vocab 403 masked, top_k 300 + min_p 0.05", masked, [](SamplingParams& p) { p.top_k = 300, p.min_p = 0.05; });
  add("vocab 403 masked, top_p 0.7 + min_p 0.05, T 0.8", masked, [](SamplingParams& p) { p.top_p = 0.7, p.min_p = 0.05, p.temperature = 0.8; });
  // The largest temperature: uniform over the unmasked tokens (-inf must stay excluded, not become NaN).
  add("vocab 403 masked, T 1e6, top_k 300", masked, [](SamplingParams& p) { p.temperature = qwen::sampling::max_temperature, p.top_k = 300; });
  // top_k above the number of tokens that can be drawn: the cut falls among the zero-mass tokens.
  std::vector<float> few = test_logits(403, 12, 0.5f);
  for (std::size_t i = 50; i < few.size(); ++i) few[i] = -std::numeric_limits<float>::infinity();
  add("vocab 403, 50 unmasked, top_k 300", few, [](SamplingParams& p) { p.top_k = 300; });
  add("vocab 403, 50 unmasked, top_k 300 + top_p 0.9", few, [](SamplingParams& p) { p.top_k = 300, p.top_p = 0.9; });

  // Tokens of probability 0 are never drawn; the rest fit the distribution (chi-square, p = 0.001,
  // binned as qwen::testing::chi_square says).
  const int draws = qwen_test::sanitized ? 20000 : 200000;
  RowScratch scratch;
  for (std::size_t c = 0; c < cases.size(); ++c) {
    auto& [name, logits, params] = cases[c];
    INFO("case: " << name);
    const std::vector<double> expected = naive_distribution(logits, params);
    std::vector<int> observed(logits.size(), 0);
    for (int i = 0; i < draws; ++i) {
      const std::uint64_t seed = (c + 1) * 1000003ull + static_cast<std::uint64_t>(i);
      ++observed[static_cast<std::size_t>(sample_row(logits, RowRequest{&params, seed, {}, {}}, scratch).token)];
    }
    for (std::size_t t = 0; t < logits.size(); ++t)
      if (expected[t] == 0) {
        INFO("token " << t << " is filtered out");
        CHECK(observed[t] == 0);
      }
    const qwen::testing::ChiSquare fit = qwen::testing::chi_square(expected, observed, draws);
    REQUIRE(fit.bins >= 2);
    INFO("chi2 = " << fit.statistic << ", df = " << fit.bins - 1 << ", critical = " << fit.critical);
    CHECK(fit.statistic < fit.critical);
  }
}

TEST_CASE("the kept set and its probabilities equal the naive sort at real vocabulary sizes", "[sampler]") {
  RowScratch scratch;
  for (const std::size_t n : {1ul, 17ul, 97ul, 1000ul, 4099ul, 151936ul}) {
    const std::vector<float> row = test_logits(n, n);
    for (const auto& [k, top_p, min_p, t] : std::vector<std::tuple<int, double, double, double>>{
             {0, 1.0, 0.0, 1.0}, {20, 0.95, 0.0, 0.6}, {0, 0.95, 0.0, 1.0}, {0, 0.5, 0.0, 0.7}, {0, 1.0, 0.05, 1.0},
             {1, 1.0, 0.0, 1.0}, {300, 0.9, 0.0, 1.0}, {5000, 1.0, 0.0, 1.3}, {40, 0.8, 0.1, 0.9}, {0, 0.99, 0.02, 1.5}}) {
      SamplingParams p;
      p.top_k = k, p.top_p = top_p, p.min_p = min_p, p.temperature = t;
      INFO("vocab " << n << ", top_k " << k << ", top_p " << top_p << ", min_p " << min_p << ", T " << t);
      const std::vector<double> expected = naive_distribution(row, p);
      const auto got = filtered_distribution(row, p, scratch);
      std::size_t kept = 0;
      for (double x : expected) kept += x > 0;
      REQUIRE(got.size() == kept);
      double worst = 0;
      for (const auto& [token, prob] : got) {
        REQUIRE(expected[static_cast<std::size_t>(token)] > 0);
        worst = std::max(worst, std::abs(prob - expected[static_cast<std::size_t>(token)]) / expected[static_cast<std::size_t>(token)]);
      }
      CHECK(worst < 1e-5);
    }
  }
}

TEST_CASE("greedy is the first maximum; top_k 1 is greedy", "[sampler]") {
  SamplingParams greedy;
  greedy.temperature = 0;
  SamplingParams top1;
  top1.top_k = 1;
  for (const std::size_t n : {3ul, 97ul, 151936ul}) {
    for (std::uint64_t s = 0; s < 8; ++s) {
      std::vector<float> row = test_logits(n, s + 100);
      const float max = *std::max_element(row.begin(), row.end());
      const auto first = static_cast<std::int32_t>(std::find(row.begin(), row.end(), max) - row.begin());
      if (s % 2 == 1) row[n - 1] = max;  // a tie after the first maximum
      CHECK(sample_one(row, greedy, s).token == first);
      CHECK(sample_one(row, top1, s).token == first);
    }
  }
  std::vector<float> ties = {1.0f, 4.0f, 2.0f, 4.0f, 4.0f};
  CHECK(sample_one(ties, greedy, 0).token == 1);
  for (std::uint64_t s = 0; s < 50; ++s) CHECK(sample_one(ties, top1, s).token == 1);
}

TEST_CASE("same seed, same tokens whatever the batch and the thread count", "[sampler]") {
  constexpr std::int64_t vocab = 151936, rows = 24;
  std::vector<float> logits;
  std::vector<SamplingParams> params(rows);
  std::vector<std::vector<std::int32_t>> outputs(rows);
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto row = test_logits(vocab, 7000 + r);
    logits.insert(logits.end(), row.begin(), row.end());
    auto& p = params[static_cast<std::size_t>(r)];
    p.temperature = 0.6 + 0.05 * r;
    p.top_k = r % 3 == 0 ? 20 : 0;
    p.top_p = r % 2 == 0 ? 0.95 : 1.0;
    p.min_p = r % 5 == 0 ? 0.05 : 0.0;
    p.presence_penalty = r % 4 == 0 ? 0.5 : 0.0;
    p.seed = 42 + r;
    outputs[static_cast<std::size_t>(r)] = {static_cast<std::int32_t>(r), 5, 5, 1000};
  }
  const auto requests = [&](const std::vector<std::int64_t>& order) {
    std::vector<RowRequest> out;
    for (auto r : order)
      out.push_back({&params[static_cast<std::size_t>(r)], *params[static_cast<std::size_t>(r)].seed, {}, outputs[static_cast<std::size_t>(r)]});
    return out;
  };
  std::vector<std::int64_t> order(rows);
  std::iota(order.begin(), order.end(), 0);
  const std::vector<float> original = logits;

  Sampler sampler;
  std::vector<SampleResult> alone(rows);
  for (std::int64_t r = 0; r < rows; ++r)
    alone[static_cast<std::size_t>(r)] = sampler.sample(std::span(logits).subspan(static_cast<std::size_t>(r * vocab), vocab),
                                                        requests({r})[0]);
  for (unsigned threads : {1u, 2u, 3u}) {
    qwen::kernels::cpu::ThreadPool pool(threads);
    std::vector<SampleResult> batch(rows);
    sampler.sample_batch(logits, vocab, requests(order), batch, &pool);
    for (std::int64_t r = 0; r < rows; ++r) CHECK(batch[static_cast<std::size_t>(r)].token == alone[static_cast<std::size_t>(r)].token);
  }
  // Reversed, and in a smaller batch with different neighbours: each row keeps its token.
  std::vector<float> reversed;
  std::vector<std::int64_t> back(order.rbegin(), order.rend());
  for (auto r : back) reversed.insert(reversed.end(), logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
  std::vector<SampleResult> batch(rows);
  qwen::kernels::cpu::ThreadPool pool(2);
  sampler.sample_batch(reversed, vocab, requests(back), batch, &pool);
  for (std::int64_t i = 0; i < rows; ++i) CHECK(batch[static_cast<std::size_t>(i)].token == alone[static_cast<std::size_t>(back[static_cast<std::size_t>(i)])].token);
  CHECK(logits == original);  // the rows are restored
  // Not all the same token (the draws are live).
  std::vector<std::int32_t> tokens;
  for (auto& a : alone) tokens.push_back(a.token);
  std::sort(tokens.begin(), tokens.end());
  CHECK(std::unique(tokens.begin(), tokens.end()) - tokens.begin() > rows / 2);
}

TEST_CASE("penalties, logit_bias and min_tokens equal the naive fp32 reference", "[sampler]") {
  const std::size_t vocab = 97;
  const std::vector<float> raw = test_logits(vocab, 3);
  const std::vector<std::int32_t> prompt = {1, 2, 2, 7, 50, 96};
  const std::vector<std::int32_t> output = {7, 7, 7, 3, 50, 8, 8, 0};
  for (const auto& [rep, freq, pres] : std::vector<std::tuple<double, double, double>>{
           {1.0, 0.0, 0.0}, {1.3, 0.0, 0.0}, {0.7, 0.0, 0.0}, {1.0, 0.5, 0.0}, {1.0, 0.0, 1.5}, {1.2, -0.3, 0.8}, {1.1, 2.0, -2.0}}) {
    for (const int min_tokens : {0, 20}) {
      SamplingParams p;
      p.repetition_penalty = rep, p.frequency_penalty = freq, p.presence_penalty = pres;
      p.logit_bias = {{3, 2.5f}, {60, -100.0f}, {7, 0.25f}};
      p.min_tokens = min_tokens;
      p.stop_token_ids = {95, 3};
      INFO("repetition " << rep << ", frequency " << freq << ", presence " << pres << ", min_tokens " << min_tokens);
      std::vector<float> row = raw;
      PenaltyScratch scratch;
      {
        RowEdits edits(row);
        apply_logits_processors(row, RowRequest{&p, 0, prompt, output}, scratch, edits);
        const auto expected = naive_processed(raw, p, prompt, output);
        for (std::size_t t = 0; t < vocab; ++t) {
          INFO("token " << t);
          CHECK(std::bit_cast<std::uint32_t>(row[t]) == std::bit_cast<std::uint32_t>(expected[t]));
        }
        // Greedy over the processed row is the naive argmax.
        p.temperature = 0;
        const auto best = std::max_element(expected.begin(), expected.end()) - expected.begin();
        std::vector<float> copy = raw;
        CHECK(sample_one(copy, p, 0, prompt, output).token == best);
      }
      CHECK(row == raw);  // restored
      for (std::size_t t = 0; t < scratch.output_count.size(); ++t) REQUIRE(scratch.output_count[t] == 0);  // left clean
      for (std::size_t t = 0; t < scratch.seen.size(); ++t) REQUIRE(scratch.seen[t] == 0);
    }
  }
}

TEST_CASE("min_tokens masks the stop tokens until enough are generated", "[sampler]") {
  std::vector<float> row = {0.0f, 1.0f, 9.0f, 2.0f};
  SamplingParams p;
  p.temperature = 0.5;
  p.min_tokens = 3;
  p.stop_token_ids = {2};
  const std::vector<std::int32_t> two = {1, 1}, three = {1, 1, 1};
  for (std::uint64_t s = 0; s < 200; ++s) {
    const auto early = sample_one(row, p, s, {}, two);
    CHECK(early.token != 2);
    CHECK(!early.stop);
  }
  const auto late = sample_one(row, p, 1, {}, three);  // p(2) = 1 - 1e-6
  CHECK(late.token == 2);
  CHECK(late.stop);
}

TEST_CASE("logprobs are the raw model distribution, with up to 20 alternatives", "[sampler]") {
  for (const std::size_t n : {5ul, 151936ul}) {
    std::vector<float> row = test_logits(n, 11);
    double max = *std::max_element(row.begin(), row.end()), sum = 0;
    for (float x : row) sum += std::exp(x - max);
    const double lse = max + std::log(sum);
    SamplingParams p;
    p.temperature = 0.7, p.top_p = 0.9, p.presence_penalty = 2, p.logit_bias = {{1, 50.0f}};
    for (const int k : {0, 1, 20}) {
      p.logprobs = k;
      const auto result = sample_one(row, p, 9, {}, {0, 1, 2});
      CHECK(result.token == 1);  // the bias makes it nearly certain
      CHECK(std::abs(result.logprob - (row[1] - lse)) < 1e-5);  // without the bias and penalty
      REQUIRE(result.top_logprobs.size() == std::min<std::size_t>(n, static_cast<std::size_t>(k)));
      std::vector<std::size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](auto a, auto b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      for (std::size_t i = 0; i < result.top_logprobs.size(); ++i) {
        CHECK(result.top_logprobs[i].token == static_cast<std::int32_t>(order[i]));
        CHECK(std::abs(result.top_logprobs[i].logprob - (row[order[i]] - lse)) < 1e-5);
      }
    }
  }
}

TEST_CASE("bad parameters and logits are errors naming the parameter and value", "[sampler]") {
  std::vector<float> row = test_logits(10, 1);
  const auto fails = [&](auto set, const std::string& needle) {
    SamplingParams p;
    set(p);
    INFO("expected: " << needle);
    CHECK_THROWS_WITH(sample_one(row, p, 0), Catch::Contains(needle));
    CHECK_THROWS_AS(sample_one(row, p, 0), qwen::InvalidArgument);
  };
  fails([](SamplingParams& p) { p.temperature = -0.5; }, "'temperature' is -0.5");
  fails([](SamplingParams& p) { p.temperature = std::nan(""); }, "'temperature' is nan");
  fails([](SamplingParams& p) { p.top_p = 0; }, "'top_p' is 0, must be in (0, 1]");
  fails([](SamplingParams& p) { p.top_p = 1.5; }, "'top_p' is 1.5");
  fails([](SamplingParams& p) { p.top_k = -2; }, "'top_k' is -2");
  fails([](SamplingParams& p) { p.min_p = -0.1; }, "'min_p' is -0.1");
  fails([](SamplingParams& p) { p.min_p = 1.01; }, "'min_p' is 1.01");
  fails([](SamplingParams& p) { p.logprobs = 21; }, "'logprobs' is 21, must be in [0, 20]");
  fails([](SamplingParams& p) { p.presence_penalty = 2.5; }, "'presence_penalty' is 2.5");
  fails([](SamplingParams& p) { p.frequency_penalty = -3; }, "'frequency_penalty' is -3");
  fails([](SamplingParams& p) { p.repetition_penalty = 0; }, "'repetition_penalty' is 0");
  // One range wherever a value comes from (generation_config.json has the same), narrow enough
  // that no logit divided or multiplied by it overflows.
  fails([](SamplingParams& p) { p.temperature = 1e300; }, "'temperature' is 1e+300, must be in [0, 1e6]");
  fails([](SamplingParams& p) { p.repetition_penalty = 1e-308; }, "'repetition_penalty' is 1e-308, must be in [1e-06, 1e+06]");
  fails([](SamplingParams& p) { p.repetition_penalty = 2e6; }, "'repetition_penalty' is 2e+06");
  fails([](SamplingParams& p) { p.min_tokens = -1; }, "'min_tokens' is -1");
  fails([](SamplingParams& p) { p.logit_bias = {{10, 1.0f}}; }, "'logit_bias' names token 10, outside the vocabulary [0, 10)");
  fails([](SamplingParams& p) { p.logit_bias = {{2, 101.0f}}; }, "'logit_bias' for token 2 is 101");
  fails([](SamplingParams& p) { p.stop_token_ids = {-1}; }, "'stop_token_ids' names token -1");

  SamplingParams ok;
  row[6] = std::nanf("");
  CHECK_THROWS_WITH(sample_one(row, ok, 0), Catch::Contains("logit of token 6 is nan"));
  row[6] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(sample_one(row, ok, 0), Catch::Contains("logit of token 6 is inf"));
  std::fill(row.begin(), row.end(), neg_inf);
  CHECK_THROWS_WITH(sample_one(row, ok, 0), Catch::Contains("every logit is -inf"));
  row = test_logits(10, 1);
  CHECK_THROWS_WITH(sample_one(row, ok, 0, {}, {1, 12}), Catch::Contains("output token[1] is 12, outside the vocabulary [0, 10)"));
  SamplingParams only_stop;
  only_stop.min_tokens = 1;
  only_stop.stop_token_ids = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  CHECK_THROWS_WITH(sample_one(row, only_stop, 0), Catch::Contains("every logit is -inf"));
  CHECK(row == test_logits(10, 1));  // restored after the throw

  Sampler sampler;
  std::vector<float> batch = test_logits(30, 2);
  SamplingParams bad;
  bad.top_p = 2;
  const std::vector<RowRequest> rows = {{&ok, 0, {}, {}}, {&bad, 0, {}, {}}, {&ok, 0, {}, {}}};
  std::vector<SampleResult> out(3);
  CHECK_THROWS_WITH(sampler.sample_batch(batch, 10, rows, out), Catch::Contains("row 1: sampling parameter 'top_p' is 2"));
  CHECK_THROWS_WITH(sampler.sample_batch(batch, 11, rows, out), Catch::Contains("logits hold 30 values, expected 3 rows x 11 vocab"));
}

TEST_CASE("top_p by rejection keeps to the nucleus at the real vocabulary", "[sampler]") {
  // At 151,936 logits a chi-square is out of reach (the vocabulary-400 cases above check the
  // rejection sampler's distribution); here every draw must fall inside the naive nucleus.
  RowScratch scratch;
  for (const auto& [top_p, min_p, t] : std::vector<std::tuple<double, double, double>>{{0.95, 0.0, 1.0}, {0.3, 0.0, 0.8}, {0.05, 0.0, 1.0}, {0.8, 0.01, 1.2}}) {
    std::vector<float> row = test_logits(151936, 77);
    SamplingParams p;
    p.top_p = top_p, p.min_p = min_p, p.temperature = t;
    INFO("top_p " << top_p << ", min_p " << min_p << ", T " << t);
    const std::vector<double> expected = naive_distribution(row, p);
    for (std::uint64_t seed = 0; seed < 300; ++seed) {
      const auto token = sample_row(row, RowRequest{&p, seed, {}, {}}, scratch).token;
      REQUIRE(expected[static_cast<std::size_t>(token)] > 0);
    }
  }
}

TEST_CASE("top_p rejection: many rounds, and the fallback after the last one", "[sampler]") {
  // A flat row (all logits equal but one slightly higher) with a tiny top_p: the nucleus is the
  // one best token, and each rejected draw only cuts the support to the lower ids, so some
  // draws need more than max_rejection_rounds and take the histogram path.
  std::vector<float> row(151936, 0.0f);
  row[5] = 1e-3f;
  SamplingParams p;
  p.top_p = 1e-6;  // top_p * total mass is 0.15 < 1: the nucleus is token 5 alone
  RowScratch scratch;
  int fell_back = 0, accepted_late = 0;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    CHECK(sample_row(row, RowRequest{&p, seed, {}, {}}, scratch).token == 5);
    fell_back += scratch.rejection_rounds > detail::max_rejection_rounds;
    accepted_late += scratch.rejection_rounds > 3 && scratch.rejection_rounds <= detail::max_rejection_rounds;
  }
  CHECK(fell_back > 0);
  CHECK(accepted_late > 0);
}
