// qwen-bench-model: decode and prefill of the Qwen3-0.6B and -1.7B shapes on the CPU backend,
// with random bf16 (and, for Decode/0.6B-FP8, block-FP8) weights made at run time (nothing is
// downloaded or committed).
//   Decode/<shape>:       one token per step after a 128-token context (-FP8: e4m3 weights with
//                         bf16 128x128 block scales, as the official -FP8 checkpoints store them)
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
  // A block-FP8 Linear [out, in]: random e4m3 codes (no NaN) and bf16 scales near 2^-8.
  LinearWeight make_fp8(std::int64_t out, std::int64_t in) {
    const std::int64_t n = out * in;
    auto& codes = fp8_buffers_.emplace_back(new fp8_e4m3[static_cast<std::size_t>(n)]);
    fp8_e4m3* data = codes.get();
    const std::uint64_t seed = 0x2545f4914f6cdd1dull * (fp8_buffers_.size() + 7);
    pool_.parallel_for(n, 1 << 16, [&](std::int64_t b, std::int64_t e) {
      std::uint64_t state = seed ^ static_cast<std::uint64_t>(b);
      for (std::int64_t i = b; i < e; ++i) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        auto bits = static_cast<std::uint8_t>(state);
        if ((bits & 0x7f) == 0x7f) bits = 0x38;
        data[i] = fp8_e4m3::from_bits(bits);
      }
    });
    const Shape scale_shape{(out + 127) / 128, (in + 127) / 128};
    auto& scales = buffers_.emplace_back(new bf16[static_cast<std::size_t>(element_count(scale_shape))]);
    for (std::int64_t i = 0; i < element_count(scale_shape); ++i) scales[static_cast<std::size_t>(i)] = bf16::from_bits(static_cast<std::uint16_t>(0x3b80 | (i & 0x3f)));
    bytes_ += static_cast<std::uint64_t>(n) + static_cast<std::uint64_t>(element_count(scale_shape)) * 2;
    return {TensorView(data, DType::F8_E4M3, {out, in}), TensorView(scales.get(), DType::BF16, scale_shape)};
  }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }

 private:
  kernels::cpu::ThreadPool& pool_;
  std::vector<std::unique_ptr<bf16[]>> buffers_;
  std::vector<std::unique_ptr<fp8_e4m3[]>> fp8_buffers_;
  std::uint64_t bytes_ = 0;
};

template <class Model>
struct Bench {
  CpuBackend backend;
  RandomWeights arena{backend.pool()};
  Weights<Model> weights;
  io::ModelConfig config;
  std::uint64_t bytes_per_token = 0;  // weight bytes a decode step reads, as stored: every Linear (+ fp8 scales) and lm_head
  double linear_params = 0;           // per token: multiply-adds in the Linear layers of all layers

