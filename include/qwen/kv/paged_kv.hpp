// Block-paged KV cache storage for the forward pass, in bf16 (the default) or fp32.
//
// Layout (one allocation for the whole cache, aligned to 2 MiB and marked for transparent huge
// pages on Linux: the attention walks a page per position and the TLB misses otherwise cost
// about 8% of decode attention time):
//   [num_layers][2 = K, V][num_blocks][BlockSize][num_kv_heads][head_dim]   of the element type
// so each layer has one K pool and one V pool of shape [num_blocks][BlockSize][num_kv_heads][head_dim].
// Why this order:
//   - one token's K (or V) for one layer, [num_kv_heads][head_dim], is one contiguous slot: the
//     k_proj output of a token is stored with a single pass (write()), and key()/value() point at it;
//   - a block is contiguous, so a block id is all the attention needs to find BlockSize positions;
//   - the attention runs the KV heads of a token together, tile by tile, so it reads each
//     position's slot as one contiguous piece (reading one KV head alone would touch a new page
//     per position);
//   - it is vLLM's / FlashAttention's paged layout ([num_blocks, block_size, kv_heads, head_dim]),
//     so the CUDA twin can share it.
//
// The element type is chosen at run time (KVCacheDType): bf16 halves the bytes the attention
// reads at long context; write() rounds each fp32 value to the nearest bf16 (ties to even, as
// torch's .to(torch.bfloat16)), which is what a transformers model run in bf16 keeps in its
// cache. The typed accessors (key<T>, key_pool<T>, ...) check T against the cache's dtype.
//
// This class is storage only: it knows nothing of sequences. Which blocks a sequence owns, their
// refcounts and the prefix cache are the books' (qwen/kv/block_manager.hpp); a step's plan
// (qwen/model/step.hpp) names the physical slot each token's K/V goes to.
//
// Errors are InvalidArgument naming the value: bad shape, layer, block, slot or element type.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"
#include "qwen/kv/kv_cache_dtype.hpp"

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

  PagedKV(int num_layers, int num_kv_heads, int head_dim, int num_blocks, KVCacheDType dtype, PagedKVFill fill = PagedKVFill::none)
      : num_layers_(num_layers), num_kv_heads_(num_kv_heads), head_dim_(head_dim), num_blocks_(num_blocks), dtype_(dtype) {
    if (num_layers <= 0 || num_kv_heads <= 0 || head_dim <= 0 || num_blocks <= 0)
      throw_error<InvalidArgument>("PagedKV: num_layers ", num_layers, ", num_kv_heads ", num_kv_heads, ", head_dim ",
                                   head_dim, ", num_blocks ", num_blocks, " must all be positive");
    if (dtype != KVCacheDType::bf16 && dtype != KVCacheDType::fp32)
      throw_error<InvalidArgument>("PagedKV: unknown KV cache dtype ", static_cast<int>(dtype));
    const auto bytes = static_cast<std::size_t>(element_bytes(dtype));
    // Sizes in elements, each product checked so that the byte count of the whole cache fits size_t.
    const auto checked_product = [&](std::size_t a, std::size_t b) {
      if (a > std::numeric_limits<std::size_t>::max() / bytes / b)
        throw_error<InvalidArgument>("PagedKV: ", num_layers, " layers x ", num_blocks, " blocks x ", BlockSize,
                                     " positions x ", num_kv_heads, " x ", head_dim, " ", to_string(dtype),
                                     " elements overflow size_t");
      return a * b;
    };
    slot_elements_ = checked_product(static_cast<std::size_t>(num_kv_heads), static_cast<std::size_t>(head_dim));
    const std::size_t pool_elements = checked_product(checked_product(slot_elements_, BlockSize), static_cast<std::size_t>(num_blocks));
    const std::size_t total = checked_product(pool_elements, 2 * static_cast<std::size_t>(num_layers));
    slot_bytes_ = slot_elements_ * bytes;
    pool_bytes_ = pool_elements * bytes;
    storage_.reset(static_cast<std::byte*>(::operator new[](total * bytes, std::align_val_t{alignment})));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Advice only: without THP (or with "never") the pages stay 4 KiB. Nothing is committed here.
    if (total * bytes >= alignment) ::madvise(storage_.get(), total * bytes, MADV_HUGEPAGE);
#endif
    if (fill == PagedKVFill::nan) {
      if (dtype == KVCacheDType::bf16)
        std::fill_n(reinterpret_cast<bf16*>(storage_.get()), total, bf16::from_float(std::numeric_limits<float>::quiet_NaN()));
      else
        std::fill_n(reinterpret_cast<float*>(storage_.get()), total, std::numeric_limits<float>::quiet_NaN());
    }
  }

  PagedKV(const PagedKV&) = delete;
  PagedKV& operator=(const PagedKV&) = delete;
  PagedKV(PagedKV&&) noexcept = default;
  PagedKV& operator=(PagedKV&&) noexcept = default;

  [[nodiscard]] int num_layers() const noexcept { return num_layers_; }
  [[nodiscard]] int num_kv_heads() const noexcept { return num_kv_heads_; }
  [[nodiscard]] int head_dim() const noexcept { return head_dim_; }
  [[nodiscard]] int num_blocks() const noexcept { return num_blocks_; }
  [[nodiscard]] KVCacheDType dtype() const noexcept { return dtype_; }
  // Bytes of one position of every layer, K and V.
  [[nodiscard]] std::int64_t bytes_per_token() const noexcept {
    return static_cast<std::int64_t>(2 * slot_bytes_) * num_layers_;
  }

  // ---- storage (T: the cache's element type, float or bf16; another T is InvalidArgument) ----

  // One slot: [num_kv_heads][head_dim] for position `offset` of physical block `block`.
  template <class T>
  [[nodiscard]] T* key(int layer, int block, int offset) { return slot<T>(layer, 0, block, offset); }
  template <class T>
  [[nodiscard]] T* value(int layer, int block, int offset) { return slot<T>(layer, 1, block, offset); }
  template <class T>
  [[nodiscard]] const T* key(int layer, int block, int offset) const { return slot<T>(layer, 0, block, offset); }
  template <class T>
  [[nodiscard]] const T* value(int layer, int block, int offset) const { return slot<T>(layer, 1, block, offset); }

  // A layer's whole pool: [num_blocks][BlockSize][num_kv_heads][head_dim] (with num_blocks(),
  // BlockSize and num_kv_heads(), what the attention kernel reads of a layer).
  template <class T>
  [[nodiscard]] const T* key_pool(int layer) const { return pool<T>(layer, 0); }
  template <class T>
  [[nodiscard]] const T* value_pool(int layer) const { return pool<T>(layer, 1); }
  template <class T>
  [[nodiscard]] T* key_pool(int layer) { return pool<T>(layer, 0); }
  template <class T>
  [[nodiscard]] T* value_pool(int layer) { return pool<T>(layer, 1); }

  // Stores one token's K and V (each [num_kv_heads * head_dim] fp32) at physical slot
  // block * BlockSize + offset of `layer`, converted to the cache's element (bf16: nearest, ties
  // to even; NaN stays NaN).
  void write(int layer, std::int64_t slot_index, const float* k, const float* v) {
    if (slot_index < 0 || slot_index >= static_cast<std::int64_t>(num_blocks_) * BlockSize)
      throw_error<InvalidArgument>("PagedKV::write: slot ", slot_index, " outside [0, ", static_cast<std::int64_t>(num_blocks_) * BlockSize, ")");
    const int block = static_cast<int>(slot_index / BlockSize), offset = static_cast<int>(slot_index % BlockSize);
    if (dtype_ == KVCacheDType::fp32) {
      std::memcpy(slot<float>(layer, 0, block, offset), k, slot_bytes_);
      std::memcpy(slot<float>(layer, 1, block, offset), v, slot_bytes_);
    } else {
      for (int kv = 0; kv < 2; ++kv) {
        bf16* dst = slot<bf16>(layer, kv, block, offset);
        const float* src = kv == 0 ? k : v;
        for (std::size_t i = 0; i < slot_elements_; ++i) dst[i] = bf16::from_float(src[i]);
      }
    }
  }

  // Copies block `src` to block `dst` in every layer, K and V (copy-on-write of a shared block).
  void copy_block(int src, int dst) {
    if (src == dst) return;
    for (int layer = 0; layer < num_layers_; ++layer)
      for (int kv = 0; kv < 2; ++kv)
        std::memcpy(slot_bytes_at(layer, kv, dst, 0), slot_bytes_at(layer, kv, src, 0), slot_bytes_ * BlockSize);
  }

 private:
  static constexpr std::size_t alignment = std::size_t{2} << 20;  // one huge page

  struct AlignedDelete {
    void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{alignment}); }
  };

  template <class T>
  void check_type() const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>, "PagedKV: the element type is float or bf16");
    if (kv_cache_dtype_of<T> != dtype_)
      throw_error<InvalidArgument>("PagedKV: the cache holds ", to_string(dtype_), " elements, read as ", to_string(kv_cache_dtype_of<T>));
  }

  [[nodiscard]] std::byte* pool_bytes_at(int layer, int kv) const {
    if (layer < 0 || layer >= num_layers_)
      throw_error<InvalidArgument>("PagedKV: layer ", layer, " outside [0, ", num_layers_, ")");
    return storage_.get() + (static_cast<std::size_t>(layer) * 2 + static_cast<std::size_t>(kv)) * pool_bytes_;
  }

  [[nodiscard]] std::byte* slot_bytes_at(int layer, int kv, int block, int offset) const {
    if (block < 0 || block >= num_blocks_ || offset < 0 || offset >= BlockSize)
      throw_error<InvalidArgument>("PagedKV: block ", block, " / offset ", offset, " outside [0, ", num_blocks_,
                                   ") x [0, ", BlockSize, ")");
    return pool_bytes_at(layer, kv) + (static_cast<std::size_t>(block) * BlockSize + static_cast<std::size_t>(offset)) * slot_bytes_;
  }

  template <class T>
  [[nodiscard]] T* pool(int layer, int kv) const {
    check_type<T>();
    return reinterpret_cast<T*>(pool_bytes_at(layer, kv));
  }
  template <class T>
  [[nodiscard]] T* slot(int layer, int kv, int block, int offset) const {
    check_type<T>();
    return reinterpret_cast<T*>(slot_bytes_at(layer, kv, block, offset));
  }

  int num_layers_, num_kv_heads_, head_dim_, num_blocks_;
  KVCacheDType dtype_;
  std::size_t slot_elements_ = 0;  // num_kv_heads * head_dim
  std::size_t slot_bytes_ = 0;     // slot_elements_ in the element's bytes
  std::size_t pool_bytes_ = 0;     // one layer's K (or V): num_blocks * BlockSize slots
  std::unique_ptr<std::byte[], AlignedDelete> storage_;
};

}  // namespace qwen
