// include/qwen/kv/block_manager.hpp: block tables, refcounts, the free pool (empty blocks first,
// then cached ones least recently freed first), prefix caching by chained hash, copy-on-write,
// fork, all-or-nothing exhaustion, errors, check_invariants; and random operation sequences
// checked after every operation against a naive second implementation of the same policy and a
// simulated storage that reads every live sequence back through its block table.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <qwen/kv/block_manager.hpp>

#include "block_manager_model.hpp"

namespace qwen {
// Breaks a manager's books on purpose, so that the tests can see check_invariants notice.
struct BlockManagerTestAccess {
  template <int B>
  static void add_reference(BlockManager<B>& m, int block) { ++m.ref_count_[static_cast<std::size_t>(block)]; }
  template <int B>
  static void push_empty(BlockManager<B>& m, int block) { m.empty_blocks_.push_back(block); }
  template <int B>
  static void set_token(BlockManager<B>& m, int seq, int position, std::int32_t token) {
    m.sequences_.at(seq).tokens[static_cast<std::size_t>(position)] = token;
  }
  template <int B>
  static void drop_last_table_entry(BlockManager<B>& m, int seq) { m.sequences_.at(seq).table.pop_back(); }
  template <int B>
  static void clear_hash_table(BlockManager<B>& m) { std::fill(m.slots_.begin(), m.slots_.end(), -1); }
  // Re-registers `block` (keeping its tokens) under the chain value of a first block holding
  // `content`: what a 64-bit collision between the two would look like.
  template <int B>
  static void rekey_as_first_block(BlockManager<B>& m, int block, std::span<const std::int32_t> content) {
    const std::vector<std::int32_t> tokens(m.block_tokens_.begin() + block * B, m.block_tokens_.begin() + (block + 1) * B);
    m.unregister(block);
    m.register_block(block, BlockManager<B>::chain_hash(BlockManager<B>::chain_seed, content.data()), tokens.data());
  }
};
}  // namespace qwen

