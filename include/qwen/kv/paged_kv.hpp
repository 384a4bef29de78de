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
// Sequences: add_sequence() hands out an id (never reused); reserve(seq, n) makes sure the blocks
// for positions [0, n) are allocated, taking them from a free list; the block table of a sequence
// lists its physical block ids in logical order (position p lives in block_table[p / BlockSize] at
// slot p % BlockSize). remove_sequence() returns its blocks. Allocation policy, prefix sharing and
// eviction arrive with the engine.
//
// Errors are InvalidArgument naming the value: unknown sequence, bad layer / block / position, and
// an exhausted pool (reserve names the blocks it needs and the blocks free, and changes nothing).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <unordered_map>
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
    // Free list as a stack: block 0 is handed out first, then 1, 2, ...
    free_blocks_.resize(static_cast<std::size_t>(num_blocks));
    for (int i = 0; i < num_blocks; ++i) free_blocks_[static_cast<std::size_t>(i)] = num_blocks - 1 - i;
  }

  PagedKV(const PagedKV&) = delete;
  PagedKV& operator=(const PagedKV&) = delete;
  PagedKV(PagedKV&&) noexcept = default;
  PagedKV& operator=(PagedKV&&) noexcept = default;

  [[nodiscard]] int num_layers() const noexcept { return num_layers_; }
  [[nodiscard]] int num_kv_heads() const noexcept { return num_kv_heads_; }
  [[nodiscard]] int head_dim() const noexcept { return head_dim_; }
  [[nodiscard]] int num_blocks() const noexcept { return num_blocks_; }
  [[nodiscard]] int num_free_blocks() const noexcept { return static_cast<int>(free_blocks_.size()); }
  [[nodiscard]] int num_sequences() const noexcept { return static_cast<int>(sequences_.size()); }

  // ---- sequences ----------------------------------------------------------------------------

  // A new, empty sequence (capacity 0). Ids count up from 0 and are never reused.
  [[nodiscard]] int add_sequence() {
    if (next_sequence_ == std::numeric_limits<int>::max()) throw_error<InvalidArgument>("PagedKV: sequence ids exhausted");
    const int id = next_sequence_++;
    sequences_.emplace(id, std::vector<std::int32_t>{});
    return id;
  }

  // Returns the sequence's blocks to the free list; the id becomes unknown.
  void remove_sequence(int seq) {
    auto& table = table_of(seq, "remove_sequence");
    // Pushed in reverse, so that the next reserve takes them back in the same order.
    for (auto it = table.rbegin(); it != table.rend(); ++it) free_blocks_.push_back(*it);
    sequences_.erase(seq);
  }

  // Makes sure positions [0, num_tokens) have blocks. Never shrinks. When the free list cannot
  // cover the new blocks, throws InvalidArgument and leaves everything unchanged.
  void reserve(int seq, int num_tokens) {
    auto& table = table_of(seq, "reserve");
    if (num_tokens < 0) throw_error<InvalidArgument>("PagedKV::reserve: sequence ", seq, ": num_tokens ", num_tokens, " < 0");
    const std::size_t needed_blocks = (static_cast<std::size_t>(num_tokens) + BlockSize - 1) / BlockSize;
    if (needed_blocks <= table.size()) return;
    const std::size_t missing = needed_blocks - table.size();
    if (missing > free_blocks_.size())
      throw_error<InvalidArgument>("PagedKV::reserve: sequence ", seq, " needs ", missing, " more blocks of ", BlockSize,
                                   " positions for ", num_tokens, " tokens (has ", table.size(), "), but only ",
                                   free_blocks_.size(), " of ", num_blocks_, " blocks are free");
    table.reserve(needed_blocks);  // may throw bad_alloc before anything changed
    for (std::size_t i = 0; i < missing; ++i) {
      table.push_back(free_blocks_.back());
      free_blocks_.pop_back();
    }
  }

  // Positions the sequence's blocks can hold: block count * BlockSize.
  [[nodiscard]] int capacity(int seq) const {
    return static_cast<int>(table_of(seq, "capacity").size()) * BlockSize;
  }

  // Physical block ids of the sequence in logical order. Valid until the next reserve or
  // remove_sequence of that sequence.
  [[nodiscard]] std::span<const std::int32_t> block_table(int seq) const { return table_of(seq, "block_table"); }

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

  // Stores one token's K and V (each [num_kv_heads * head_dim]) at `position` of `seq` in
  // `layer`. The position must be below capacity(seq) (reserve first).
  void write(int layer, int seq, int position, const float* k, const float* v) {
    const auto& table = table_of(seq, "write");
    if (position < 0 || static_cast<std::size_t>(position) >= table.size() * BlockSize)
      throw_error<InvalidArgument>("PagedKV::write: sequence ", seq, ": position ", position, " outside its capacity ",
                                   table.size() * BlockSize, " (reserve first)");
    const int block = table[static_cast<std::size_t>(position / BlockSize)];
    const int offset = position % BlockSize;
    std::memcpy(slot(layer, 0, block, offset), k, slot_floats_ * sizeof(float));
    std::memcpy(slot(layer, 1, block, offset), v, slot_floats_ * sizeof(float));
  }

 private:
  static constexpr std::size_t alignment = std::size_t{2} << 20;  // one huge page

  struct AlignedDelete {
    void operator()(float* p) const noexcept { ::operator delete[](p, std::align_val_t{alignment}); }
  };

  [[nodiscard]] std::vector<std::int32_t>& table_of(int seq, const char* op) {
    auto it = sequences_.find(seq);
    if (it == sequences_.end()) throw_error<InvalidArgument>("PagedKV::", op, ": unknown sequence id ", seq);
    return it->second;
  }
  [[nodiscard]] const std::vector<std::int32_t>& table_of(int seq, const char* op) const {
    auto it = sequences_.find(seq);
    if (it == sequences_.end()) throw_error<InvalidArgument>("PagedKV::", op, ": unknown sequence id ", seq);
    return it->second;
  }

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
  std::vector<std::int32_t> free_blocks_;  // stack; back() is handed out next
  std::unordered_map<int, std::vector<std::int32_t>> sequences_;
  int next_sequence_ = 0;
};

}  // namespace qwen
