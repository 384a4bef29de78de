// Host-side books of the paged KV cache: which physical blocks each sequence owns, a refcount per
// block, the free pool, prefix caching by chained content hash of full blocks, copy-on-write of
// shared blocks, fork. It never touches K/V bytes: extend() returns the block copies the storage
// must make before the step writes (qwen::BlockCopy), and block_table() is what the attention reads.
//
// Blocks. A block is referenced (refcount > 0: named by that many block-table entries over all
// sequences) or free (refcount 0). The free pool has two parts:
//   - empty blocks: never used, or freed / evicted without a registered hash; handed out first,
//     last in first out;
//   - cached blocks: freed blocks that still hold a registered hash, findable by match_prefix;
//     handed out (evicted: their hash is dropped) only when no empty block is left, least
//     recently freed first. A sequence releases its blocks last to first, so that the tail of a
//     prefix is evicted before its head (a child is unreachable without its parent anyway).
//
// Prefix cache. A FULL block is registered under its chain value
//     chain(-1) = chain_seed,   chain(i) = H(chain(i - 1), tokens of block i)
// which covers every token up to the end of block i and no physical block id (a parent evicted and
// reused for other content cannot make a stale child match). H folds the BlockSize tokens into the
// previous value one at a time with a bijective 64-bit mixer, so for fixed tokens H is a bijection
// of the previous value. A lookup compares the candidate's stored tokens too: a match needs equal
// chain values AND equal block tokens, hence (by the bijection) equal chain values of the tokens
// before. What remains is a 64-bit collision between two different prefixes of the same length:
// about n^2 / 2^65 for n distinct prefixes if H behaves randomly, but H is not cryptographic and is
// unkeyed, so crafted collisions are feasible; do not share one cache between untrusting clients
// without replacing H by a keyed or cryptographic hash. One block per chain value: a block whose
// content is already registered by another block stays unregistered (and is not registered later
// if that other block is evicted).
//
// Writes (extend). Every block a write touches becomes writable by the writing sequence alone:
// blocks past the cut are released and fresh ones taken from the pool; the kept partial block (a
// write starting inside a block) is copied when shared (refcount > 1), and, when this sequence
// alone holds it and it is registered, unregistered and written in place (no block taken, no
// copy; if the write fills it again it is registered anew).
//
// Cost: O(blocks touched) per call, plus O(tokens) copied where a call copies tokens (extend,
// match_prefix, fork). The block pool's structures are sized at construction; per call only
// sequence vectors grow (and add_sequence / fork allocate the new sequence).
//
// Not thread-safe: one scheduler thread owns a manager.
//
// Errors: InvalidArgument naming the operation, the sequence id and the values (unknown id, begin
// outside [0, length], no tokens, match_prefix on a non-empty sequence, an exhausted pool);
// check_invariants() throws std::logic_error naming the broken invariant.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "qwen/core/error.hpp"

namespace qwen {

// The storage must copy physical block `src` to `dst` (every layer, K and V) before the step
// that wrote this plan writes any K/V.
struct BlockCopy {
  std::int32_t src = 0, dst = 0;
};

// Tests only: a test defines it to corrupt a manager and check that check_invariants notices.
struct BlockManagerTestAccess;

template <int BlockSize>  // positions per block
class BlockManager {
  static_assert(BlockSize > 0 && (BlockSize & (BlockSize - 1)) == 0, "BlockManager: BlockSize must be a power of two > 0");

 public:
  static constexpr int block_size = BlockSize;

  explicit BlockManager(int num_blocks) : num_blocks_(num_blocks) {
    if (num_blocks <= 0) throw_error<InvalidArgument>("BlockManager: num_blocks ", num_blocks, " must be positive");
    const auto n = static_cast<std::size_t>(num_blocks);
    ref_count_.assign(n, 0);
    registered_.assign(n, 0);
    hash_.assign(n, 0);
    block_tokens_.assign(n * BlockSize, 0);
    lru_prev_.assign(n, none);
    lru_next_.assign(n, none);
    // Empty blocks as a stack: block 0 is handed out first, then 1, 2, ... Its capacity is the
    // whole pool, so pushes never allocate.
    empty_blocks_.resize(n);
    for (int i = 0; i < num_blocks; ++i) empty_blocks_[static_cast<std::size_t>(i)] = num_blocks - 1 - i;
    // Open addressing with linear probing, at most half full (at most num_blocks registered).
    std::size_t capacity = 2;
    while (capacity < 2 * n) capacity *= 2;
    slots_.assign(capacity, none);
  }

