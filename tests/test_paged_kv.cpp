// include/qwen/kv/paged_kv.hpp: the free list, reserve across block boundaries, block tables,
// exhaustion (a named error that changes nothing), remove_sequence, the documented layout, and
// write / read round trips at random positions of several sequences.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <vector>

#include <qwen/kv/paged_kv.hpp>

namespace {

using qwen::InvalidArgument;
using qwen::PagedKV;
using qwen::PagedKVFill;

std::vector<std::int32_t> table_vector(std::span<const std::int32_t> table) { return {table.begin(), table.end()}; }

}  // namespace

TEST_CASE("paged_kv: a new cache has every block free and hands them out in order", "[paged_kv]") {
  PagedKV<16> kv(2, 4, 8, 10);
  CHECK(kv.num_layers() == 2);
  CHECK(kv.num_kv_heads() == 4);
  CHECK(kv.head_dim() == 8);
  CHECK(kv.num_blocks() == 10);
  CHECK(kv.num_free_blocks() == 10);
  CHECK(PagedKV<16>::block_size == 16);

  const int a = kv.add_sequence();
  const int b = kv.add_sequence();
  CHECK(a != b);
  CHECK(kv.capacity(a) == 0);
  CHECK(kv.block_table(a).empty());

  kv.reserve(a, 0);
  CHECK(kv.num_free_blocks() == 10);
  kv.reserve(a, 1);
  CHECK(kv.capacity(a) == 16);
  CHECK(table_vector(kv.block_table(a)) == std::vector<std::int32_t>{0});
  kv.reserve(a, 16);  // still one block: positions 0..15
  CHECK(kv.capacity(a) == 16);
  CHECK(kv.num_free_blocks() == 9);
  kv.reserve(a, 17);  // crosses the block boundary
  CHECK(kv.capacity(a) == 32);
  CHECK(table_vector(kv.block_table(a)) == std::vector<std::int32_t>{0, 1});

  kv.reserve(b, 20);
  CHECK(table_vector(kv.block_table(b)) == std::vector<std::int32_t>{2, 3});
  kv.reserve(a, 33);
  CHECK(table_vector(kv.block_table(a)) == std::vector<std::int32_t>{0, 1, 4});
  kv.reserve(a, 5);  // never shrinks
  CHECK(kv.capacity(a) == 48);
  CHECK(kv.num_free_blocks() == 5);
  CHECK(kv.num_sequences() == 2);
}

TEST_CASE("paged_kv: reserve covers exactly ceil(n / BlockSize) blocks for other block sizes", "[paged_kv]") {
  PagedKV<8> kv8(1, 1, 4, 64);
  PagedKV<1> kv1(1, 1, 4, 64);
  const int s8 = kv8.add_sequence(), s1 = kv1.add_sequence();
  for (int n : {1, 7, 8, 9, 17, 40}) {
    kv8.reserve(s8, n);
    kv1.reserve(s1, n);
    CHECK(kv8.block_table(s8).size() == static_cast<std::size_t>((n + 7) / 8));
    CHECK(kv8.capacity(s8) == (n + 7) / 8 * 8);
    CHECK(kv1.capacity(s1) == n);
  }
  CHECK(kv8.num_free_blocks() == 64 - 5);
  CHECK(kv1.num_free_blocks() == 64 - 40);
}

TEST_CASE("paged_kv: exhausting the pool throws a named error and changes nothing", "[paged_kv]") {
  PagedKV<16> kv(1, 2, 8, 5);
  const int a = kv.add_sequence(), b = kv.add_sequence();
  kv.reserve(a, 40);  // 3 blocks
  kv.reserve(b, 10);  // 1 block
  const auto table_a = table_vector(kv.block_table(a));
  const auto table_b = table_vector(kv.block_table(b));
  REQUIRE(kv.num_free_blocks() == 1);

  // b needs 3 more blocks for 64 tokens, one is free.
  CHECK_THROWS_AS(kv.reserve(b, 64), InvalidArgument);
  CHECK_THROWS_WITH(kv.reserve(b, 64), Catch::Contains("sequence 1 needs 3 more blocks") &&
                                           Catch::Contains("only 1 of 5 blocks are free"));
  CHECK(kv.num_free_blocks() == 1);
  CHECK(table_vector(kv.block_table(a)) == table_a);
  CHECK(table_vector(kv.block_table(b)) == table_b);
  CHECK(kv.capacity(b) == 16);

  kv.reserve(b, 32);  // exactly the last block still works
  CHECK(kv.num_free_blocks() == 0);
  CHECK_THROWS_WITH(kv.reserve(a, 49), Catch::Contains("only 0 of 5 blocks are free"));
  CHECK(table_vector(kv.block_table(a)) == table_a);

  kv.remove_sequence(b);
  kv.reserve(a, 80);
  CHECK(kv.capacity(a) == 80);
  CHECK(kv.num_free_blocks() == 0);
}

