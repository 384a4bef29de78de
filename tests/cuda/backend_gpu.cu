// The forward pass on the CUDA backend (backend/cuda.hpp) against transformers, on the dense
// golden checkpoints (tests/golden), the same references the CPU forward pass meets; the MoE
// and FP8 checkpoints refused with "not yet supported on CUDA"; a mixed batch against each
// sequence run alone; the backend's own errors.
//
// Tolerances (logits at every prompt position, as a fraction of the reference's logit range):
//   bf16 weights (dense_tied, yarn, sharded), CudaBackend: 1e-2. The reference ran transformers
//     in fp32 on the bf16 weights; here every projection's input is rounded to bf16 (relative
//     error up to 2^-9 per element, about 2^-9 / sqrt(3) on average and independent between
//     elements) and K/V are stored in bf16. Each rounding perturbs a projection's output by
//     about 2^-9 of its magnitude; through the 2-4 layers of the tiny models and the final
//     norm that stays below a few 1e-3 of the logit range, 1e-2 leaves a margin of about 3. The
//     greedy continuation is checked teacher-forced with near-ties allowed (forward_reference.hpp).
//   fp32 weights (dense_untied), BasicCudaBackend<float> (fp32 KV, fp32 cuBLAS GEMMs without
//     TF32): 1e-4 and the free-running greedy continuation, exactly as the CPU forward pass.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <qwen/backend/cuda.hpp>
#include <qwen/engine/step_model.hpp>
#include <qwen/kv/block_manager.hpp>
#include <qwen/model/forward.hpp>

#include "../forward_reference.hpp"
#include "../golden_models.hpp"
#include "gpu_test.cuh"

using namespace qwen;

namespace {

static_assert(BackendFor<CudaBackend, Qwen3Model<Dense, shapes::TinyDenseTied, bf16>, testing::forward_block>);
static_assert(BackendFor<BasicCudaBackend<float>, Qwen3Model<Dense, shapes::TinyDense, float>, testing::forward_block>);
// The engine sizes a CUDA KV pool in bf16, two bytes an element.
static_assert(CudaBackend::kv_element_bytes() == 2);
static_assert(BasicCudaBackend<float>::kv_element_bytes() == 4);
static_assert(BackendFusesQkNormRope<CudaBackend, Qwen3Model<Dense, shapes::TinyDense, bf16>, testing::forward_block>);

std::vector<testing::Reference> read_reference(std::string_view fixture) { return testing::read_golden_reference(fixture); }

template <class F>
void with_fixture(std::string_view name, F&& f) {
  testing::with_golden_fixture(name, std::forward<F>(f));
}

const testing::ReferenceTolerance bf16_tolerance{.logit_fraction = 1e-2, .near_ties_allowed = true};
const testing::ReferenceTolerance fp32_tolerance{.logit_fraction = 1e-4, .near_ties_allowed = false};

}  // namespace

// One backend for the three models in turn: each is loaded after the previous one is freed, so
// its host tensors may reuse the same addresses; a placement that matched tensors across models
// by host address would hand the later model the earlier one's weights.
TEST_CASE("cuda backend: the dense bf16 golden checkpoints against transformers", "[cuda][backend]") {
  CudaBackend backend;
  for (const std::string_view name : {"dense_tied", "yarn", "sharded"}) {
    const auto refs = read_reference(name);
    with_fixture(name, [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
      if constexpr (!Model::is_moe && std::is_same_v<typename Model::WeightType, bf16>) {
        testing::Runner<Model, CudaBackend> run(weights, config, backend, 64);
        testing::check_against_reference(run, refs, name, bf16_tolerance);
      } else {
        FAIL(name << " loaded as " << Model::name() << ", expected a dense bf16 type");
      }
    });
  }
}

