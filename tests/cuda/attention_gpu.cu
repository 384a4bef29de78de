// Paged attention (kernels/cuda/attention.cuh) against the double-precision oracle
// kernels::cpu::paged_attention_reference on random inputs: HeadDim 128 with Group 1, 2, 4, 8 (and
// 5, Qwen3-14B's, with bf16 pools) and HeadDim 64 with Group 2, bf16 and fp32 pools. One ragged
// batch mixes decode tokens with contexts 1, 16, 17, 300 and 1100 (one position, exactly one block,
// one block and one more position, several blocks and splits), a prefill chunk of 7 tokens of one
// sequence starting at position 253 (it crosses a split boundary) and a sequence sharing its first
// 40 blocks with another; block tables are in shuffled physical order and end with an extra,
// unwritten block. Every pool slot no token may read is NaN, so a read past a token's context
// shows. Also: batch invariance bit for bit (alone, in a bigger batch, reordered, with a larger
// max_context), n_tokens = 0 (nothing enqueued: a captured graph is empty), a max_context below a
// token's context (NaN, as documented) and the host-side errors.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <qwen/kernels/cpu/attention.hpp>
#include <qwen/kernels/cuda/attention.cuh>

#include "gpu_test.cuh"

namespace {

using qwen::bf16;
using namespace qwen::test_cuda;
namespace gpu = qwen::kernels::cuda;
namespace cpu = qwen::kernels::cpu;

// Tolerances against the double oracle, the same for both pool dtypes: a bf16 pool's rounding is
// in the inputs, which the oracle gets converted to float exactly, so what remains is the fp32
// arithmetic. Inputs: q in [-2, 2], K and V in [-1, 1], scale 1 / sqrt(HeadDim), so the
// log2-scaled score terms sum to about sum |q_i k_i| * scale * log2(e) = 8.2 in magnitude
// (HeadDim 128) and |v - out| <= 2, about 0.6 on average. u = 2^-24.
//   - score: a chain of E (8 bf16, 4 fp32) FMAs per lane, then log2(lanes per row) <= 5 shuffle
//     adds, plus the rounding of q * scale * log2(e): within (8 + 4 + 1) u * 8.2 = 6.4e-6 (log2
//     units). A score error e_p moves out by ln2 * sum_p w_p e_p (v_p - out): <= 0.69 * 6.4e-6 *
//     0.6 = 2.7e-6.
//   - exp2f: 2 ulp per weight, the same argument: 0.69 * 2.4e-7 * 0.6 << 1e-6.
//   - accumulation of sum w v and sum w: per row group at most 64 positions of a split (fp32,
//     HeadDim 128: 4 row groups of 256) in up to 32 steps (Group 8: 2 rows a step), so 64 FMAs
//     and 32 rescales, then 2 + 2 merge levels in the block and up to 5 splits in the merge
//     (context 1100): a chain of about 106 roundings, relative to sum w |v| / sum w <= 1:
//     106 u = 6.3e-6 absolute; the same relative error on the sum: 6.3e-6 * |out|.
//   - the final division and the oracle's rounding to float: 1 u |out|.
// Worst case about 2.7e-6 + 6.3e-6 + 6.3e-6 |out| < 1.6e-5 for |out| <= 1; typical errors are
// random-signed and near 1e-6. Bound used: 2e-5 absolute + 2e-5 relative.
constexpr double abs_tol = 2e-5, rel_tol = 2e-5;

constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();

// A batch and the pool geometry it reads. tables[s]: physical blocks of sequence s, in logical
// order; written[s]: its positions 0 .. written[s] - 1 hold K/V (for a sequence sharing a
// prefix, the shared positions were written by the other one).
struct Scenario {
  int num_kv_heads = 0;
  int block_size = 0;
  int num_blocks = 0;
  std::vector<std::vector<std::int32_t>> tables;
  std::vector<int> written;
  std::vector<int> shared_prefix;  // positions the sequence does not write itself
  std::vector<std::int32_t> sequence_of_token, position;

