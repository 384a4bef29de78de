// qwen-bench-model: decode and prefill of the Qwen3-0.6B and -1.7B shapes on the CPU backend,
// with random bf16 weights made at run time (nothing is downloaded or committed).
//   Decode/<shape>:       one token per step after a 128-token context
//   Prefill/<shape>/512:  a 512-token prompt in one step (logits for the last token)
// Counters: bytes_per_second (weight bytes read per second), bandwidth_fraction (that over a
// read-bandwidth probe run in this process); for prefill also flops_per_second and
// peak_fraction (over a bf16 dot-product probe in this process). Each probe runs right before and
// right after the benchmark's timed loop and the larger value is used. See bench/probes.hpp.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <qwen/backend/cpu.hpp>
#include <qwen/model/forward.hpp>
#include <qwen/model/qwen3.hpp>
#include <qwen/model/weights.hpp>

#include "probes.hpp"

namespace {

using namespace qwen;
using namespace qwen::literals;

// Owns random bf16 tensors and hands out views of them.
class RandomWeights {
 public:
  explicit RandomWeights(kernels::cpu::ThreadPool& pool) : pool_(pool) {}

  TensorView make(Shape shape, bool norm = false) {
    const std::int64_t n = element_count(shape);
    auto& buffer = buffers_.emplace_back(new bf16[static_cast<std::size_t>(n)]);
    bf16* data = buffer.get();
    const std::uint64_t seed = 0x9e3779b97f4a7c15ull * buffers_.size();
    pool_.parallel_for(n, 1 << 16, [&](std::int64_t b, std::int64_t e) {
      std::uint64_t state = seed ^ static_cast<std::uint64_t>(b);
      for (std::int64_t i = b; i < e; ++i) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        // norms near 1; other weights of magnitude ~2^-7 with random sign and mantissa
        const auto bits = static_cast<std::uint16_t>(norm ? (0x3f80 | (state & 0x1f)) : (0x3c00 | (state & 0x807f)));
        data[i] = bf16::from_bits(bits);
      }
    });
    bytes_ += static_cast<std::uint64_t>(n) * 2;
    return TensorView(data, DType::BF16, std::move(shape));
  }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }

 private:
  kernels::cpu::ThreadPool& pool_;
  std::vector<std::unique_ptr<bf16[]>> buffers_;
  std::uint64_t bytes_ = 0;
};

template <class Model>
struct Bench {
  CpuBackend backend;
  RandomWeights arena{backend.pool()};
  Weights<Model> weights;
  io::ModelConfig config;
  std::uint64_t bytes_per_token = 0;  // weights a decode step reads: every Linear and lm_head
  double linear_params = 0;           // per token: multiply-adds in the Linear layers of all layers

  Bench() {
    constexpr std::int64_t h = Model::hidden_size, inter = Model::intermediate_size;
    weights.embed_tokens = arena.make({Model::vocab_size, h});
    weights.layers.resize(Model::num_layers);
    for (auto& layer : weights.layers) {
      layer.input_layernorm = arena.make({h}, true);
      layer.post_attention_layernorm = arena.make({h}, true);
      layer.self_attn.q_proj.weight = arena.make({Model::q_size, h});
      layer.self_attn.k_proj.weight = arena.make({Model::kv_size, h});
      layer.self_attn.v_proj.weight = arena.make({Model::kv_size, h});
      layer.self_attn.o_proj.weight = arena.make({h, Model::q_size});
      layer.self_attn.q_norm = arena.make({Model::head_dim}, true);
      layer.self_attn.k_norm = arena.make({Model::head_dim}, true);
      layer.mlp.gate_proj.weight = arena.make({inter, h});
      layer.mlp.up_proj.weight = arena.make({inter, h});
      layer.mlp.down_proj.weight = arena.make({h, inter});
    }
    weights.norm = arena.make({h}, true);
    weights.lm_head = weights.embed_tokens;  // 0.6B and 1.7B are tied
    weights.lm_head_tied = true;
    linear_params = static_cast<double>(Model::num_layers) *
                    static_cast<double>((Model::q_size + 2 * Model::kv_size) * h + h * Model::q_size + 3 * inter * h);
    bytes_per_token = static_cast<std::uint64_t>(linear_params * 2) + static_cast<std::uint64_t>(Model::vocab_size) * h * 2;
    config.model_type = "qwen3";
    config.hidden_size = static_cast<int>(h);
    config.head_dim = Model::head_dim;
    config.max_position_embeddings = 40960;
    config.rms_norm_eps = 1e-6;
    config.rope_theta = 1e6;
  }
};

