// The forward pass against transformers: every golden checkpoint, every prompt, logits at every
// position within 1e-4 of the reference logit range (fp32 activations), and the greedy
// continuation token for token. Then batch invariance: a sequence's logits are the same alone,
// in a batch of mixed prefill and decode chunks, and with its prefill split into chunks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <qwen/backend/cpu.hpp>
#include <qwen/io/safetensors.hpp>
#include <qwen/model/forward.hpp>
#include <qwen/model/load.hpp>
#include <qwen/model/registry.hpp>

#include "golden_fixtures.hpp"

using namespace qwen;
namespace fs = std::filesystem;

namespace {

constexpr int block = 16;
constexpr int prompts = 4;

struct Reference {
  std::vector<std::int32_t> ids;
  std::vector<float> logits;  // [ids.size(), vocab]
  std::vector<std::int32_t> greedy;
};

std::vector<Reference> read_reference(std::string_view fixture) {
  const auto file = io::SafetensorsFile::open(fs::path(QWEN_GOLDEN_DIR) / "reference" / (std::string(fixture) + ".safetensors"));
  std::vector<Reference> refs;
  for (int p = 0; p < prompts; ++p) {
    const std::string prefix = "prompt" + std::to_string(p) + ".";
    Reference r;
    const TensorView ids = file.view(prefix + "input_ids");
    const TensorView greedy = file.view(prefix + "greedy");
    const TensorView logits = file.view(prefix + "logits");
    for (std::int64_t i = 0; i < ids.numel(); ++i) r.ids.push_back(static_cast<std::int32_t>(ids.as<std::int64_t>(DType::I64)[i]));
    for (std::int64_t i = 0; i < greedy.numel(); ++i)
      r.greedy.push_back(static_cast<std::int32_t>(greedy.as<std::int64_t>(DType::I64)[i]));
    const float* l = logits.as<float>(DType::F32);
    r.logits.assign(l, l + logits.numel());
    refs.push_back(std::move(r));
  }
  return refs;
}

std::int32_t argmax(const float* row, std::int64_t n) {
  return static_cast<std::int32_t>(std::max_element(row, row + n) - row);
}

// Runs f with the loaded model of a golden fixture: f.template operator()<Model>(weights, config).
template <class F>
void with_fixture(std::string_view name, F&& f) {
  const fs::path dir = testing::golden_checkpoint(name);
  const io::ModelConfig config = io::read_model_config(dir);
  dispatch_model<TestModels>(config, [&]<class Model>() {
    const auto loaded = load_checkpoint<Model>(dir, config);
    f.template operator()<Model>(loaded.weights, config);
  });
}

}  // namespace

TEST_CASE("forward: logits and greedy continuations equal transformers' on every golden checkpoint", "[forward]") {
  CpuBackend backend;
  for (const auto& fixture : testing::golden_fixtures) {
    const std::vector<Reference> refs = read_reference(fixture.name);
    with_fixture(fixture.name, [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
      Qwen3Forward<Model, CpuBackend, block> model(weights, config, backend, 64);
      for (int p = 0; p < prompts; ++p) {
        INFO("fixture " << fixture.name << ", prompt " << p);
        const Reference& ref = refs[static_cast<std::size_t>(p)];
        const int seq = model.add_sequence();
        std::vector<float> logits(ref.logits.size(), NAN);
        const SequenceChunk prompt{seq, 0, ref.ids, Logits::all};
        model.step(std::span(&prompt, 1), logits);
        REQUIRE(logits.size() == ref.logits.size());
        const auto [lo, hi] = std::minmax_element(ref.logits.begin(), ref.logits.end());
        const double tolerance = 1e-4 * (*hi - *lo);
        double worst = 0;
        for (std::size_t i = 0; i < logits.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(logits[i]) - ref.logits[i]));
        INFO("max |logit - reference| = " << worst << ", tolerance " << tolerance);
        CHECK(worst <= tolerance);

        // Greedy: the argmax of the last prompt position, then one decode step per token.
        std::vector<std::int32_t> generated{argmax(logits.data() + logits.size() - Model::vocab_size, Model::vocab_size)};
        while (generated.size() < ref.greedy.size()) {
          const SequenceChunk next{seq, model.cached_length(seq), std::span(&generated.back(), 1), Logits::last};
          model.step(std::span(&next, 1), logits);
          generated.push_back(argmax(logits.data(), Model::vocab_size));
        }
        CHECK(generated == ref.greedy);
        model.remove_sequence(seq);
      }
    });
  }
}

