// The CPU backend: the ops of kernels/cpu on one ThreadPool. It satisfies qwen::Backend
// (backend/backend.hpp), whose comment states the contract and the memory spaces.
//
// Memory spaces on the CPU are all host memory:
//   activations  Buffer<float> (std::vector), allocated by the forward pass at construction for
//                its largest step; ops never allocate.
//   weights      views into the checkpoint's mapping (zero copy), typed by the model's weight
//                type at placement; FP8 block scales are converted once and kept here.
//   KV cache     PagedKV<BlockSize> (qwen/kv/paged_kv.hpp): pools of bf16 (the default) or fp32,
//                chosen when the backend is made; storage only. write_kv rounds to bf16 there,
//                the attention reads either (one branch per layer on the cache's dtype).
//   logits       a Buffer<float>; copy_to_host is a memcpy.
//   step plan    prepare() keeps a pointer to the host StepPlan (a view, no upload), runs the
//                plan's block copies, plans the attention's work split and computes the step's
//                RoPE cos/sin table once for all layers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <type_traits>
#include <string_view>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"
#include "qwen/core/tensor.hpp"
#include "qwen/backend/backend.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/kv/paged_kv.hpp"
#include "qwen/model/qwen3.hpp"
#include "qwen/model/rope_table.hpp"
#include "qwen/model/step.hpp"
#include "qwen/model/weights.hpp"
#include <qwen/kernels/cpu/attention.hpp>
#include <qwen/kernels/cpu/embedding.hpp>
#include <qwen/kernels/cpu/linear.hpp>
#include <qwen/kernels/cpu/moe_router.hpp>
#include <qwen/kernels/cpu/rms_norm.hpp>
#include <qwen/kernels/cpu/rope.hpp>
#include <qwen/kernels/cpu/silu_mul.hpp>
#include <qwen/kernels/cpu/simd.hpp>
#include <qwen/kernels/cpu/thread_pool.hpp>

namespace qwen {

namespace cpu_detail {
template <class W>
struct linear_of {
  using type = kernels::cpu::PlainLinear<W>;
};
template <>
struct linear_of<fp8> {
  using type = kernels::cpu::Fp8Linear;
};
}  // namespace cpu_detail

class CpuBackend {
 public:
  using Activation = float;
  template <class T>
  using Buffer = std::vector<T>;
  template <class W>
  using Linear = typename cpu_detail::linear_of<W>::type;
  template <class T>
  using Vector = const T*;
  template <int BlockSize>
  using KVCache = PagedKV<BlockSize>;

  // threads: 0 = every core. kv_cache_dtype: the element of the KV caches it makes. Each
  // thread's Linear scratch is allocated here, not in a step.
  explicit CpuBackend(unsigned threads = 0, KVCacheDType kv_cache_dtype = KVCacheDType::bf16)
      : pool_(threads), kv_cache_dtype_(kv_cache_dtype) {
    kernels::cpu::reserve_linear_scratch(pool_);
  }
  CpuBackend(const CpuBackend&) = delete;
  CpuBackend& operator=(const CpuBackend&) = delete;

  [[nodiscard]] kernels::cpu::ThreadPool& pool() noexcept { return pool_; }
  [[nodiscard]] KVCacheDType kv_cache_dtype() const noexcept { return kv_cache_dtype_; }
  // Bytes of one K or V element in the caches this backend makes (the engine sizes its pool by it).
  [[nodiscard]] std::int64_t kv_element_bytes() const noexcept { return element_bytes(kv_cache_dtype_); }
  // The vector level the CPU kernels were compiled for in this translation unit: "avx512",
  // "avx2" or "portable" (kernels/cpu/simd.hpp; chosen by the compile target, e.g. -march=native
  // or linking qwen::native).
  [[nodiscard]] static constexpr std::string_view isa() noexcept { return kernels::cpu::simd::Simd::isa; }

  // ---- memory ----
  template <class T>
  [[nodiscard]] Buffer<T> allocate(std::int64_t count) {
    return Buffer<T>(static_cast<std::size_t>(count));
  }
  template <class T>
  [[nodiscard]] static T* data(Buffer<T>& b) noexcept {
    return b.data();
  }
  template <class T>
  [[nodiscard]] static const T* data(const Buffer<T>& b) noexcept {
    return b.data();
  }
  // The explicit device -> host copy (on the CPU a memcpy).
  template <class T>
  static void copy_to_host(const Buffer<T>& src, std::int64_t count, T* dst) {
    if (count > 0) std::memcpy(dst, src.data(), static_cast<std::size_t>(count) * sizeof(T));
  }

