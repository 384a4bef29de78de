// For tests/test_block_manager.cpp: a simulated storage (one int per position stands for its
// K/V), a snapshot of everything observable of a BlockManager, and a naive second implementation
// of the manager's documented policy to compare it with after every operation.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <qwen/kv/block_manager.hpp>

namespace qwen::testing {


using Tokens = std::vector<std::int32_t>;

inline Tokens to_vector(std::span<const std::int32_t> s) { return {s.begin(), s.end()}; }

inline Tokens iota_tokens(int count, std::int32_t first) {
  Tokens t(static_cast<std::size_t>(count));
  std::iota(t.begin(), t.end(), first);
  return t;
}

inline Tokens concat(Tokens a, const Tokens& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- simulated storage: one int per position stands for its K/V ----------------------------

constexpr std::int32_t never_written = -1;
constexpr std::int32_t poison = -7777;

template <int B>
struct Storage {
  std::vector<std::int32_t> cell;  // [num_blocks][B]

  explicit Storage(int num_blocks) : cell(static_cast<std::size_t>(num_blocks) * B, never_written) {}

  // What a step does after extend(seq, begin, tokens, copies) returned `copies`: fresh blocks
  // (those past the cut and the copies' targets) may hold anything, so they are poisoned; then
  // the copies are made; then the tokens are written through the new block table.
  void apply_extend(const BlockManager<B>& m, int seq, int begin, std::span<const std::int32_t> tokens,
                    std::span<const BlockCopy> copies) {
    const auto table = m.block_table(seq);
    const std::size_t kept = (static_cast<std::size_t>(begin) + B - 1) / B;
    for (std::size_t j = kept; j < table.size(); ++j) fill_block(table[j], poison);
    for (const BlockCopy& c : copies) fill_block(c.dst, poison);
    for (const BlockCopy& c : copies)
      std::copy_n(cell.begin() + c.src * B, B, cell.begin() + c.dst * B);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const std::size_t p = static_cast<std::size_t>(begin) + i;
      cell[static_cast<std::size_t>(table[p / B]) * B + p % B] = tokens[i];
    }
  }

  void fill_block(std::int32_t block, std::int32_t value) {
    std::fill_n(cell.begin() + static_cast<std::ptrdiff_t>(block) * B, B, value);
  }

  [[nodiscard]] Tokens read(const BlockManager<B>& m, int seq) const {
    const auto table = m.block_table(seq);
    Tokens out(static_cast<std::size_t>(m.length(seq)));
    for (std::size_t p = 0; p < out.size(); ++p) out[p] = cell[static_cast<std::size_t>(table[p / B]) * B + p % B];
    return out;
  }
};

// extend() and the storage's part of the step.
template <int B>
std::vector<BlockCopy> extend_and_write(BlockManager<B>& m, Storage<B>& storage, int seq, int begin, const Tokens& tokens) {
  std::vector<BlockCopy> copies;
  m.extend(seq, begin, tokens, copies);
  storage.apply_extend(m, seq, begin, tokens, copies);
  return copies;
}

// Everything observable of a manager, to compare before and after a call that must change nothing.
template <int B>
struct Snapshot {
  std::map<int, std::pair<Tokens, Tokens>> sequences;  // id -> tokens, block table
  std::vector<int> ref_counts;
  int free = 0, cached = 0;

  explicit Snapshot(const BlockManager<B>& m, const std::vector<int>& ids) : free(m.num_free_blocks()), cached(m.num_cached_blocks()) {
    for (const int id : ids) sequences[id] = {to_vector(m.tokens(id)), to_vector(m.block_table(id))};
    for (int b = 0; b < m.num_blocks(); ++b) ref_counts.push_back(m.ref_count(b));
  }
  bool operator==(const Snapshot&) const = default;
};

// ---- the naive model ------------------------------------------------------------------------

// A second implementation of the documented policy, written for clarity: a registered block is
// keyed by its whole token prefix (no hashes), lookups are linear scans, the LRU order is a
// release timestamp per block. Its block ids are its own: the comparison checks the sharing
// structure (which table entries name one block), not the ids.
class NaiveManager {
 public:
  NaiveManager(int num_blocks, int block_size) : bs_(block_size), blocks_(static_cast<std::size_t>(num_blocks)) {}