  [[nodiscard]] std::int64_t n_tokens() const { return static_cast<std::int64_t>(position.size()); }
  [[nodiscard]] std::int64_t max_context() const {
    std::int64_t m = 1;
    for (std::int32_t p : position) m = std::max<std::int64_t>(m, p + 1);
    return m;
  }
  [[nodiscard]] std::vector<std::int32_t> indptr() const {
    std::vector<std::int32_t> out{0};
    for (const auto& t : tables) out.push_back(out.back() + static_cast<std::int32_t>(t.size()));
    return out;
  }
  [[nodiscard]] std::vector<std::int32_t> indices() const {
    std::vector<std::int32_t> out;
    for (const auto& t : tables) out.insert(out.end(), t.begin(), t.end());
    return out;
  }
};

// The ragged batch of the header comment, blocks handed out in a random physical order.
Scenario ragged_scenario(std::mt19937& rng, int num_kv_heads, int block_size) {
  Scenario sc;
  sc.num_kv_heads = num_kv_heads;
  sc.block_size = block_size;
  // Sequences 0..4: decode at contexts 1, 16, 17, 300, 1100. 5: a prefill chunk, positions
  // 253..259. 6: shares sequence 4's first 40 blocks, decodes at position 700.
  const std::vector<int> written = {1, 16, 17, 300, 1100, 260, 701};
  const int shared_blocks = 40;
  const auto blocks_for = [&](int positions) { return (positions + block_size - 1) / block_size; };
  std::vector<int> own(written.size());
  for (std::size_t s = 0; s < written.size(); ++s) own[s] = blocks_for(written[s]) + 1;  // + an unwritten block
  own[6] -= shared_blocks;
  const int spare = 5;  // never in a table
  sc.num_blocks = std::accumulate(own.begin(), own.end(), 0) + spare;
  std::vector<std::int32_t> physical(static_cast<std::size_t>(sc.num_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  std::size_t next = 0;
  for (std::size_t s = 0; s < written.size(); ++s) {
    std::vector<std::int32_t> table;
    if (s == 6) table.assign(sc.tables[4].begin(), sc.tables[4].begin() + shared_blocks);
    for (int b = 0; b < own[s]; ++b) table.push_back(physical[next++]);
    sc.tables.push_back(table);
  }
  sc.written = written;
  sc.shared_prefix.assign(written.size(), 0);
  sc.shared_prefix[6] = shared_blocks * block_size;

  const auto add = [&](int seq, int pos) {
    sc.sequence_of_token.push_back(seq);
    sc.position.push_back(pos);
  };
  add(0, 0);
  for (int p = 253; p < 260; ++p) add(5, p);
  add(1, 15);
  add(2, 16);
  add(6, 700);
  add(3, 299);
  add(4, 1099);
  return sc;
}

// One layer's pools in the kernel's dtype and, exactly converted, in float for the oracle.
// Unwritten slots are NaN.
template <class KV>
struct Pools {
  std::vector<KV> key, value;
  std::vector<float> key_f, value_f;
};

template <int HeadDim, class KV>
Pools<KV> make_pools(std::mt19937& rng, const Scenario& sc) {
  const std::size_t row = static_cast<std::size_t>(sc.num_kv_heads) * HeadDim;
  const std::size_t rows = static_cast<std::size_t>(sc.num_blocks) * static_cast<std::size_t>(sc.block_size);
  std::vector<float> key(rows * row, nan_f), value(rows * row, nan_f);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (std::size_t s = 0; s < sc.tables.size(); ++s)
    for (int p = sc.shared_prefix[s]; p < sc.written[s]; ++p) {
      const auto r = static_cast<std::size_t>(sc.tables[s][static_cast<std::size_t>(p / sc.block_size)]) *
                         static_cast<std::size_t>(sc.block_size) +
                     static_cast<std::size_t>(p % sc.block_size);
      for (std::size_t i = 0; i < row; ++i) {
        key[r * row + i] = dist(rng);
        value[r * row + i] = dist(rng);
      }
    }
  Pools<KV> pools;
  if constexpr (std::is_same_v<KV, float>) {
    pools.key = key;
    pools.value = value;
  } else {
    pools.key = to_bf16(key);  // NaN -> 0x7fff, a NaN again in to_float
    pools.value = to_bf16(value);
  }
  if constexpr (std::is_same_v<KV, float>) {
    pools.key_f = key;
    pools.value_f = value;
  } else {
    pools.key_f = to_float(pools.key);
    pools.value_f = to_float(pools.value);
  }
  return pools;
}

float attention_scale(int head_dim) { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }

// The oracle's output for the scenario's tokens.
template <int HeadDim, int Group, class KV>
std::vector<float> reference(const Scenario& sc, const Pools<KV>& pools, const std::vector<float>& q) {
  const int num_heads = sc.num_kv_heads * Group;
  const std::vector<std::int32_t> indptr = sc.indptr(), indices = sc.indices();
  const cpu::PagedAttentionBatch batch{sc.sequence_of_token, sc.position, indptr, indices};
  const cpu::PagedKVLayer<float> kv{pools.key_f.data(), pools.value_f.data(), sc.num_blocks, sc.block_size, sc.num_kv_heads};
  std::vector<float> out(q.size(), nan_f);
  cpu::paged_attention_reference(q.data(), num_heads, HeadDim, batch, kv, attention_scale(HeadDim), out.data());
  return out;
}

// A scenario's batch arrays, q and out on the device (out starts as NaN), and the launcher's
// arguments over them and a layer's pools.
struct DeviceBatch {
  DeviceBatch(const Scenario& sc, const std::vector<float>& q_host)
      : scenario(sc), sequence(sc.sequence_of_token), position(sc.position), indptr(sc.indptr()), indices(sc.indices()), q(q_host),
        out(q_host.size()) {}
  template <class KV>
  [[nodiscard]] gpu::PagedAttentionArgs<KV> args(const DeviceBuffer<KV>& key, const DeviceBuffer<KV>& value, std::int64_t max_context,
                                                 int head_dim) const {
    return {.q = q.data(),
            .sequence_of_token = sequence.data(),
            .position = position.data(),
            .block_table_indptr = indptr.data(),
            .block_table_indices = indices.data(),
            .key = key.data(),
            .value = value.data(),
            .out = out.data(),
            .n_tokens = scenario.n_tokens(),
            .num_kv_heads = scenario.num_kv_heads,
            .block_size = scenario.block_size,
            .num_blocks = scenario.num_blocks,
            .max_context = max_context,
            .scale = attention_scale(head_dim)};
  }
  const Scenario& scenario;
  DeviceBuffer<std::int32_t> sequence, position, indptr, indices;
  DeviceBuffer<float> q, out;
};

// The GPU's output for the scenario's tokens; workspace and output start as NaN.
template <int HeadDim, int Group, class KV>
std::vector<float> run_gpu(const Scenario& sc, const DeviceBuffer<KV>& key, const DeviceBuffer<KV>& value,
                           const std::vector<float>& q, std::int64_t max_context) {
  const DeviceBatch batch(sc, q);
  const std::int64_t bytes = gpu::paged_attention_workspace_bytes<HeadDim, Group>(sc.n_tokens(), sc.num_kv_heads, max_context);
  const DeviceBuffer<float> workspace(static_cast<std::size_t>(bytes) / sizeof(float));
  check(gpu::paged_attention<HeadDim, Group>(batch.args(key, value, max_context, HeadDim), workspace.data(), bytes, nullptr),
        "paged_attention launch");
  check(cudaDeviceSynchronize(), "paged_attention kernels");
  return batch.out.to_host();
}

void require_finite_nonzero(const std::vector<float>& v, const std::string& what) {
  INFO(what);
  CHECK(std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }));
  CHECK(std::any_of(v.begin(), v.end(), [](float x) { return x != 0.0f; }));
}

template <class KV>
const char* dtype_name() {
  return std::is_same_v<KV, float> ? "f32" : "bf16";
}

template <int HeadDim, int Group, class KV>
void check_against_reference(std::uint32_t seed, int num_kv_heads, int block_size) {
  std::mt19937 rng(seed);
  const Scenario sc = ragged_scenario(rng, num_kv_heads, block_size);
  const Pools<KV> pools = make_pools<HeadDim, KV>(rng, sc);
  const std::vector<float> q =
      random_floats(rng, static_cast<std::size_t>(sc.n_tokens() * num_kv_heads * Group * HeadDim), -2.0f, 2.0f);
  const DeviceBuffer<KV> key(pools.key), value(pools.value);
  const std::vector<float> got = run_gpu<HeadDim, Group, KV>(sc, key, value, q, sc.max_context());
  const std::vector<float> expected = reference<HeadDim, Group, KV>(sc, pools, q);
  const std::string what = "HeadDim " + std::to_string(HeadDim) + " Group " + std::to_string(Group) + " " +
                           dtype_name<KV>() + " block_size " + std::to_string(block_size);
  require_finite_nonzero(got, what);
  require_close(got, expected, abs_tol, rel_tol, what);
}

// Rows [token * row, (token + 1) * row) of v.
std::vector<float> rows_of(const std::vector<float>& v, std::size_t token, std::size_t row) {
  return {v.begin() + static_cast<std::ptrdiff_t>(token * row), v.begin() + static_cast<std::ptrdiff_t>((token + 1) * row)};
}

template <int HeadDim, int Group, class KV>
void check_batch_invariance(std::uint32_t seed) {
  std::mt19937 rng(seed);
  const Scenario sc = ragged_scenario(rng, 2, 16);
  const Pools<KV> pools = make_pools<HeadDim, KV>(rng, sc);
  const std::size_t row = static_cast<std::size_t>(sc.num_kv_heads) * Group * HeadDim;  // floats per token
  const std::vector<float> q = random_floats(rng, static_cast<std::size_t>(sc.n_tokens()) * row, -2.0f, 2.0f);
  const DeviceBuffer<KV> key(pools.key), value(pools.value);
  const std::vector<float> batch = run_gpu<HeadDim, Group, KV>(sc, key, value, q, sc.max_context());
  require_finite_nonzero(batch, "batch");

  // A larger max_context only changes the workspace layout.
  require_equal_bits(run_gpu<HeadDim, Group, KV>(sc, key, value, q, 3000), batch, "max_context 3000 vs exact");

  // The batch reversed.
  Scenario reversed = sc;
  std::reverse(reversed.sequence_of_token.begin(), reversed.sequence_of_token.end());
  std::reverse(reversed.position.begin(), reversed.position.end());
  std::vector<float> q_reversed;
  for (std::size_t t = sc.position.size(); t-- > 0;) {
    const std::vector<float> r = rows_of(q, t, row);
    q_reversed.insert(q_reversed.end(), r.begin(), r.end());
  }
  const std::vector<float> out_reversed = run_gpu<HeadDim, Group, KV>(reversed, key, value, q_reversed, sc.max_context());
  for (std::size_t t = 0; t < sc.position.size(); ++t)
    require_equal_bits(rows_of(out_reversed, sc.position.size() - 1 - t, row), rows_of(batch, t, row),
                       "token " + std::to_string(t) + " in the reversed batch");

  // Each token alone, with its own context as max_context.
  for (std::size_t t = 0; t < sc.position.size(); ++t) {
    Scenario alone = sc;
    alone.sequence_of_token = {sc.sequence_of_token[t]};
    alone.position = {sc.position[t]};
    const std::vector<float> out = run_gpu<HeadDim, Group, KV>(alone, key, value, rows_of(q, t, row), alone.max_context());
    require_equal_bits(out, rows_of(batch, t, row), "token " + std::to_string(t) + " alone");
  }
}

}  // namespace

