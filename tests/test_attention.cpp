// kernels/cpu/attention.hpp: the fast paged attention against the double-precision reference on
// ragged sequence lengths, mixed prefill chunks and decode tokens, GQA ratios 1 / 2 / 8, head_dim
// 64 and 128 and block sizes 1, 8, 16, 32; batch and thread-count invariance (bit for bit); the
// block table really used (scrambled physical blocks, NaN everywhere nobody wrote); argument errors.
//
// Tolerance (fp32 kernel vs double reference): |fast - reference| <= 1e-5 * max|v| per element.
// Scores are kept to the range real Qwen3 layers produce (standard deviation up to 4, so
// softmax weights from near-uniform to near-one-hot); the observed error is reported by INFO.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <qwen/kernels/cpu/attention.hpp>
#include <qwen/kv/paged_kv.hpp>

namespace {

namespace cpu = qwen::kernels::cpu;
using qwen::PagedKV;
using qwen::PagedKVFill;
using qwen::PagedKVLayerView;

constexpr std::uint32_t poison_bits = 0x7fc0'dead;  // a NaN the kernel never produces
const float poison = std::bit_cast<float>(poison_bits);
constexpr double tolerance = 1e-5;                 // times max|v|

// The tokens of one sequence in a step: positions [first, last], all of whose K/V is cached.
struct Chunk {
  int sequence;  // index into the sequence list
  int first, last;
};

// A filled cache: `lengths[s]` positions of random K/V per sequence, its physical blocks handed
// out in a scrambled order, spare blocks and the tails of last blocks left as NaN.
template <int BlockSize>
struct Scene {
  int num_kv_heads, head_dim;
  PagedKV<BlockSize> kv;
  std::vector<int> ids;
  std::vector<std::span<const std::int32_t>> tables;
  float max_abs_v = 0;

  Scene(std::span<const int> lengths, int kv_heads, int dim, float v_scale, std::mt19937& rng)
      : num_kv_heads(kv_heads), head_dim(dim), kv(1, kv_heads, dim, total_blocks(lengths) + 5, PagedKVFill::nan) {
    // Scramble the free list: take every block in one-block sequences, free them in random order.
    std::vector<int> holders(static_cast<std::size_t>(kv.num_blocks()));
    for (int& h : holders) {
      h = kv.add_sequence();
      kv.reserve(h, 1);
    }
    std::shuffle(holders.begin(), holders.end(), rng);
    for (int h : holders) kv.remove_sequence(h);

    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> offset(-1.0f, 1.0f);
    std::vector<float> k(static_cast<std::size_t>(kv_heads * dim)), v(k.size());
    for (int length : lengths) {
      const int id = kv.add_sequence();
      ids.push_back(id);
      // Grown in steps, as decoding would, so that blocks of different sequences interleave.
      for (int n = 1; n <= length; n += 1 + length / 3) kv.reserve(id, n);
      kv.reserve(id, length);
      for (int p = 0; p < length; ++p) {
        for (auto& x : k) x = normal(rng);
        // Values with a per-position offset, so that a wrong position changes the output.
        const float shift = offset(rng);
        for (auto& x : v) {
          x = v_scale * (normal(rng) + shift);
          max_abs_v = std::max(max_abs_v, std::abs(x));
        }
        kv.write(0, id, p, k.data(), v.data());
      }
    }
    for (int id : ids) tables.push_back(kv.block_table(id));
  }