template <class Model>
Bench<Model>& bench_for() {
  static Bench<Model> b;  // made once per shape, shared by its benchmarks
  return b;
}

template <class Model>
void BM_Decode(benchmark::State& state) {
  auto& b = bench_for<Model>();
  constexpr int context = 128;
  Qwen3Forward<Model, CpuBackend, 16> model(b.weights, b.config, b.backend, 16);
  const int seq = model.add_sequence();
  std::vector<std::int32_t> prompt(context);
  for (int i = 0; i < context; ++i) prompt[static_cast<std::size_t>(i)] = (i * 7919) % Model::vocab_size;
  std::vector<float> logits;
  const SequenceChunk warm{seq, 0, prompt, Logits::none};
  model.step(std::span(&warm, 1), logits);
  const std::int32_t token = 42;
  double seconds = 0;
  const double bandwidth = bench::bracket_probe([&] { return bench::read_bandwidth(b.backend.pool()); }, [&] {
    for (auto _ : state) {
      const auto t0 = std::chrono::steady_clock::now();
      const SequenceChunk next{seq, context, std::span(&token, 1), Logits::last};  // rewrites position 128 each time
      model.step(std::span(&next, 1), logits);
      benchmark::DoNotOptimize(logits.data());
      seconds += bench::seconds_since(t0);
    }
  });
  const double bytes = static_cast<double>(b.bytes_per_token) * static_cast<double>(state.iterations());
  state.counters["bytes_per_second"] = bytes / seconds;
  state.counters["bandwidth_fraction"] = bytes / seconds / bandwidth;
  state.counters["read_bandwidth_probe"] = bandwidth;
  state.counters["tokens_per_second"] = static_cast<double>(state.iterations()) / seconds;
}

template <class Model>
void BM_Prefill(benchmark::State& state) {
  auto& b = bench_for<Model>();
  const int tokens = static_cast<int>(state.range(0));
  Qwen3Forward<Model, CpuBackend, 16> model(b.weights, b.config, b.backend, (tokens + 15) / 16);
  const int seq = model.add_sequence();
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(tokens));
  for (int i = 0; i < tokens; ++i) prompt[static_cast<std::size_t>(i)] = (i * 7919) % Model::vocab_size;
  std::vector<float> logits;
  double seconds = 0;
  const double peak = bench::bracket_probe([&] { return bench::bf16_dot_peak(b.backend.pool()); }, [&] {
    for (auto _ : state) {
      const auto t0 = std::chrono::steady_clock::now();
      const SequenceChunk chunk{seq, 0, prompt, Logits::last};
      model.step(std::span(&chunk, 1), logits);
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
  state.counters["peak_fraction"] = peak > 0 ? flops * iterations / seconds / peak : 0;
  state.counters["bf16_dot_probe"] = peak;
  state.counters["bytes_per_second"] = bytes * iterations / seconds;
  state.counters["bandwidth_fraction"] = bytes * iterations / seconds / bench::read_bandwidth(b.backend.pool());
  state.counters["tokens_per_second"] = n * iterations / seconds;
}

using Small = Qwen3<Dense, 0.6_B, bf16>;
using Medium = Qwen3<Dense, 1.7_B, bf16>;

}  // namespace

BENCHMARK(BM_Decode<Small>)->Name("Decode/0.6B")->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_Prefill<Small>)->Name("Prefill/0.6B")->Arg(512)->Unit(benchmark::kMillisecond)->MinTime(5);
BENCHMARK(BM_Decode<Medium>)->Name("Decode/1.7B")->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_Prefill<Medium>)->Name("Prefill/1.7B")->Arg(512)->Unit(benchmark::kMillisecond)->MinTime(5);

BENCHMARK_MAIN();