namespace {

using qwen::BlockCopy;
using qwen::BlockManager;
using qwen::InvalidArgument;
using qwen::testing::compare;
using qwen::testing::concat;
using qwen::testing::extend_and_write;
using qwen::testing::iota_tokens;
using qwen::testing::NaiveManager;
using qwen::testing::Snapshot;
using qwen::testing::Storage;
using qwen::testing::to_vector;
using Tokens = qwen::testing::Tokens;

// Operations drawn at random, each checked against the naive model and the storage afterwards.
template <int B>
void run_random_operations(std::uint32_t seed, int num_blocks, int operations) {
  BlockManager<B> m(num_blocks);
  NaiveManager naive(num_blocks, B);
  Storage<B> storage(num_blocks);
  std::mt19937 rng(seed);
  const auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const auto random_tokens = [&](int count) {
    Tokens t(static_cast<std::size_t>(count));
    for (auto& x : t) x = uniform(0, 2);  // a tiny vocabulary: equal content happens by chance too
    return t;
  };

  std::vector<int> live;
  std::vector<Tokens> history;  // token lists of live and freed sequences, for prompts and copied writes
  const auto remember = [&](int id) {
    history.push_back(to_vector(m.tokens(id)));
    if (history.size() > 24) history.erase(history.begin());
  };
  // Tokens for positions [begin, begin + count): often those of a remembered list at the same
  // positions (so that equal prefixes and already-registered content arise), else random.
  const auto tokens_for = [&](int begin, int count) {
    Tokens t = random_tokens(count);
    if (!history.empty() && uniform(0, 1) == 0) {
      const Tokens& h = history[static_cast<std::size_t>(uniform(0, static_cast<int>(history.size()) - 1))];
      for (int i = 0; i < count && begin + i < static_cast<int>(h.size()); ++i)
        t[static_cast<std::size_t>(i)] = h[static_cast<std::size_t>(begin + i)];
    }
    return t;
  };

  int copies_seen = 0, tokens_matched = 0, exhaustions = 0, evictions = 0, rewrites = 0, steps = 0;
  std::string last;  // the last operation, for the failure message

  // One extend on both; the naive model decides whether it must succeed.
  const auto extend_both = [&](int id, int begin, const Tokens& tokens) {
    std::ostringstream what;
    what << "extend(" << id << ", begin " << begin << ", " << tokens.size() << " tokens) at length " << m.length(id);
    last = what.str();
    INFO(last);
    REQUIRE(m.blocks_needed(id, begin, static_cast<int>(tokens.size())) ==
            naive.needed(id, begin, static_cast<int>(tokens.size())));
    const Snapshot<B> before(m, live);
    const std::vector<std::int32_t> cells_before = storage.cell;
    // blocks_returned is what the cut gives back: the free count moves by exactly returned - needed,
    // and the naive model succeeds exactly when needed <= free + returned.
    const int free_before = m.num_free_blocks();
    const int needed_here = m.blocks_needed(id, begin, static_cast<int>(tokens.size()));
    const int returned = m.blocks_returned(id, begin);
    int naive_copies = 0;
    const bool fits = naive.extend(id, begin, tokens, naive_copies);
    REQUIRE(fits == (needed_here <= free_before + returned));
    if (fits) {
      const auto old_table = to_vector(m.block_table(id));
      const auto copies = extend_and_write(m, storage, id, begin, tokens);
      REQUIRE(m.num_free_blocks() == free_before + returned - needed_here);
      REQUIRE(static_cast<int>(copies.size()) == naive_copies);
      for (const BlockCopy& c : copies) {  // the kept partial block, replaced by a block of its own
        REQUIRE(c.src == old_table[static_cast<std::size_t>(begin / B)]);
        REQUIRE(c.dst == m.block_table(id)[static_cast<std::size_t>(begin / B)]);
        REQUIRE(m.ref_count(c.dst) == 1);
      }
      copies_seen += naive_copies;
      rewrites += begin < static_cast<int>(before.sequences.at(id).first.size());
      return true;
    }
    std::vector<BlockCopy> copies{{-5, -6}};
    const int needed = m.blocks_needed(id, begin, static_cast<int>(tokens.size()));
    REQUIRE_THROWS_WITH(m.extend(id, begin, tokens, copies),
                        Catch::Contains("sequence " + std::to_string(id) + " needs " + std::to_string(needed) + " blocks"));
    REQUIRE(copies.size() == 1);
    REQUIRE(Snapshot<B>(m, live) == before);
    REQUIRE(storage.cell == cells_before);
    ++exhaustions;
    return false;
  };

  for (int op = 0; op < operations; ++op) {
    // A nearly exhausted pool is relieved by a free half the time, so that writes keep succeeding.
    const int kind = live.empty() ? 0 : m.num_free_blocks() < 2 && uniform(0, 1) == 0 ? 80 : uniform(0, 99);
    if (kind < 20 && live.size() < 6) {
      // A new sequence; mostly with a prompt that shares a prefix with a remembered one, matched
      // against the cache and the rest extended, as an engine would.
      const int id = m.add_sequence();
      REQUIRE(naive.add() == id);
      live.push_back(id);
      last = "add_sequence";
      if (!history.empty() && uniform(0, 3) != 0) {
        const Tokens& h = history[static_cast<std::size_t>(uniform(0, static_cast<int>(history.size()) - 1))];
        Tokens prompt(h.begin(), h.begin() + uniform(0, static_cast<int>(h.size())));
        const Tokens tail = random_tokens(uniform(0, 2 * B));
        prompt.insert(prompt.end(), tail.begin(), tail.end());
        last = "match_prefix(" + std::to_string(id) + ", " + std::to_string(prompt.size()) + " tokens)";
        INFO(last);
        const int matched = m.match_prefix(id, prompt);
        REQUIRE(matched == naive.match(id, prompt));
        REQUIRE(matched % B == 0);
        REQUIRE(to_vector(m.tokens(id)) == Tokens(prompt.begin(), prompt.begin() + matched));
        tokens_matched += matched;
        const std::string problem = compare(m, naive, storage);
        REQUIRE(problem == "");
        if (matched < static_cast<int>(prompt.size()))
          extend_both(id, matched, Tokens(prompt.begin() + matched, prompt.end()));
      }
    } else if (kind < 55) {
      const int id = live[static_cast<std::size_t>(uniform(0, static_cast<int>(live.size()) - 1))];
      const int length = m.length(id);
      const int begin = uniform(0, 2) != 0 ? length : uniform(0, length);  // appends, and re-writes from anywhere
      const int count = uniform(1, 3 * B);
      extend_both(id, begin, tokens_for(begin, count));
    } else if (kind < 67) {
      // One step: several sequences append a token each; blocks_needed summed is enough.
      std::vector<int> batch = live;
      std::shuffle(batch.begin(), batch.end(), rng);
      batch.resize(std::min<std::size_t>(batch.size(), 3));
      int sum = 0;
      for (const int id : batch) sum += m.blocks_needed(id, m.length(id), 1);
      const bool must_fit = sum <= m.num_free_blocks();
      for (const int id : batch) {
        const bool ok = extend_both(id, m.length(id), tokens_for(m.length(id), 1));
        if (must_fit) REQUIRE(ok);
      }
      steps += must_fit;
    } else if (kind < 79 && live.size() < 6) {
      const int parent = live[static_cast<std::size_t>(uniform(0, static_cast<int>(live.size()) - 1))];
      last = "fork(" + std::to_string(parent) + ")";
      const int id = m.fork(parent);
      REQUIRE(naive.fork(parent) == id);
      live.push_back(id);
    } else if (kind < 92) {
      const std::size_t i = static_cast<std::size_t>(uniform(0, static_cast<int>(live.size()) - 1));
      last = "free_sequence(" + std::to_string(live[i]) + ")";
      remember(live[i]);
      m.free_sequence(live[i]);
      naive.free(live[i]);
      REQUIRE_FALSE(m.contains(live[i]));
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      const int max_blocks = uniform(0, 3);
      last = "evict_cached(" + std::to_string(max_blocks) + ")";
      const int evicted = m.evict_cached(max_blocks);
      REQUIRE(evicted == naive.evict(max_blocks));
      evictions += evicted;
    }
    for (const int id : live)
      if (uniform(0, 7) == 0) remember(id);
    INFO("after operation " << op << ": " << last);
    const std::string problem = compare(m, naive, storage);
    REQUIRE(problem == "");
  }
  // The run exercised what it is meant to.
  INFO("copies " << copies_seen << ", matched tokens " << tokens_matched << ", exhaustions " << exhaustions
                 << ", evictions " << evictions << ", re-writes " << rewrites << ", fitting steps " << steps);
  if (B > 1) CHECK(copies_seen > 0);  // with one position per block every write starts a block
  CHECK(tokens_matched > 0);
  CHECK(exhaustions > 0);
  CHECK(evictions > 0);
  CHECK(rewrites > 0);
  CHECK(steps > 0);
}

}  // namespace

