// include/qwen/kv/paged_kv.hpp, the KV storage: the documented layout, write / read round trips
// at random slots (nothing else written), copy_block (every layer, K and V, nothing else), and
// bad arguments named. Which blocks a sequence owns is the BlockManager's (test_block_manager.cpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include <qwen/kv/paged_kv.hpp>

namespace {

using qwen::InvalidArgument;
using qwen::PagedKV;
using qwen::PagedKVFill;

}  // namespace

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

TEST_CASE("paged_kv: write then read at random slots; copy_block copies whole blocks of every layer", "[paged_kv]") {
  constexpr int layers = 2, heads = 3, dim = 8, bs = 8, blocks = 40;
  const std::size_t slot = heads * dim;
  PagedKV<bs> kv(layers, heads, dim, blocks, PagedKVFill::nan);
  CHECK(kv.num_layers() == layers);
  CHECK(kv.num_kv_heads() == heads);
  CHECK(kv.head_dim() == dim);
  CHECK(kv.num_blocks() == blocks);
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal;

  // What each (layer, slot) should hold; a random half of the slots written in random order.
  std::map<std::pair<int, int>, std::pair<std::vector<float>, std::vector<float>>> expected;
  std::vector<std::pair<int, int>> order;
  for (int layer = 0; layer < layers; ++layer)
    for (int s = 0; s < blocks * bs; ++s)
      if (rng() % 2) order.emplace_back(layer, s);
  std::shuffle(order.begin(), order.end(), rng);
  for (const auto& key : order) {
    std::vector<float> k(slot), v(slot);
    for (auto& x : k) x = normal(rng);
    for (auto& x : v) x = normal(rng);
    kv.write(key.first, key.second, k.data(), v.data());
    expected[key] = {k, v};
  }
  // Copy block 3 over block 5 and block 7 over itself (a no-op).
  kv.copy_block(3, 5);
  kv.copy_block(7, 7);
  for (int layer = 0; layer < layers; ++layer)
    for (int offset = 0; offset < bs; ++offset) {
      const auto from = expected.find({layer, 3 * bs + offset});
      if (from != expected.end())
        expected[{layer, 5 * bs + offset}] = from->second;
      else
        expected.erase({layer, 5 * bs + offset});
    }

  std::size_t checked = 0, untouched = 0;
  for (int layer = 0; layer < layers; ++layer)
    for (int s = 0; s < blocks * bs; ++s) {
      const float* k = kv.key(layer, s / bs, s % bs);
      const float* v = kv.value(layer, s / bs, s % bs);
      const auto it = expected.find({layer, s});
      if (it == expected.end()) {
        bool nan = true;
        for (std::size_t i = 0; i < slot; ++i) nan = nan && std::isnan(k[i]) && std::isnan(v[i]);
        CHECK(nan);  // nobody wrote it (a copy of an unwritten slot stays NaN too)
        ++untouched;
        continue;
      }
      bool equal = true;
      for (std::size_t i = 0; i < slot; ++i) equal = equal && k[i] == it->second.first[i] && v[i] == it->second.second[i];
      CHECK(equal);
      ++checked;
    }
  CHECK(checked + untouched == static_cast<std::size_t>(layers) * blocks * bs);
  CHECK(checked >= order.size() / 2);
}

TEST_CASE("paged_kv: bad arguments are rejected by name", "[paged_kv]") {
  CHECK_THROWS_WITH(PagedKV<16>(0, 8, 128, 4), Catch::Contains("must all be positive"));
  CHECK_THROWS_AS(PagedKV<16>(1, 8, 128, -1), InvalidArgument);
  CHECK_THROWS_WITH(PagedKV<16>(1 << 30, 1 << 30, 1 << 30, 1 << 30), Catch::Contains("overflow"));

  PagedKV<16> kv(2, 2, 4, 4);
  const std::vector<float> k(8, 1.0f), v(8, 2.0f);
  CHECK_THROWS_WITH(kv.write(0, 64, k.data(), v.data()), Catch::Contains("slot 64 outside [0, 64)"));
  CHECK_THROWS_AS(kv.write(0, -1, k.data(), v.data()), InvalidArgument);
  CHECK_THROWS_WITH(kv.write(2, 0, k.data(), v.data()), Catch::Contains("layer 2 outside [0, 2)"));
  CHECK_THROWS_AS(kv.key(0, 4, 0), InvalidArgument);
  CHECK_THROWS_AS(kv.value(0, 0, 16), InvalidArgument);
  CHECK_THROWS_AS(kv.key_pool(-1), InvalidArgument);
  CHECK_THROWS_AS(kv.copy_block(0, 4), InvalidArgument);
  CHECK_THROWS_AS(kv.copy_block(-1, 0), InvalidArgument);
  kv.write(1, 31, k.data(), v.data());
  CHECK(kv.value(1, 1, 15)[7] == 2.0f);
}