// The bundled demo model (models/demo): a trained checkpoint whose greedy answers are sharp, so
// its continuations on the GPU are a text-level check ("58 + 27 = 85" style answers), at the
// bf16 tolerance above.
TEST_CASE("cuda backend: the demo checkpoint against transformers", "[cuda][backend][demo]") {
  const std::filesystem::path dir = QWEN_DEMO_CHECKPOINT;
  const auto refs = testing::read_reference(std::filesystem::path(QWEN_DEMO_TEST_DIR) / "reference.safetensors", 4);  // make_reference.py's 4
  const io::ModelConfig config = io::read_checkpoint_config(dir);
  using Demo = Qwen3Model<Dense, shapes::Demo, bf16>;
  const auto loaded = load_checkpoint<Demo>(dir, config);
  CudaBackend backend;
  testing::Runner<Demo, CudaBackend> run(loaded.weights, config, backend, 64);
  testing::check_against_reference(run, refs, "demo", bf16_tolerance);
}

TEST_CASE("cuda backend: the fp32 golden checkpoint against transformers, as close as the cpu", "[cuda][backend]") {
  BasicCudaBackend<float> backend;
  const auto refs = read_reference("dense_untied");
  with_fixture("dense_untied", [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
    if constexpr (!Model::is_moe && std::is_same_v<typename Model::WeightType, float>) {
      testing::Runner<Model, BasicCudaBackend<float>> run(weights, config, backend, 64);
      testing::check_against_reference(run, refs, "dense_untied", fp32_tolerance);
    } else {
      FAIL("dense_untied loaded as " << Model::name() << ", expected fp32 weights");
    }
  });
}

TEST_CASE("cuda backend: MoE and FP8 checkpoints are refused before any weight is placed", "[cuda][backend]") {
  CudaBackend backend;
  for (const std::string_view name : {"moe", "fp8"}) {
    with_fixture(name, [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
      if constexpr (Model::is_moe || std::is_same_v<typename Model::WeightType, fp8>) {
        CHECK_THROWS_WITH((testing::Runner<Model, CudaBackend>(weights, config, backend, 64)), Catch::Contains("not yet supported on CUDA"));
        CHECK(backend.placed_weight_bytes() == 0);
      } else {
        FAIL(name << " loaded as " << Model::name());
      }
    });
  }
}

// Each sequence of a mixed step (a decode, a chunk of a prefill, a fresh prefill) against its run
// alone. Not bit for bit on CUDA: cuBLAS may pick another algorithm (another summation order)
// for another number of rows. Tolerance 1e-3 of the logit range: the same roundings, in
// another order, are far below the bf16 tolerance above.
TEST_CASE("cuda backend: a sequence's logits in a mixed batch match its run alone", "[cuda][backend]") {
  CudaBackend backend;
  with_fixture("dense_tied", [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
    if constexpr (!Model::is_moe && std::is_same_v<typename Model::WeightType, bf16>) {
      const std::vector<std::int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
      const std::vector<std::int32_t> b = {40, 41, 42, 43, 44, 45, 46};
      const std::vector<std::int32_t> c = {7, 7, 7, 100, 200, 300, 400, 500, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};

      // Alone: a in two chunks (17 then 3 tokens, last logits), b whole, c whole.
      testing::Runner<Model, CudaBackend> alone(weights, config, backend, 64);
      std::vector<float> ignored, a_alone, b_alone, c_alone;
      const int sa = alone.books.add_sequence(), sb = alone.books.add_sequence(), sc = alone.books.add_sequence();
      alone.step({sa, 0, std::span(a).first(17), Logits::none}, ignored);
      alone.step({sa, 17, std::span(a).subspan(17), Logits::last}, a_alone);
      alone.step({sb, 0, b, Logits::last}, b_alone);
      alone.step({sc, 0, c, Logits::last}, c_alone);

      // Together: the first chunk of a alone, then a's second chunk, b and c in one step.
      testing::Runner<Model, CudaBackend> mixed(weights, config, backend, 64);
      const int ma = mixed.books.add_sequence(), mb = mixed.books.add_sequence(), mc = mixed.books.add_sequence();
      mixed.step({ma, 0, std::span(a).first(17), Logits::none}, ignored);
      const std::vector<SequenceChunk> step = {
          {mb, 0, b, Logits::last}, {ma, 17, std::span(a).subspan(17), Logits::last}, {mc, 0, c, Logits::last}};
      std::vector<float> together;
      mixed.step(step, together);
      REQUIRE(together.size() == 3 * static_cast<std::size_t>(Model::vocab_size));

      const auto [lo, hi] = std::minmax_element(c_alone.begin(), c_alone.end());
      const double limit = 1e-3 * (*hi - *lo);
      auto row = [&](int r) { return std::vector<float>(together.begin() + r * Model::vocab_size, together.begin() + (r + 1) * Model::vocab_size); };
      test_cuda::require_close(row(0), b_alone, limit, 0, "b in the mixed step");
      test_cuda::require_close(row(1), a_alone, limit, 0, "a's second chunk in the mixed step");
      test_cuda::require_close(row(2), c_alone, limit, 0, "c in the mixed step");
    }
  });
}