TEST_CASE("block manager: a new manager, ids and block tables across block boundaries", "[block_manager]") {
  BlockManager<4> m(8);
  CHECK(BlockManager<4>::block_size == 4);
  CHECK(m.num_blocks() == 8);
  CHECK(m.num_free_blocks() == 8);
  CHECK(m.num_cached_blocks() == 0);
  CHECK(m.num_sequences() == 0);

  const int a = m.add_sequence(), b = m.add_sequence();
  CHECK(a == 0);
  CHECK(b == 1);
  CHECK(m.contains(a));
  CHECK_FALSE(m.contains(2));
  CHECK(m.length(a) == 0);
  CHECK(m.block_table(a).empty());

  std::vector<BlockCopy> copies;
  CHECK(m.blocks_needed(a, 0, 3) == 1);
  m.extend(a, 0, Tokens{1, 2, 3}, copies);
  CHECK(to_vector(m.block_table(a)) == Tokens{0});
  CHECK(m.blocks_needed(a, 3, 1) == 0);  // position 3 is in block 0
  CHECK(m.blocks_needed(a, 3, 2) == 1);
  m.extend(a, 3, Tokens{4, 5}, copies);
  CHECK(to_vector(m.block_table(a)) == Tokens{0, 1});
  CHECK(to_vector(m.tokens(a)) == Tokens{1, 2, 3, 4, 5});
  CHECK(m.length(a) == 5);
  m.extend(b, 0, Tokens(9, 7), copies);
  CHECK(to_vector(m.block_table(b)) == Tokens{2, 3, 4});
  CHECK(copies.empty());
  CHECK(m.num_free_blocks() == 3);
  CHECK(m.ref_count(0) == 1);
  CHECK(m.ref_count(7) == 0);
  // A write from position 0 counts fresh blocks only (the cut returns a's two blocks).
  CHECK(m.blocks_needed(a, 0, 1) == 1);
  CHECK(m.blocks_needed(a, 5, 12) == 3);
  m.check_invariants();
}

