// kernels/cpu/attention.hpp: the fast paged attention against the double-precision reference
// over head_dim 64 / 128 / 256, GQA groups 1 / 2 / 4 / 8 with 1 to 4 KV heads, block sizes 1,
// 8, 16, 32, ragged sequence lengths (1, 17, 97, 255, 300), mixed prefill chunks and decode
// tokens, and two block tables sharing blocks (a forked prefix); batch and thread-count
// invariance (bit for bit); one plan reused by several runs (as the layers of a step use it)
// equal to a fresh plan + run, without allocating; the block table really used (scrambled
// physical blocks, NaN everywhere nobody wrote); argument errors naming their values. The same
// checks with bf16 pools (the default KV cache), and bf16 pools giving exactly the output of fp32
// pools holding the same (widened) values.
//
// Tolerance (fp32 kernel vs double reference): |fast - reference| <= 1e-5 * max|v| per element,
// for both pool types: the reference reads the pools' own values (bf16 widened exactly), so
// rounding K/V to bf16 is no part of the kernel's error.
// Scores are kept to the range real Qwen3 layers produce (standard deviation up to 4, so
// softmax weights from near-uniform to near-one-hot); the observed error is reported by INFO.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <qwen/kernels/cpu/attention.hpp>
#include <qwen/kv/paged_kv.hpp>

// Every allocation of this test program is counted (plan() and run() must make none).
#include "counting_allocator.hpp"
#include "sanitized.hpp"

namespace {

namespace cpu = qwen::kernels::cpu;
using qwen::PagedKV;
using qwen::PagedKVFill;

constexpr std::uint32_t poison_bits = 0x7fc0'dead;  // a NaN the kernel never produces
const float poison = std::bit_cast<float>(poison_bits);
constexpr double tolerance = 1e-5;                 // times max|v|

// Block tables in CSR form.
struct BlockTables {
  std::vector<std::int32_t> indptr{0}, indices;
  void add(std::span<const std::int32_t> table) {
    indices.insert(indices.end(), table.begin(), table.end());
    indptr.push_back(static_cast<std::int32_t>(indices.size()));
  }
  [[nodiscard]] std::span<const std::int32_t> table(std::size_t s) const {
    return std::span(indices).subspan(static_cast<std::size_t>(indptr[s]), static_cast<std::size_t>(indptr[s + 1] - indptr[s]));
  }
};

struct Batch {
  std::vector<std::int32_t> sequence_of_token, position;
  [[nodiscard]] std::size_t size() const { return position.size(); }
};

cpu::PagedAttentionBatch attention_batch(const Batch& batch, const BlockTables& tables) {
  return {batch.sequence_of_token, batch.position, tables.indptr, tables.indices};
}

// A sequence of a scene: `length` positions; a fork shares its first `shared` positions (whole
// blocks) with sequence `parent`, reading them through the same physical blocks.
struct SequenceSpec {
  int length;
  int parent = -1;
  int shared = 0;
};

// A filled cache of `layers` layers in a PagedKV (its storage only: the blocks are handed out
// here, in a scrambled order, so that forks can share them). Every position of every sequence
// has random K/V in every layer; spare blocks and the tails of last blocks stay NaN. T: the
// pools' element (float or bf16; PagedKV::write rounds).
template <int BlockSize, class T = float>
struct Scene {
  int num_kv_heads, head_dim;
  PagedKV<BlockSize> kv;
  BlockTables tables;
  float max_abs_v = 0;

  Scene(std::span<const SequenceSpec> sequences, int layers, int kv_heads, int dim, float v_scale, std::mt19937& rng)
      : num_kv_heads(kv_heads), head_dim(dim),
        kv(layers, kv_heads, dim, own_blocks(sequences) + 5, qwen::kv_cache_dtype_of<T>, PagedKVFill::nan) {
    std::vector<std::int32_t> free(static_cast<std::size_t>(kv.num_blocks()));
    std::iota(free.begin(), free.end(), 0);
    std::shuffle(free.begin(), free.end(), rng);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> offset(-1.0f, 1.0f);
    const std::size_t slot = static_cast<std::size_t>(kv_heads * dim);
    std::vector<float> k(slot), v(slot);
    for (const SequenceSpec& spec : sequences) {
      REQUIRE(spec.shared % BlockSize == 0);
      std::vector<std::int32_t> table;
      if (spec.parent >= 0) {
        const auto parent = tables.table(static_cast<std::size_t>(spec.parent));
        table.assign(parent.begin(), parent.begin() + spec.shared / BlockSize);
      }
      while (static_cast<int>(table.size()) * BlockSize < spec.length) {
        table.push_back(free.back());
        free.pop_back();
      }
      for (int layer = 0; layer < layers; ++layer)
        for (int p = spec.shared; p < spec.length; ++p) {
          for (auto& x : k) x = normal(rng);
          // Values with a per-position offset, so that a wrong position changes the output.
          const float shift = offset(rng);
          for (auto& x : v) {
            x = v_scale * (normal(rng) + shift);
            max_abs_v = std::max(max_abs_v, std::abs(x));
          }
          const int block = table[static_cast<std::size_t>(p / BlockSize)];
          kv.write(layer, std::int64_t{block} * BlockSize + p % BlockSize, k.data(), v.data());
        }
      tables.add(table);
    }
  }