  struct Sequence {
    Tokens tokens;
    std::vector<int> table;
  };

  [[nodiscard]] int num_free() const {
    return static_cast<int>(std::count_if(blocks_.begin(), blocks_.end(), [](const Block& b) { return b.refcount == 0; }));
  }
  [[nodiscard]] int num_cached() const {
    return static_cast<int>(
        std::count_if(blocks_.begin(), blocks_.end(), [](const Block& b) { return b.refcount == 0 && b.registered; }));
  }
  [[nodiscard]] const std::map<int, Sequence>& sequences() const { return sequences_; }
  [[nodiscard]] int ref_count(int block) const { return blocks_[static_cast<std::size_t>(block)].refcount; }

  int add() {
    sequences_[next_id_] = {};
    return next_id_++;
  }

  int fork(int id) {
    const Sequence copy = sequences_.at(id);
    for (const int b : copy.table) ++blocks_[static_cast<std::size_t>(b)].refcount;
    sequences_[next_id_] = copy;
    return next_id_++;
  }

  void free(int id) {
    const Sequence& s = sequences_.at(id);
    for (auto b = s.table.rbegin(); b != s.table.rend(); ++b) release(*b);
    sequences_.erase(id);
  }

  int match(int id, const Tokens& prompt) {
    Sequence& s = sequences_.at(id);
    std::size_t end = static_cast<std::size_t>(bs_);
    for (; end <= prompt.size(); end += static_cast<std::size_t>(bs_)) {
      const int b = find_registered(Tokens(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(end)));
      if (b < 0) break;
      ++blocks_[static_cast<std::size_t>(b)].refcount;
      s.table.push_back(b);
    }
    s.tokens.assign(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(end - static_cast<std::size_t>(bs_)));
    return static_cast<int>(s.tokens.size());
  }

  [[nodiscard]] int needed(int id, int begin, int count) const {
    const Sequence& s = sequences_.at(id);
    const int kept = (begin + bs_ - 1) / bs_, total = (begin + count + bs_ - 1) / bs_;
    const bool copy = begin % bs_ != 0 && blocks_[static_cast<std::size_t>(s.table[static_cast<std::size_t>(begin / bs_)])].refcount > 1;
    return total - kept + (copy ? 1 : 0);
  }

  // False (and nothing changed) when the pool cannot cover the write; `copies` = blocks copied.
  bool extend(int id, int begin, const Tokens& tokens, int& copies) {
    Sequence& s = sequences_.at(id);
    const int count = static_cast<int>(tokens.size());
    const std::size_t kept = static_cast<std::size_t>((begin + bs_ - 1) / bs_);
    const std::size_t total = static_cast<std::size_t>((begin + count + bs_ - 1) / bs_);
    int returned = 0;
    for (std::size_t j = kept; j < s.table.size(); ++j) returned += blocks_[static_cast<std::size_t>(s.table[j])].refcount == 1;
    if (needed(id, begin, count) > num_free() + returned) return false;

    for (std::size_t j = s.table.size(); j-- > kept;) release(s.table[j]);
    s.table.resize(kept);
    s.tokens.resize(static_cast<std::size_t>(begin));
    copies = 0;
    if (begin % bs_ != 0) {
      Block& old = blocks_[static_cast<std::size_t>(s.table.back())];
      if (old.refcount > 1) {
        const int fresh = take();
        --old.refcount;
        s.table.back() = fresh;
        copies = 1;
      } else {
        old.registered = false;
      }
    }
    while (s.table.size() < total) s.table.push_back(take());
    s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
    for (std::size_t end = (static_cast<std::size_t>(begin) / bs_ + 1) * bs_; end <= s.tokens.size(); end += bs_) {
      Tokens prefix(s.tokens.begin(), s.tokens.begin() + static_cast<std::ptrdiff_t>(end));
      if (find_registered(prefix) >= 0) continue;
      Block& b = blocks_[static_cast<std::size_t>(s.table[end / bs_ - 1])];
      b.registered = true;
      b.prefix = std::move(prefix);
    }
    return true;
  }