TEST_CASE("block manager: full blocks are registered and matched by later prompts, partial ones are not", "[block_manager]") {
  BlockManager<4> m(16);
  const Tokens prompt = iota_tokens(10, 1);  // blocks {1..4} {5..8} and a partial {9, 10}
  std::vector<BlockCopy> copies;
  const int a = m.add_sequence();
  m.extend(a, 0, prompt, copies);
  const Tokens table_a = to_vector(m.block_table(a));

  const int c = m.add_sequence();
  CHECK(m.match_prefix(c, prompt) == 8);
  CHECK(to_vector(m.tokens(c)) == iota_tokens(8, 1));
  CHECK(to_vector(m.block_table(c)) == Tokens{table_a[0], table_a[1]});
  CHECK(m.ref_count(table_a[0]) == 2);
  CHECK(m.ref_count(table_a[1]) == 2);
  CHECK(m.ref_count(table_a[2]) == 1);
  CHECK(m.num_free_blocks() == 13);

  const int d = m.add_sequence();
  CHECK(m.match_prefix(d, Tokens{1, 2, 3, 4, 5, 6, 7, 99, 9}) == 4);  // the second block differs
  const int e = m.add_sequence();
  CHECK(m.match_prefix(e, Tokens{1, 2, 3}) == 0);  // not a full block
  CHECK(m.match_prefix(e, Tokens{2, 2, 3, 4, 5, 6, 7, 8}) == 0);
  CHECK(m.length(e) == 0);
  // The same block content after another first block: a different chain value.
  CHECK(m.match_prefix(e, Tokens{5, 6, 7, 8}) == 0);

  // Freed, the registered blocks stay findable (cached); the partial one becomes empty.
  m.free_sequence(a);
  m.free_sequence(c);
  m.free_sequence(d);
  CHECK(m.num_cached_blocks() == 2);
  CHECK(m.num_free_blocks() == 16);
  const int g = m.add_sequence();
  CHECK(m.match_prefix(g, iota_tokens(12, 1)) == 8);
  CHECK(to_vector(m.block_table(g)) == Tokens{table_a[0], table_a[1]});
  CHECK(m.num_cached_blocks() == 0);
  CHECK(m.num_free_blocks() == 14);
  m.check_invariants();
}

TEST_CASE("block manager: a write into a shared block copies it and leaves the parent's content intact", "[block_manager]") {
  BlockManager<4> m(8);
  Storage<4> storage(8);
  const int a = m.add_sequence();
  extend_and_write(m, storage, a, 0, Tokens{1, 2, 3, 4, 5, 6});
  const int b = m.fork(a);
  const Tokens table_a = to_vector(m.block_table(a));
  CHECK(to_vector(m.block_table(b)) == table_a);
  CHECK(to_vector(m.tokens(b)) == Tokens{1, 2, 3, 4, 5, 6});
  CHECK(m.ref_count(table_a[0]) == 2);
  CHECK(m.ref_count(table_a[1]) == 2);
  CHECK(m.num_free_blocks() == 6);
  CHECK(m.blocks_needed(b, 6, 1) == 1);

  // b appends into the shared partial last block: a copy, reported after what `copies` held.
  std::vector<BlockCopy> copies{{100, 101}};
  m.extend(b, 6, Tokens{70}, copies);
  REQUIRE(copies.size() == 2);
  const Tokens table_b = to_vector(m.block_table(b));
  CHECK(copies[1].src == table_a[1]);
  CHECK(copies[1].dst == table_b[1]);
  CHECK(table_b[0] == table_a[0]);
  CHECK(table_b[1] != table_a[1]);
  CHECK(m.ref_count(table_a[1]) == 1);
  CHECK(m.ref_count(table_b[1]) == 1);
  CHECK(m.ref_count(table_a[0]) == 2);
  storage.apply_extend(m, b, 6, Tokens{70}, std::span<const BlockCopy>(copies).subspan(1));
  CHECK(storage.read(m, a) == Tokens{1, 2, 3, 4, 5, 6});
  CHECK(storage.read(m, b) == Tokens{1, 2, 3, 4, 5, 6, 70});

  // a now holds its last block alone: written in place.
  CHECK(extend_and_write(m, storage, a, 6, Tokens{80}).empty());
  CHECK(to_vector(m.block_table(a)) == table_a);
  // A re-write inside the shared (registered) first block copies it too.
  const auto first_copy = extend_and_write(m, storage, b, 2, Tokens{55});
  REQUIRE(first_copy.size() == 1);
  CHECK(first_copy[0].src == table_a[0]);
  CHECK(storage.read(m, a) == Tokens{1, 2, 3, 4, 5, 6, 80});
  CHECK(storage.read(m, b) == Tokens{1, 2, 55});
  CHECK(m.ref_count(table_a[0]) == 1);
  m.check_invariants();
}