  [[nodiscard]] int num_blocks() const noexcept { return num_blocks_; }
  // Refcount-0 blocks: empty ones plus cached (evictable) ones.
  [[nodiscard]] int num_free_blocks() const noexcept { return static_cast<int>(empty_blocks_.size()) + num_cached_; }
  // Refcount-0 blocks that still hold a registered prefix hash.
  [[nodiscard]] int num_cached_blocks() const noexcept { return num_cached_; }
  [[nodiscard]] int num_sequences() const noexcept { return static_cast<int>(sequences_.size()); }

  // Block-table entries (over all sequences) that name physical block `block`.
  [[nodiscard]] int ref_count(int block) const {
    if (block < 0 || block >= num_blocks_)
      throw_error<InvalidArgument>("BlockManager::ref_count: block ", block, " outside [0, ", num_blocks_, ")");
    return ref_count_[static_cast<std::size_t>(block)];
  }

  // ---- sequences ----------------------------------------------------------------------------

  // A new, empty sequence. Ids count up from 0 and are never reused.
  [[nodiscard]] int add_sequence() {
    const int id = next_id("add_sequence");
    sequences_.emplace(id, Sequence{});
    ++next_sequence_;
    return id;
  }

  // A new sequence with seq's tokens and the same block table: every block's refcount + 1, no
  // copy now (a later write to a shared block copies it).
  [[nodiscard]] int fork(int seq) {
    Sequence child = sequence_of(seq, "fork");  // a copy; may throw before anything changed
    const int id = next_id("fork");
    const auto it = sequences_.emplace(id, std::move(child)).first;
    ++next_sequence_;
    for (const std::int32_t block : it->second.table) ++ref_count_[index(block)];
    return id;
  }

  // Refcount - 1 of each block of seq (last to first); a block reaching 0 goes to the free pool,
  // cached if it holds a registered hash. The id becomes unknown.
  void free_sequence(int seq) {
    const auto it = find(seq, "free_sequence");
    const auto& table = it->second.table;
    for (auto block = table.rbegin(); block != table.rend(); ++block) release(*block);
    sequences_.erase(it);
  }

  [[nodiscard]] bool contains(int seq) const noexcept { return sequences_.find(seq) != sequences_.end(); }

  // Positions of seq that have tokens (written, or to be written by the step being planned).
  [[nodiscard]] int length(int seq) const { return static_cast<int>(sequence_of(seq, "length").tokens.size()); }
  // Those tokens. Valid until the next non-const call.
  [[nodiscard]] std::span<const std::int32_t> tokens(int seq) const { return sequence_of(seq, "tokens").tokens; }
  // Physical block ids in logical order; size == ceil(length / BlockSize). Valid until the next
  // non-const call.
  [[nodiscard]] std::span<const std::int32_t> block_table(int seq) const { return sequence_of(seq, "block_table").table; }

  // ---- prefix caching -----------------------------------------------------------------------

