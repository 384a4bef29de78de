// Byte-pair encoding of one pre-tokenized word, over token ids.
//
// A word starts as one symbol per byte (the vocabulary id of that byte's byte-level character);
// then, as Hugging Face's BPE model does, the adjacent pair with the lowest merge rank is merged,
// the leftmost one among equal ranks, until no adjacent pair has a merge. Merges are looked up by
// id pair in an open-addressing table, so no strings are built while encoding.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qwen::tokenizer {

using TokenId = std::int32_t;
// Largest id a tokenizer.json may use: ids index dense tables, so a stray huge id must be an error,
// not a multi-gigabyte allocation. Qwen3's largest is 151668.
inline constexpr TokenId kMaxTokenId = (1 << 24) - 1;

// The merge table: (left id, right id) -> (rank, merged id).
class MergeTable {
 public:
  static constexpr std::uint32_t kNoMerge = std::numeric_limits<std::uint32_t>::max();
  struct Merge {
    std::uint32_t rank = kNoMerge;
    TokenId merged = -1;
  };

  explicit MergeTable(std::size_t expected = 0) { rehash(expected); }

  // Adds a merge; returns false when the pair already has one (the earlier rank is kept, as in
  // Hugging Face, where the first occurrence wins).
  bool insert(TokenId left, TokenId right, std::uint32_t rank, TokenId merged) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size());
    Slot& slot = slots_[slot_index(key(left, right))];
    if (slot.merge.rank != kNoMerge) return false;
    slot.key = key(left, right);
    slot.merge = {rank, merged};
    ++size_;
    return true;
  }
  [[nodiscard]] Merge find(TokenId left, TokenId right) const noexcept { return slots_[slot_index(key(left, right))].merge; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  struct Slot {
    std::uint64_t key = 0;
    Merge merge;
  };
  static std::uint64_t key(TokenId l, TokenId r) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(l)) << 32) | static_cast<std::uint32_t>(r);
  }
  // The slot holding key k, or the empty slot where it would go (linear probing; the table is
  // at most half full, so an empty slot is always found).
  [[nodiscard]] std::size_t slot_index(std::uint64_t k) const noexcept {
    std::size_t i = static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_);
    const std::size_t mask = slots_.size() - 1;
    while (slots_[i].merge.rank != kNoMerge && slots_[i].key != k) i = (i + 1) & mask;
    return i;
  }
  void rehash(std::size_t at_least) {
    std::size_t capacity = 16;
    unsigned bits = 4;
    while (capacity < at_least * 2) capacity <<= 1, ++bits;
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    shift_ = 64 - bits;
    for (const Slot& s : old)
      if (s.merge.rank != kNoMerge) slots_[slot_index(s.key)] = s;
  }

  std::vector<Slot> slots_;
  unsigned shift_ = 60;
  std::size_t size_ = 0;
};

// Merges `symbols` in place (the initial per-byte ids of one word) and leaves the token ids:
// repeatedly the adjacent pair with the lowest merge rank, the leftmost among equal ranks.
//
// bpe_merge_scan is that definition directly: each round scans the cached pair ranks for the
// minimum and recomputes only the two pairs the merge touched. Quadratic in the word length, and
// the fastest for the short words that make up almost all text.
inline void bpe_merge_scan(std::vector<TokenId>& symbols, const MergeTable& merges, std::vector<std::uint32_t>& ranks) {
  const std::size_t n = symbols.size();
  if (n < 2) return;
  ranks.resize(n - 1);
  for (std::size_t k = 0; k + 1 < n; ++k) ranks[k] = merges.find(symbols[k], symbols[k + 1]).rank;
  for (;;) {
    std::size_t best = 0;
    std::uint32_t best_rank = MergeTable::kNoMerge;
    for (std::size_t k = 0; k < ranks.size(); ++k)
      if (ranks[k] < best_rank) best_rank = ranks[k], best = k;  // strict <: leftmost among equals
    if (best_rank == MergeTable::kNoMerge) return;
    symbols[best] = merges.find(symbols[best], symbols[best + 1]).merged;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    ranks.erase(ranks.begin() + static_cast<std::ptrdiff_t>(best));
    if (best > 0) ranks[best - 1] = merges.find(symbols[best - 1], symbols[best]).rank;
    if (best < ranks.size()) ranks[best] = merges.find(symbols[best], symbols[best + 1]).rank;
  }
}