TEST_CASE("forward: a sequence's logits do not depend on its batch or on how its prefill is chunked", "[forward]") {
  for (const std::string_view name : {"dense_tied", "moe", "fp8"}) {
    INFO("fixture " << name);
    const std::vector<Reference> refs = read_reference(name);
    const std::vector<std::int32_t>& target = refs[3].ids;  // the ~100-token prompt
    with_fixture(name, [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
      constexpr std::int64_t vocab = Model::vocab_size;
      CpuBackend backend;
      Qwen3Forward<Model, CpuBackend, block> model(weights, config, backend, 256);

      // Alone, in one chunk.
      const int alone = model.add_sequence();
      std::vector<float> expected;
      const SequenceChunk whole{alone, 0, target, Logits::all};
      model.step(std::span(&whole, 1), expected);

      auto compare = [&](const std::vector<float>& got, const char* how) {
        INFO(how);
        REQUIRE(got.size() == expected.size());
        double worst = 0;
        for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(got[i]) - expected[i]));
        INFO("max |difference| = " << worst);
        CHECK(worst <= 1e-5);
      };

      // Chunked prefill: chunks of 1, 7 and 64 tokens.
      for (const std::size_t size : {std::size_t{1}, std::size_t{7}, std::size_t{64}}) {
        const int seq = model.add_sequence();
        std::vector<float> all, part;
        for (std::size_t begin = 0; begin < target.size(); begin += size) {
          const std::size_t count = std::min(size, target.size() - begin);
          const SequenceChunk chunk{seq, static_cast<int>(begin), std::span(target).subspan(begin, count), Logits::all};
          model.step(std::span(&chunk, 1), part);
          all.insert(all.end(), part.begin(), part.end());
        }
        compare(all, size == 1 ? "chunks of 1" : size == 7 ? "chunks of 7" : "chunks of 64");
        model.remove_sequence(seq);
      }

      // In a batch of 5: the target's full prefill beside two decode tokens and two prefill chunks,
      // one of which starts in the middle of its sequence.
      std::vector<int> others;
      std::vector<float> scratch;
      for (int p = 0; p < 3; ++p) {
        const int s = model.add_sequence();
        others.push_back(s);
        const SequenceChunk warm{s, 0, refs[static_cast<std::size_t>(p)].ids, Logits::none};
        model.step(std::span(&warm, 1), scratch);
      }
      const int fresh = model.add_sequence();
      const int target_seq = model.add_sequence();
      const std::int32_t decode_a = 5, decode_b = 17;
      const auto& mid = refs[2].ids;
      const std::vector<SequenceChunk> batch = {
          {others[0], model.cached_length(others[0]), std::span(&decode_a, 1), Logits::last},
          {others[2], 10, std::span(mid).subspan(10), Logits::all},  // re-prefill from position 10
          {target_seq, 0, target, Logits::all},
          {others[1], model.cached_length(others[1]), std::span(&decode_b, 1), Logits::last},
          {fresh, 0, refs[1].ids, Logits::last},
      };
      std::vector<float> batched;
      model.step(batch, batched);
      const std::int64_t first = (1 + static_cast<std::int64_t>(mid.size() - 10)) * vocab;
      compare(std::vector<float>(batched.begin() + first, batched.begin() + first + static_cast<std::int64_t>(target.size()) * vocab),
              "in a batch of 5");
    });
  }
}

TEST_CASE("forward: bad steps are errors naming the chunk, and change nothing", "[forward]") {
  with_fixture("dense_tied", [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
    CpuBackend backend(1);
    Qwen3Forward<Model, CpuBackend, block> model(weights, config, backend, 4);  // 64 positions
    const int seq = model.add_sequence();
    std::vector<float> logits;
    const std::vector<std::int32_t> ok = {1, 2, 3}, bad = {1, 512, 3}, negative = {-1};
    auto step1 = [&](const SequenceChunk& c) { model.step(std::span(&c, 1), logits); };
    CHECK_THROWS_WITH(step1({seq, 0, bad}), Catch::Contains("token id 512 at index 1 is outside the vocabulary [0, 512)"));
    CHECK_THROWS_WITH(step1({seq, 0, negative}), Catch::Contains("token id -1"));
    CHECK_THROWS_WITH(step1({seq, 0, {}}), Catch::Contains("chunk 0 (sequence 0): no tokens"));
    CHECK_THROWS_WITH(step1({seq, 2, ok}), Catch::Contains("start position 2 but the cache holds 0 positions"));
    CHECK_THROWS_WITH(step1({seq + 7, 0, ok}), Catch::Contains("sequence 7 does not exist"));
    const std::vector<std::int32_t> long_prompt(513, 1);
    CHECK_THROWS_WITH(step1({seq, 0, long_prompt}), Catch::Contains("positions up to 513 exceed max_position_embeddings 512"));
    const std::vector<std::int32_t> too_many(65, 1);
    CHECK_THROWS_WITH(step1({seq, 0, too_many}), Catch::Contains("needs 5 more blocks of 16 positions, 4 are free"));
    const std::vector<SequenceChunk> twice = {{seq, 0, ok}, {seq, 0, ok}};
    CHECK_THROWS_WITH(model.step(twice, logits), Catch::Contains("chunk 1 (sequence 0): the sequence appears twice"));
    CHECK(model.cached_length(seq) == 0);
    CHECK(model.kv_cache().num_free_blocks() == 4);
    CHECK_NOTHROW(step1({seq, 0, ok}));
    CHECK(model.cached_length(seq) == 3);
  });
}
