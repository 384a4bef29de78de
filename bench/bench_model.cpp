// qwen-bench-model: decode and prefill of the Qwen3-0.6B and -1.7B shapes on the CPU backend,
// with random bf16 (and, for Decode/0.6B-FP8, block-FP8) weights made at run time (nothing is
// downloaded or committed).
//   Decode/<shape>:       one token per step after a 128-token context (-FP8: e4m3 weights with
//                         bf16 128x128 block scales, as the official -FP8 checkpoints store them)
//   DecodeContext/0.6B/C/K: the same after a C-token context (512 ... 4096), with the KV cache in
//                         bf16 (K = 0, the default) or fp32 (K = 1)
//   Prefill/<shape>/512:  a 512-token prompt in one step (logits for the last token)
// Counters: bytes_per_second (weight bytes, and for decode the KV cache's bytes, read per
// second), bandwidth_fraction (that over a read-bandwidth probe run in this process); for prefill
// also flops_per_second and peak_fraction (over the larger of an fp32-FMA and a bf16 dot-product
// probe in this process, both reported; amx_bf16_probe too where the machine has AMX, not
// divided by). Each probe runs right before and right after the benchmark's timed loop and the
// larger value is used. See bench/probes.hpp.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <qwen/backend/cpu.hpp>
#include <qwen/engine/step_model.hpp>
#include <qwen/model/forward.hpp>
#include <qwen/model/qwen3.hpp>
#include <qwen/model/weights.hpp>

#include "probes.hpp"
#include "random_model.hpp"

