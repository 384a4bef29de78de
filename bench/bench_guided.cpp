// qwen-bench-guided: the cost of guided decoding's token mask at Qwen3's vocabulary (151,936 ids,
// the real tokenizer), one row on one thread, from four grammar states:
//   think          inside a think block (free text up to "</think>")
//   literal        inside the forced "<tool_call>\n{\"name\": \"" text
//   json_structure after {"city": "Lisbon", -- a key or whitespace must follow
//   json_string    inside a string value -- most of the vocabulary is allowed
//   schema_key     a call's arguments under a schema, after {"city": "Lisbon", -- one of the
//                  properties that may come next ("days", "unit")
//   schema_string  inside a string value under that schema
// Counters, all measured in this process:
//   mask_seconds     one mask_logits call (the engine's cost per guided row per step)
//   stepping_seconds stepping every token's bytes through a copy of the state (the plain way,
//                    without the first-byte groups and the string shortcut): the peer
//   speedup          stepping_seconds / mask_seconds
//   sampler_seconds  one top_k 20 / top_p 0.95 draw from the same row (what every row costs anyway)
//   allowed          tokens the mask keeps
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <qwen/guided/grammar.hpp>
#include <qwen/guided/json_schema.hpp>
#include <qwen/guided/token_mask.hpp>
#include <qwen/sampling/sampler.hpp>
#include <qwen/tokenizer/tokenizer.hpp>

namespace {

using namespace qwen::guided;
constexpr std::int64_t vocab = 151936;

const qwen::tokenizer::Tokenizer& tokenizer() {
  static const auto tok = qwen::tokenizer::Tokenizer::from_file(std::filesystem::path(QWEN_BENCH_TOKENIZER_DIR) / "tokenizer.json");
  return tok;
}
const TokenBytes& token_bytes() {
  static const TokenBytes bytes(tokenizer(), vocab);
  return bytes;
}

std::vector<float> logits() {
  std::vector<float> row(static_cast<std::size_t>(vocab));
  std::uint64_t state = 0x9e3779b97f4a7c15ull;
  for (float& x : row) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    x = static_cast<float>(static_cast<double>(state >> 40) * 0x1p-24 * 8.0 - 4.0);
  }
  return row;
}

template <class F>
double best_seconds(F&& f, int reps) {
  double best = 1e9;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void run(benchmark::State& state, const Grammar& g, const std::string& prefix) {
  const TokenBytes& bytes = token_bytes();
  GuideState s = guide_start(g);
  if (!guide_step(g, s, prefix)) {
    state.SkipWithError("the prefix does not fit the grammar");
    return;
  }
  const std::vector<float> original = logits();
  std::vector<float> row = original;
  std::int64_t allowed = 0;
  for (auto _ : state) {
    row = original;
    allowed = mask_logits(g, s, bytes, row);
    benchmark::DoNotOptimize(row.data());
  }
  const double mask = best_seconds([&] { row = original, allowed = mask_logits(g, s, bytes, row); }, 20);
  const double stepping = best_seconds(
      [&] {
        std::int64_t n = 0;
        for (std::int64_t t = 0; t < vocab; ++t) n += token_allowed(g, s, bytes, static_cast<std::int32_t>(t)) ? 1 : 0;
        benchmark::DoNotOptimize(n);
      },
      5);
  qwen::sampling::Sampler sampler;
  qwen::sampling::SamplingParams p;
  p.temperature = 0.6, p.top_k = 20, p.top_p = 0.95, p.seed = 1;
  std::vector<float> sample_row = original;
  const double sampling = best_seconds([&] { benchmark::DoNotOptimize(sampler.sample(sample_row, {&p, 1, {}, {}}).token); }, 20);
  state.counters["mask_seconds"] = mask;
  state.counters["stepping_seconds"] = stepping;
  state.counters["speedup"] = stepping / mask;
  state.counters["sampler_seconds"] = sampling;
  state.counters["allowed"] = static_cast<double>(allowed);
}

const Grammar& tool_grammar() {
  static const Grammar g = tool_call_grammar({"get_weather"}, ThinkBlock::optional);
  return g;
}
const Grammar& object_grammar() {
  static const Grammar g = json_object_grammar(ThinkBlock::none);
  return g;
}

const Grammar& schema_grammar() {
  static const Grammar g = tool_call_grammar(
      {"get_weather"}, ThinkBlock::none,
      {std::make_shared<const JsonSchema>(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {
          "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
          "required": ["city", "unit"]})"),
                                          "schema")});
  return g;
}

void BM_Mask_think(benchmark::State& s) { run(s, tool_grammar(), "<think>\nThe user asks about the weather, so I"); }
void BM_Mask_literal(benchmark::State& s) { run(s, tool_grammar(), "<think>\nok\n</think>\n\n<tool_call>\n{\"na"); }
void BM_Mask_json_structure(benchmark::State& s) { run(s, object_grammar(), "{\"city\": \"Lisbon\","); }
void BM_Mask_json_string(benchmark::State& s) { run(s, object_grammar(), "{\"city\": \"Lis"); }
const std::string call_head = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": ";
void BM_Mask_schema_key(benchmark::State& s) { run(s, schema_grammar(), call_head + "{\"city\": \"Lisbon\", "); }
void BM_Mask_schema_string(benchmark::State& s) { run(s, schema_grammar(), call_head + "{\"city\": \"Lis"); }

}  // namespace

BENCHMARK(BM_Mask_think)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mask_literal)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mask_json_structure)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mask_json_string)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mask_schema_key)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mask_schema_string)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