  [[nodiscard]] cpu::PagedKVLayer<T> layer(int l) const {
    return {kv.template key_pool<T>(l), kv.template value_pool<T>(l), kv.num_blocks(), BlockSize, kv.num_kv_heads()};
  }

  static int own_blocks(std::span<const SequenceSpec> sequences) {
    int blocks = 0;
    for (const SequenceSpec& s : sequences) blocks += (s.length - s.shared + BlockSize - 1) / BlockSize;
    return blocks;
  }
};

// The tokens of one sequence in a step: positions [first, last], all of whose K/V is cached.
struct Chunk {
  int sequence;  // index into the scene's sequences
  int first, last;
};

// Tokens of the chunks, shuffled so that sequences interleave in the batch.
Batch make_batch(std::span<const Chunk> chunks, std::mt19937& rng) {
  Batch batch;
  for (const Chunk& c : chunks)
    for (int p = c.first; p <= c.last; ++p) {
      batch.sequence_of_token.push_back(c.sequence);
      batch.position.push_back(p);
    }
  std::vector<std::size_t> order(batch.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), rng);
  Batch shuffled;
  for (std::size_t i : order) {
    shuffled.sequence_of_token.push_back(batch.sequence_of_token[i]);
    shuffled.position.push_back(batch.position[i]);
  }
  return shuffled;
}

std::vector<float> random_q(std::size_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> q(n);
  for (auto& x : q) x = normal(rng);
  return q;
}

