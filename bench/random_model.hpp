// Random weights of a real Qwen3 shape, made at run time (nothing is downloaded or committed):
// bf16 (or block-FP8 for an fp8 model type) Linear layers, norms near 1, tied lm_head (the 0.6B
// and 1.7B shapes are tied). Shared by the model and engine benchmarks.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <qwen/backend/cpu.hpp>
#include <qwen/io/model_config.hpp>
#include <qwen/model/qwen3.hpp>
#include <qwen/model/weights.hpp>

namespace qwen::bench {

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
struct RandomModel {
  CpuBackend backend;
  RandomWeights arena{backend.pool()};
  Weights<Model> weights;
  io::ModelConfig config;
  std::uint64_t bytes_per_token = 0;  // weight bytes a decode step reads, as stored: every Linear (+ fp8 scales) and lm_head
  double linear_params = 0;           // per token: multiply-adds in the Linear layers of all layers

  RandomModel() {
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

}  // namespace qwen::bench