TEST_CASE("cuda paged_attention matches the double oracle, HeadDim 128, bf16 pools", "[cuda]") {
  check_against_reference<128, 1, bf16>(11, 3, 16);
  check_against_reference<128, 2, bf16>(12, 3, 16);
  check_against_reference<128, 4, bf16>(13, 3, 16);
  check_against_reference<128, 5, bf16>(15, 2, 16);  // Qwen3-14B: 40 query heads over 8 KV heads
  check_against_reference<128, 8, bf16>(14, 3, 16);
}

TEST_CASE("cuda paged_attention matches the double oracle, HeadDim 128, f32 pools", "[cuda]") {
  check_against_reference<128, 1, float>(21, 3, 16);
  check_against_reference<128, 2, float>(22, 3, 16);
  check_against_reference<128, 4, float>(23, 3, 16);
  check_against_reference<128, 8, float>(24, 3, 16);
}

TEST_CASE("cuda paged_attention matches the double oracle, HeadDim 64", "[cuda]") {
  check_against_reference<64, 2, bf16>(31, 3, 16);
  check_against_reference<64, 2, float>(32, 3, 16);
}

TEST_CASE("cuda paged_attention with blocks that do not divide a split", "[cuda]") {
  // Block size 7: splits start inside blocks; block size 1: one table entry per position.
  check_against_reference<64, 2, bf16>(41, 2, 7);
  check_against_reference<128, 4, float>(42, 1, 7);
  check_against_reference<128, 8, bf16>(43, 2, 1);
}