  int evict(int max_blocks) {
    int evicted = 0;
    for (; evicted < max_blocks; ++evicted) {
      const int b = oldest_cached();
      if (b < 0) break;
      blocks_[static_cast<std::size_t>(b)].registered = false;
    }
    return evicted;
  }

 private:
  struct Block {
    int refcount = 0;
    bool registered = false;
    Tokens prefix;                // registered content: every token up to the end of the block
    std::uint64_t freed_at = 0;   // release time, for the LRU order
  };

  int find_registered(const Tokens& prefix) const {
    for (std::size_t b = 0; b < blocks_.size(); ++b)
      if (blocks_[b].registered && blocks_[b].prefix == prefix) return static_cast<int>(b);
    return -1;
  }

  int oldest_cached() const {
    int oldest = -1;
    for (std::size_t b = 0; b < blocks_.size(); ++b)
      if (blocks_[b].refcount == 0 && blocks_[b].registered &&
          (oldest < 0 || blocks_[b].freed_at < blocks_[static_cast<std::size_t>(oldest)].freed_at))
        oldest = static_cast<int>(b);
    return oldest;
  }

  void release(int b) {
    if (--blocks_[static_cast<std::size_t>(b)].refcount == 0) blocks_[static_cast<std::size_t>(b)].freed_at = ++clock_;
  }

  // An empty block if any (which one is not observable), else the least recently freed cached one.
  int take() {
    int chosen = -1;
    for (std::size_t b = 0; b < blocks_.size() && chosen < 0; ++b)
      if (blocks_[b].refcount == 0 && !blocks_[b].registered) chosen = static_cast<int>(b);
    if (chosen < 0) chosen = oldest_cached();
    if (chosen < 0) throw std::logic_error("NaiveManager: take() from an empty pool");
    blocks_[static_cast<std::size_t>(chosen)] = Block{1, false, {}, 0};
    return chosen;
  }

  int bs_;
  std::vector<Block> blocks_;
  std::map<int, Sequence> sequences_;
  int next_id_ = 0;
  std::uint64_t clock_ = 0;
};

// Empty when the manager, the naive model and the storage agree; else what differs.
template <int B>
std::string compare(const BlockManager<B>& m, const NaiveManager& naive, const Storage<B>& storage) {
  std::ostringstream problem;
  try {
    m.check_invariants();
  } catch (const std::logic_error& e) {
    return e.what();
  }
  if (m.num_sequences() != static_cast<int>(naive.sequences().size())) problem << "num_sequences " << m.num_sequences() << "; ";
  if (m.num_free_blocks() != naive.num_free())
    problem << "num_free_blocks " << m.num_free_blocks() << " != naive " << naive.num_free() << "; ";
  if (m.num_cached_blocks() != naive.num_cached())
    problem << "num_cached_blocks " << m.num_cached_blocks() << " != naive " << naive.num_cached() << "; ";
  std::map<int, int> naive_to_real, real_to_naive;
  for (const auto& [id, s] : naive.sequences()) {
    if (!m.contains(id)) {
      problem << "sequence " << id << " unknown; ";
      continue;
    }
    if (to_vector(m.tokens(id)) != s.tokens) problem << "sequence " << id << ": tokens differ; ";
    if (storage.read(m, id) != s.tokens) problem << "sequence " << id << ": storage reads back other tokens; ";
    const auto table = m.block_table(id);
    if (table.size() != s.table.size()) {
      problem << "sequence " << id << ": table size " << table.size() << " != " << s.table.size() << "; ";
      continue;
    }
    for (std::size_t j = 0; j < table.size(); ++j) {
      const auto [a, new_a] = naive_to_real.emplace(s.table[j], table[j]);
      const auto [b, new_b] = real_to_naive.emplace(table[j], s.table[j]);
      if (a->second != table[j] || b->second != s.table[j])
        problem << "sequence " << id << ": block " << j << " is shared differently from the naive model; ";
      if (m.ref_count(table[j]) != naive.ref_count(s.table[j]))
        problem << "sequence " << id << ": block " << j << " refcount " << m.ref_count(table[j]) << " != naive "
                << naive.ref_count(s.table[j]) << "; ";
    }
  }
  return problem.str();
}

}  // namespace qwen::testing