  template <int BlockSize>
  [[nodiscard]] KVCache<BlockSize> make_kv_cache(int num_layers, int num_kv_heads, int head_dim, int num_blocks) {
    return KVCache<BlockSize>(num_layers, num_kv_heads, head_dim, num_blocks, kv_cache_dtype_);
  }

  // ---- weight placement: the one dtype dispatch, at load ----
  // W = float or bf16: an unquantized weight of exactly that dtype. W = fp8: a block-FP8 weight
  // (its scales converted once, kept by this backend) or, without scales, a bf16 one.
  template <class W>
  [[nodiscard]] Linear<W> place_linear(const LinearWeight& w) {
    const std::int64_t out = w.weight.shape.at(0), in = w.weight.shape.at(1);
    if constexpr (std::is_same_v<W, fp8>) {
      if (!w.scale_inv) return kernels::cpu::Fp8Linear{nullptr, nullptr, nullptr, out, in, w.weight.as<bf16>(DType::BF16)};
      const TensorView& s = *w.scale_inv;
      const auto* codes = w.weight.as<fp8_e4m3>(DType::F8_E4M3);
      fp8_scales_.push_back(s.dtype == DType::BF16 ? kernels::cpu::prepare_fp8_scales(s.as<bf16>(DType::BF16), out, in)
                                                   : kernels::cpu::prepare_fp8_scales(s.as<float>(DType::F32), out, in));
      return kernels::cpu::fp8_linear_view(codes, fp8_scales_.back(), out, in);
    } else {
      if (w.scale_inv) throw_error<InvalidArgument>("place_linear: a block-FP8 weight for a model whose weight type is not fp8");
      return {w.weight.as<W>(dtype_of<W>()), out, in};
    }
  }
  template <class T>
  [[nodiscard]] Vector<T> place_vector(const TensorView& t) {
    return t.as<T>(dtype_of<T>());
  }

  // ---- the step ----
  // What prepare() makes of a StepPlan for one model type, reserved for the largest step at
  // construction: the attention's work split, the step's RoPE cos/sin table, and the MoE
  // routing buffers. Nothing in it is allocated after construction.
  template <Qwen3Type Model>
  class Step {
   public:
    static constexpr int head_dim = Model::head_dim;
    static constexpr int group = Model::group_size;

    Step(CpuBackend& b, const StepLimits& limits, const io::ModelConfig& config)
        : attention_(limits.max_tokens, limits.max_sequences, Model::num_kv_heads, b.pool()),
          rope_(rope_frequencies(config, Model::head_dim)),
          cos_sin_(static_cast<std::size_t>(limits.max_tokens) * head_dim) {
      if constexpr (Model::is_moe) moe_.reserve(limits.max_tokens);
    }

   private:
    friend class CpuBackend;
    struct MoEScratch {
      void reserve(std::int64_t max_tokens) {
        using D = moe_dims<Model>;
        const auto pairs = static_cast<std::size_t>(max_tokens) * D::experts_per_token;
        router.resize(static_cast<std::size_t>(max_tokens) * D::num_experts);
        ids.resize(pairs);
        weights.resize(pairs);
        probs.resize(D::num_experts);
        order.resize(D::num_experts);
        offsets.resize(D::num_experts + 1);
        rows.resize(pairs);
        row_weights.resize(pairs);
        in.resize(static_cast<std::size_t>(max_tokens) * Model::hidden_size);
        out.resize(in.size());
        gate.resize(static_cast<std::size_t>(max_tokens) * D::moe_intermediate_size);
        up.resize(gate.size());
      }
      std::vector<float> router, weights, probs, row_weights, in, out, gate, up;
      std::vector<std::int32_t> ids, order, offsets, rows;
    };

    const StepPlan* plan_ = nullptr;
    kernels::cpu::PagedAttention<head_dim, group> attention_;
    kernels::cpu::RopeFrequencies rope_;
    std::vector<float> cos_sin_;  // [tokens][head_dim]: cos | sin of each token's position
    MoEScratch moe_;
  };

  template <Qwen3Type Model>
  [[nodiscard]] Step<Model> make_step(const StepLimits& limits, const io::ModelConfig& config) {
    return Step<Model>(*this, limits, config);
  }

