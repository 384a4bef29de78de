// The forward pass against transformers: every golden checkpoint, every prompt, logits at every
// position within 1e-4 of the reference logit range (fp32 activations), and the greedy
// continuation token for token -- with each KV cache dtype against the reference computed with
// that cache: fp32 KV against transformers' fp32 run, bf16 KV (the default) against the same run
// with keys and values rounded to bf16 (tests/golden/make_kv_bf16_reference.py), within
// testing::golden_tolerance(dtype) (golden_fixtures.hpp derives the bf16 one; there greedy is
// teacher-forced with near-ties allowed). Then batch invariance: EVERY sequence of a mixed batch (decodes,
// re-prefills, fresh prefills, prefills in chunks of 1, 7 and 64, prefixes shared through the
// books, forks written copy-on-write) gets bit for bit the logits of its run alone.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <qwen/backend/cpu.hpp>
#include <qwen/io/safetensors.hpp>
#include <qwen/kv/block_manager.hpp>
#include <qwen/model/cpu_model_of.hpp>
#include <qwen/model/forward.hpp>
#include <qwen/model/step.hpp>
#include <qwen/model/load.hpp>
#include <qwen/model/registry.hpp>
#include <qwen/io/checkpoint_config.hpp>

#include "counting_allocator.hpp"
#include "forward_reference.hpp"
#include "golden_fixtures.hpp"
#include "golden_models.hpp"

using namespace qwen;
namespace fs = std::filesystem;

namespace {

constexpr int block = testing::forward_block;
constexpr int prompts = 4;
using testing::argmax;
using testing::Reference;
template <class Model>
using Runner = testing::Runner<Model, CpuBackend>;

std::vector<Reference> read_reference(std::string_view fixture, KVCacheDType kv = KVCacheDType::fp32) {
  return testing::read_golden_reference(fixture, kv);
}
constexpr KVCacheDType kv_dtypes[] = {KVCacheDType::fp32, KVCacheDType::bf16};

template <class F>
void with_fixture(std::string_view name, F&& f) {
  testing::with_golden_fixture(name, std::forward<F>(f));
}

}  // namespace

TEST_CASE("forward: logits and greedy continuations equal transformers' on every golden checkpoint", "[forward]") {
  for (const KVCacheDType kv : kv_dtypes) {
    CpuBackend backend(0, kv);
    for (const auto& fixture : testing::golden_fixtures) {
      const std::vector<Reference> refs = read_reference(fixture.name, kv);
      with_fixture(fixture.name, [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
        static_assert(BackendFor<CpuBackend, Model, block>);
        Runner<Model> run(weights, config, backend, 64);
        testing::check_against_reference(run, refs, std::string(fixture.name) + ", " + std::string(to_string(kv)) + " KV cache",
                                         testing::golden_tolerance(kv));
      });
    }
  }
}

// Each cache fails the other cache's check, so the check above tells them apart: with a bf16
// cache the logits are further than the fp32 tolerance (in the max) from transformers' fp32 run,
// with an fp32 cache further than the bf16 tolerance in the mean from the bf16-KV run. The CPU
// backend's default cache is bf16.
TEST_CASE("forward: each KV cache fails the other cache's reference check", "[forward]") {
  CHECK(CpuBackend().kv_cache_dtype() == KVCacheDType::bf16);
  for (const KVCacheDType kv : kv_dtypes) {
    const KVCacheDType other = kv == KVCacheDType::bf16 ? KVCacheDType::fp32 : KVCacheDType::bf16;
    CpuBackend backend(0, kv);
    for (const auto& fixture : testing::golden_fixtures) {
      const std::vector<Reference> refs = read_reference(fixture.name, other);
      with_fixture(fixture.name, [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
        Runner<Model> run(weights, config, backend, 64);
        for (std::size_t p = 0; p < refs.size(); ++p) {
          INFO(fixture.name << ", " << to_string(kv) << " KV cache against the " << to_string(other) << "-KV reference, prompt " << p);
          const int seq = run.books.add_sequence();
          std::vector<float> logits;
          run.step({seq, 0, refs[p].ids, Logits::all}, logits);
          const testing::LogitDistance d = testing::logit_distance(logits, refs[p].logits);
          INFO("max |difference| " << d.max / d.range << ", mean " << d.mean / d.range << " of the range");
          if (kv == KVCacheDType::bf16)
            CHECK(d.max > testing::golden_tolerance(other).logit_fraction * d.range);
          else
            CHECK(d.mean > testing::golden_tolerance(other).mean_fraction * d.range);
          run.books.free_sequence(seq);
        }
      });
    }
  }
}

