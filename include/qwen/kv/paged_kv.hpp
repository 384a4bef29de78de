// Block-paged KV cache storage (fp32) for the forward pass.
//
// Layout (one allocation for the whole cache, aligned to 2 MiB and marked for transparent huge
// pages on Linux: the attention walks a page per position and the TLB misses otherwise cost
// about 8% of decode attention time):
//   [num_layers][2 = K, V][num_blocks][BlockSize][num_kv_heads][head_dim]   fp32
// so each layer has one K pool and one V pool of shape [num_blocks][BlockSize][num_kv_heads][head_dim].
// Why this order:
//   - one token's K (or V) for one layer, [num_kv_heads][head_dim], is one contiguous slot: the
//     k_proj output of a token is stored with a single copy (write()), and key()/value() point at it;
//   - a block is contiguous, so a block id is all the attention needs to find BlockSize positions;
//   - the attention runs the KV heads of a token together, tile by tile, so it reads each
//     position's slot as one contiguous piece (reading one KV head alone would touch a new page
//     per position);
//   - it is vLLM's / FlashAttention's paged layout ([num_blocks, block_size, kv_heads, head_dim]),
//     so the CUDA twin can share it.
//
// This class is storage only: it knows nothing of sequences. Which blocks a sequence owns, their
// refcounts and the prefix cache are the books' (qwen/kv/block_manager.hpp); a step's plan
// (qwen/model/step.hpp) names the physical slot each token's K/V goes to.
//
// Errors are InvalidArgument naming the value: bad shape, layer, block or slot.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "qwen/core/error.hpp"

namespace qwen {

// How the pools are filled at construction. `none` leaves the memory untouched (pages are
// committed only when written, so an unused cache costs no RSS); `nan` writes quiet NaNs
// everywhere, so that a read of a never-written slot shows up in tests.
enum class PagedKVFill : std::uint8_t { none, nan };

template <int BlockSize>
class PagedKV {
  static_assert(BlockSize > 0 && (BlockSize & (BlockSize - 1)) == 0, "PagedKV: BlockSize must be a power of two > 0");

 public:
  static constexpr int block_size = BlockSize;

  PagedKV(int num_layers, int num_kv_heads, int head_dim, int num_blocks, PagedKVFill fill = PagedKVFill::none)
      : num_layers_(num_layers), num_kv_heads_(num_kv_heads), head_dim_(head_dim), num_blocks_(num_blocks) {
    if (num_layers <= 0 || num_kv_heads <= 0 || head_dim <= 0 || num_blocks <= 0)
      throw_error<InvalidArgument>("PagedKV: num_layers ", num_layers, ", num_kv_heads ", num_kv_heads, ", head_dim ",
                                   head_dim, ", num_blocks ", num_blocks, " must all be positive");
    // Sizes in floats, each product checked so that the byte count of the whole cache fits size_t.
    const auto checked_product = [&](std::size_t a, std::size_t b) {
      if (a > std::numeric_limits<std::size_t>::max() / sizeof(float) / b)
        throw_error<InvalidArgument>("PagedKV: ", num_layers, " layers x ", num_blocks, " blocks x ", BlockSize,
                                     " positions x ", num_kv_heads, " x ", head_dim, " floats overflow size_t");
      return a * b;
    };
    slot_floats_ = checked_product(static_cast<std::size_t>(num_kv_heads), static_cast<std::size_t>(head_dim));
    pool_floats_ = checked_product(checked_product(slot_floats_, BlockSize), static_cast<std::size_t>(num_blocks));
    const std::size_t total = checked_product(pool_floats_, 2 * static_cast<std::size_t>(num_layers));
    storage_.reset(static_cast<float*>(::operator new[](total * sizeof(float), std::align_val_t{alignment})));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Advice only: without THP (or with "never") the pages stay 4 KiB. Nothing is committed here.
    if (total * sizeof(float) >= alignment) ::madvise(storage_.get(), total * sizeof(float), MADV_HUGEPAGE);
#endif
    if (fill == PagedKVFill::nan) std::fill_n(storage_.get(), total, std::numeric_limits<float>::quiet_NaN());
  }

  PagedKV(const PagedKV&) = delete;
  PagedKV& operator=(const PagedKV&) = delete;
  PagedKV(PagedKV&&) noexcept = default;
  PagedKV& operator=(PagedKV&&) noexcept = default;