  // Once per step, before any op: the plan's block copies, then the work that every layer
  // shares. The plan must outlive the step's ops (the CPU reads it in place).
  template <Qwen3Type Model, int BlockSize>
  void prepare(Step<Model>& step, const StepPlan& plan, KVCache<BlockSize>& kv) {
    if (plan.block_size != BlockSize)
      throw_error<InvalidArgument>("prepare: the plan has block size ", plan.block_size, ", the cache ", BlockSize);
    for (const BlockCopy& c : plan.block_copies) kv.copy_block(c.src, c.dst);
    step.plan_ = &plan;
    step.attention_.plan({plan.sequence_of_token, plan.positions, plan.block_table_indptr, plan.block_table_indices},
                         kv.num_blocks(), BlockSize);
    kernels::cpu::rope_cos_sin(step.rope_, plan.positions.data(), plan.num_tokens(), step.cos_sin_.data());
  }

  // ---- ops (n = the step's token count unless stated) ----
  // out[n, hidden] = table[tokens]
  template <Qwen3Type Model, class T>
  void embedding(const Step<Model>& step, Vector<T> table, float* out) {
    kernels::cpu::embedding(table, Model::vocab_size, Model::hidden_size, step.plan_->tokens.data(), step.plan_->num_tokens(), out);
  }

  // out[rows, dim] = rms_norm(x) * weight; out may alias x.
  template <class T>
  void rms_norm(const float* x, std::int64_t rows, std::int64_t dim, Vector<T> weight, float eps, float* out) {
    pool_.parallel_for(rows, std::max<std::int64_t>(1, 4096 / dim), [&](std::int64_t begin, std::int64_t end) {
      kernels::cpu::rms_norm(x + begin * dim, end - begin, dim, weight, eps, out + begin * dim);
    });
  }

  // y[p][n, w[p].out] = x[n, in] · w[p]ᵀ, all K products in one pass (bit-identical to K calls).
  template <class L, std::size_t K>
  void linear(const float* x, std::int64_t n, const std::array<L, K>& w, const std::array<float*, K>& y) {
    kernels::cpu::linear_fused(x, n, w[0].in, w, y, pool_);
  }
  template <class L>
  void linear(const float* x, std::int64_t n, const L& w, float* y) {
    kernels::cpu::linear(x, n, w, y, pool_);
  }

  // q [n, heads, head_dim] and k [n, kv_heads, head_dim] rotated in place with the step's table.
  template <Qwen3Type Model>
  void rope(const Step<Model>& step, float* q, float* k) {
    const std::int64_t n = step.plan_->num_tokens();
    pool_.parallel_for(n, 8, [&](std::int64_t begin, std::int64_t end) {
      const float* cs = step.cos_sin_.data() + begin * Model::head_dim;
      kernels::cpu::apply_rope<Model::head_dim>(q + begin * Model::q_size, end - begin, Model::num_heads, cs);
      kernels::cpu::apply_rope<Model::head_dim>(k + begin * Model::kv_size, end - begin, Model::num_kv_heads, cs);
    });
  }

  // Stores each token's K and V ([n, kv_heads * head_dim]) at its planned slot of `layer`, in the
  // cache's element (bf16: rounded to nearest, ties to even).
  template <Qwen3Type Model, int BlockSize>
  void write_kv(const Step<Model>& step, KVCache<BlockSize>& kv, int layer, const float* k, const float* v) {
    const auto& slots = step.plan_->kv_slot;
    for (std::size_t t = 0; t < slots.size(); ++t)
      kv.write(layer, slots[t], k + t * Model::kv_size, v + t * Model::kv_size);
  }

  // out[n, heads, head_dim]: causal attention of each token over its own sequence's cache.
  template <Qwen3Type Model, int BlockSize>
  void attention(Step<Model>& step, const KVCache<BlockSize>& kv, int layer, const float* q, float scale, float* out) {
    if (kv.dtype() == KVCacheDType::bf16)
      step.attention_.run(q, layer_view<bf16>(kv, layer, Model::num_kv_heads), scale, out);
    else
      step.attention_.run(q, layer_view<float>(kv, layer, Model::num_kv_heads), scale, out);
  }

  void silu_mul(const float* gate, const float* up, float* out, std::int64_t count) {
    pool_.parallel_for(count, 16384, [&](std::int64_t begin, std::int64_t end) {
      kernels::cpu::silu_mul(gate + begin, up + begin, out + begin, end - begin);
    });
  }
  static void add(float* x, const float* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count; ++i) x[i] += y[i];
  }
  // dst[r, :] = src[plan.logit_rows[r], :]
  template <Qwen3Type Model>
  static void gather_logit_rows(const Step<Model>& step, const float* src, float* dst) {
    const auto& rows = step.plan_->logit_rows;
    for (std::size_t r = 0; r < rows.size(); ++r)
      std::memcpy(dst + r * Model::hidden_size, src + static_cast<std::int64_t>(rows[r]) * Model::hidden_size,
                  Model::hidden_size * sizeof(float));
  }