namespace {

using namespace qwen;
using namespace qwen::literals;

template <class Model>
bench::RandomModel<Model>& bench_for() {
  static bench::RandomModel<Model> b;  // made once per shape, shared by its benchmarks
  return b;
}

// A backend whose KV caches are fp32 (the shapes' own backends make the default, bf16), made on
// first use.
CpuBackend& fp32_kv_backend() {
  static CpuBackend backend(0, KVCacheDType::fp32);
  return backend;
}

// One token per step after `context` cached positions, the KV cache in `kv`.
template <class Model>
void decode(benchmark::State& state, int context, KVCacheDType kv = KVCacheDType::bf16) {
  auto& b = bench_for<Model>();
  const int blocks = (context + 1 + 15) / 16;
  CpuBackend& backend = kv == b.backend.kv_cache_dtype() ? b.backend : fp32_kv_backend();
  Qwen3Forward<Model, CpuBackend, 16> model(b.weights, b.config, backend,
                                            {.max_tokens = context, .max_sequences = 1, .kv_blocks = blocks, .max_logit_rows = 1});
  BlockManager<16> books(blocks);
  StepPlan plan;
  const int seq = books.add_sequence();
  std::vector<std::int32_t> prompt(context);
  for (int i = 0; i < context; ++i) prompt[static_cast<std::size_t>(i)] = (i * 7919) % Model::vocab_size;
  std::vector<float> logits;
  const SequenceChunk warm{seq, 0, prompt, Logits::none};
  plan_step(books, std::span(&warm, 1), model.limits(), plan);
  model.run(plan, logits);
  const std::int32_t token = 42;
  double seconds = 0;
  const double bandwidth = bench::bracket_probe([&] { return bench::read_bandwidth(backend.pool()); }, [&] {
    for (auto _ : state) {
      const auto t0 = std::chrono::steady_clock::now();
      const SequenceChunk next{seq, context, std::span(&token, 1), Logits::last};  // rewrites position `context` each time
      plan_step(books, std::span(&next, 1), model.limits(), plan);
      model.run(plan, logits);
      benchmark::DoNotOptimize(logits.data());
      seconds += bench::seconds_since(t0);
    }
  });
  // Weights, plus the K and V of every cached position (what attention reads per step).
  const double kv_bytes = static_cast<double>(engine::kv_bytes_per_token<Model>(element_bytes(kv))) * (context + 1);
  const double bytes = (static_cast<double>(b.bytes_per_token) + kv_bytes) * static_cast<double>(state.iterations());
  state.counters["bytes_per_second"] = bytes / seconds;
  state.counters["bandwidth_fraction"] = bytes / seconds / bandwidth;
  state.counters["read_bandwidth_probe"] = bandwidth;
  state.counters["tokens_per_second"] = static_cast<double>(state.iterations()) / seconds;
}

template <class Model>
void BM_Decode(benchmark::State& state) { decode<Model>(state, 128); }
template <class Model>
void BM_DecodeContext(benchmark::State& state) {
  decode<Model>(state, static_cast<int>(state.range(0)), state.range(1) == 0 ? KVCacheDType::bf16 : KVCacheDType::fp32);
}

// One decode step of `state.range(0)` sequences at once, each after a 128-token context: what
// the engine's steps cost once every running request decodes. tokens_per_second counts the
// step's tokens; bandwidth_fraction the weight bytes (read once per step) over the read probe;
// peak_fraction the step's Linear and lm_head flops over the compute probe.
template <class Model>
void BM_DecodeBatch(benchmark::State& state) {
  auto& b = bench_for<Model>();
  constexpr int context = 128;
  const int batch = static_cast<int>(state.range(0));
  const int blocks_each = (context + 1 + 15) / 16;
  Qwen3Forward<Model, CpuBackend, 16> model(
      b.weights, b.config, b.backend,
      {.max_tokens = context, .max_sequences = batch, .kv_blocks = batch * blocks_each, .max_logit_rows = batch});
  BlockManager<16> books(batch * blocks_each);
  StepPlan plan;
  std::vector<float> logits;
  std::vector<int> seqs;
  std::vector<std::vector<std::int32_t>> prompts;
  for (int s = 0; s < batch; ++s) {
    seqs.push_back(books.add_sequence());
    auto& prompt = prompts.emplace_back(context);
    for (int i = 0; i < context; ++i) prompt[static_cast<std::size_t>(i)] = (i * 7919 + s * 104729) % Model::vocab_size;
    const SequenceChunk warm{seqs.back(), 0, prompt, Logits::none};
    plan_step(books, std::span(&warm, 1), model.limits(), plan);
    model.run(plan, logits);
  }
  const std::vector<std::int32_t> tokens(static_cast<std::size_t>(batch), 42);
  std::vector<SequenceChunk> step;
  for (int s = 0; s < batch; ++s)  // rewrites position 128 of every sequence each time
    step.push_back({seqs[static_cast<std::size_t>(s)], context, std::span(tokens).subspan(static_cast<std::size_t>(s), 1), Logits::last});
  double seconds = 0;
  const double bandwidth = bench::bracket_probe([&] { return bench::read_bandwidth(b.backend.pool()); }, [&] {
    for (auto _ : state) {
      const auto t0 = std::chrono::steady_clock::now();
      plan_step(books, std::span<const SequenceChunk>(step), model.limits(), plan);
      model.run(plan, logits);
      benchmark::DoNotOptimize(logits.data());
      seconds += bench::seconds_since(t0);
    }
  });
  const double iterations = static_cast<double>(state.iterations());
  const double flops = 2.0 * (b.linear_params + static_cast<double>(Model::vocab_size) * Model::hidden_size) * batch;
  // Once the batch is large enough that reading the weights no longer binds, the compute
  // ceiling does (probed right after the loop).
  const bench::ComputePeak peak = bench::compute_peak(b.backend.pool());
  state.counters["tokens_per_second"] = batch * iterations / seconds;
  state.counters["flops_per_second"] = flops * iterations / seconds;
  state.counters["peak_fraction"] = flops * iterations / seconds / peak.best();
  state.counters["bandwidth_fraction"] = static_cast<double>(b.bytes_per_token) * iterations / seconds / bandwidth;
}

template <class Model>
void BM_Prefill(benchmark::State& state) {
  auto& b = bench_for<Model>();
  const int tokens = static_cast<int>(state.range(0));
  Qwen3Forward<Model, CpuBackend, 16> model(b.weights, b.config, b.backend,
                                            {.max_tokens = tokens, .max_sequences = 1, .kv_blocks = (tokens + 15) / 16, .max_logit_rows = 1});
  BlockManager<16> books((tokens + 15) / 16);
  StepPlan plan;
  const int seq = books.add_sequence();
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(tokens));
  for (int i = 0; i < tokens; ++i) prompt[static_cast<std::size_t>(i)] = (i * 7919) % Model::vocab_size;
  std::vector<float> logits;
  double seconds = 0;
  const bench::ComputePeak peak = bench::bracket_probe([&] { return bench::compute_peak(b.backend.pool()); }, [&] {
    for (auto _ : state) {
      const auto t0 = std::chrono::steady_clock::now();
      const SequenceChunk chunk{seq, 0, prompt, Logits::last};
      plan_step(books, std::span(&chunk, 1), model.limits(), plan);
      model.run(plan, logits);
      benchmark::DoNotOptimize(logits.data());
      seconds += bench::seconds_since(t0);
    }
  });
  const double n = tokens, iterations = static_cast<double>(state.iterations());
  // Linear layers for every token, attention (q·k and p·v over the causal triangle), lm_head for one.
  const double attention = Model::num_layers * 2.0 * 2.0 * Model::num_heads * Model::head_dim * n * (n + 1) / 2;
  const double flops = 2.0 * b.linear_params * n + attention + 2.0 * Model::vocab_size * Model::hidden_size;
  const double bytes = static_cast<double>(b.bytes_per_token);
  state.counters["flops_per_second"] = flops * iterations / seconds;
  state.counters["peak_fraction"] = flops * iterations / seconds / peak.best();
  state.counters["fp32_fma_probe"] = peak.fp32_fma;
  state.counters["bf16_dot_probe"] = peak.bf16_dot;
  if (const double amx = bench::amx_bf16_peak(b.backend.pool()); amx > 0) state.counters["amx_bf16_probe"] = amx;  // not a divisor
  state.counters["bytes_per_second"] = bytes * iterations / seconds;
  state.counters["bandwidth_fraction"] = bytes * iterations / seconds / bench::read_bandwidth(b.backend.pool());
  state.counters["tokens_per_second"] = n * iterations / seconds;
}

using Small = Qwen3<Dense, 0.6_B, bf16>;
using Medium = Qwen3<Dense, 1.7_B, bf16>;
using SmallFp8 = Qwen3<Dense, 0.6_B, fp8>;

}  // namespace

BENCHMARK(BM_Decode<Small>)->Name("Decode/0.6B")->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_DecodeContext<Small>)->Name("DecodeContext/0.6B")->ArgsProduct({{512, 1024, 2048, 4096}, {0, 1}})->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_DecodeBatch<Small>)->Name("DecodeBatch/0.6B")->Arg(8)->Arg(32)->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_Prefill<Small>)->Name("Prefill/0.6B")->Arg(512)->Unit(benchmark::kMillisecond)->MinTime(5);
BENCHMARK(BM_Decode<SmallFp8>)->Name("Decode/0.6B-FP8")->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_Decode<Medium>)->Name("Decode/1.7B")->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_Prefill<Medium>)->Name("Prefill/1.7B")->Arg(512)->Unit(benchmark::kMillisecond)->MinTime(5);

BENCHMARK_MAIN();