// The bundled demo model (models/demo, trained by models/demo/train.py; its reference by
// tests/demo/make_reference.py), loaded as the tools load it: config.json -> qwen::ToolModels.
TEST_CASE("forward: the demo checkpoint's logits and greedy continuations equal transformers'", "[forward][demo]") {
  const fs::path dir = QWEN_DEMO_CHECKPOINT;
  const io::ModelConfig config = io::read_checkpoint_config(dir);
  for (const KVCacheDType kv : kv_dtypes) {
    const std::vector<Reference> refs = testing::read_reference(
        fs::path(QWEN_DEMO_TEST_DIR) / (kv == KVCacheDType::bf16 ? "reference.kv_bf16.safetensors" : "reference.safetensors"), prompts);
    CpuBackend backend(0, kv);
    dispatch_model<DemoModels>(config, [&]<class Model>() {
      static_assert(std::is_same_v<Model, Qwen3Model<Dense, shapes::Demo, bf16>>);
      const auto loaded = load_checkpoint<Model>(dir, config);
      Runner<Model> run(loaded.weights, config, backend, 64);
      testing::check_against_reference(run, refs, "demo, " + std::string(to_string(kv)) + " KV cache", testing::golden_tolerance(kv));
    });
  }
  CHECK(dispatch_model<ToolModels>(config, []<class Model>() { return Model::name(); }) == "Qwen3<Dense, Demo, bf16>");
}

// CpuModel (model/cpu_model.hpp) is the typed forward pass behind a virtual interface: the same
// logits bit for bit, the checkpoint's facts, and the loader's errors.
TEST_CASE("forward: a CpuModel gives the typed forward pass's logits bit for bit and says what it loaded", "[forward][demo]") {
  const fs::path dir = QWEN_DEMO_CHECKPOINT;
  const std::vector<Reference> refs = testing::read_reference(fs::path(QWEN_DEMO_TEST_DIR) / "reference.safetensors", prompts);
  using Demo = Qwen3Model<Dense, shapes::Demo, bf16>;
  const CpuModelOptions options{.forward = {.max_tokens = 64, .max_sequences = 4, .kv_blocks = 24, .max_logit_rows = 32}, .threads = 2};
  const std::unique_ptr<CpuModel> model = load_cpu_model_as<DemoModels>(dir, options);
  CHECK(model->name() == "Qwen3<Dense, Demo, bf16>");
  CHECK(model->isa() == CpuBackend::isa());
  CHECK(model->config().hidden_size == shapes::Demo::hidden_size);
  CHECK(model->eos_token_ids() == std::vector<std::int64_t>{1000, 1000, 998});  // config.json's, then generation_config.json's
  CHECK(model->kv_blocks() == 24);
  // The default cache is bf16: two bytes an element.
  CHECK(model->kv_bytes_per_token() == std::int64_t{shapes::Demo::num_layers} * 2 * shapes::Demo::num_kv_heads * shapes::Demo::head_dim * 2);
  CHECK(model->limits().vocab_size == shapes::Demo::vocab_size);
  CHECK(model->limits().max_logit_rows == 32);
  REQUIRE(model->pool() != nullptr);
  CHECK(model->pool()->size() == 2);

  const io::ModelConfig config = io::read_checkpoint_config(dir);
  const auto loaded = load_checkpoint<Demo>(dir, config);
  CpuBackend backend(2);
  Runner<Demo> typed(loaded.weights, config, backend, 24);
  BlockManager<cpu_model_block_size> books(model->kv_blocks());
  StepPlan plan;
  for (std::size_t p = 0; p < refs.size(); ++p) {
    INFO("prompt " << p);
    const int a = typed.books.add_sequence(), b = books.add_sequence();
    std::vector<float> want, got;
    typed.step({a, 0, refs[p].ids, Logits::all}, want);
    const SequenceChunk chunk{b, 0, refs[p].ids, Logits::all};
    plan_step(books, std::span(&chunk, 1), model->limits(), plan);
    model->run(plan, got);
    REQUIRE(got.size() == refs[p].ids.size() * static_cast<std::size_t>(shapes::Demo::vocab_size));
    CHECK(got == want);
    typed.books.free_sequence(a);
    books.free_sequence(b);
  }

  // A checkpoint of a type outside the list, and options the forward pass cannot be built with.
  CHECK_THROWS_WITH(load_cpu_model_as<DemoModels>(testing::golden_checkpoint("dense_tied"), options),
                    Catch::Contains("matches no compiled Qwen3 type; the closest is Qwen3<Dense, Demo, bf16>"));
  CpuModelOptions no_kv = options;
  no_kv.forward.kv_blocks = 0;
  CHECK_THROWS_WITH(load_cpu_model_as<DemoModels>(dir, no_kv), Catch::Contains("kv_blocks 0"));
}