TEST_CASE("paged_kv: remove_sequence returns its blocks and forgets the id", "[paged_kv]") {
  PagedKV<16> kv(1, 1, 8, 8);
  const int a = kv.add_sequence(), b = kv.add_sequence();
  kv.reserve(a, 48);  // blocks 0 1 2
  kv.reserve(b, 16);  // block 3
  kv.remove_sequence(a);
  CHECK(kv.num_free_blocks() == 7);
  CHECK(kv.num_sequences() == 1);
  CHECK_THROWS_WITH(kv.capacity(a), Catch::Contains("unknown sequence id 0"));
  CHECK_THROWS_AS(kv.block_table(a), InvalidArgument);
  CHECK_THROWS_AS(kv.remove_sequence(a), InvalidArgument);
  CHECK_THROWS_AS(kv.reserve(a, 1), InvalidArgument);

  // Ids are not reused; the freed blocks come back first, in their old order.
  const int c = kv.add_sequence();
  CHECK(c != a);
  CHECK(c != b);
  kv.reserve(c, 64);
  CHECK(table_vector(kv.block_table(c)) == std::vector<std::int32_t>{0, 1, 2, 4});

  kv.remove_sequence(b);
  kv.remove_sequence(c);
  CHECK(kv.num_free_blocks() == 8);
  CHECK(kv.num_sequences() == 0);

  // Every block handed out exactly once when the whole pool is used again.
  const int d = kv.add_sequence();
  kv.reserve(d, 128);
  auto all = table_vector(kv.block_table(d));
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("paged_kv: the pools have the documented layout", "[paged_kv]") {
  constexpr int layers = 3, heads = 2, dim = 8, blocks = 4, bs = 16;
  PagedKV<bs> kv(layers, heads, dim, blocks);
  const std::size_t slot = heads * dim;
  for (int layer = 0; layer < layers; ++layer) {
    CHECK(reinterpret_cast<std::uintptr_t>(kv.key_pool(layer)) % 64 == 0);  // every slot starts a cache line
    CHECK(reinterpret_cast<std::uintptr_t>(kv.value_pool(layer)) % 64 == 0);
    // [num_layers][K, V][num_blocks][BlockSize][num_kv_heads][head_dim] in one allocation.
    CHECK(kv.value_pool(layer) == kv.key_pool(layer) + blocks * bs * slot);
    if (layer > 0) CHECK(kv.key_pool(layer) == kv.value_pool(layer - 1) + blocks * bs * slot);
    for (int block = 0; block < blocks; ++block)
      for (int offset = 0; offset < bs; ++offset) {
        CHECK(kv.key(layer, block, offset) == kv.key_pool(layer) + (block * bs + offset) * slot);
        CHECK(kv.value(layer, block, offset) == kv.value_pool(layer) + (block * bs + offset) * slot);
      }
  }
}

TEST_CASE("paged_kv: write then read at random positions of several sequences", "[paged_kv]") {
  constexpr int layers = 2, heads = 3, dim = 8, bs = 8;
  const std::size_t slot = heads * dim;
  PagedKV<bs> kv(layers, heads, dim, 40, PagedKVFill::nan);
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal;

  const int lengths[] = {1, 17, 97, 30};
  std::vector<int> seqs;
  for (std::size_t s = 0; s < std::size(lengths); ++s) seqs.push_back(kv.add_sequence());
  // Grow the sequences in small interleaved steps so that their blocks interleave in the pool.
  for (int step = 1; step <= 97; step += 5)
    for (std::size_t s = 0; s < seqs.size(); ++s) kv.reserve(seqs[s], std::min(step, lengths[s]));
  for (std::size_t s = 0; s < seqs.size(); ++s) kv.reserve(seqs[s], lengths[s]);

  // What each (layer, sequence, position) should hold; written in random order.
  std::map<std::tuple<int, int, int>, std::pair<std::vector<float>, std::vector<float>>> expected;
  std::vector<std::tuple<int, int, int>> order;
  for (int layer = 0; layer < layers; ++layer)
    for (std::size_t s = 0; s < seqs.size(); ++s)
      for (int p = 0; p < lengths[s]; ++p) order.emplace_back(layer, seqs[s], p);
  std::shuffle(order.begin(), order.end(), rng);
  for (const auto& key : order) {
    std::vector<float> k(slot), v(slot);
    for (auto& x : k) x = normal(rng);
    for (auto& x : v) x = normal(rng);
    kv.write(std::get<0>(key), std::get<1>(key), std::get<2>(key), k.data(), v.data());
    expected[key] = {k, v};
  }

  std::size_t slots_checked = 0;
  for (const auto& [key, kvs] : expected) {
    const auto [layer, seq, p] = key;
    const auto table = kv.block_table(seq);
    const int block = table[static_cast<std::size_t>(p / bs)];
    const float* k = kv.key(layer, block, p % bs);
    const float* v = kv.value(layer, block, p % bs);
    const float* k_pool = kv.key_pool(layer) + (static_cast<std::size_t>(block) * bs + p % bs) * slot;
    bool equal = true;
    for (std::size_t i = 0; i < slot; ++i)
      equal = equal && k[i] == kvs.first[i] && v[i] == kvs.second[i] && k_pool[i] == kvs.first[i];
    CHECK(equal);
    ++slots_checked;
  }
  CHECK(slots_checked == static_cast<std::size_t>(layers) * (1 + 17 + 97 + 30));

  // Slots nobody wrote are still the NaN fill: writes landed nowhere else.
  std::size_t untouched = 0;
  for (int layer = 0; layer < layers; ++layer)
    for (int block = 0; block < kv.num_blocks(); ++block)
      for (int offset = 0; offset < bs; ++offset)
        if (std::isnan(kv.key(layer, block, offset)[0]) && std::isnan(kv.value(layer, block, offset)[slot - 1])) ++untouched;
  CHECK(untouched == static_cast<std::size_t>(layers) * (40 * bs - (1 + 17 + 97 + 30)));
}

TEST_CASE("paged_kv: bad arguments are rejected by name", "[paged_kv]") {
  CHECK_THROWS_WITH(PagedKV<16>(0, 8, 128, 4), Catch::Contains("must all be positive"));
  CHECK_THROWS_AS(PagedKV<16>(1, 8, 128, -1), InvalidArgument);
  CHECK_THROWS_WITH(PagedKV<16>(1 << 30, 1 << 30, 1 << 30, 1 << 30), Catch::Contains("overflow"));

  PagedKV<16> kv(2, 2, 4, 4);
  const int a = kv.add_sequence();
  kv.reserve(a, 20);
  const std::vector<float> k(8, 1.0f), v(8, 2.0f);
  CHECK_THROWS_WITH(kv.reserve(a, -1), Catch::Contains("num_tokens -1"));
  CHECK_THROWS_WITH(kv.write(0, a, 32, k.data(), v.data()), Catch::Contains("position 32 outside its capacity 32"));
  CHECK_THROWS_AS(kv.write(0, a, -1, k.data(), v.data()), InvalidArgument);
  CHECK_THROWS_AS(kv.write(0, a + 1, 0, k.data(), v.data()), InvalidArgument);
  CHECK_THROWS_WITH(kv.write(2, a, 0, k.data(), v.data()), Catch::Contains("layer 2 outside [0, 2)"));
  CHECK_THROWS_AS(kv.key(0, 4, 0), InvalidArgument);
  CHECK_THROWS_AS(kv.value(0, 0, 16), InvalidArgument);
  CHECK_THROWS_AS(kv.key_pool(-1), InvalidArgument);
  kv.write(1, a, 31, k.data(), v.data());
  CHECK(kv.value(1, kv.block_table(a)[1], 15)[7] == 2.0f);
}