  Bench() {
    constexpr std::int64_t h = Model::hidden_size, inter = Model::intermediate_size;
    constexpr bool fp8_model = Model::weight_traits::block_fp8;
    auto linear = [&](std::int64_t out, std::int64_t in) {
      return fp8_model ? arena.make_fp8(out, in) : LinearWeight{arena.make({out, in}), std::nullopt};
    };
    weights.embed_tokens = arena.make({Model::vocab_size, h});
    weights.layers.resize(Model::num_layers);
    for (auto& layer : weights.layers) {
      layer.input_layernorm = arena.make({h}, true);
      layer.post_attention_layernorm = arena.make({h}, true);
      layer.self_attn.q_proj = linear(Model::q_size, h);
      layer.self_attn.k_proj = linear(Model::kv_size, h);
      layer.self_attn.v_proj = linear(Model::kv_size, h);
      layer.self_attn.o_proj = linear(h, Model::q_size);
      layer.self_attn.q_norm = arena.make({Model::head_dim}, true);
      layer.self_attn.k_norm = arena.make({Model::head_dim}, true);
      layer.mlp.gate_proj = linear(inter, h);
      layer.mlp.up_proj = linear(inter, h);
      layer.mlp.down_proj = linear(h, inter);
    }
    weights.norm = arena.make({h}, true);
    weights.lm_head = weights.embed_tokens;  // 0.6B and 1.7B are tied
    weights.lm_head_tied = true;
    linear_params = static_cast<double>(Model::num_layers) *
                    static_cast<double>((Model::q_size + 2 * Model::kv_size) * h + h * Model::q_size + 3 * inter * h);
    // Bytes as stored: every Linear's weight (bf16: 2 per weight, fp8: 1) and fp8 block scales, and lm_head.
    auto stored = [](const LinearWeight& w) { return w.weight.nbytes() + (w.scale_inv ? w.scale_inv->nbytes() : 0); };
    for (const auto& layer : weights.layers) {
      const auto& a = layer.self_attn;
      const auto& m = layer.mlp;
      bytes_per_token += stored(a.q_proj) + stored(a.k_proj) + stored(a.v_proj) + stored(a.o_proj) + stored(m.gate_proj) +
                         stored(m.up_proj) + stored(m.down_proj);
    }
    bytes_per_token += weights.lm_head.nbytes();
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
  Qwen3Forward<Model, CpuBackend, 16> model(b.weights, b.config, b.backend,
                                            {.max_tokens = context, .max_sequences = 1, .kv_blocks = 16, .max_logit_rows = 1});
  BlockManager<16> books(16);
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
  const double bandwidth = bench::bracket_probe([&] { return bench::read_bandwidth(b.backend.pool()); }, [&] {
    for (auto _ : state) {
      const auto t0 = std::chrono::steady_clock::now();
      const SequenceChunk next{seq, context, std::span(&token, 1), Logits::last};  // rewrites position 128 each time
      plan_step(books, std::span(&next, 1), model.limits(), plan);
      model.run(plan, logits);
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
  Qwen3Forward<Model, CpuBackend, 16> model(b.weights, b.config, b.backend,
                                            {.max_tokens = tokens, .max_sequences = 1, .kv_blocks = (tokens + 15) / 16, .max_logit_rows = 1});
  BlockManager<16> books((tokens + 15) / 16);
  StepPlan plan;
  const int seq = books.add_sequence();
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(tokens));
  for (int i = 0; i < tokens; ++i) prompt[static_cast<std::size_t>(i)] = (i * 7919) % Model::vocab_size;
  std::vector<float> logits;
  double seconds = 0;
  const double peak = bench::bracket_probe([&] { return bench::bf16_dot_peak(b.backend.pool()); }, [&] {
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
  state.counters["peak_fraction"] = peak > 0 ? flops * iterations / seconds / peak : 0;
  state.counters["bf16_dot_probe"] = peak;
  state.counters["bytes_per_second"] = bytes * iterations / seconds;
  state.counters["bandwidth_fraction"] = bytes * iterations / seconds / bench::read_bandwidth(b.backend.pool());
  state.counters["tokens_per_second"] = n * iterations / seconds;
}

using Small = Qwen3<Dense, 0.6_B, bf16>;
using Medium = Qwen3<Dense, 1.7_B, bf16>;
using SmallFp8 = Qwen3<Dense, 0.6_B, fp8>;

}  // namespace

BENCHMARK(BM_Decode<Small>)->Name("Decode/0.6B")->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_Prefill<Small>)->Name("Prefill/0.6B")->Arg(512)->Unit(benchmark::kMillisecond)->MinTime(5);
BENCHMARK(BM_Decode<SmallFp8>)->Name("Decode/0.6B-FP8")->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_Decode<Medium>)->Name("Decode/1.7B")->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_Prefill<Medium>)->Name("Prefill/1.7B")->Arg(512)->Unit(benchmark::kMillisecond)->MinTime(5);

BENCHMARK_MAIN();