  // out[n, hidden] = Σ over each token's top-k experts, in ascending expert id, of
  // weight · expert(x). Routing and grouping by expert happen here, in the backend: tokens are
  // bucketed by expert (ascending token order within an expert), so each expert's weights are
  // read once per step.
  template <Qwen3Type Model, class Placed>
  void moe(Step<Model>& step, const Placed& m, const float* x, float* out) {
    using D = moe_dims<Model>;
    constexpr int experts = D::num_experts, k = D::experts_per_token, width = D::moe_intermediate_size, hidden = Model::hidden_size;
    auto& s = step.moe_;
    const std::int64_t n = step.plan_->num_tokens();
    linear(x, n, m.router, s.router.data());
    kernels::cpu::moe_route(s.router.data(), n, experts, k, D::norm_topk_prob, s.ids.data(), s.weights.data(), s.probs.data(),
                            s.order.data());
    // Counting sort of the (token, expert) pairs by expert.
    std::fill(s.offsets.begin(), s.offsets.end(), 0);
    for (std::int64_t i = 0; i < n * k; ++i) ++s.offsets[static_cast<std::size_t>(s.ids[static_cast<std::size_t>(i)]) + 1];
    for (int e = 0; e < experts; ++e) s.offsets[static_cast<std::size_t>(e) + 1] += s.offsets[static_cast<std::size_t>(e)];
    for (std::int64_t t = 0; t < n; ++t)
      for (int j = 0; j < k; ++j) {
        const auto pair = static_cast<std::size_t>(t * k + j);
        const auto at = static_cast<std::size_t>(s.offsets[static_cast<std::size_t>(s.ids[pair])]++);
        s.rows[at] = static_cast<std::int32_t>(t);
        s.row_weights[at] = s.weights[pair];
      }
    for (int e = experts; e > 0; --e) s.offsets[static_cast<std::size_t>(e)] = s.offsets[static_cast<std::size_t>(e) - 1];
    s.offsets[0] = 0;

    std::fill_n(out, n * hidden, 0.0f);
    for (int e = 0; e < experts; ++e) {
      const std::int32_t begin = s.offsets[static_cast<std::size_t>(e)], count = s.offsets[static_cast<std::size_t>(e) + 1] - begin;
      if (count == 0) continue;
      const std::int32_t* rows = s.rows.data() + begin;
      for (std::int32_t r = 0; r < count; ++r)
        std::memcpy(s.in.data() + static_cast<std::size_t>(r) * hidden, x + static_cast<std::int64_t>(rows[r]) * hidden,
                    hidden * sizeof(float));
      const auto& expert = m.experts[static_cast<std::size_t>(e)];
      linear(s.in.data(), count, expert.gate_up, {s.gate.data(), s.up.data()});
      silu_mul(s.gate.data(), s.up.data(), s.gate.data(), static_cast<std::int64_t>(count) * width);
      linear(s.gate.data(), count, expert.down, s.out.data());
      const float* w = s.row_weights.data() + begin;
      for (std::int32_t r = 0; r < count; ++r) {
        float* d = out + static_cast<std::int64_t>(rows[r]) * hidden;
        const float* src = s.out.data() + static_cast<std::size_t>(r) * hidden;
        for (int i = 0; i < hidden; ++i) d[i] += src[i] * w[r];
      }
    }
  }

 private:
  template <class T, int BlockSize>
  static kernels::cpu::PagedKVLayer<T> layer_view(const KVCache<BlockSize>& kv, int layer, int num_kv_heads) {
    return {kv.template key_pool<T>(layer), kv.template value_pool<T>(layer), kv.num_blocks(), BlockSize, num_kv_heads};
  }
  template <class T>
  static constexpr DType dtype_of() {
    if constexpr (std::is_same_v<T, float>)
      return DType::F32;
    else
      return DType::BF16;
  }

  kernels::cpu::ThreadPool pool_;
  KVCacheDType kv_cache_dtype_;
  std::deque<kernels::cpu::Fp8Scales> fp8_scales_;  // the placed FP8 weights' converted scales
};

static_assert(Backend<CpuBackend>, "CpuBackend must satisfy qwen::Backend");

}  // namespace qwen