// bpe_merge_heap gives the same result in O(n log n), for long words (a run of 100,000 '-' or
// CJK characters is one pre-tokenized word, and the scan would take minutes on a megabyte of it).
// Symbols stay at their original byte positions in a linked list; candidate pairs wait in a
// min-heap ordered by (rank, position), and position order is left-to-right order, so the pair
// popped is the scan's choice. A popped pair whose symbols have changed since it was pushed is
// stale and skipped (a merge always produces an id different from its left part).
inline void bpe_merge_heap(std::vector<TokenId>& symbols, const MergeTable& merges) {
  const auto n = static_cast<std::int32_t>(symbols.size());
  if (n < 2) return;
  struct Pair {
    std::uint32_t rank;
    std::int32_t position, left, right;
    bool operator>(const Pair& o) const noexcept { return rank != o.rank ? rank > o.rank : position > o.position; }
  };
  std::vector<std::int32_t> next(static_cast<std::size_t>(n)), prev(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i) next[static_cast<std::size_t>(i)] = i + 1, prev[static_cast<std::size_t>(i)] = i - 1;
  std::vector<Pair> heap;
  const auto at = [&](std::int32_t i) -> TokenId& { return symbols[static_cast<std::size_t>(i)]; };
  const auto offer = [&](std::int32_t i) {
    const std::int32_t j = next[static_cast<std::size_t>(i)];
    if (j >= n) return;
    const MergeTable::Merge m = merges.find(at(i), at(j));
    if (m.rank == MergeTable::kNoMerge) return;
    heap.push_back({m.rank, i, at(i), at(j)});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (std::int32_t i = 0; i + 1 < n; ++i) offer(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Pair pair = heap.back();
    heap.pop_back();
    const std::int32_t i = pair.position, j = next[static_cast<std::size_t>(i)];
    if (at(i) != pair.left || j >= n || at(j) != pair.right) continue;  // stale
    at(i) = merges.find(pair.left, pair.right).merged;
    at(j) = -1;  // removed
    const std::int32_t after = next[static_cast<std::size_t>(j)];
    next[static_cast<std::size_t>(i)] = after;
    if (after < n) prev[static_cast<std::size_t>(after)] = i;
    if (prev[static_cast<std::size_t>(i)] >= 0) offer(prev[static_cast<std::size_t>(i)]);
    offer(i);
  }
  std::size_t kept = 0;
  for (std::int32_t i = 0; i < n; i = next[static_cast<std::size_t>(i)]) symbols[kept++] = at(i);
  symbols.resize(kept);
}

// Words up to this many symbols take the scan, longer ones the heap (the same result).
inline constexpr std::size_t kBpeScanMaxSymbols = 64;

inline void bpe_merge(std::vector<TokenId>& symbols, const MergeTable& merges, std::vector<std::uint32_t>& ranks) {
  if (symbols.size() <= kBpeScanMaxSymbols)
    bpe_merge_scan(symbols, merges, ranks);
  else
    bpe_merge_heap(symbols, merges);
}

// Words already encoded: word bytes -> ids. Bounded: when full it is emptied (words repeat in
// bursts, and an unbounded cache would grow with every distinct word of a long-running server).
class BpeCache {
 public:
  static constexpr std::size_t kMaxEntries = 1 << 16;
  static constexpr std::size_t kMaxWordBytes = 128;  // longer words are rare; not worth the memory

  [[nodiscard]] const std::vector<TokenId>* find(std::string_view word) const {
    const auto it = map_.find(word);
    return it == map_.end() ? nullptr : &it->second;
  }
  void insert(std::string_view word, const std::vector<TokenId>& ids) {
    if (word.size() > kMaxWordBytes) return;
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.emplace(std::string(word), ids);
  }
  void clear() { map_.clear(); }

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::vector<TokenId>, Hash, std::equal_to<>> map_;
};

}  // namespace qwen::tokenizer
