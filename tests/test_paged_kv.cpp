// include/qwen/kv/paged_kv.hpp, the KV storage: the documented layout, write / read round trips
// at random slots (nothing else written), copy_block (every layer, K and V, nothing else), each
// for fp32 and bf16 pools (bf16: every value rounded as bf16::from_float, checked against an
// independent rounding in double), and bad arguments named. Which blocks a sequence owns is the BlockManager's (test_block_manager.cpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <bit>
#include <map>
#include <random>
#include <type_traits>
#include <vector>

#include <qwen/kv/paged_kv.hpp>

namespace {

using qwen::bf16;
using qwen::InvalidArgument;
using qwen::KVCacheDType;
using qwen::PagedKV;
using qwen::PagedKVFill;

// The bf16 nearest to x, ties to the even mantissa, found without bf16::from_float: of the two
// bf16 values around x (x truncated, and the next one up in magnitude) the closer one.
// Past the largest finite bf16 the value above is 2^128 (as IEEE rounding assumes an unbounded
// exponent), stored as infinity. Infinities and NaN are returned as they are.
float nearest_bf16(float x) {
  if (!std::isfinite(x)) return x;
  const auto bits = std::bit_cast<std::uint32_t>(x);
  const float below = std::bit_cast<float>(bits & 0xffff0000u);
  const float above = std::bit_cast<float>((bits & 0xffff0000u) + 0x10000u);
  const double above_value = std::isinf(above) ? std::copysign(std::ldexp(1.0, 128), x) : static_cast<double>(above);
  const double to_below = std::abs(static_cast<double>(x) - below), to_above = std::abs(above_value - x);
  if (to_below != to_above) return to_below < to_above ? below : above;
  return (bits & 0x10000u) == 0 ? below : above;
}

// What slot values read back as: floats as written, bf16 widened.
template <class T>
float read(const T& x) {
  if constexpr (std::is_same_v<T, bf16>)
    return x.to_float();
  else
    return x;
}

}  // namespace

TEMPLATE_TEST_CASE("paged_kv: the pools have the documented layout", "[paged_kv]", float, bf16) {
  constexpr int layers = 3, heads = 2, dim = 8, blocks = 4, bs = 16;
  PagedKV<bs> kv(layers, heads, dim, blocks, qwen::kv_cache_dtype_of<TestType>);
  CHECK(kv.dtype() == qwen::kv_cache_dtype_of<TestType>);
  CHECK(kv.bytes_per_token() == std::int64_t{layers} * 2 * heads * dim * static_cast<std::int64_t>(sizeof(TestType)));
  const std::size_t slot = heads * dim;
  for (int layer = 0; layer < layers; ++layer) {
    CHECK(reinterpret_cast<std::uintptr_t>(kv.template key_pool<TestType>(layer)) % 64 == 0);  // every pool starts a cache line
    CHECK(reinterpret_cast<std::uintptr_t>(kv.template value_pool<TestType>(layer)) % 64 == 0);
    // [num_layers][K, V][num_blocks][BlockSize][num_kv_heads][head_dim] in one allocation.
    CHECK(kv.template value_pool<TestType>(layer) == kv.template key_pool<TestType>(layer) + blocks * bs * slot);
    if (layer > 0) CHECK(kv.template key_pool<TestType>(layer) == kv.template value_pool<TestType>(layer - 1) + blocks * bs * slot);
    for (int block = 0; block < blocks; ++block)
      for (int offset = 0; offset < bs; ++offset) {
        CHECK(kv.template key<TestType>(layer, block, offset) == kv.template key_pool<TestType>(layer) + (block * bs + offset) * slot);
        CHECK(kv.template value<TestType>(layer, block, offset) == kv.template value_pool<TestType>(layer) + (block * bs + offset) * slot);
      }
  }
}

TEMPLATE_TEST_CASE("paged_kv: write then read at random slots; copy_block copies whole blocks of every layer", "[paged_kv]", float,
                   bf16) {
  constexpr int layers = 2, heads = 3, dim = 8, bs = 8, blocks = 40;
  const std::size_t slot = heads * dim;
  PagedKV<bs> kv(layers, heads, dim, blocks, qwen::kv_cache_dtype_of<TestType>, PagedKVFill::nan);
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
    if constexpr (std::is_same_v<TestType, bf16>)
      for (std::size_t i = 0; i < slot; ++i) k[i] = nearest_bf16(k[i]), v[i] = nearest_bf16(v[i]);
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
      const TestType* k = kv.template key<TestType>(layer, s / bs, s % bs);
      const TestType* v = kv.template value<TestType>(layer, s / bs, s % bs);
      const auto it = expected.find({layer, s});
      if (it == expected.end()) {
        bool nan = true;
        for (std::size_t i = 0; i < slot; ++i) nan = nan && std::isnan(read(k[i])) && std::isnan(read(v[i]));
        CHECK(nan);  // nobody wrote it (a copy of an unwritten slot stays NaN too)
        ++untouched;
        continue;
      }
      bool equal = true;
      for (std::size_t i = 0; i < slot; ++i)
        equal = equal && read(k[i]) == it->second.first[i] && read(v[i]) == it->second.second[i];
      CHECK(equal);
      ++checked;
    }
  CHECK(checked + untouched == static_cast<std::size_t>(layers) * blocks * bs);
  CHECK(checked >= order.size() / 2);
}

