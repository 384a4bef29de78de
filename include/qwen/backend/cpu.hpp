// The CPU backend: buffers are std::vector<float>, ops are the kernels in kernels/cpu, threads
// come from one ThreadPool. This is the contract the forward pass (model/forward.hpp) relies
// on; a CUDA backend provides the same members over device memory.
//
// Activations are fp32. Weights are read in place from the checkpoint's mapping in their own
// dtype (F32, BF16, or F8_E4M3 with block scales) and converted exactly inside the kernels.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"
#include "qwen/core/tensor.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/kv/paged_kv.hpp"
#include "qwen/model/step.hpp"
#include "qwen/model/weights.hpp"
#include <qwen/kernels/cpu/attention.hpp>
#include <qwen/kernels/cpu/embedding.hpp>
#include <qwen/kernels/cpu/linear.hpp>
#include <qwen/kernels/cpu/moe_router.hpp>
#include <qwen/kernels/cpu/rms_norm.hpp>
#include <qwen/kernels/cpu/rope.hpp>
#include <qwen/kernels/cpu/silu_mul.hpp>
#include <qwen/kernels/cpu/thread_pool.hpp>

namespace qwen {

class CpuBackend {
 public:
  using Buffer = std::vector<float>;
  using Rope = kernels::cpu::RopeFrequencies;

  // threads: 0 = every core.
  explicit CpuBackend(unsigned threads = 0) : pool_(threads) {}

  [[nodiscard]] kernels::cpu::ThreadPool& pool() noexcept { return pool_; }

  // ---- buffers ----
  static void resize(Buffer& b, std::int64_t count) {
    if (static_cast<std::int64_t>(b.size()) < count) b.resize(static_cast<std::size_t>(count));
  }
  static float* data(Buffer& b) noexcept { return b.data(); }
  static void fill_zero(float* p, std::int64_t count) { std::memset(p, 0, static_cast<std::size_t>(count) * sizeof(float)); }

  [[nodiscard]] static Rope make_rope(const io::ModelConfig& c) {
    std::optional<kernels::cpu::YarnParams> yarn;
    if (c.yarn)
      yarn = kernels::cpu::YarnParams{c.yarn->factor, static_cast<double>(c.yarn->original_max_position_embeddings),
                                      c.yarn->beta_fast, c.yarn->beta_slow, c.yarn->attention_factor};
    return kernels::cpu::make_rope_frequencies(c.rope_theta, c.head_dim, yarn);
  }

  // ---- ops ----
  // out[n, hidden] = table[tokens]
  void embedding(const TensorView& table, const std::int32_t* tokens, std::int64_t n, float* out) {
    visit_plain(table, "embedding", [&](const auto* w) { kernels::cpu::embedding(w, table.shape[0], table.shape[1], tokens, n, out); });
  }

  // out[rows, dim] = rms_norm(x) * weight; out may alias x.
  void rms_norm(const float* x, std::int64_t rows, std::int64_t dim, const TensorView& weight, float eps, float* out) {
    visit_plain(weight, "rms_norm", [&](const auto* w) {
      pool_.parallel_for(rows, std::max<std::int64_t>(1, 4096 / dim), [&](std::int64_t begin, std::int64_t end) {
        kernels::cpu::rms_norm(x + begin * dim, end - begin, dim, w, eps, out + begin * dim);
      });
    });
  }

  // y[n, out] = x[n, in] · Wᵀ for W [out, in] in F32, BF16, or F8_E4M3 + block scales.
  void linear(const float* x, std::int64_t n, const LinearWeight& w, float* y) {
    const std::int64_t out = w.weight.shape[0], in = w.weight.shape[1];
    if (w.scale_inv) {
      const TensorView& s = *w.scale_inv;
      const auto* q = reinterpret_cast<const fp8_e4m3*>(w.weight.data);
      if (s.dtype == DType::BF16)
        kernels::cpu::linear_fp8(x, n, in, q, reinterpret_cast<const bf16*>(s.data), out, y, pool_);
      else
        kernels::cpu::linear_fp8(x, n, in, q, reinterpret_cast<const float*>(s.data), out, y, pool_);
      return;
    }
    visit_plain(w.weight, "linear", [&](const auto* p) { kernels::cpu::linear(x, n, in, p, out, y, pool_); });
  }
  // The same, writing to host memory (for the CPU, any memory).
  void linear_to_host(const float* x, std::int64_t n, const LinearWeight& w, float* y) { linear(x, n, w, y); }

  // x: [n, heads, 128], rotated in place.
  void rope(float* x, std::int64_t n, std::int64_t heads, const std::int32_t* positions, const Rope& frequencies) {
    constexpr int head_dim = 128;
    if (frequencies.head_dim != head_dim)
      throw_error<InvalidArgument>("rope: head_dim ", frequencies.head_dim, " is not compiled (Qwen3 uses 128)");
    resize(cos_sin_, n * head_dim);
    pool_.parallel_for(n, 8, [&](std::int64_t begin, std::int64_t end) {
      float* cos_sin = cos_sin_.data() + begin * head_dim;
      kernels::cpu::rope_cos_sin(frequencies, positions + begin, end - begin, cos_sin);
      kernels::cpu::apply_rope<head_dim>(x + begin * heads * head_dim, end - begin, heads, cos_sin);
    });
  }