namespace {

// One sequence's part in the batch test: the chunks it runs, step by step, and the logits they
// return, compared with the same chunks run alone.
struct Part {
  std::string what;
  int seq = -1;
  std::vector<std::int32_t> tokens;  // every token the sequence is given, in order
  int begin = 0;                     // position of tokens[0]
  std::size_t chunk = 1;             // tokens per step
  Logits logits = Logits::all;
  std::size_t done = 0;              // tokens run so far
  std::vector<float> got;            // logits returned so far, in order
};

}  // namespace

TEST_CASE("forward: every sequence of a mixed batch gets the logits of its run alone, bit for bit", "[forward]") {
  for (const std::string_view name : {"dense_tied", "moe", "fp8", "dense_untied"}) {
    INFO("fixture " << name);
    const std::vector<Reference> refs = read_reference(name);
    with_fixture(name, [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
      CpuBackend backend;
      Runner<Model> run(weights, config, backend, 160);
      const auto& p0 = refs[0].ids;
      const auto& p1 = refs[1].ids;
      const auto& p2 = refs[2].ids;
      const auto& target = refs[3].ids;  // the ~100-token prompt
      std::vector<float> scratch;

      // Sequences with a history: p0 and p2 prefilled, a fork of the target's first 40 tokens.
      auto prefilled = [&](const std::vector<std::int32_t>& ids, std::size_t count) {
        const int s = run.books.add_sequence();
        run.step({s, 0, std::span(ids).first(count), Logits::none}, scratch);
        return s;
      };
      const int decoder = prefilled(p0, p0.size());
      const int rewriter = prefilled(p2, p2.size());
      const int parent = prefilled(target, 40);
      const int child = run.books.fork(parent);
      // A sequence that reuses the target's first full blocks through the prefix cache.
      const int sharer = run.books.add_sequence();
      const int matched = run.books.match_prefix(sharer, std::span(target).first(target.size() - 1));
      REQUIRE(matched == 32);  // the full blocks of `parent` (40 tokens: 2 full blocks of 16)

      std::vector<Part> parts;
      auto add = [&](std::string what, int seq, std::vector<std::int32_t> tokens, int begin, std::size_t chunk, Logits l) {
        parts.push_back({std::move(what), seq, std::move(tokens), begin, chunk, l, 0, {}});
      };
      std::vector<std::int32_t> decode_tokens;
      for (int i = 0; i < 9; ++i) decode_tokens.push_back((i * 37 + 5) % Model::vocab_size);
      add("decodes after p0", decoder, decode_tokens, static_cast<int>(p0.size()), 1, Logits::last);
      add("re-prefill of p2 from position 10", rewriter, std::vector<std::int32_t>(p2.begin() + 10, p2.end()), 10, 64, Logits::all);
      add("fresh prefill of the target in chunks of 7", run.books.add_sequence(), target, 0, 7, Logits::all);
      add("fresh prefill of p1 in chunks of 1", run.books.add_sequence(), p1, 0, 1, Logits::all);
      add("fresh prefill of the target in one chunk of 64 and the rest", run.books.add_sequence(), target, 0, 64, Logits::all);
      add("the target after its cached prefix", sharer, std::vector<std::int32_t>(target.begin() + matched, target.end()), matched, 64,
          Logits::all);
      // Parent and child diverge inside the shared partly-filled block (positions 32..39 shared).
      std::vector<std::int32_t> other(target.begin() + 36, target.end());
      for (auto& t : other) t = (t + 11) % Model::vocab_size;
      add("the parent continuing the target", parent, std::vector<std::int32_t>(target.begin() + 40, target.end()), 40, 7, Logits::all);
      add("the fork rewriting from position 36 with other tokens", child, other, 36, 7, Logits::all);

      // Run all parts together until each is done: every step has a different mix.
      for (bool busy = true; busy;) {
        std::vector<SequenceChunk> chunks;
        std::vector<Part*> in_step;
        for (Part& p : parts) {
          if (p.done == p.tokens.size()) continue;
          const std::size_t count = std::min(p.chunk, p.tokens.size() - p.done);
          chunks.push_back({p.seq, p.begin + static_cast<int>(p.done), std::span(p.tokens).subspan(p.done, count), p.logits});
          in_step.push_back(&p);
        }
        busy = !chunks.empty();
        if (!busy) break;
        std::vector<float> logits;
        run.step(chunks, logits);
        std::size_t row = 0;
        for (std::size_t c = 0; c < chunks.size(); ++c) {
          const std::size_t rows = chunks[c].logits == Logits::all ? chunks[c].tokens.size() : 1;
          Part& p = *in_step[c];
          p.got.insert(p.got.end(), logits.begin() + static_cast<std::ptrdiff_t>(row * Model::vocab_size),
                       logits.begin() + static_cast<std::ptrdiff_t>((row + rows) * Model::vocab_size));
          row += rows;
          p.done += chunks[c].tokens.size();
        }
      }

      // Each part alone, in a fresh cache: its history first, then its tokens one step at a time
      // in the same chunks (decodes) or in one prefill (the rest).
      for (const Part& p : parts) {
        INFO(p.what);
        Runner<Model> alone(weights, config, backend, 64);
        const int s = alone.books.add_sequence();
        std::vector<std::int32_t> history;
        if (p.seq == decoder) history = p0;
        if (p.seq == rewriter) history.assign(p2.begin(), p2.begin() + 10);
        if (p.seq == sharer || p.seq == parent) history.assign(target.begin(), target.begin() + p.begin);
        if (p.seq == child) history.assign(target.begin(), target.begin() + 36);
        if (!history.empty()) alone.step({s, 0, history, Logits::none}, scratch);
        std::vector<float> expected, part;
        if (p.logits == Logits::last) {
          for (std::size_t i = 0; i < p.tokens.size(); ++i) {
            alone.step({s, p.begin + static_cast<int>(i), std::span(p.tokens).subspan(i, 1), Logits::last}, part);
            expected.insert(expected.end(), part.begin(), part.end());
          }
        } else {
          alone.step({s, p.begin, p.tokens, Logits::all}, expected);
        }
        REQUIRE(p.got.size() == expected.size());
        double worst = 0;
        for (std::size_t i = 0; i < expected.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(p.got[i]) - expected[i]));
        INFO("max |difference| = " << worst);
        CHECK(worst == 0.0);  // every weight dtype: the same instructions per token, whatever the batch
      }
    });
  }
}