  // seq must have length 0. Attaches the longest run of leading FULL blocks of `tokens` whose
  // content (the block's tokens and every token before it) is registered, taking a reference on
  // each (a cached block leaves the free pool). seq's tokens become those blocks' tokens. Returns
  // the number of tokens attached, a multiple of BlockSize. Pass only the tokens that may be
  // reused (an engine that needs the logits of the last prompt token passes all but the last).
  int match_prefix(int seq, std::span<const std::int32_t> tokens) {
    Sequence& s = sequence_of(seq, "match_prefix");
    if (!s.tokens.empty())
      throw_error<InvalidArgument>("BlockManager::match_prefix: sequence ", seq, " has length ", s.tokens.size(),
                                   "; only an empty sequence can take a cached prefix");
    if (tokens.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
      throw_error<InvalidArgument>("BlockManager::match_prefix: sequence ", seq, ": ", tokens.size(),
                                   " tokens exceed the int position range");
    const std::size_t full_blocks = tokens.size() / BlockSize;
    // Room for the whole prompt (its rest is usually extended next); the loop then cannot throw.
    grow(s.tokens, tokens.size());
    grow(s.table, (tokens.size() + BlockSize - 1) / BlockSize);
    grow(s.chain, full_blocks);
    std::uint64_t chain = chain_seed;
    for (std::size_t j = 0; j < full_blocks; ++j) {
      const std::int32_t* block_tokens = tokens.data() + j * BlockSize;
      chain = chain_hash(chain, block_tokens);
      const std::int32_t block = find_registered(chain, block_tokens);
      if (block == none) break;
      if (ref_count_[index(block)] == 0) unlink_cached(block);
      ++ref_count_[index(block)];
      s.table.push_back(block);
      s.chain.push_back(chain);
      s.tokens.insert(s.tokens.end(), block_tokens, block_tokens + BlockSize);
    }
    return static_cast<int>(s.tokens.size());
  }

  // ---- writes -------------------------------------------------------------------------------

  // Blocks that extend(seq, begin, `count` tokens) takes from the free pool: new blocks plus a
  // copy of the kept partial block when it is shared. Changes nothing. Summed over sequences that
  // extend in one step it is an upper bound (a block shared by several of them is counted by
  // each, but the last holder writes it in place): a sum <= num_free_blocks() means every one of
  // those extends succeeds, in any order.
  [[nodiscard]] int blocks_needed(int seq, int begin, int count) const {
    const Sequence& s = sequence_of(seq, "blocks_needed");
    check_write(seq, s, begin, count, "blocks_needed");
    return plan(s, begin, count).needed();
  }

  // Blocks that cutting seq to `begin` (the first thing extend does) returns to the free pool:
  // those past the kept ceil(begin / BlockSize) that no other table holds. Changes nothing.
  // A caller checking several sequences' extends in order credits each one with its own.
  [[nodiscard]] int blocks_returned(int seq, int begin) const {
    const Sequence& s = sequence_of(seq, "blocks_returned");
    if (begin < 0 || static_cast<std::size_t>(begin) > s.tokens.size())
      throw_error<InvalidArgument>("BlockManager::blocks_returned: sequence ", seq, ": begin ", begin, " outside [0, ",
                                   s.tokens.size(), "]");
    return returned_by_cut(s, (static_cast<std::size_t>(begin) + BlockSize - 1) / BlockSize);
  }

  // Positions [begin, begin + tokens.size()) of seq will be written with `tokens` by the next
  // step; 0 <= begin <= length(seq), tokens non-empty.
  //   1. seq is cut to `begin`: blocks wholly past it are released (last to first).
  //   2. The kept partial block (begin % BlockSize != 0) is made writable by seq alone: if shared
  //      (refcount > 1) a fresh block replaces it and {old, new} is appended to `copies`; if seq
  //      alone holds it and it is registered, it is unregistered and written in place.
  //   3. Fresh blocks cover the rest of the write.
  //   4. Every block the write fills completely is registered under its chain value, unless that
  //      value is already registered (then it stays unregistered).
  // Fresh blocks come from the free pool: an empty block if any, else the least recently freed
  // cached block, whose hash is dropped. All or nothing: when the pool (with what the cut returns)
  // cannot cover blocks_needed, throws InvalidArgument naming the sequence, the blocks needed and
  // the blocks free, and changes nothing (copies included).
  void extend(int seq, int begin, std::span<const std::int32_t> tokens, std::vector<BlockCopy>& copies) {
    Sequence& s = sequence_of(seq, "extend");
    if (tokens.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
      throw_error<InvalidArgument>("BlockManager::extend: sequence ", seq, ": ", tokens.size(),
                                   " tokens exceed the int position range");
    const int count = static_cast<int>(tokens.size());
    check_write(seq, s, begin, count, "extend");
    const WritePlan p = plan(s, begin, count);

    const int returned = returned_by_cut(s, p.kept);
    if (p.needed() > num_free_blocks() + returned)
      throw_error<InvalidArgument>("BlockManager::extend: sequence ", seq, " needs ", p.needed(),
                                   " blocks from the free pool (", p.new_blocks, " new, ", p.copy ? 1 : 0,
                                   " copy) to write ", count, " tokens at position ", begin, " (length ",
                                   s.tokens.size(), "), but only ", num_free_blocks() + returned, " of ", num_blocks_,
                                   " blocks are free (", num_free_blocks(), " now + ", returned,
                                   " the cut returns)");
    // Capacity first: nothing below throws.
    grow(s.tokens, static_cast<std::size_t>(begin) + tokens.size());
    grow(s.table, p.total);
    grow(s.chain, (static_cast<std::size_t>(begin) + tokens.size()) / BlockSize);
    if (p.copy) grow(copies, copies.size() + 1);

    // 1. The cut.
    for (std::size_t j = s.table.size(); j-- > p.kept;) release(s.table[j]);
    s.table.resize(p.kept);
    s.tokens.resize(static_cast<std::size_t>(begin));
    const std::size_t first = static_cast<std::size_t>(begin) / BlockSize;  // first block the write touches
    s.chain.resize(first);

    // 2. The kept partial block.
    if (first < p.kept) {
      const std::int32_t old_block = s.table[first];
      if (ref_count_[index(old_block)] > 1) {
        const std::int32_t fresh = take_free_block();
        --ref_count_[index(old_block)];
        s.table[first] = fresh;
        copies.push_back({old_block, fresh});
      } else if (registered_[index(old_block)] != 0) {
        unregister(old_block);
      }
    }

    // 3. Fresh blocks for the rest.
    while (s.table.size() < p.total) s.table.push_back(take_free_block());
    s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());

    // 4. Register the blocks the write filled.
    const std::size_t full_blocks = s.tokens.size() / BlockSize;
    for (std::size_t j = first; j < full_blocks; ++j) {
      const std::int32_t* block_tokens = s.tokens.data() + j * BlockSize;
      const std::uint64_t chain = chain_hash(j == 0 ? chain_seed : s.chain[j - 1], block_tokens);
      s.chain.push_back(chain);
      if (!key_registered(chain)) register_block(s.table[j], chain, block_tokens);
    }
  }

  // Drops the hashes of up to max_blocks cached blocks, least recently freed first (they become
  // empty blocks). Returns how many.
  int evict_cached(int max_blocks) {
    if (max_blocks < 0) throw_error<InvalidArgument>("BlockManager::evict_cached: max_blocks ", max_blocks, " < 0");
    int evicted = 0;
    while (evicted < max_blocks && lru_head_ != none) {
      const std::int32_t block = lru_head_;
      unlink_cached(block);
      unregister(block);
      empty_blocks_.push_back(block);
      ++evicted;
    }
    return evicted;
  }

  // Throws std::logic_error naming the first broken invariant. O(num_blocks * BlockSize + total
  // tokens); for tests and debugging.
  void check_invariants() const;

 private:
  friend struct BlockManagerTestAccess;

  static constexpr std::int32_t none = -1;
  static constexpr std::uint64_t chain_seed = 0x6a09e667f3bcc909ull;  // chain value "before block 0"

  struct Sequence {
    std::vector<std::int32_t> tokens;  // [length]
    std::vector<std::int32_t> table;   // [ceil(length / BlockSize)] physical block ids
    std::vector<std::uint64_t> chain;  // [length / BlockSize] chain value of each full block
  };

  // What a write of `count` tokens at `begin` does to the block table.
  struct WritePlan {
    std::size_t kept = 0;        // blocks left by the cut: ceil(begin / BlockSize)
    std::size_t total = 0;       // blocks after the write: ceil((begin + count) / BlockSize)
    int new_blocks = 0;          // total - kept
    bool copy = false;           // the kept partial block is shared and must be copied
    [[nodiscard]] int needed() const noexcept { return new_blocks + (copy ? 1 : 0); }
  };

  // Stafford's "mix13" 64-bit finalizer (as in splitmix64): a bijection with full avalanche.
  static constexpr std::uint64_t mix(std::uint64_t x) noexcept {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
  }
  // H(previous, block tokens): a bijection of `previous` for fixed tokens (xor, then mix).
  static std::uint64_t chain_hash(std::uint64_t previous, const std::int32_t* block_tokens) noexcept {
    std::uint64_t h = previous;
    for (int i = 0; i < BlockSize; ++i)
      h = mix(h ^ (static_cast<std::uint64_t>(static_cast<std::uint32_t>(block_tokens[i])) + 0x9e3779b97f4a7c15ull));
    return h;
  }

  static std::size_t index(std::int32_t block) noexcept { return static_cast<std::size_t>(block); }

  // Capacity for `size` elements, at least doubling: a reserve of exactly size + 1 per decode
  // step would copy the whole vector every step.
  template <class T>
  static void grow(std::vector<T>& v, std::size_t size) {
    if (size > v.capacity()) v.reserve(std::max(size, 2 * v.capacity()));
  }

  int next_id(const char* op) const {
    if (next_sequence_ == std::numeric_limits<int>::max())
      throw_error<InvalidArgument>("BlockManager::", op, ": sequence ids exhausted");
    return next_sequence_;
  }

  typename std::unordered_map<int, Sequence>::iterator find(int seq, const char* op) {
    const auto it = sequences_.find(seq);
    if (it == sequences_.end()) throw_error<InvalidArgument>("BlockManager::", op, ": unknown sequence id ", seq);
    return it;
  }
  Sequence& sequence_of(int seq, const char* op) { return find(seq, op)->second; }
  const Sequence& sequence_of(int seq, const char* op) const {
    const auto it = sequences_.find(seq);
    if (it == sequences_.end()) throw_error<InvalidArgument>("BlockManager::", op, ": unknown sequence id ", seq);
    return it->second;
  }

  static void check_write(int seq, const Sequence& s, int begin, int count, const char* op) {
    const auto length = static_cast<long long>(s.tokens.size());
    if (begin < 0 || begin > length)
      throw_error<InvalidArgument>("BlockManager::", op, ": sequence ", seq, ": begin ", begin, " outside [0, length ",
                                   length, "]");
    if (count <= 0)
      throw_error<InvalidArgument>("BlockManager::", op, ": sequence ", seq, ": no tokens to write (count ", count,
                                   ") at position ", begin);
    if (count > std::numeric_limits<int>::max() - begin)
      throw_error<InvalidArgument>("BlockManager::", op, ": sequence ", seq, ": begin ", begin, " + count ", count,
                                   " exceeds the int position range");
  }

  WritePlan plan(const Sequence& s, int begin, int count) const noexcept {
    WritePlan p;
    const auto end = static_cast<std::size_t>(begin) + static_cast<std::size_t>(count);
    p.kept = (static_cast<std::size_t>(begin) + BlockSize - 1) / BlockSize;
    p.total = (end + BlockSize - 1) / BlockSize;
    p.new_blocks = static_cast<int>(p.total - p.kept);
    if (begin % BlockSize != 0) p.copy = ref_count_[index(s.table[static_cast<std::size_t>(begin) / BlockSize])] > 1;
    return p;
  }

  // What releasing table entries [kept, end) returns to the pool: the blocks whose every
  // reference is among them (a block named twice by one table, possible only through a
  // chain-hash collision, counts once, when all its references go).
  int returned_by_cut(const Sequence& s, std::size_t kept) const {
    int returned = 0;
    for (std::size_t j = kept; j < s.table.size(); ++j) {
      const std::int32_t block = s.table[j];
      if (ref_count_[index(block)] == 1) {
        ++returned;
        continue;
      }
      // Shared: returned only if all its references are in this tail; counted at its first.
      int seen = 0;
      bool first = true;
      for (std::size_t i = kept; i < s.table.size(); ++i)
        if (s.table[i] == block) {
          first = first && i >= j;
          ++seen;
        }
      if (first && seen == ref_count_[index(block)]) ++returned;
    }
    return returned;
  }

  // ---- the free pool ------------------------------------------------------------------------

  // Refcount - 1; at 0 the block joins the free pool: cached (LRU tail) if registered, else empty.
  void release(std::int32_t block) noexcept {
    if (--ref_count_[index(block)] != 0) return;
    if (registered_[index(block)] != 0)
      append_cached(block);
    else
      empty_blocks_.push_back(block);
  }

  // A block with refcount 1, unregistered: the top empty block, else the least recently freed
  // cached block (evicted). The caller has made sure the pool is not empty.
  std::int32_t take_free_block() noexcept {
    std::int32_t block;
    if (!empty_blocks_.empty()) {
      block = empty_blocks_.back();
      empty_blocks_.pop_back();
    } else {
      block = lru_head_;
      unlink_cached(block);
      unregister(block);
    }
    ref_count_[index(block)] = 1;
    return block;
  }

  void append_cached(std::int32_t block) noexcept {
    lru_prev_[index(block)] = lru_tail_;
    lru_next_[index(block)] = none;
    if (lru_tail_ != none)
      lru_next_[index(lru_tail_)] = block;
    else
      lru_head_ = block;
    lru_tail_ = block;
    ++num_cached_;
  }

  void unlink_cached(std::int32_t block) noexcept {
    const std::int32_t prev = lru_prev_[index(block)], next = lru_next_[index(block)];
    if (prev != none) lru_next_[index(prev)] = next; else lru_head_ = next;
    if (next != none) lru_prev_[index(next)] = prev; else lru_tail_ = prev;
    lru_prev_[index(block)] = lru_next_[index(block)] = none;
    --num_cached_;
  }

  // ---- the hash table: slots_ hold block ids, keyed by hash_[block] -------------------------

  std::size_t home(std::uint64_t key) const noexcept { return static_cast<std::size_t>(key) & (slots_.size() - 1); }
  std::size_t next_slot(std::size_t slot) const noexcept { return (slot + 1) & (slots_.size() - 1); }

  bool same_tokens(std::int32_t block, const std::int32_t* block_tokens) const noexcept {
    return std::equal(block_tokens, block_tokens + BlockSize, block_tokens_.begin() + static_cast<std::ptrdiff_t>(index(block) * BlockSize));
  }

  std::int32_t find_registered(std::uint64_t key, const std::int32_t* block_tokens) const noexcept {
    for (std::size_t slot = home(key); slots_[slot] != none; slot = next_slot(slot)) {
      const std::int32_t block = slots_[slot];
      if (hash_[index(block)] == key && same_tokens(block, block_tokens)) return block;
    }
    return none;
  }

  bool key_registered(std::uint64_t key) const noexcept {
    for (std::size_t slot = home(key); slots_[slot] != none; slot = next_slot(slot))
      if (hash_[index(slots_[slot])] == key) return true;
    return false;
  }

  void register_block(std::int32_t block, std::uint64_t key, const std::int32_t* block_tokens) noexcept {
    hash_[index(block)] = key;
    registered_[index(block)] = 1;
    std::copy(block_tokens, block_tokens + BlockSize, block_tokens_.begin() + static_cast<std::ptrdiff_t>(index(block) * BlockSize));
    std::size_t slot = home(key);
    while (slots_[slot] != none) slot = next_slot(slot);
    slots_[slot] = block;
  }

  // Removes the block's entry, shifting later entries of its probe run back (no tombstones).
  void unregister(std::int32_t block) noexcept {
    std::size_t hole = home(hash_[index(block)]);
    while (slots_[hole] != block) hole = next_slot(hole);
    for (std::size_t slot = next_slot(hole); slots_[slot] != none; slot = next_slot(slot)) {
      const std::size_t want = home(hash_[index(slots_[slot])]);
      // The entry at `slot` may move to `hole` unless its home lies cyclically in (hole, slot].
      const bool home_after_hole = hole <= slot ? (hole < want && want <= slot) : (hole < want || want <= slot);
      if (home_after_hole) continue;
      slots_[hole] = slots_[slot];
      hole = slot;
    }
    slots_[hole] = none;
    registered_[index(block)] = 0;
  }

  int num_blocks_;
  std::vector<std::int32_t> ref_count_;     // [num_blocks]
  std::vector<std::uint8_t> registered_;    // [num_blocks] 1: in slots_ under hash_[block]
  std::vector<std::uint64_t> hash_;         // [num_blocks] chain value, meaningful while registered
  std::vector<std::int32_t> block_tokens_;  // [num_blocks][BlockSize] tokens, meaningful while registered
  std::vector<std::int32_t> empty_blocks_;  // stack of free unregistered blocks; back() goes next
  std::vector<std::int32_t> lru_prev_, lru_next_;  // [num_blocks] cached blocks, oldest at lru_head_
  std::int32_t lru_head_ = none, lru_tail_ = none;
  int num_cached_ = 0;
  std::vector<std::int32_t> slots_;         // [power of two >= 2 * num_blocks] block id or none
  std::unordered_map<int, Sequence> sequences_;
  int next_sequence_ = 0;
};

template <int BlockSize>
void BlockManager<BlockSize>::check_invariants() const {
  const auto fail = [](const std::string& what) { throw std::logic_error("BlockManager invariant broken: " + what); };
  const auto n = static_cast<std::size_t>(num_blocks_);
  const auto name = [](std::int32_t block) { return std::to_string(block); };
  const auto in_range = [&](std::int32_t block) { return block >= 0 && block < num_blocks_; };

  // Sequences: shapes, chain values, references, registered blocks full and agreeing with the
  // tokens, sharers agreeing on a shared block's tokens.
  std::vector<int> references(n, 0);
  std::vector<const std::int32_t*> first_tokens(n, nullptr);  // the first holder's tokens of the block
  std::vector<std::size_t> first_cover(n, 0);                 // and how many of its positions it has
  for (const auto& [id, s] : sequences_) {
    const std::string seq = "sequence " + std::to_string(id);
    const std::size_t length = s.tokens.size();
    if (s.table.size() != (length + BlockSize - 1) / BlockSize)
      fail(seq + ": block table size " + std::to_string(s.table.size()) + " != ceil(length " + std::to_string(length) + " / block size)");
    if (s.chain.size() != length / BlockSize)
      fail(seq + ": " + std::to_string(s.chain.size()) + " chain values for " + std::to_string(length / BlockSize) + " full blocks");
    std::uint64_t chain = chain_seed;
    for (std::size_t j = 0; j < s.table.size(); ++j) {
      const std::int32_t block = s.table[j];
      if (!in_range(block)) fail(seq + ": block table entry " + std::to_string(j) + " names block " + name(block) + " outside the pool");
      ++references[index(block)];
      const std::int32_t* block_tokens = s.tokens.data() + j * BlockSize;
      const std::size_t cover = std::min<std::size_t>(BlockSize, length - j * BlockSize);
      if (cover == BlockSize) {
        chain = chain_hash(chain, block_tokens);
        if (s.chain[j] != chain) fail(seq + ": chain value of block " + std::to_string(j) + " does not match its tokens");
      }
      if (registered_[index(block)] != 0) {
        if (cover != BlockSize) fail(seq + ": registered block " + name(block) + " is its partial last block");
        if (hash_[index(block)] != s.chain[j] || !same_tokens(block, block_tokens))
          fail(seq + ": registered block " + name(block) + " has a stored hash or tokens other than the sequence's");
      }
      if (first_tokens[index(block)] == nullptr) {
        first_tokens[index(block)] = block_tokens;
        first_cover[index(block)] = cover;
      } else if (!std::equal(block_tokens, block_tokens + std::min(cover, first_cover[index(block)]), first_tokens[index(block)])) {
        fail(seq + ": shares block " + name(block) + " with a sequence holding other tokens in it");
      }
    }
  }
  for (std::size_t b = 0; b < n; ++b)
    if (ref_count_[b] != references[b])
      fail("block " + std::to_string(b) + " has refcount " + std::to_string(ref_count_[b]) + " but " + std::to_string(references[b]) + " block-table entries");

  // The free pool: empty blocks and cached blocks, disjoint, exactly the refcount-0 blocks.
  std::vector<std::uint8_t> in_pool(n, 0);
  for (const std::int32_t block : empty_blocks_) {
    if (!in_range(block)) fail("empty list holds block " + name(block) + " outside the pool");
    if (in_pool[index(block)] != 0) fail("empty list holds block " + name(block) + " twice");
    in_pool[index(block)] = 1;
    if (registered_[index(block)] != 0) fail("empty block " + name(block) + " is registered");
  }
  int cached = 0;
  std::int32_t prev = none;
  for (std::int32_t block = lru_head_; block != none; prev = block, block = lru_next_[index(block)]) {
    if (!in_range(block)) fail("cached list holds block " + name(block) + " outside the pool");
    if (in_pool[index(block)] != 0) fail("cached block " + name(block) + " is listed twice in the free pool");
    in_pool[index(block)] = 1;
    if (lru_prev_[index(block)] != prev) fail("cached block " + name(block) + " has a wrong back link");
    if (registered_[index(block)] == 0) fail("cached block " + name(block) + " holds no registered hash");
    ++cached;
  }
  if (lru_tail_ != prev) fail("cached list tail is not its last block");
  if (cached != num_cached_) fail("num_cached_blocks " + std::to_string(num_cached_) + " != " + std::to_string(cached) + " blocks in the cached list");
  for (std::size_t b = 0; b < n; ++b) {
    if (ref_count_[b] < 0) fail("block " + std::to_string(b) + " has a negative refcount");
    if ((ref_count_[b] == 0) != (in_pool[b] != 0))
      fail("block " + std::to_string(b) + (ref_count_[b] == 0 ? " has refcount 0 but is not in the free pool" : " is referenced and in the free pool"));
  }
  if (num_free_blocks() != static_cast<int>(std::count(ref_count_.begin(), ref_count_.end(), 0)))
    fail("num_free_blocks " + std::to_string(num_free_blocks()) + " != the refcount-0 blocks");

  // The hash table: exactly the registered blocks, each reachable from its home slot, one block
  // per chain value.
  int entries = 0;
  std::vector<std::uint8_t> in_table(n, 0);
  for (std::size_t slot = 0; slot < slots_.size(); ++slot) {
    const std::int32_t block = slots_[slot];
    if (block == none) continue;
    if (!in_range(block)) fail("hash table slot " + std::to_string(slot) + " names block " + name(block) + " outside the pool");
    if (in_table[index(block)] != 0) fail("hash table holds block " + name(block) + " twice");
    in_table[index(block)] = 1;
    ++entries;
    if (registered_[index(block)] == 0) fail("hash table holds unregistered block " + name(block));
    for (std::size_t probe = home(hash_[index(block)]); probe != slot; probe = next_slot(probe)) {
      if (slots_[probe] == none) fail("hash table entry of block " + name(block) + " is unreachable from its home slot");
      if (hash_[index(slots_[probe])] == hash_[index(block)]) fail("blocks " + name(slots_[probe]) + " and " + name(block) + " are registered under one hash");
    }
  }
  const auto marked = std::count_if(registered_.begin(), registered_.end(), [](std::uint8_t r) { return r != 0; });
  if (entries != static_cast<int>(marked))
    fail("hash table holds " + std::to_string(entries) + " entries but " + std::to_string(marked) + " blocks are marked registered");
}

}  // namespace qwen