TEST_CASE("block manager: forks appending into one shared block copy it, all but the last holder", "[block_manager]") {
  BlockManager<4> m(8);
  Storage<4> storage(8);
  const int a = m.add_sequence();
  extend_and_write(m, storage, a, 0, Tokens{1, 2});
  const int b = m.fork(a), c = m.fork(a);
  const int shared = m.block_table(a)[0];
  CHECK(m.ref_count(shared) == 3);
  // Each counts a copy: the sum (3) bounds what the step takes (2).
  CHECK(m.blocks_needed(a, 2, 1) + m.blocks_needed(b, 2, 1) + m.blocks_needed(c, 2, 1) == 3);
  CHECK(extend_and_write(m, storage, a, 2, Tokens{10}).size() == 1);
  CHECK(extend_and_write(m, storage, b, 2, Tokens{20}).size() == 1);
  CHECK(m.blocks_needed(c, 2, 1) == 0);
  CHECK(extend_and_write(m, storage, c, 2, Tokens{30}).empty());
  CHECK(m.block_table(c)[0] == shared);
  CHECK(m.num_free_blocks() == 5);
  CHECK(storage.read(m, a) == Tokens{1, 2, 10});
  CHECK(storage.read(m, b) == Tokens{1, 2, 20});
  CHECK(storage.read(m, c) == Tokens{1, 2, 30});
  m.check_invariants();
}

TEST_CASE("block manager: exhausting the pool throws a named error and changes nothing", "[block_manager]") {
  BlockManager<4> m(5);
  std::vector<BlockCopy> copies;
  const int a = m.add_sequence(), b = m.add_sequence();
  m.extend(a, 0, iota_tokens(12, 1), copies);  // 3 blocks
  m.extend(b, 0, Tokens{7, 7}, copies);        // 1 block
  REQUIRE(m.num_free_blocks() == 1);

  const Snapshot<4> before(m, {a, b});
  copies = {{3, 4}};
  CHECK(m.blocks_needed(b, 2, 14) == 3);
  CHECK_THROWS_AS(m.extend(b, 2, Tokens(14, 5), copies), InvalidArgument);
  CHECK_THROWS_WITH(m.extend(b, 2, Tokens(14, 5), copies),
                    Catch::Contains("BlockManager::extend: sequence 1 needs 3 blocks") &&
                        Catch::Contains("only 1 of 5 blocks are free"));
  CHECK_THROWS_WITH(m.extend(b, 2, Tokens(14, 5), copies),  // as docs/paged-kv.md quotes it
                    "BlockManager::extend: sequence 1 needs 3 blocks from the free pool (3 new, 0 copy) to write 14 "
                    "tokens at position 2 (length 2), but only 1 of 5 blocks are free (1 now + 0 the cut returns)");
  CHECK(copies.size() == 1);
  CHECK(Snapshot<4>(m, {a, b}) == before);
  m.check_invariants();

  // A re-write from 0 fits: the cut returns a's three blocks first.
  CHECK(m.blocks_needed(a, 0, 16) == 4);
  m.extend(a, 0, iota_tokens(16, 1), copies);
  CHECK(m.num_free_blocks() == 0);

  // A copy that does not fit.
  const int c = m.fork(b);
  CHECK(m.blocks_needed(c, 2, 1) == 1);
  const Snapshot<4> full(m, {a, b, c});
  CHECK_THROWS_WITH(m.extend(c, 2, Tokens{9}, copies),
                    Catch::Contains("sequence 2 needs 1 blocks") && Catch::Contains("only 0 of 5 blocks are free"));
  CHECK(Snapshot<4>(m, {a, b, c}) == full);

  // Freed, a's four full blocks are cached; the copy then evicts the least recently freed one,
  // a's last block (a sequence releases last to first).
  m.free_sequence(a);
  CHECK(m.num_cached_blocks() == 4);
  copies.clear();
  m.extend(c, 2, Tokens{9}, copies);
  CHECK(copies.size() == 1);
  CHECK(m.num_cached_blocks() == 3);
  const int d = m.add_sequence();
  CHECK(m.match_prefix(d, iota_tokens(16, 1)) == 12);
  m.check_invariants();
}