template <int HeadDim, int Group, class T = float>
std::vector<float> run_fast(const std::vector<float>& q, const Batch& batch, const BlockTables& tables,
                            const cpu::PagedKVLayer<std::type_identity_t<T>>& layer, float scale, cpu::ThreadPool& pool) {
  std::vector<float> out(batch.size() * static_cast<std::size_t>(layer.num_kv_heads * Group) * HeadDim, poison);
  cpu::paged_attention<HeadDim, Group>(q.data(), attention_batch(batch, tables), layer, scale, out.data(), pool);
  return out;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Sequences of ragged lengths, the last a fork of sequence 3 sharing its first 96 positions.
constexpr SequenceSpec scene_sequences[] = {{1}, {17}, {97}, {255}, {300}, {130, 3, 96}};
// Decode tokens (the last position) mixed with prefill chunks that start anywhere; the fork's
// chunk reads both shared and own blocks.
constexpr Chunk scene_chunks[] = {{0, 0, 0}, {1, 0, 16}, {2, 96, 96}, {3, 190, 254}, {4, 299, 299}, {5, 90, 129}};

// Fast against reference for one configuration, then invariance: thread counts 1, 2, 3, each
// token alone, each sequence's tokens in chunks of 1, 7 and 64, and a shared block read through
// either table.
template <int BlockSize, int HeadDim, int Group, class T = float>
void check_configuration(int num_kv_heads, float q_sigma, float v_scale, unsigned seed) {
  std::mt19937 rng(seed);
  const Scene<BlockSize, T> scene(scene_sequences, 1, num_kv_heads, HeadDim, v_scale, rng);
  const Batch batch = make_batch(scene_chunks, rng);
  const int num_heads = num_kv_heads * Group;
  const std::size_t row = static_cast<std::size_t>(num_heads) * HeadDim;
  const auto q = random_q(batch.size() * row, q_sigma, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HeadDim));
  const cpu::PagedKVLayer<T> layer = scene.layer(0);

  std::vector<float> expected(q.size(), poison);
  cpu::paged_attention_reference(q.data(), num_heads, HeadDim, attention_batch(batch, scene.tables), layer, scale,
                                 expected.data());
  cpu::ThreadPool pool1(1), pool2(2), pool3(3);
  const auto out = run_fast<HeadDim, Group, T>(q, batch, scene.tables, layer, scale, pool1);

  double max_error = 0;
  bool finite = true, nonzero = false;
  for (std::size_t i = 0; i < out.size(); ++i) {
    finite = finite && std::isfinite(out[i]) && std::isfinite(expected[i]);
    nonzero = nonzero || out[i] != 0.0f;
    max_error = std::max(max_error, std::abs(static_cast<double>(out[i]) - expected[i]));
  }
  INFO((std::is_same_v<T, float> ? "fp32" : "bf16") << " pools, block size " << BlockSize << ", head_dim " << HeadDim << ", heads " << num_heads << "/" << num_kv_heads
                     << ", q sigma " << q_sigma << ", max|v| " << scene.max_abs_v << ", max error "
                     << max_error / scene.max_abs_v << " * max|v|");
  REQUIRE(finite);
  REQUIRE(nonzero);
  CHECK(max_error <= tolerance * scene.max_abs_v);

  CHECK(same_bits(out, run_fast<HeadDim, Group, T>(q, batch, scene.tables, layer, scale, pool2)));
  CHECK(same_bits(out, run_fast<HeadDim, Group, T>(q, batch, scene.tables, layer, scale, pool3)));

  // Each token alone (the sanitizer build, tests/sanitized.hpp: every fifth token and the last).
  bool alone_identical = true;
  for (std::size_t t = 0; t < batch.size(); ++t) {
    if (qwen_test::sanitized && t % 5 != 0 && t + 1 != batch.size()) continue;
    const Batch one{{batch.sequence_of_token[t]}, {batch.position[t]}};
    const std::vector<float> q_one(q.begin() + static_cast<std::ptrdiff_t>(t * row), q.begin() + static_cast<std::ptrdiff_t>((t + 1) * row));
    const auto got = run_fast<HeadDim, Group, T>(q_one, one, scene.tables, layer, scale, pool2);
    alone_identical = alone_identical && same_bits(got, std::span(out).subspan(t * row, row));
  }
  CHECK(alone_identical);

  // Each sequence on its own, its tokens in position order cut into chunks of 1, 7 and 64 (the
  // sanitizer build: 7 and 64; single tokens are the "alone" runs above).
  for (std::size_t chunk_size : {std::size_t{1}, std::size_t{7}, std::size_t{64}}) {
    if (qwen_test::sanitized && chunk_size == 1) continue;
    bool chunked_identical = true;
    for (std::int32_t s = 0; s < static_cast<std::int32_t>(std::size(scene_sequences)); ++s) {
      std::vector<std::size_t> rows;
      for (std::size_t t = 0; t < batch.size(); ++t)
        if (batch.sequence_of_token[t] == s) rows.push_back(t);
      std::sort(rows.begin(), rows.end(), [&](std::size_t a, std::size_t b) { return batch.position[a] < batch.position[b]; });
      for (std::size_t begin = 0; begin < rows.size(); begin += chunk_size) {
        Batch part;
        std::vector<float> q_part;
        const std::size_t end = std::min(rows.size(), begin + chunk_size);
        for (std::size_t i = begin; i < end; ++i) {
          part.sequence_of_token.push_back(s);
          part.position.push_back(batch.position[rows[i]]);
          q_part.insert(q_part.end(), q.begin() + static_cast<std::ptrdiff_t>(rows[i] * row),
                        q.begin() + static_cast<std::ptrdiff_t>((rows[i] + 1) * row));
        }
        const auto got = run_fast<HeadDim, Group, T>(q_part, part, scene.tables, layer, scale, pool3);
        for (std::size_t i = begin; i < end; ++i)
          chunked_identical = chunked_identical &&
                              same_bits(std::span(got).subspan((i - begin) * row, row), std::span(out).subspan(rows[i] * row, row));
      }
    }
    INFO("chunk size " << chunk_size);
    CHECK(chunked_identical);
  }

  // The fork and its parent read positions 0 .. 95 from the same blocks: the same q at the same
  // position gives the same bits through either table.
  const Batch twins{{3, 5, 3, 5}, {0, 0, 95, 95}};
  const auto q_first = random_q(row, q_sigma, rng), q_last = random_q(row, q_sigma, rng);
  std::vector<float> q_twins;
  for (const auto* q_row : {&q_first, &q_first, &q_last, &q_last}) q_twins.insert(q_twins.end(), q_row->begin(), q_row->end());
  const auto got_twins = run_fast<HeadDim, Group, T>(q_twins, twins, scene.tables, layer, scale, pool2);
  CHECK(same_bits(std::span(got_twins).subspan(0, row), std::span(got_twins).subspan(row, row)));
  CHECK(same_bits(std::span(got_twins).subspan(2 * row, row), std::span(got_twins).subspan(3 * row, row)));
}

}  // namespace