  [[nodiscard]] int num_layers() const noexcept { return num_layers_; }
  [[nodiscard]] int num_kv_heads() const noexcept { return num_kv_heads_; }
  [[nodiscard]] int head_dim() const noexcept { return head_dim_; }
  [[nodiscard]] int num_blocks() const noexcept { return num_blocks_; }
  // ---- storage ------------------------------------------------------------------------------

  // One slot: [num_kv_heads][head_dim] for position `offset` of physical block `block`.
  [[nodiscard]] float* key(int layer, int block, int offset) { return slot(layer, 0, block, offset); }
  [[nodiscard]] float* value(int layer, int block, int offset) { return slot(layer, 1, block, offset); }
  [[nodiscard]] const float* key(int layer, int block, int offset) const { return slot(layer, 0, block, offset); }
  [[nodiscard]] const float* value(int layer, int block, int offset) const { return slot(layer, 1, block, offset); }

  // A layer's whole pool: [num_blocks][BlockSize][num_kv_heads][head_dim] (with num_blocks(),
  // BlockSize and num_kv_heads(), what the attention kernel reads of a layer).
  [[nodiscard]] const float* key_pool(int layer) const { return pool(layer, 0); }
  [[nodiscard]] const float* value_pool(int layer) const { return pool(layer, 1); }
  [[nodiscard]] float* key_pool(int layer) { return pool(layer, 0); }
  [[nodiscard]] float* value_pool(int layer) { return pool(layer, 1); }

  // Stores one token's K and V (each [num_kv_heads * head_dim]) at physical slot
  // block * BlockSize + offset of `layer`.
  void write(int layer, std::int64_t slot_index, const float* k, const float* v) {
    if (slot_index < 0 || slot_index >= static_cast<std::int64_t>(num_blocks_) * BlockSize)
      throw_error<InvalidArgument>("PagedKV::write: slot ", slot_index, " outside [0, ", static_cast<std::int64_t>(num_blocks_) * BlockSize, ")");
    const int block = static_cast<int>(slot_index / BlockSize), offset = static_cast<int>(slot_index % BlockSize);
    std::memcpy(slot(layer, 0, block, offset), k, slot_floats_ * sizeof(float));
    std::memcpy(slot(layer, 1, block, offset), v, slot_floats_ * sizeof(float));
  }

  // Copies block `src` to block `dst` in every layer, K and V (copy-on-write of a shared block).
  void copy_block(int src, int dst) {
    if (src == dst) return;
    for (int layer = 0; layer < num_layers_; ++layer)
      for (int kv = 0; kv < 2; ++kv)
        std::memcpy(slot(layer, kv, dst, 0), slot(layer, kv, src, 0), slot_floats_ * BlockSize * sizeof(float));
  }

 private:
  static constexpr std::size_t alignment = std::size_t{2} << 20;  // one huge page

  struct AlignedDelete {
    void operator()(float* p) const noexcept { ::operator delete[](p, std::align_val_t{alignment}); }
  };

  [[nodiscard]] float* pool(int layer, int kv) const {
    if (layer < 0 || layer >= num_layers_)
      throw_error<InvalidArgument>("PagedKV: layer ", layer, " outside [0, ", num_layers_, ")");
    return storage_.get() + (static_cast<std::size_t>(layer) * 2 + static_cast<std::size_t>(kv)) * pool_floats_;
  }

  [[nodiscard]] float* slot(int layer, int kv, int block, int offset) const {
    if (block < 0 || block >= num_blocks_ || offset < 0 || offset >= BlockSize)
      throw_error<InvalidArgument>("PagedKV: block ", block, " / offset ", offset, " outside [0, ", num_blocks_,
                                   ") x [0, ", BlockSize, ")");
    return pool(layer, kv) + (static_cast<std::size_t>(block) * BlockSize + static_cast<std::size_t>(offset)) * slot_floats_;
  }

  int num_layers_, num_kv_heads_, head_dim_, num_blocks_;
  std::size_t slot_floats_ = 0;  // num_kv_heads * head_dim
  std::size_t pool_floats_ = 0;  // num_blocks * BlockSize * slot_floats_
  std::unique_ptr<float[], AlignedDelete> storage_;
};

}  // namespace qwen