TEST_CASE("paged_kv: bad arguments are rejected by name", "[paged_kv]") {
  CHECK_THROWS_WITH(PagedKV<16>(0, 8, 128, 4, KVCacheDType::bf16), Catch::Contains("must all be positive"));
  CHECK_THROWS_AS(PagedKV<16>(1, 8, 128, -1, KVCacheDType::fp32), InvalidArgument);
  CHECK_THROWS_WITH(PagedKV<16>(1 << 30, 1 << 30, 1 << 30, 1 << 30, KVCacheDType::bf16), Catch::Contains("bf16 elements overflow"));
  CHECK_THROWS_WITH(PagedKV<16>(1, 8, 128, 4, static_cast<KVCacheDType>(7)), Catch::Contains("unknown KV cache dtype 7"));

  PagedKV<16> kv(2, 2, 4, 4, KVCacheDType::fp32);
  const std::vector<float> k(8, 1.0f), v(8, 2.0f);
  CHECK_THROWS_WITH(kv.write(0, 64, k.data(), v.data()), Catch::Contains("slot 64 outside [0, 64)"));
  CHECK_THROWS_AS(kv.write(0, -1, k.data(), v.data()), InvalidArgument);
  CHECK_THROWS_WITH(kv.write(2, 0, k.data(), v.data()), Catch::Contains("layer 2 outside [0, 2)"));
  CHECK_THROWS_AS(kv.key<float>(0, 4, 0), InvalidArgument);
  CHECK_THROWS_AS(kv.value<float>(0, 0, 16), InvalidArgument);
  CHECK_THROWS_AS(kv.key_pool<float>(-1), InvalidArgument);
  // The element type is checked: fp32 pools read as bf16, and the reverse.
  CHECK_THROWS_WITH(kv.key_pool<bf16>(0), Catch::Contains("the cache holds fp32 elements, read as bf16"));
  const PagedKV<16> half(1, 2, 4, 4, KVCacheDType::bf16);
  CHECK_THROWS_WITH(half.value<float>(0, 0, 0), Catch::Contains("the cache holds bf16 elements, read as fp32"));
  CHECK_THROWS_AS(kv.copy_block(0, 4), InvalidArgument);
  CHECK_THROWS_AS(kv.copy_block(-1, 0), InvalidArgument);
  kv.write(1, 31, k.data(), v.data());
  CHECK(kv.value<float>(1, 1, 15)[7] == 2.0f);
}

TEST_CASE("paged_kv: KV cache dtypes by name", "[paged_kv]") {
  CHECK(qwen::parse_kv_cache_dtype("bf16") == KVCacheDType::bf16);
  CHECK(qwen::parse_kv_cache_dtype("bfloat16") == KVCacheDType::bf16);
  CHECK(qwen::parse_kv_cache_dtype("fp32") == KVCacheDType::fp32);
  CHECK(qwen::parse_kv_cache_dtype("float32") == KVCacheDType::fp32);
  CHECK_THROWS_WITH(qwen::parse_kv_cache_dtype("fp8"), Catch::Contains("KV cache dtype 'fp8' is not one of bf16, fp32"));
  CHECK(qwen::to_string(KVCacheDType::bf16) == "bf16");
  CHECK(qwen::element_bytes(KVCacheDType::fp32) == 4);
}

// write() rounds to nearest, ties to even, on values picked to sit on and around the halfway
// points, and keeps infinities and NaN.
TEST_CASE("paged_kv: bf16 pools round each written value to the nearest bf16, ties to even", "[paged_kv]") {
  PagedKV<16> kv(1, 1, 16, 1, KVCacheDType::bf16);
  const float tie_down = std::bit_cast<float>(0x3f808000u);  // halfway between 0x3f80 and 0x3f81: to 0x3f80 (even)
  const float tie_up = std::bit_cast<float>(0x3f818000u);    // halfway between 0x3f81 and 0x3f82: to 0x3f82 (even)
  const float above_tie = std::bit_cast<float>(0x3f808001u), below_tie = std::bit_cast<float>(0x3f807fffu);
  const float inf = std::numeric_limits<float>::infinity(), big = std::numeric_limits<float>::max();
  const std::vector<float> k = {1.0f, tie_down, tie_up, above_tie, below_tie, -tie_down, -tie_up, inf, -inf, big, 1e-40f, 0.0f,
                                -0.0f, 3.14159265f, -2.71828183f, std::numeric_limits<float>::quiet_NaN()};
  const std::vector<std::uint16_t> want = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x3f80, 0xbf80, 0xbf82, 0x7f80, 0xff80, 0x7f80};
  std::vector<float> v(k.rbegin(), k.rend());
  kv.write(0, 3, k.data(), v.data());
  const bf16* got_k = kv.key<bf16>(0, 0, 3);
  const bf16* got_v = kv.value<bf16>(0, 0, 3);
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i);
    CHECK(got_k[i].bits == want[i]);
  }
  for (std::size_t i = 0; i + 1 < k.size(); ++i) {
    INFO("element " << i << ": " << k[i]);
    CHECK(got_k[i].to_float() == nearest_bf16(k[i]));
    CHECK(got_v[k.size() - 1 - i].to_float() == nearest_bf16(k[i]));
  }
  CHECK(std::isnan(got_k[15].to_float()));
  CHECK(std::isnan(got_v[0].to_float()));
}