TEST_CASE("attention: the build uses the expected vector path", "[attention]") {
  const std::string isa(cpu::attention_detail::Simd::isa);
#if defined(QWEN_EXPECTED_ISA)
  CHECK(isa == QWEN_EXPECTED_ISA);
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  CHECK(isa == "avx512");
#endif
  SUCCEED("vector path: " << isa);
}

// The sweep: every head_dim with every group, block size 16 (the forward pass's); q scales
// giving near-uniform (0.1), moderate (1) and peaked (4) softmax weights.
TEST_CASE("attention: fast equals the double reference, head_dim 64, groups 1 / 2 / 4 / 8", "[attention]") {
  check_configuration<16, 64, 1>(4, 1.0f, 1.0f, 10);
  check_configuration<16, 64, 2>(3, 4.0f, 1.0f, 11);
  check_configuration<16, 64, 4>(2, 0.1f, 1.0f, 12);
  check_configuration<16, 64, 8>(1, 1.0f, 30.0f, 13);
}

TEST_CASE("attention: fast equals the double reference, head_dim 128, groups 1 / 2 / 4 / 8", "[attention]") {
  check_configuration<16, 128, 1>(2, 1.0f, 1.0f, 1);
  check_configuration<16, 128, 2>(4, 4.0f, 0.01f, 2);
  check_configuration<16, 128, 4>(1, 0.1f, 3.0f, 3);
  check_configuration<16, 128, 8>(2, 1.0f, 1.0f, 4);
}

TEST_CASE("attention: fast equals the double reference, head_dim 256, groups 1 / 2 / 4 / 8", "[attention]") {
  check_configuration<16, 256, 1>(3, 4.0f, 1.0f, 20);
  check_configuration<16, 256, 2>(1, 1.0f, 2.0f, 21);
  check_configuration<16, 256, 4>(2, 1.0f, 1.0f, 22);
  check_configuration<16, 256, 8>(1, 0.1f, 0.5f, 23);
}

TEST_CASE("attention: fast equals the double reference, block sizes 1, 8 and 32", "[attention]") {
  // 8: two blocks per tile's worth of positions; 32: two tiles per block; 1: a block per position.
  check_configuration<8, 128, 2>(2, 4.0f, 1.0f, 5);
  check_configuration<8, 128, 8>(1, 0.1f, 3.0f, 6);
  check_configuration<32, 128, 8>(1, 4.0f, 1.0f, 7);
  check_configuration<32, 128, 2>(2, 1.0f, 2.0f, 8);
  check_configuration<1, 128, 2>(2, 1.0f, 1.0f, 9);
}

// bf16 pools (the CPU backend's default KV cache): the same sweep's corners, against the
// reference reading the same bf16 values.
TEST_CASE("attention: bf16 pools, fast equals the double reference", "[attention][bf16]") {
  check_configuration<16, 64, 2, qwen::bf16>(3, 4.0f, 1.0f, 40);
  check_configuration<16, 128, 2, qwen::bf16>(4, 1.0f, 1.0f, 41);   // Qwen3-0.6B ... 4B: 8 KV heads, group 2
  check_configuration<16, 128, 8, qwen::bf16>(1, 0.1f, 30.0f, 42);
  check_configuration<16, 256, 4, qwen::bf16>(2, 1.0f, 0.5f, 43);
  check_configuration<8, 128, 4, qwen::bf16>(2, 4.0f, 1.0f, 44);
}