TEST_CASE("cuda paged_attention is batch invariant bit for bit", "[cuda]") {
  check_batch_invariance<128, 8, bf16>(51);
  check_batch_invariance<128, 1, float>(52);
  check_batch_invariance<64, 2, bf16>(53);
}

TEST_CASE("cuda paged_attention gives NaN to a token beyond max_context", "[cuda]") {
  std::mt19937 rng(61);
  Scenario sc = ragged_scenario(rng, 2, 16);
  const Pools<bf16> pools = make_pools<128, bf16>(rng, sc);
  const DeviceBuffer<bf16> key(pools.key), value(pools.value);
  // max_context 300: positions 1099 (beyond the 2 splits it allows) and 400 (inside them, yet
  // beyond max_context) get NaN; 15 and 299 (the last position max_context allows) do not.
  sc.sequence_of_token = {4, 1, 4, 4};
  sc.position = {1099, 15, 400, 299};
  const std::vector<float> q = random_floats(rng, 4 * 2 * 4 * 128, -2.0f, 2.0f);
  const std::vector<float> out = run_gpu<128, 4, bf16>(sc, key, value, q, 300);
  const std::size_t row = 2 * 4 * 128;
  for (const std::size_t t : {std::size_t{0}, std::size_t{2}}) {
    const std::vector<float> r = rows_of(out, t, row);
    INFO("token " << t << " at position " << sc.position[t]);
    CHECK(std::all_of(r.begin(), r.end(), [](float x) { return std::isnan(x); }));
  }
  require_finite_nonzero(rows_of(out, 1, row), "the token at position 15");
  require_finite_nonzero(rows_of(out, 3, row), "the token at position 299");
}