  static int total_blocks(std::span<const int> lengths) {
    int blocks = 0;
    for (int length : lengths) blocks += (length + BlockSize - 1) / BlockSize;
    return blocks;
  }
};

struct Batch {
  std::vector<std::int32_t> sequence_of_token, position;
  [[nodiscard]] std::size_t size() const { return position.size(); }
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

template <int HeadDim>
std::vector<float> run_fast(const std::vector<float>& q, int num_heads, const Batch& batch,
                            std::span<const std::span<const std::int32_t>> tables, const PagedKVLayerView& view,
                            float scale, cpu::ThreadPool& pool) {
  std::vector<float> out(batch.size() * static_cast<std::size_t>(num_heads) * HeadDim, poison);
  cpu::paged_attention<HeadDim>(q.data(), num_heads, {batch.sequence_of_token, batch.position, tables}, view, scale,
                                out.data(), pool);
  return out;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Fast against reference for one configuration, then invariance: thread counts 1, 2, 3, each
// token alone, and each sequence's tokens in chunks of 1, 7 and 64.
template <int BlockSize, int HeadDim>
void check_configuration(int num_heads, int num_kv_heads, float q_sigma, float v_scale, unsigned seed) {
  std::mt19937 rng(seed);
  const int lengths[] = {1, 17, 97, 255, 300};
  Scene<BlockSize> scene(lengths, num_kv_heads, HeadDim, v_scale, rng);
  // Decode tokens (the last position) mixed with prefill chunks that start anywhere.
  const Chunk chunks[] = {{0, 0, 0}, {1, 0, 16}, {2, 96, 96}, {3, 190, 254}, {4, 299, 299}};
  const Batch batch = make_batch(chunks, rng);
  const std::size_t row = static_cast<std::size_t>(num_heads) * HeadDim;
  const auto q = random_q(batch.size() * row, q_sigma, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HeadDim));
  const PagedKVLayerView view = scene.kv.layer_view(0);

  std::vector<float> expected(q.size(), poison);
  cpu::paged_attention_reference(q.data(), num_heads, {batch.sequence_of_token, batch.position, scene.tables}, view,
                                 scale, expected.data());
  cpu::ThreadPool pool1(1), pool2(2), pool3(3);
  const auto out = run_fast<HeadDim>(q, num_heads, batch, scene.tables, view, scale, pool1);

  double max_error = 0;
  bool finite = true, nonzero = false;
  for (std::size_t i = 0; i < out.size(); ++i) {
    finite = finite && std::isfinite(out[i]) && std::isfinite(expected[i]);
    nonzero = nonzero || out[i] != 0.0f;
    max_error = std::max(max_error, std::abs(static_cast<double>(out[i]) - expected[i]));
  }
  INFO("block size " << BlockSize << ", head_dim " << HeadDim << ", heads " << num_heads << "/" << num_kv_heads
                     << ", q sigma " << q_sigma << ", max|v| " << scene.max_abs_v << ", max error "
                     << max_error / scene.max_abs_v << " * max|v|");
  REQUIRE(finite);
  REQUIRE(nonzero);
  CHECK(max_error <= tolerance * scene.max_abs_v);

  CHECK(same_bits(out, run_fast<HeadDim>(q, num_heads, batch, scene.tables, view, scale, pool2)));
  CHECK(same_bits(out, run_fast<HeadDim>(q, num_heads, batch, scene.tables, view, scale, pool3)));

  // Each token alone.
  bool alone_identical = true;
  for (std::size_t t = 0; t < batch.size(); ++t) {
    const Batch one{{batch.sequence_of_token[t]}, {batch.position[t]}};
    const std::vector<float> q_one(q.begin() + static_cast<std::ptrdiff_t>(t * row), q.begin() + static_cast<std::ptrdiff_t>((t + 1) * row));
    const auto got = run_fast<HeadDim>(q_one, num_heads, one, scene.tables, view, scale, pool2);
    alone_identical = alone_identical && same_bits(got, std::span(out).subspan(t * row, row));
  }
  CHECK(alone_identical);

  // Each sequence on its own, its tokens in position order cut into chunks of 1, 7 and 64.
  for (std::size_t chunk_size : {std::size_t{1}, std::size_t{7}, std::size_t{64}}) {
    bool chunked_identical = true;
    for (std::int32_t s = 0; s < 5; ++s) {
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
        const auto got = run_fast<HeadDim>(q_part, num_heads, part, scene.tables, view, scale, pool3);
        for (std::size_t i = begin; i < end; ++i)
          chunked_identical = chunked_identical &&
                              same_bits(std::span(got).subspan((i - begin) * row, row), std::span(out).subspan(rows[i] * row, row));
      }
    }
    INFO("chunk size " << chunk_size);
    CHECK(chunked_identical);
  }
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

TEST_CASE("attention: fast equals the double reference, head_dim 128", "[attention]") {
  // GQA ratios 1, 2, 8; block sizes 1, 8, 16 (the default) and 32 (two tiles per block);
  // q scales giving near-uniform (0.1), moderate (1) and peaked (4) softmax weights.
  SECTION("block 16") {
    check_configuration<16, 128>(4, 4, 1.0f, 1.0f, 1);
    check_configuration<16, 128>(8, 4, 4.0f, 0.01f, 2);
    check_configuration<16, 128>(16, 2, 0.1f, 30.0f, 3);
  }
  SECTION("block 8") {
    check_configuration<8, 128>(2, 2, 4.0f, 1.0f, 4);
    check_configuration<8, 128>(4, 2, 0.1f, 3.0f, 5);
    check_configuration<8, 128>(8, 1, 1.0f, 0.5f, 6);
  }
  SECTION("block 32") {
    check_configuration<32, 128>(8, 1, 4.0f, 1.0f, 7);
    check_configuration<32, 128>(4, 2, 1.0f, 2.0f, 8);
  }
  SECTION("block 1") { check_configuration<1, 128>(4, 2, 1.0f, 1.0f, 9); }
}

TEST_CASE("attention: fast equals the double reference, head_dim 64", "[attention]") {
  check_configuration<16, 64>(2, 2, 1.0f, 1.0f, 10);
  check_configuration<16, 64>(4, 2, 4.0f, 1.0f, 11);
  check_configuration<8, 64>(16, 2, 0.1f, 1.0f, 12);
}

TEST_CASE("attention: the block table is what locates K/V", "[attention]") {
  // The same logical K/V stored in two pools with different physical block orders (the rest
  // NaN) gives the same bits; a table pointing at a NaN block makes the output NaN.
  constexpr int bs = 16, dim = 128, kv_heads = 2, heads = 4, blocks = 12;
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
  const std::span<const std::int32_t> tables_a[] = {table_a}, tables_b[] = {table_b};
  const auto out_a = run_fast<dim>(q, heads, batch, tables_a, {ka.data(), va.data(), blocks, bs, kv_heads, dim}, scale, pool);
  const auto out_b = run_fast<dim>(q, heads, batch, tables_b, {kb.data(), vb.data(), blocks, bs, kv_heads, dim}, scale, pool);
  CHECK(std::all_of(out_a.begin(), out_a.end(), [](float x) { return std::isfinite(x); }));
  CHECK(same_bits(out_a, out_b));

  // Pointing the third logical block at an unwritten (NaN) block poisons exactly the tokens that read it.
  const std::vector<std::int32_t> table_bad = {9, 2, 5, 0, 6};
  const std::span<const std::int32_t> tables_bad[] = {table_bad};
  const auto out_bad = run_fast<dim>(q, heads, batch, tables_bad, {kb.data(), vb.data(), blocks, bs, kv_heads, dim}, scale, pool);
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
  PagedKV<16> kv(1, 2, 128, 4);
  const int seq = kv.add_sequence();
  kv.reserve(seq, 20);
  const std::span<const std::int32_t> tables[] = {kv.block_table(seq)};
  std::vector<float> q(4 * 128, 0.5f), out(q.size());
  const std::int32_t seq0[] = {0}, pos19[] = {19}, pos32[] = {32}, seq1[] = {1}, pos_neg[] = {-1};
  const float scale = 0.088f;
  cpu::ThreadPool pool(1);
  const auto view = kv.layer_view(0);
  using Catch::Contains;

  CHECK_THROWS_WITH(cpu::paged_attention<64>(q.data(), 4, {seq0, pos19, tables}, view, scale, out.data(), pool),
                    Contains("head_dim 128, the kernel is compiled for 64"));
  CHECK_THROWS_WITH(cpu::paged_attention<128>(q.data(), 3, {seq0, pos19, tables}, view, scale, out.data(), pool),
                    Contains("num_heads 3 is not a positive multiple of num_kv_heads 2"));
  CHECK_THROWS_WITH(cpu::paged_attention<128>(q.data(), 4, {seq0, pos32, tables}, view, scale, out.data(), pool),
                    Contains("position 32 needs 3 blocks of 16"));
  CHECK_THROWS_WITH(cpu::paged_attention<128>(q.data(), 4, {seq1, pos19, tables}, view, scale, out.data(), pool),
                    Contains("sequence index 1, there are 1 block tables"));
  CHECK_THROWS_WITH(cpu::paged_attention<128>(q.data(), 4, {seq0, pos_neg, tables}, view, scale, out.data(), pool),
                    Contains("position -1"));
  CHECK_THROWS_WITH(cpu::paged_attention<128>(q.data(), 4, {seq0, {}, tables}, view, scale, out.data(), pool),
                    Contains("sequence_of_token has 1 entries, position has 0"));
  CHECK_THROWS_WITH(cpu::paged_attention<128>(q.data(), 4, {seq0, pos19, tables}, view, std::nanf(""), out.data(), pool),
                    Contains("scale nan is not finite"));
  const std::int32_t bad_table[] = {0, 7};
  const std::span<const std::int32_t> bad_tables[] = {bad_table};
  CHECK_THROWS_WITH(cpu::paged_attention<128>(q.data(), 4, {seq0, pos19, bad_tables}, view, scale, out.data(), pool),
                    Contains("entry 1 is block 7, the pool has 4"));
  CHECK_THROWS_AS(cpu::paged_attention_reference(q.data(), 4, {seq0, pos19, bad_tables}, view, scale, out.data()),
                  qwen::InvalidArgument);
  // An empty batch is valid and touches nothing.
  CHECK_NOTHROW(cpu::paged_attention<128>(nullptr, 4, {{}, {}, tables}, view, scale, nullptr, pool));
}