TEST_CASE("block manager: empty blocks go first, then cached ones least recently freed first", "[block_manager]") {
  BlockManager<4> m(6);
  std::vector<BlockCopy> copies;
  const Tokens x = iota_tokens(8, 100), y = iota_tokens(8, 200);
  const int a = m.add_sequence(), b = m.add_sequence();
  m.extend(a, 0, x, copies);
  m.extend(b, 0, y, copies);
  m.free_sequence(a);  // freed: x1, x0
  m.free_sequence(b);  // then y1, y0
  CHECK(m.num_cached_blocks() == 4);
  CHECK(m.num_free_blocks() == 6);

  // Taken from the cache and freed again, x's blocks become the most recently freed: y1 y0 x1 x0.
  const int e = m.add_sequence();
  CHECK(m.match_prefix(e, x) == 8);
  CHECK(m.num_cached_blocks() == 2);
  m.free_sequence(e);
  CHECK(m.num_cached_blocks() == 4);

  // Two new blocks come from the two empty ones; the cache is untouched.
  const int c = m.add_sequence();
  m.extend(c, 0, iota_tokens(8, 300), copies);
  CHECK(m.num_cached_blocks() == 4);
  // The next evicts y1.
  const int d = m.add_sequence();
  m.extend(d, 0, Tokens{1}, copies);
  CHECK(m.num_cached_blocks() == 3);
  const int p = m.add_sequence();
  CHECK(m.match_prefix(p, y) == 4);  // y0 still there, y1 gone
  m.free_sequence(p);                // order now: x1 x0 y0
  CHECK(m.evict_cached(1) == 1);     // x1
  const int q = m.add_sequence();
  CHECK(m.match_prefix(q, x) == 4);
  m.free_sequence(q);                // order: y0 x0
  CHECK(m.evict_cached(1) == 1);     // y0
  const int r = m.add_sequence();
  CHECK(m.match_prefix(r, y) == 0);
  CHECK(m.match_prefix(r, x) == 4);
  m.free_sequence(r);
  CHECK(m.evict_cached(0) == 0);
  CHECK(m.evict_cached(10) == 1);
  CHECK(m.num_cached_blocks() == 0);
  CHECK(m.num_free_blocks() == 3);
  m.check_invariants();
}

TEST_CASE("block manager: re-writes from the middle release the blocks past the cut", "[block_manager]") {
  BlockManager<4> m(8);
  Storage<4> storage(8);
  const Tokens t = iota_tokens(10, 1);
  const int a = m.add_sequence();
  extend_and_write(m, storage, a, 0, t);
  const Tokens table = to_vector(m.block_table(a));

  // From a block boundary: a's old block 1 is released and stays cached under its content; a gets
  // a fresh block.
  extend_and_write(m, storage, a, 4, Tokens{50, 51, 52, 53, 54});
  CHECK(m.length(a) == 9);
  CHECK(m.block_table(a)[0] == table[0]);
  CHECK(m.block_table(a)[1] != table[1]);
  CHECK(m.num_cached_blocks() == 1);
  const int probe = m.add_sequence();
  CHECK(m.match_prefix(probe, t) == 8);
  CHECK(m.block_table(probe)[1] == table[1]);
  CHECK(storage.read(m, probe) == iota_tokens(8, 1));
  m.free_sequence(probe);

  // Inside a registered block that a holds alone: unregistered and written in place, no copy;
  // refilled, it is registered under its new content.
  const int held = m.block_table(a)[1];
  CHECK(m.blocks_needed(a, 6, 2) == 0);
  CHECK(extend_and_write(m, storage, a, 6, Tokens{60, 61}).empty());
  CHECK(m.block_table(a)[1] == held);
  CHECK(m.length(a) == 8);
  CHECK(m.block_table(a).size() == 2);  // the partial block 2 was released by the cut
  const int old_content = m.add_sequence(), new_content = m.add_sequence();
  CHECK(m.match_prefix(old_content, Tokens{1, 2, 3, 4, 50, 51, 52, 53}) == 4);
  CHECK(m.match_prefix(new_content, Tokens{1, 2, 3, 4, 50, 51, 60, 61}) == 8);
  CHECK(storage.read(m, new_content) == Tokens{1, 2, 3, 4, 50, 51, 60, 61});
  m.check_invariants();
}