TEST_CASE("cuda paged_attention: no tokens enqueue nothing; a step is capturable", "[cuda]") {
  std::mt19937 rng(71);
  const Scenario sc = ragged_scenario(rng, 2, 16);
  const Pools<bf16> pools = make_pools<128, bf16>(rng, sc);
  const DeviceBuffer<bf16> key(pools.key), value(pools.value);
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");

  // Captures one call on stream and returns the number of nodes it recorded.
  const auto captured_nodes = [&](const gpu::PagedAttentionArgs<bf16>& args, void* workspace, std::int64_t bytes) {
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    const cudaError_t launched = gpu::paged_attention<128, 2>(args, workspace, bytes, stream);
    cudaGraph_t graph = nullptr;
    check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    check(launched, "paged_attention launch");
    std::size_t nodes = 0;
    check(cudaGraphGetNodes(graph, nullptr, &nodes), "cudaGraphGetNodes");
    check(cudaGraphDestroy(graph), "cudaGraphDestroy");
    return nodes;
  };

  // n_tokens = 0: null arrays, q, out and workspace are fine; nothing is recorded.
  gpu::PagedAttentionArgs<bf16> empty{.key = key.data(),
                                      .value = value.data(),
                                      .n_tokens = 0,
                                      .num_kv_heads = sc.num_kv_heads,
                                      .block_size = sc.block_size,
                                      .num_blocks = sc.num_blocks,
                                      .max_context = 1,
                                      .scale = attention_scale(128)};
  CHECK(gpu::paged_attention<128, 2>(empty, nullptr, 0, stream) == cudaSuccess);
  CHECK(captured_nodes(empty, nullptr, 0) == 0);
  CHECK(gpu::paged_attention_workspace_bytes<128, 2>(0, sc.num_kv_heads, 1) == 0);

  // A real call records the split and the merge kernels and nothing else (no copy, no sync).
  const DeviceBatch batch(sc, std::vector<float>(static_cast<std::size_t>(sc.n_tokens()) * 2 * 2 * 128, 0.0f));
  const std::int64_t bytes = gpu::paged_attention_workspace_bytes<128, 2>(sc.n_tokens(), sc.num_kv_heads, sc.max_context());
  const DeviceBuffer<float> workspace(static_cast<std::size_t>(bytes) / sizeof(float));
  CHECK(captured_nodes(batch.args(key, value, sc.max_context(), 128), workspace.data(), bytes) == 2);
  check(cudaStreamDestroy(stream), "cudaStreamDestroy");
}