// Widening bf16 is exact and the kernel is the same: bf16 pools give bit for bit the output of
// fp32 pools holding the widened values. The outputs differ from those of the unrounded fp32
// values (so a kernel that read the pools as fp32 could not pass by accident).
TEST_CASE("attention: bf16 pools give exactly what fp32 pools of the same values give", "[attention][bf16]") {
  constexpr int dim = 128, group = 2, kv_heads = 4, heads = kv_heads * group;
  std::mt19937 rng(45), rng_again(45);
  const Scene<16, qwen::bf16> rounded(scene_sequences, 2, kv_heads, dim, 1.0f, rng);
  const Scene<16, float> exact(scene_sequences, 2, kv_heads, dim, 1.0f, rng_again);  // the same draws, unrounded
  // The fp32 twin of the bf16 pools: every element widened (NaN where nothing was written).
  PagedKV<16> widened(2, kv_heads, dim, rounded.kv.num_blocks(), qwen::KVCacheDType::fp32);
  const std::size_t pool = static_cast<std::size_t>(rounded.kv.num_blocks()) * 16 * kv_heads * dim;
  for (int layer = 0; layer < 2; ++layer)
    for (std::size_t i = 0; i < pool; ++i) {
      widened.key_pool<float>(layer)[i] = rounded.kv.key_pool<qwen::bf16>(layer)[i].to_float();
      widened.value_pool<float>(layer)[i] = rounded.kv.value_pool<qwen::bf16>(layer)[i].to_float();
    }
  const Batch batch = make_batch(scene_chunks, rng);
  const auto q = random_q(batch.size() * heads * dim, 1.0f, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  cpu::ThreadPool pool2(2);
  for (int layer = 0; layer < 2; ++layer) {
    INFO("layer " << layer);
    const auto from_bf16 = run_fast<dim, group, qwen::bf16>(q, batch, rounded.tables, rounded.layer(layer), scale, pool2);
    const cpu::PagedKVLayer<float> view{widened.key_pool<float>(layer), widened.value_pool<float>(layer), widened.num_blocks(), 16, kv_heads};
    CHECK(same_bits(from_bf16, run_fast<dim, group>(q, batch, rounded.tables, view, scale, pool2)));
    CHECK_FALSE(same_bits(from_bf16, run_fast<dim, group>(q, batch, exact.tables, exact.layer(layer), scale, pool2)));
  }
}

TEST_CASE("attention: one plan serves every layer of a step, as a fresh plan + run does, without allocating",
          "[attention]") {
  constexpr int dim = 128, group = 4, kv_heads = 2, heads = kv_heads * group, layers = 3;
  std::mt19937 rng(31);
  const Scene<16> scene(scene_sequences, layers, kv_heads, dim, 1.0f, rng);
  const Batch step1 = make_batch(scene_chunks, rng);
  // A second step: decode tokens of three sequences, in another order.
  const Batch step2{{4, 0, 5}, {299, 0, 129}};
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const std::size_t row = heads * dim;
  cpu::ThreadPool pool(3), other_pool(2);
  cpu::PagedAttention<dim, group> attention(static_cast<std::int64_t>(step1.size()), 6, kv_heads, pool);
  REQUIRE(attention.num_heads() == heads);

  for (const Batch* step : {&step1, &step2, &step1}) {
    // Layer order 0, 1, 2, 0 with a new q each time, as a forward pass would.
    const int order[] = {0, 1, 2, 0};
    std::vector<std::vector<float>> qs, outs;
    for (std::size_t i = 0; i < std::size(order); ++i) {
      qs.push_back(random_q(step->size() * row, 1.0f, rng));
      outs.emplace_back(step->size() * row, poison);
    }
    const std::int64_t before = qwen::testing::allocation_count();
    attention.plan(attention_batch(*step, scene.tables), scene.kv.num_blocks(), 16);
    for (std::size_t i = 0; i < std::size(order); ++i)
      attention.run(qs[i].data(), scene.layer(order[i]), scale, outs[i].data());
    const std::int64_t allocations = qwen::testing::allocation_count() - before;
    CHECK(allocations == 0);

    bool identical = true;
    for (std::size_t i = 0; i < std::size(order); ++i)
      identical = identical && same_bits(outs[i], run_fast<dim, group>(qs[i], *step, scene.tables, scene.layer(order[i]),
                                                                       scale, other_pool));
    CHECK(identical);
    // The layers really differ (a stale layer would pass the comparison above only by chance).
    CHECK_FALSE(same_bits(run_fast<dim, group>(qs[0], *step, scene.tables, scene.layer(1), scale, other_pool), outs[0]));
  }
}

TEST_CASE("attention: the block table is what locates K/V", "[attention]") {
  // The same logical K/V stored in two pools with different physical block orders (the rest
  // NaN) gives the same bits; a table pointing at a NaN block makes the output NaN.
  constexpr int bs = 16, dim = 128, kv_heads = 2, group = 2, heads = kv_heads * group, blocks = 12;
  const std::size_t slot = kv_heads * dim, block_floats = bs * slot;
  std::mt19937 rng(21);
  std::normal_distribution<float> normal;
  const int length = 70;  // 5 blocks, the last one partial
  const int used = (length + bs - 1) / bs;
  std::vector<float> logical_k(static_cast<std::size_t>(used) * block_floats), logical_v(logical_k.size());
  for (auto& x : logical_k) x = normal(rng);
  for (auto& x : logical_v) x = normal(rng);

  auto build = [&](const std::vector<std::int32_t>& table, std::vector<float>& k_pool, std::vector<float>& v_pool) {
    k_pool.assign(blocks * block_floats, std::numeric_limits<float>::quiet_NaN());
    v_pool.assign(k_pool.size(), std::numeric_limits<float>::quiet_NaN());
    for (int p = 0; p < length; ++p) {
      const std::size_t dst = (static_cast<std::size_t>(table[static_cast<std::size_t>(p / bs)]) * bs + p % bs) * slot;
      std::copy_n(logical_k.begin() + static_cast<std::ptrdiff_t>(p * slot), slot, k_pool.begin() + static_cast<std::ptrdiff_t>(dst));
      std::copy_n(logical_v.begin() + static_cast<std::ptrdiff_t>(p * slot), slot, v_pool.begin() + static_cast<std::ptrdiff_t>(dst));
    }
  };
  const std::vector<std::int32_t> table_a = {0, 1, 2, 3, 4}, table_b = {9, 2, 11, 0, 6};
  std::vector<float> ka, va, kb, vb;
  build(table_a, ka, va);
  build(table_b, kb, vb);

  Batch batch;
  for (int p = 0; p < length; ++p) {
    batch.sequence_of_token.push_back(0);
    batch.position.push_back(p);
  }
  const auto q = random_q(batch.size() * heads * dim, 1.0f, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  cpu::ThreadPool pool(2);
  BlockTables tables_a, tables_b;
  tables_a.add(table_a);
  tables_b.add(table_b);
  const auto out_a = run_fast<dim, group>(q, batch, tables_a, {ka.data(), va.data(), blocks, bs, kv_heads}, scale, pool);
  const auto out_b = run_fast<dim, group>(q, batch, tables_b, {kb.data(), vb.data(), blocks, bs, kv_heads}, scale, pool);
  CHECK(std::all_of(out_a.begin(), out_a.end(), [](float x) { return std::isfinite(x); }));
  CHECK(same_bits(out_a, out_b));

  // Pointing the third logical block at an unwritten (NaN) block poisons exactly the tokens that read it.
  BlockTables tables_bad;
  tables_bad.add(std::vector<std::int32_t>{9, 2, 5, 0, 6});
  const auto out_bad = run_fast<dim, group>(q, batch, tables_bad, {kb.data(), vb.data(), blocks, bs, kv_heads}, scale, pool);
  const std::size_t row = heads * dim;
  CHECK(same_bits(std::span(out_bad).first(2 * bs * row), std::span(out_b).first(2 * bs * row)));
  CHECK(std::all_of(out_bad.begin() + static_cast<std::ptrdiff_t>(2 * bs * row), out_bad.end(), [](float x) { return std::isnan(x); }));
}

TEST_CASE("attention: the vector exp is accurate and exact where softmax needs it", "[attention]") {
  using S = cpu::attention_detail::Simd;
  constexpr float inf = std::numeric_limits<float>::infinity();
  std::vector<float> xs = {0.0f, -0.0f, -1e-8f, -0.5f, -1.0f, -10.0f, -50.0f, -87.0f, -87.3f, -87.4f, -88.0f, -100.0f, -1e30f, -inf,
                           1.0f, 10.0f, 88.0f};
  for (float x = -90.0f; x <= 2.0f; x += 0.01234f) xs.push_back(x);
  while (xs.size() % S::width != 0) xs.push_back(0.0f);
  std::vector<float> ys(xs.size());
  for (std::size_t i = 0; i < xs.size(); i += S::width) S::store(ys.data() + i, S::exp(S::load(xs.data() + i)));
  double worst = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double want = std::exp(static_cast<double>(xs[i]));
    if (xs[i] < -87.34f) {
      CHECK(ys[i] == 0.0f);  // below FLT_MIN: flushed to exactly zero
    } else if (want >= std::numeric_limits<float>::min()) {
      worst = std::max(worst, std::abs(ys[i] - want) / want);
    }
  }
  INFO("worst relative error " << worst);
  CHECK(worst < 4e-7);
  CHECK(ys[0] == 1.0f);
  CHECK(ys[1] == 1.0f);
  float nan_in[S::width], nan_out[S::width];
  std::fill_n(nan_in, S::width, std::numeric_limits<float>::quiet_NaN());
  S::store(nan_out, S::exp(S::load(nan_in)));
  CHECK(std::all_of(nan_out, nan_out + S::width, [](float y) { return std::isnan(y); }));
}

// Simd::reduce_rows inlined here: GCC 12's AVX-512 shuffles start from _mm512_undefined_ps()
// and warn (GCC bug 105593, fixed in GCC 13); kernels/cpu/attention.hpp silences it likewise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
TEST_CASE("attention: the tile reduction equals the per-row reduction bit for bit", "[attention]") {
  // tile_scores reduces 16 rows at once (a transposition tree on AVX-512); each row's sum must be
  // the very sum a lone reduce_add gives, or batch composition could change a token's scores.
  using S = cpu::attention_detail::Simd;
  constexpr int tile = cpu::attention_detail::tile;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> exponent(-20.0f, 20.0f);
  bool identical = true;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> lanes(static_cast<std::size_t>(tile * S::width));
    for (auto& x : lanes) x = normal(rng) * std::exp2(exponent(rng));  // wide range: rounding differs by order
    S::V rows[tile];
    for (int s = 0; s < tile; ++s) rows[s] = S::load(lanes.data() + s * S::width);
    float sums[tile];
    S::reduce_rows(rows, sums);
    for (int s = 0; s < tile; ++s)
      identical = identical && std::bit_cast<std::uint32_t>(sums[s]) == std::bit_cast<std::uint32_t>(S::reduce_add(rows[s]));
  }
  CHECK(identical);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

TEST_CASE("attention: bad arguments are rejected by name", "[attention]") {
  PagedKV<16> kv(1, 2, 128, 4, qwen::KVCacheDType::fp32);
  BlockTables tables;
  const std::vector<std::int32_t> two_blocks = {0, 1};  // positions 0 .. 31
  tables.add(two_blocks);
  const cpu::PagedKVLayer<float> layer{kv.key_pool<float>(0), kv.value_pool<float>(0), kv.num_blocks(), 16, kv.num_kv_heads()};
  std::vector<float> q(4 * 128, 0.5f), out(q.size());
  const std::vector<std::int32_t> seq0 = {0}, pos19 = {19}, pos32 = {32}, seq1 = {1}, pos_neg = {-1}, none;
  const float scale = 0.088f;
  cpu::ThreadPool pool(1);
  cpu::PagedAttention<128, 2> attention(4, 2, 2, pool);
  using Catch::Contains;
  const auto plan = [&](std::span<const std::int32_t> sequence_of_token, std::span<const std::int32_t> position,
                        const std::vector<std::int32_t>& indptr, const std::vector<std::int32_t>& indices,
                        int num_blocks = 4, int block_size = 16) {
    attention.plan({sequence_of_token, position, indptr, indices}, num_blocks, block_size);
  };
  const auto& indptr = tables.indptr;
  const auto& indices = tables.indices;

  CHECK_THROWS_WITH(attention.run(q.data(), layer, scale, out.data()), Contains("no batch is planned"));
  CHECK_THROWS_WITH(plan(seq0, pos32, indptr, indices), Contains("token 0 at position 32 needs 3 blocks of 16, the block table of sequence index 0 has 2"));
  CHECK_THROWS_WITH(plan(seq1, pos19, indptr, indices), Contains("token 0 has sequence index 1, there are 1 block tables"));
  CHECK_THROWS_WITH(plan(seq0, pos_neg, indptr, indices), Contains("token 0 has position -1"));
  CHECK_THROWS_WITH(plan(seq0, none, indptr, indices), Contains("sequence_of_token has 1 entries, position has 0"));
  CHECK_THROWS_WITH(plan(seq0, pos19, indptr, {0, 7}), Contains("block table of sequence index 0 entry 1 is block 7, the pool has 4"));
  CHECK_THROWS_WITH(plan(seq0, pos19, indptr, {-3, 1}), Contains("entry 0 is block -3, the pool has 4"));
  CHECK_THROWS_WITH(plan(seq0, pos19, indptr, {0, 4}), Contains("entry 1 is block 4, the pool has 4"));
  const std::vector<std::int32_t> pos31 = {31};  // the last position 2 blocks hold
  CHECK_NOTHROW(plan(seq0, pos31, indptr, indices));
  CHECK_THROWS_WITH(plan(seq0, pos19, indptr, indices, 0), Contains("num_blocks 0 and block_size 16 must be positive"));
  CHECK_THROWS_WITH(plan(seq0, pos19, {}, indices), Contains("block_table_indptr is empty"));
  CHECK_THROWS_WITH(plan(seq0, pos19, {1, 2}, indices), Contains("block_table_indptr[0] is 1, must be 0"));
  CHECK_THROWS_WITH(plan(seq0, pos19, {0, 2, 1}, indices), Contains("block_table_indptr[2] is 1, below block_table_indptr[1] = 2"));
  CHECK_THROWS_WITH(plan(seq0, pos19, {0, 3}, indices), Contains("block_table_indptr ends at 3, block_table_indices has 2 entries"));
  const std::vector<std::int32_t> five_seq(5, 0), five_pos(5, 3);
  CHECK_THROWS_WITH(plan(five_seq, five_pos, indptr, indices), Contains("5 tokens, more than max_tokens 4"));
  CHECK_THROWS_WITH(plan(seq0, pos19, {0, 2, 2, 2}, indices), Contains("3 sequences, more than max_sequences 2"));
  // After a failed plan nothing is planned.
  CHECK_THROWS_WITH(attention.run(q.data(), layer, scale, out.data()), Contains("no batch is planned"));
  // Only the blocks a token reads are checked: a table may run on past them.
  const std::vector<std::int32_t> indptr_long = {0, 3}, indices_long = {indices[0], indices[1], 99};
  CHECK_NOTHROW(plan(seq0, pos19, indptr_long, indices_long));

  // run: the layer must have the planned geometry; cheap checks only.
  plan(seq0, pos19, indptr, indices);
  CHECK_THROWS_WITH(attention.run(q.data(), cpu::PagedKVLayer<float>{layer.key, layer.value, 5, 16, 2}, scale, out.data()),
                    Contains("the layer has num_blocks 5, block_size 16, num_kv_heads 2; planned for 4, 16, 2"));
  CHECK_THROWS_WITH(attention.run(q.data(), cpu::PagedKVLayer<float>{layer.key, layer.value, 4, 8, 2}, scale, out.data()), Contains("block_size 8"));
  CHECK_THROWS_WITH(attention.run(q.data(), cpu::PagedKVLayer<float>{layer.key, layer.value, 4, 16, 1}, scale, out.data()), Contains("num_kv_heads 1"));
  CHECK_THROWS_WITH(attention.run(q.data(), cpu::PagedKVLayer<float>{nullptr, layer.value, 4, 16, 2}, scale, out.data()), Contains("null K or V pool"));
  CHECK_THROWS_WITH(attention.run(q.data(), layer, std::nanf(""), out.data()), Contains("scale nan is not finite"));
  CHECK_THROWS_WITH(attention.run(nullptr, layer, scale, out.data()), Contains("null q or out"));
  CHECK_NOTHROW(attention.run(q.data(), layer, scale, out.data()));

  CHECK_THROWS_WITH((cpu::PagedAttention<128, 2>(4, 2, 0, pool)), Contains("num_kv_heads 0 must all be positive"));
  CHECK_THROWS_WITH((cpu::PagedAttention<128, 2>(0, 2, 2, pool)), Contains("max_tokens 0"));
  CHECK_THROWS_WITH(cpu::paged_attention_reference(q.data(), 3, 128, {seq0, pos19, indptr, indices}, layer, scale, out.data()),
                    Contains("num_heads 3 is not a positive multiple of num_kv_heads 2"));
  CHECK_THROWS_WITH(cpu::paged_attention_reference(q.data(), 4, 128, {seq0, pos19, indptr, std::vector<std::int32_t>{0, 7}}, layer,
                                                   scale, out.data()),
                    Contains("entry 1 is block 7, the pool has 4"));
  // An empty batch is valid and touches nothing.
  const std::vector<std::int32_t> no_tables = {0};
  plan(none, none, no_tables, none);
  CHECK_NOTHROW(attention.run(nullptr, layer, scale, nullptr));
  CHECK_NOTHROW(cpu::paged_attention<128, 2>(nullptr, {{}, {}, indptr, indices}, layer, scale, nullptr, pool));
}