TEST_CASE("block manager: a reused parent block does not let a stale child match (no block ids in keys)", "[block_manager]") {
  BlockManager<4> m(8);
  std::vector<BlockCopy> copies;
  const Tokens x{1, 2, 3, 4}, y{5, 6, 7, 8}, z{9, 9, 9, 9};
  const int b = m.add_sequence();
  m.extend(b, 0, x, copies);  // x registered in b's block
  const int a = m.add_sequence();
  m.extend(a, 0, concat(x, y), copies);  // a's block 0 stays unregistered (x is taken), its block 1 holds x+y
  const int a0 = m.block_table(a)[0], a1 = m.block_table(a)[1];
  m.free_sequence(a);  // a1 cached, a0 empty
  CHECK(m.num_cached_blocks() == 1);

  // a0's id is reused for other content z; z + y must not find a1 (whose parent content is x).
  const int d = m.add_sequence();
  m.extend(d, 0, z, copies);
  CHECK(m.block_table(d)[0] == a0);  // the id reuse this test is about (empty blocks are a stack)
  const int e = m.add_sequence();
  CHECK(m.match_prefix(e, concat(z, y)) == 4);
  // x + y finds a1 through b's block, which holds x: the chain depends on content, not on ids.
  const int f = m.add_sequence();
  CHECK(m.match_prefix(f, concat(x, y)) == 8);
  CHECK(to_vector(m.block_table(f)) == Tokens{m.block_table(b)[0], a1});
  m.check_invariants();
}

TEST_CASE("block manager: a hash hit with other tokens does not match (a simulated collision)", "[block_manager]") {
  BlockManager<4> m(4);
  std::vector<BlockCopy> copies;
  const Tokens x{1, 2, 3, 4}, y{5, 6, 7, 8};
  const int a = m.add_sequence();
  m.extend(a, 0, x, copies);
  const int block = m.block_table(a)[0];
  m.free_sequence(a);
  qwen::BlockManagerTestAccess::rekey_as_first_block(m, block, y);  // block holds x under y's key
  m.check_invariants();
  CHECK(m.num_cached_blocks() == 1);
  const int b = m.add_sequence();
  CHECK(m.match_prefix(b, y) == 0);
  CHECK(m.match_prefix(b, x) == 0);  // x's own key is no longer registered
  CHECK(m.num_cached_blocks() == 1);
  // y written anew stays unregistered: its key is taken (one block per chain value).
  m.extend(b, 0, y, copies);
  m.free_sequence(b);
  CHECK(m.num_cached_blocks() == 1);
  m.check_invariants();
}

TEST_CASE("block manager: bad arguments are rejected by name", "[block_manager]") {
  CHECK_THROWS_WITH(BlockManager<4>(0), Catch::Contains("num_blocks 0 must be positive"));
  CHECK_THROWS_AS(BlockManager<4>(-3), InvalidArgument);

  BlockManager<4> m(4);
  std::vector<BlockCopy> copies;
  const Tokens one{1};
  const auto unknown = [](const std::string& op) {
    return Catch::Contains("BlockManager::" + op + ": unknown sequence id 7");
  };
  CHECK_THROWS_AS(m.fork(7), InvalidArgument);
  CHECK_THROWS_WITH(m.fork(7), unknown("fork"));
  CHECK_THROWS_WITH(m.free_sequence(7), unknown("free_sequence"));
  CHECK_THROWS_WITH(m.length(7), unknown("length"));
  CHECK_THROWS_WITH(m.tokens(7), unknown("tokens"));
  CHECK_THROWS_WITH(m.block_table(7), unknown("block_table"));
  CHECK_THROWS_WITH(m.match_prefix(7, one), unknown("match_prefix"));
  CHECK_THROWS_WITH(m.blocks_needed(7, 0, 1), unknown("blocks_needed"));
  CHECK_THROWS_WITH(m.blocks_returned(7, 0), unknown("blocks_returned"));
  CHECK_THROWS_WITH(m.extend(7, 0, one, copies), unknown("extend"));
  CHECK_FALSE(m.contains(7));

  const int a = m.add_sequence();
  CHECK_THROWS_WITH(m.extend(a, 1, one, copies), Catch::Contains("BlockManager::extend: sequence 0: begin 1 outside [0, length 0]"));
  CHECK_THROWS_WITH(m.extend(a, -1, one, copies), Catch::Contains("begin -1 outside"));
  CHECK_THROWS_WITH(m.blocks_needed(a, 2, 1), Catch::Contains("BlockManager::blocks_needed: sequence 0: begin 2"));
  CHECK_THROWS_WITH(m.extend(a, 0, Tokens{}, copies), Catch::Contains("sequence 0: no tokens to write (count 0)"));
  CHECK_THROWS_WITH(m.blocks_needed(a, 0, 0), Catch::Contains("no tokens to write"));
  CHECK_THROWS_WITH(m.blocks_needed(a, 0, -2), Catch::Contains("count -2"));
  m.extend(a, 0, Tokens{1, 2, 3, 4, 5}, copies);
  CHECK_THROWS_WITH(m.blocks_needed(a, 6, 1), Catch::Contains("begin 6 outside [0, length 5]"));
  CHECK_THROWS_WITH(m.blocks_returned(a, 6), Catch::Contains("BlockManager::blocks_returned: sequence 0: begin 6 outside [0, 5]"));
  CHECK_THROWS_WITH(m.blocks_returned(a, -1), Catch::Contains("begin -1"));
  CHECK_THROWS_WITH(m.blocks_needed(a, 5, 2147483647), Catch::Contains("exceeds the int position range"));
  CHECK_THROWS_WITH(m.match_prefix(a, Tokens{1, 2, 3, 4}),
                    Catch::Contains("BlockManager::match_prefix: sequence 0 has length 5"));
  CHECK_THROWS_WITH(m.evict_cached(-1), Catch::Contains("max_blocks -1"));
  CHECK_THROWS_WITH(m.ref_count(4), Catch::Contains("block 4 outside [0, 4)"));
  CHECK_THROWS_AS(m.ref_count(-1), InvalidArgument);
  CHECK(copies.empty());

  // The id becomes unknown and is never reused.
  m.free_sequence(a);
  CHECK_THROWS_WITH(m.free_sequence(a), Catch::Contains("unknown sequence id 0"));
  CHECK(m.add_sequence() == 1);
  CHECK(m.num_free_blocks() == 4);
  m.check_invariants();
}