TEST_CASE("forward: bad steps are errors naming the chunk, and change nothing", "[forward]") {
  with_fixture("dense_tied", [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
    CpuBackend backend(1);
    Runner<Model> run(weights, config, backend, 4, 128);  // 64 positions
    const int seq = run.books.add_sequence();
    std::vector<float> logits;
    const std::vector<std::int32_t> ok = {1, 2, 3}, bad = {1, 512, 3}, negative = {-1};
    auto step1 = [&](const SequenceChunk& c) { run.step(c, logits); };
    CHECK_THROWS_WITH(step1({seq, 0, bad}), Catch::Contains("token id 512 at index 1 is outside the vocabulary [0, 512)"));
    CHECK_THROWS_WITH(step1({seq, 0, negative}), Catch::Contains("token id -1"));
    CHECK_THROWS_WITH(step1({seq, 0, {}}), Catch::Contains("chunk 0 (sequence 0): no tokens"));
    CHECK_THROWS_WITH(step1({seq, 2, ok}), Catch::Contains("start position 2 but the cache holds 0 positions"));
    CHECK_THROWS_WITH(step1({seq + 7, 0, ok}), Catch::Contains("chunk 0 (sequence 7): the sequence does not exist"));
    const std::vector<std::int32_t> long_prompt(513, 1);
    CHECK_THROWS_WITH(step1({seq, 0, long_prompt}), Catch::Contains("positions up to 513 exceed max_position_embeddings 512"));
    const std::vector<std::int32_t> too_many(65, 1);
    CHECK_THROWS_WITH(step1({seq, 0, too_many}), Catch::Contains("needs 5 more blocks of 16 positions, 4 are free"));
    const std::vector<std::int32_t> too_long(129, 1);
    CHECK_THROWS_WITH(step1({seq, 0, too_long}), Catch::Contains("129 tokens up to chunk 0, the forward pass was built for at most 128"));
    const std::vector<SequenceChunk> twice = {{seq, 0, ok}, {seq, 0, ok}};
    CHECK_THROWS_WITH(run.step(twice, logits), Catch::Contains("chunk 1 (sequence 0): the sequence appears twice"));
    CHECK(run.books.length(seq) == 0);
    CHECK(run.books.num_free_blocks() == 4);
    CHECK_NOTHROW(step1({seq, 0, ok}));
    CHECK(run.books.length(seq) == 3);
    // A full cache: a rewrite reuses the blocks its own cut returns (a cut to 16 returns three);
    // a rewrite of the last position returns none, so another sequence gets none.
    const std::vector<std::int32_t> full(64, 2);
    CHECK_NOTHROW(step1({seq, 3, std::span(full).subspan(3)}));
    CHECK(run.books.num_free_blocks() == 0);
    CHECK_NOTHROW(step1({seq, 0, full}));
    CHECK_NOTHROW(step1({seq, 16, std::span(full).subspan(16)}));
    const int other = run.books.add_sequence();
    CHECK_THROWS_WITH(run.step(std::vector<SequenceChunk>{{seq, 63, std::span(full).subspan(63)}, {other, 0, ok}}, logits),
                      Catch::Contains("chunk 1 (sequence 1): the KV cache needs 1 more blocks of 16 positions, 0 are free"));
    CHECK_THROWS_WITH(Runner<Model>(weights, config, backend, 0), Catch::Contains("kv_blocks 0"));
  });
}