TEST_CASE("cuda paged_attention rejects host-visible contract violations", "[cuda]") {
  using qwen::InvalidArgument;
  std::mt19937 rng(81);
  const Scenario sc = ragged_scenario(rng, 2, 16);
  const Pools<bf16> pools = make_pools<128, bf16>(rng, sc);
  const DeviceBuffer<bf16> key(pools.key), value(pools.value);
  const DeviceBatch batch(sc, std::vector<float>(static_cast<std::size_t>(sc.n_tokens()) * 2 * 2 * 128, 0.0f));
  const std::int64_t bytes = gpu::paged_attention_workspace_bytes<128, 2>(sc.n_tokens(), sc.num_kv_heads, sc.max_context());
  const DeviceBuffer<float> workspace(static_cast<std::size_t>(bytes) / sizeof(float));
  const gpu::PagedAttentionArgs<bf16> good = batch.args(key, value, sc.max_context(), 128);
  const auto launch = [&](const gpu::PagedAttentionArgs<bf16>& args, std::int64_t workspace_bytes) {
    return gpu::paged_attention<128, 2>(args, workspace.data(), workspace_bytes, nullptr);
  };
  CHECK(launch(good, bytes) == cudaSuccess);
  check(cudaDeviceSynchronize(), "paged_attention kernels");

  CHECK_THROWS_AS(launch(good, bytes - 1), InvalidArgument);
  CHECK_THROWS_WITH(launch(good, bytes - 1), Catch::Matchers::Contains("cuda::paged_attention") &&
                                                 Catch::Matchers::Contains(std::to_string(bytes)));
  const auto with = [&](auto change) {
    gpu::PagedAttentionArgs<bf16> args = good;
    change(args);
    return args;
  };
  using Args = gpu::PagedAttentionArgs<bf16>;
  CHECK_THROWS_AS(launch(with([](Args& a) { a.n_tokens = -1; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.num_kv_heads = 0; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.block_size = 0; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.num_blocks = 0; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.max_context = 0; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.max_context = std::int64_t{1} << 31; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.scale = nan_f; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.q = nullptr; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.out = nullptr; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.key = nullptr; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.position = nullptr; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.block_table_indices = nullptr; }), bytes), InvalidArgument);
  CHECK_THROWS_AS(launch(with([](Args& a) { a.q = a.q + 1; }), bytes), InvalidArgument);  // misaligned
  CHECK_THROWS_AS((gpu::paged_attention<128, 2>(good, nullptr, bytes, nullptr)), InvalidArgument);
  CHECK_THROWS_AS((gpu::paged_attention_workspace_bytes<128, 2>(-1, 2, 100)), InvalidArgument);
  CHECK_THROWS_AS((gpu::paged_attention_workspace_bytes<128, 2>(1, 0, 100)), InvalidArgument);
  CHECK_THROWS_AS((gpu::paged_attention_workspace_bytes<128, 2>(1, 2, 0)), InvalidArgument);
  check(cudaGetLastError(), "no launch error left behind");
}