TEST_CASE("block manager: check_invariants names a broken invariant", "[block_manager]") {
  using Access = qwen::BlockManagerTestAccess;
  const auto make = [] {
    BlockManager<4> m(6);
    std::vector<BlockCopy> copies;
    const int a = m.add_sequence();
    m.extend(a, 0, iota_tokens(6, 1), copies);  // blocks 0 (registered) and 1 (partial)
    const int b = m.fork(a);
    m.extend(b, 6, Tokens{9}, copies);
    m.free_sequence(m.add_sequence());
    m.check_invariants();
    return m;
  };
  {
    auto m = make();
    Access::add_reference(m, 0);
    CHECK_THROWS_WITH(m.check_invariants(), Catch::Contains("block 0 has refcount 3 but 2 block-table entries"));
  }
  {
    auto m = make();
    Access::push_empty(m, 1);  // a's partial last block
    CHECK_THROWS_WITH(m.check_invariants(), Catch::Contains("block 1 is referenced and in the free pool"));
  }
  {
    auto m = make();
    Access::push_empty(m, 5);
    CHECK_THROWS_WITH(m.check_invariants(), Catch::Contains("empty list holds block 5 twice"));
  }
  {
    auto m = make();
    Access::set_token(m, 1, 1, 42);  // inside the block both sequences share and that is registered
    CHECK_THROWS_WITH(m.check_invariants(), Catch::Contains("sequence 1: chain value of block 0 does not match"));
  }
  {
    auto m = make();
    Access::drop_last_table_entry(m, 0);
    CHECK_THROWS_WITH(m.check_invariants(), Catch::Contains("sequence 0: block table size 1 != ceil(length 6"));
  }
  {
    auto m = make();
    Access::clear_hash_table(m);
    CHECK_THROWS_WITH(m.check_invariants(), Catch::Contains("hash table holds 0 entries but 1 blocks are marked registered"));
  }
}

TEST_CASE("block manager: random operations agree with a naive model and a simulated storage", "[block_manager]") {
  // Small pools, so that exhaustion and eviction happen; several block sizes; fixed seeds.
  for (const std::uint32_t seed : {1u, 2u, 3u}) {
    SECTION("block size 1, seed " + std::to_string(seed)) { run_random_operations<1>(seed, 40, 2000); }
    SECTION("block size 4, seed " + std::to_string(seed)) { run_random_operations<4>(100 + seed, 20, 2000); }
    SECTION("block size 16, seed " + std::to_string(seed)) { run_random_operations<16>(200 + seed, 12, 2000); }
  }
}