TEST_CASE("forward: once built, a step's run allocates nothing", "[forward]") {
  for (const std::string_view name : {"dense_tied", "moe", "fp8"}) {
    INFO("fixture " << name);
    const std::vector<Reference> refs = read_reference(name);
    with_fixture(name, [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
      CpuBackend backend(2);
      Runner<Model> run(weights, config, backend, 64);
      const int a = run.books.add_sequence(), b = run.books.add_sequence();
      std::vector<float> logits;
      logits.reserve(static_cast<std::size_t>(256 * Model::vocab_size));
      run.step({a, 0, refs[0].ids, Logits::last}, logits);
      // A mixed step: a decode beside a prefill with every row's logits, then a decode alone.
      const std::int32_t next = 7;
      const std::vector<SequenceChunk> mixed = {{a, run.books.length(a), std::span(&next, 1), Logits::last},
                                                {b, 0, refs[3].ids, Logits::all}};
      plan_step(run.books, mixed, run.model.limits(), run.plan);
      const std::int64_t before = testing::allocation_count();
      run.model.run(run.plan, logits);
      const std::int64_t during_mixed = testing::allocation_count() - before;
      const SequenceChunk decode{b, run.books.length(b), std::span(&next, 1), Logits::last};
      plan_step(run.books, std::span(&decode, 1), run.model.limits(), run.plan);
      const std::int64_t before_decode = testing::allocation_count();
      run.model.run(run.plan, logits);
      const std::int64_t during_decode = testing::allocation_count() - before_decode;
      // A prefill long enough for the Linear kernel's many-token path (its per-thread scratch was
      // allocated by CpuBackend's constructor).
      const int c = run.books.add_sequence();
      std::vector<std::int32_t> long_prompt(200);
      for (std::size_t i = 0; i < long_prompt.size(); ++i) long_prompt[i] = static_cast<std::int32_t>((i * 31 + 5) % Model::vocab_size);
      REQUIRE(static_cast<std::int64_t>(long_prompt.size()) > kernels::cpu::linear_detail::widen_min_tokens);
      const SequenceChunk prefill{c, 0, long_prompt, Logits::last};
      plan_step(run.books, std::span(&prefill, 1), run.model.limits(), run.plan);
      const std::int64_t before_prefill = testing::allocation_count();
      run.model.run(run.plan, logits);
      CHECK(during_mixed == 0);
      CHECK(during_decode == 0);
      CHECK(testing::allocation_count() - before_prefill == 0);
      CHECK(logits.size() == static_cast<std::size_t>(Model::vocab_size));
      CHECK(std::isfinite(logits[0]));
    });
  }
}