  // Stores each token's K and V ([n, kv_heads * head_dim]) at its position in its sequence.
  template <int BlockSize>
  void write_kv(PagedKV<BlockSize>& kv, int layer, const StepPlan& plan, const float* k, const float* v) {
    const std::int64_t width = static_cast<std::int64_t>(kv.num_kv_heads()) * kv.head_dim();
    for (std::int64_t t = 0; t < plan.num_tokens(); ++t)
      kv.write(layer, plan.sequences[static_cast<std::size_t>(plan.slot[static_cast<std::size_t>(t)])],
               plan.positions[static_cast<std::size_t>(t)], k + t * width, v + t * width);
  }

  // out[n, heads, head_dim]: causal attention of each token over its own sequence's cache.
  // The GQA group (heads / KV heads) becomes a template constant here, among the official Qwen3
  // shapes' groups. paged_attention plans and runs per call (per layer).
  template <int BlockSize>
  void attention(const PagedKV<BlockSize>& kv, int layer, const StepPlan& plan, const float* q, int heads, float scale, float* out) {
    if (kv.head_dim() != 128)
      throw_error<InvalidArgument>("attention: head_dim ", kv.head_dim(), " is not compiled (Qwen3 uses 128)");
    block_table_indptr_.assign(1, 0);
    block_table_indices_.clear();
    for (int s : plan.sequences) {
      const auto table = kv.block_table(s);
      block_table_indices_.insert(block_table_indices_.end(), table.begin(), table.end());
      block_table_indptr_.push_back(static_cast<std::int32_t>(block_table_indices_.size()));
    }
    const kernels::cpu::PagedAttentionBatch batch{plan.slot, plan.positions, block_table_indptr_, block_table_indices_};
    const kernels::cpu::PagedKVLayer pools{kv.key_pool(layer), kv.value_pool(layer), kv.num_blocks(), BlockSize, kv.num_kv_heads()};
    if (heads <= 0 || heads % kv.num_kv_heads() != 0)
      throw_error<InvalidArgument>("attention: ", heads, " heads are not a positive multiple of ", kv.num_kv_heads(), " KV heads");
    const int group = heads / kv.num_kv_heads();
    const auto run = [&]<int Group>() { kernels::cpu::paged_attention<128, Group>(q, batch, pools, scale, out, pool_); };
    switch (group) {
      case 2: return run.template operator()<2>();
      case 4: return run.template operator()<4>();
      case 5: return run.template operator()<5>();
      case 8: return run.template operator()<8>();
      case 16: return run.template operator()<16>();
      default:
        throw_error<InvalidArgument>("attention: GQA group ", group, " (", heads, " / ", kv.num_kv_heads(),
                                     " heads) is not compiled (2, 4, 5, 8, 16)");
    }
  }

  void silu_mul(const float* gate, const float* up, float* out, std::int64_t count) {
    pool_.parallel_for(count, 16384, [&](std::int64_t begin, std::int64_t end) {
      kernels::cpu::silu_mul(gate + begin, up + begin, out + begin, end - begin);
    });
  }
  static void add(float* x, const float* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count; ++i) x[i] += y[i];
  }
  static void gather_rows(const float* src, std::int64_t width, const std::int32_t* rows, std::int64_t count, float* dst) {
    for (std::int64_t r = 0; r < count; ++r)
      std::memcpy(dst + r * width, src + static_cast<std::int64_t>(rows[r]) * width, static_cast<std::size_t>(width) * sizeof(float));
  }
  // dst[rows[r], :] += weights[r] * src[r, :]
  static void scatter_add_scaled(const float* src, std::int64_t width, const std::int32_t* rows, const float* weights,
                                 std::int64_t count, float* dst) {
    for (std::int64_t r = 0; r < count; ++r) {
      float* d = dst + static_cast<std::int64_t>(rows[r]) * width;
      const float* s = src + r * width;
      for (std::int64_t i = 0; i < width; ++i) d[i] += s[i] * weights[r];
    }
  }
  static void moe_route(const float* logits, std::int64_t n, int experts, int k, bool norm, std::int32_t* ids, float* weights) {
    kernels::cpu::moe_route(logits, n, experts, k, norm, ids, weights);
  }

 private:
  // Calls f with a typed pointer for an F32 or BF16 tensor.
  template <class F>
  static void visit_plain(const TensorView& t, const char* op, F&& f) {
    if (t.dtype == DType::F32)
      f(reinterpret_cast<const float*>(t.data));
    else if (t.dtype == DType::BF16)
      f(reinterpret_cast<const bf16*>(t.data));
    else
      throw_error<InvalidArgument>(op, ": weights of dtype ", dtype_name(t.dtype), " are not supported here (F32 or BF16)");
  }

  kernels::cpu::ThreadPool pool_;
  Buffer cos_sin_;  // [n][128] the rope's cos / sin
  std::vector<std::int32_t> block_table_indptr_, block_table_indices_;  // the step's block tables, CSR
};

}  // namespace qwen