TEST_CASE("cuda backend: clear errors for a missing device index, an oversized plan and a broken one", "[cuda][backend]") {
  int devices = 0;
  REQUIRE(cudaGetDeviceCount(&devices) == cudaSuccess);
  CHECK_THROWS_WITH(CudaBackend(CudaBackendOptions{.device = devices}), Catch::Contains("does not exist"));
  CHECK_THROWS_AS(CudaBackend(CudaBackendOptions{.device = -1}), InvalidArgument);

  CudaBackend backend;
  with_fixture("dense_tied", [&]<class Model>(const Weights<Model>& weights, const io::ModelConfig& config) {
    if constexpr (!Model::is_moe && std::is_same_v<typename Model::WeightType, bf16>) {
      // A KV cache larger than any device: the error names the KV cache and the device's memory,
      // and comes before any weight is uploaded (Qwen3Forward places its weights last).
      CHECK_THROWS_WITH((testing::Runner<Model, CudaBackend>(weights, config, backend, 1 << 30)), Catch::Contains("KV cache"));
      CHECK(backend.placed_weight_bytes() == 0);
      testing::Runner<Model, CudaBackend> run(weights, config, backend, 64, 8);  // at most 8 tokens a step
      const int s = run.books.add_sequence();
      const std::vector<std::int32_t> nine(9, 1);
      std::vector<float> logits;
      CHECK_THROWS_AS(run.step({s, 0, nine, Logits::last}, logits), InvalidArgument);

      // A kernel cannot throw, so prepare() checks on the host what the CPU backend's ops check
      // as they go. Each plan below is a valid one with one entry broken; each must be refused
      // naming the entry, and the valid plan must still run afterwards.
      const std::vector<std::int32_t> prompt = {3, 1, 4, 1, 5};
      plan_step(run.books, std::vector<SequenceChunk>{{s, 0, prompt, Logits::last}}, run.model.limits(), run.plan);
      const StepPlan good = run.plan;
      const auto refused = [&](auto&& change, const char* message) {
        StepPlan bad = good;
        change(bad);
        INFO(message);
        CHECK_THROWS_WITH(run.model.run(bad, logits), Catch::Contains(message));
      };
      refused([](StepPlan& p) { p.tokens[2] = Model::vocab_size; }, "outside the vocabulary");
      refused([](StepPlan& p) { p.tokens[0] = -1; }, "outside the vocabulary");
      refused([&](StepPlan& p) { p.kv_slot[1] = 64 * testing::forward_block; }, "KV slot");
      refused([](StepPlan& p) { p.kv_slot[1] = -2; }, "KV slot");
      refused([](StepPlan& p) { p.logit_rows[0] = 5; }, "logit row");
      refused([](StepPlan& p) { p.positions.pop_back(); }, "positions");
      refused([](StepPlan& p) { p.sequence_of_token[0] = 1; }, "sequence index");
      refused([](StepPlan& p) { p.positions[4] = 10 * testing::forward_block; }, "needs");
      refused([](StepPlan& p) { p.block_table_indices[0] = 64; }, "the pool has");
      refused([](StepPlan& p) { p.block_copies.push_back({0, 64}); }, "block copy");
      run.model.run(good, logits);
      CHECK(logits.size() == static_cast<std::size_t>(Model::vocab_size));
      CHECK(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
    }
  });
}
