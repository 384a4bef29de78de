// Weight binding: a checkpoint's tensors → Weights<Model>. The expected tensor list is written
// out here independently of the binder (names and shapes from transformers' modeling_qwen3).
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <qwen/io/checkpoint.hpp>
#include <qwen/io/checkpoint_config.hpp>
#include <qwen/io/safetensors_writer.hpp>
#include <qwen/model/load.hpp>
#include <qwen/model/registry.hpp>
#include <qwen/model/weights.hpp>

#include "golden_fixtures.hpp"
#include "scratch_dir.hpp"

using namespace qwen;
namespace fs = std::filesystem;
using testing::ScratchDir;
using io::json;

namespace {

using DenseBf16 = Qwen3Model<Dense, shapes::TinyDense, bf16>;
using TiedBf16 = Qwen3Model<Dense, shapes::TinyDenseTied, bf16>;
using DenseFp8 = Qwen3Model<Dense, shapes::TinyDense, fp8>;
using MoeBf16 = Qwen3Model<MoE, shapes::TinyMoE, bf16>;
using MoeFp8 = Qwen3Model<MoE, shapes::TinyMoE, fp8>;  // in this test only: no golden fixture has it

struct Spec {
  std::string name;
  DType dtype;
  Shape shape;
};

// The tensors a Hugging Face checkpoint of TinyDense / TinyMoE holds; FP8 block scales in `scale`.
std::vector<Spec> expected_tensors(bool moe, bool tied, bool fp8, DType scale = DType::BF16) {
  const std::int64_t vocab = 512, hidden = 128, heads = 2, kv_heads = 1, head_dim = 128, inter = 192;
  std::vector<Spec> t;
  auto linear = [&](const std::string& p, std::int64_t out, std::int64_t in) {
    if (fp8) {
      t.push_back({p + ".weight", DType::F8_E4M3, {out, in}});
      t.push_back({p + ".weight_scale_inv", scale, {(out + 127) / 128, (in + 127) / 128}});
    } else {
      t.push_back({p + ".weight", DType::BF16, {out, in}});
    }
  };
  t.push_back({"model.embed_tokens.weight", DType::BF16, {vocab, hidden}});
  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    t.push_back({p + ".input_layernorm.weight", DType::BF16, {hidden}});
    t.push_back({p + ".post_attention_layernorm.weight", DType::BF16, {hidden}});
    linear(p + ".self_attn.q_proj", heads * head_dim, hidden);
    linear(p + ".self_attn.k_proj", kv_heads * head_dim, hidden);
    linear(p + ".self_attn.v_proj", kv_heads * head_dim, hidden);
    linear(p + ".self_attn.o_proj", hidden, heads * head_dim);
    t.push_back({p + ".self_attn.q_norm.weight", DType::BF16, {head_dim}});
    t.push_back({p + ".self_attn.k_norm.weight", DType::BF16, {head_dim}});
    if (moe) {
      t.push_back({p + ".mlp.gate.weight", DType::BF16, {8, hidden}});
      for (int e = 0; e < 8; ++e) {
        const std::string x = p + ".mlp.experts." + std::to_string(e);
        linear(x + ".gate_proj", 64, hidden);
        linear(x + ".up_proj", 64, hidden);
        linear(x + ".down_proj", hidden, 64);
      }
    } else {
      linear(p + ".mlp.gate_proj", inter, hidden);
      linear(p + ".mlp.up_proj", inter, hidden);
      linear(p + ".mlp.down_proj", hidden, inter);
    }
  }
  t.push_back({"model.norm.weight", DType::BF16, {hidden}});
  if (!tied) t.push_back({"lm_head.weight", DType::BF16, {vocab, hidden}});
  return t;
}

// Writes the specs with random bytes into dir/model.safetensors; returns the bytes per tensor.
std::vector<std::vector<std::byte>> write_checkpoint(const fs::path& dir, const std::vector<Spec>& specs) {
  std::mt19937 rng(1234);
  std::vector<std::vector<std::byte>> data;
  std::vector<io::NamedTensor> named;
  data.reserve(specs.size());  // views point into data: no reallocation
  for (const Spec& s : specs) {
    auto& bytes = data.emplace_back(static_cast<std::size_t>(element_count(s.shape)) * dtype_size(s.dtype));
    for (auto& b : bytes) b = static_cast<std::byte>(rng() & 0x3f);  // finite values in every dtype
    named.emplace_back(s.name, TensorView(bytes.data(), s.dtype, s.shape));
  }
  io::write_safetensors(dir / "model.safetensors", named);
  return data;
}

template <class Model>
void check_bind_fails(std::vector<Spec> specs, const std::function<void(std::vector<Spec>&)>& mutate, const std::string& message) {
  mutate(specs);
  ScratchDir dir("weights-fail");
  (void)write_checkpoint(dir.path(), specs);
  const io::Checkpoint checkpoint = io::Checkpoint::open(dir.path());
  CHECK_THROWS_AS(bind_weights<Model>(checkpoint), WeightError);
  CHECK_THROWS_WITH(bind_weights<Model>(checkpoint), Catch::Contains(message));
}

// The message of the WeightError bind_weights<Model> throws on dir's checkpoint.
template <class Model>
std::string bind_error(const fs::path& dir) {
  const io::Checkpoint checkpoint = io::Checkpoint::open(dir);
  try {
    (void)bind_weights<Model>(checkpoint);
  } catch (const WeightError& e) {
    return e.what();
  }
  FAIL("bound without error");
  return {};
}

}  // namespace

TEST_CASE("weights: a complete dense checkpoint binds, zero-copy, every tensor where it belongs", "[weights]") {
  const auto specs = expected_tensors(false, false, false);
  ScratchDir dir("weights-dense");
  const auto data = write_checkpoint(dir.path(), specs);
  const io::Checkpoint checkpoint = io::Checkpoint::open(dir.path());
  const Weights<DenseBf16> weights = bind_weights<DenseBf16>(checkpoint);
  REQUIRE(weights.layers.size() == 2);
  CHECK_FALSE(weights.lm_head_tied);
  CHECK(weights.layers[1].self_attn.q_proj.weight.shape == Shape{256, 128});
  CHECK(weights.layers[1].mlp.down_proj.weight.shape == Shape{128, 192});
  CHECK_FALSE(weights.layers[0].mlp.gate_proj.block_fp8());
  // The views are the file's bytes, in place: compare contents with what was written.
  auto same_bytes = [&](const TensorView& v, const std::string& name) {
    for (std::size_t i = 0; i < specs.size(); ++i)
      if (specs[i].name == name) return std::equal(data[i].begin(), data[i].end(), v.data, v.data + v.nbytes());
    return false;
  };
  CHECK(same_bytes(weights.embed_tokens, "model.embed_tokens.weight"));
  CHECK(same_bytes(weights.lm_head, "lm_head.weight"));
  CHECK(same_bytes(weights.layers[1].self_attn.k_norm, "model.layers.1.self_attn.k_norm.weight"));
  CHECK(same_bytes(weights.layers[0].mlp.up_proj.weight, "model.layers.0.mlp.up_proj.weight"));
  CHECK(same_bytes(weights.norm, "model.norm.weight"));
}

TEST_CASE("weights: tied lm_head falls back to embed_tokens; MoE binds per-expert tensors; FP8 pairs", "[weights]") {
  {
    ScratchDir dir("weights-tied");
    (void)write_checkpoint(dir.path(), expected_tensors(false, true, false));
    const io::Checkpoint checkpoint = io::Checkpoint::open(dir.path());
    const auto weights = bind_weights<TiedBf16>(checkpoint);
    CHECK(weights.lm_head_tied);
    CHECK(weights.lm_head.data == weights.embed_tokens.data);
  }
  {
    ScratchDir dir("weights-moe");
    (void)write_checkpoint(dir.path(), expected_tensors(true, false, false));
    const io::Checkpoint checkpoint = io::Checkpoint::open(dir.path());
    const auto weights = bind_weights<MoeBf16>(checkpoint);
    REQUIRE(weights.layers[1].mlp.experts.size() == 8);
    CHECK(weights.layers[1].mlp.router.shape == Shape{8, 128});
    CHECK(weights.layers[1].mlp.experts[7].down_proj.weight.shape == Shape{128, 64});
  }
  {
    ScratchDir dir("weights-fp8");
    (void)write_checkpoint(dir.path(), expected_tensors(false, false, true));
    const io::Checkpoint checkpoint = io::Checkpoint::open(dir.path());
    const auto weights = bind_weights<DenseFp8>(checkpoint);
    const LinearWeight& gate = weights.layers[0].mlp.gate_proj;
    REQUIRE(gate.block_fp8());
    CHECK(gate.weight.dtype == DType::F8_E4M3);
    CHECK(gate.scale_inv->dtype == DType::BF16);
    CHECK(gate.scale_inv->shape == Shape{2, 1});  // ceil(192/128) x ceil(128/128)
    CHECK(weights.layers[0].mlp.down_proj.scale_inv->shape == Shape{1, 2});
    CHECK(weights.lm_head.dtype == DType::BF16);  // lm_head is never quantized
    // The bf16 model type does not accept FP8 tensors.
    CHECK_THROWS_WITH(bind_weights<DenseBf16>(checkpoint),
                      Catch::Contains("has dtype F8_E4M3, expected BF16") || Catch::Contains("unexpected tensor"));
  }
}

TEST_CASE("weights: FP8 block scales stored as F32 bind as F32", "[weights]") {
  ScratchDir dir("weights-fp8-f32");
  (void)write_checkpoint(dir.path(), expected_tensors(false, false, true, DType::F32));
  const io::Checkpoint checkpoint = io::Checkpoint::open(dir.path());
  const auto weights = bind_weights<DenseFp8>(checkpoint);
  for (const auto& layer : weights.layers) {
    for (const LinearWeight* w : {&layer.self_attn.q_proj, &layer.self_attn.k_proj, &layer.self_attn.v_proj, &layer.self_attn.o_proj,
                                  &layer.mlp.gate_proj, &layer.mlp.up_proj, &layer.mlp.down_proj}) {
      REQUIRE(w->block_fp8());
      CHECK(w->weight.dtype == DType::F8_E4M3);
      CHECK(w->scale_inv->dtype == DType::F32);
    }
  }
  CHECK(weights.layers[1].self_attn.o_proj.scale_inv->shape == Shape{1, 2});
  CHECK(reinterpret_cast<std::uintptr_t>(weights.layers[1].mlp.up_proj.scale_inv->data) % 4 == 0);
}

TEST_CASE("weights: an FP8 MoE checkpoint binds every expert's weight and block scales", "[weights]") {
  ScratchDir dir("weights-moe-fp8");
  (void)write_checkpoint(dir.path(), expected_tensors(true, false, true));
  const io::Checkpoint checkpoint = io::Checkpoint::open(dir.path());
  const auto weights = bind_weights<MoeFp8>(checkpoint);
  REQUIRE(weights.layers.size() == 2);
  for (const auto& layer : weights.layers) {
    CHECK(layer.mlp.router.dtype == DType::BF16);  // the router is never quantized
    CHECK(layer.mlp.router.shape == Shape{8, 128});
    REQUIRE(layer.mlp.experts.size() == 8);
    for (const MlpWeights& e : layer.mlp.experts) {
      REQUIRE(e.gate_proj.block_fp8());
      REQUIRE(e.down_proj.block_fp8());
      CHECK(e.gate_proj.weight.shape == Shape{64, 128});
      CHECK(e.gate_proj.scale_inv->shape == Shape{1, 1});
      CHECK(e.down_proj.weight.shape == Shape{128, 64});
      CHECK(e.down_proj.scale_inv->shape == Shape{1, 1});
    }
    CHECK(layer.self_attn.q_proj.scale_inv->shape == Shape{2, 1});
  }
  CHECK(weights.lm_head.dtype == DType::BF16);
  // An expert that lost its scale is F8 where BF16 is expected: never silently unscaled.
  auto specs = expected_tensors(true, false, true);
  std::erase_if(specs, [](const Spec& x) { return x.name == "model.layers.1.mlp.experts.5.up_proj.weight_scale_inv"; });
  check_bind_fails<MoeFp8>(specs, [](std::vector<Spec>&) {}, "tensor 'model.layers.1.mlp.experts.5.up_proj.weight' has dtype F8_E4M3");
}

TEST_CASE("weights: missing, mis-shaped, mistyped and unexpected tensors are named, file first", "[weights]") {
  const auto dense = expected_tensors(false, false, false);
  auto erase = [](const std::string& name) {
    return [name](std::vector<Spec>& s) { std::erase_if(s, [&](const Spec& x) { return x.name == name; }); };
  };
  auto modify = [](const std::string& name, std::function<void(Spec&)> f) {
    return [name, f](std::vector<Spec>& s) {
      for (Spec& x : s)
        if (x.name == name) f(x);
    };
  };
  check_bind_fails<DenseBf16>(dense, erase("model.layers.1.self_attn.v_proj.weight"),
                              "missing tensor 'model.layers.1.self_attn.v_proj.weight' (expected BF16 [128, 128]");
  check_bind_fails<DenseBf16>(dense, erase("lm_head.weight"), "missing tensor 'lm_head.weight' (expected BF16 [512, 128]");
  check_bind_fails<DenseBf16>(dense, modify("model.layers.0.mlp.up_proj.weight", [](Spec& s) { s.shape = {128, 192}; }),
                              "model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' has shape [128, 192], expected [192, 128]");
  check_bind_fails<DenseBf16>(dense, modify("model.norm.weight", [](Spec& s) { s.dtype = DType::F16; }),
                              "model.safetensors: tensor 'model.norm.weight' has dtype F16, expected BF16");
  check_bind_fails<DenseBf16>(
      dense, [](std::vector<Spec>& s) { s.push_back({"model.layers.2.mlp.up_proj.weight", DType::BF16, {4}}); },
      "1 unexpected tensor not used by Qwen3<Dense, TinyDense, bf16>: 'model.layers.2.mlp.up_proj.weight'");

  // Every message starts with the file (or, for a missing tensor, the directory).
  {
    ScratchDir dir("weights-file-first");
    auto specs = dense;
    modify("model.norm.weight", [](Spec& s) { s.dtype = DType::F16; })(specs);
    (void)write_checkpoint(dir.path(), specs);
    CHECK_THAT(bind_error<DenseBf16>(dir.path()), Catch::StartsWith((dir / "model.safetensors").string() + ": tensor "));
    erase("model.norm.weight")(specs);
    (void)write_checkpoint(dir.path(), specs);
    CHECK_THAT(bind_error<DenseBf16>(dir.path()), Catch::StartsWith(dir.path().string() + ": missing tensor "));
  }

  const auto quantized = expected_tensors(false, false, true);
  check_bind_fails<DenseFp8>(quantized,
                             modify("model.layers.0.self_attn.o_proj.weight_scale_inv", [](Spec& s) { s.shape = {1, 1}; }),
                             "has shape [1, 1], expected [1, 2]");
  check_bind_fails<DenseFp8>(quantized,
                             modify("model.layers.0.self_attn.o_proj.weight_scale_inv", [](Spec& s) { s.dtype = DType::I32; }),
                             "has dtype I32, expected BF16 or F32 [1, 2]");
  // A quantized weight that lost its scale is F8 where BF16 is expected: never silently unscaled.
  check_bind_fails<DenseFp8>(quantized, erase("model.layers.1.mlp.down_proj.weight_scale_inv"),
                             "model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' has dtype F8_E4M3, expected BF16");
}

TEST_CASE("weights: a tied checkpoint may carry lm_head.weight only as a copy of embed_tokens", "[weights]") {
  auto specs = expected_tensors(false, false, false);  // untied: has lm_head.weight
  ScratchDir dir("weights-stray-head");
  {
    // Byte-identical to embed_tokens: accepted and ignored (transformers ties them after loading).
    auto data = write_checkpoint(dir.path(), specs);
    const std::size_t embed = 0, head = specs.size() - 1;
    REQUIRE(specs[embed].name == "model.embed_tokens.weight");
    REQUIRE(specs[head].name == "lm_head.weight");
    std::vector<io::NamedTensor> named;
    for (std::size_t i = 0; i < specs.size(); ++i)
      named.emplace_back(specs[i].name, TensorView(data[i == head ? embed : i].data(), specs[i].dtype, specs[i].shape));
    io::write_safetensors(dir / "model.safetensors", named);
    const io::Checkpoint checkpoint = io::Checkpoint::open(dir.path());
    const auto weights = bind_weights<TiedBf16>(checkpoint);
    CHECK(weights.lm_head_tied);
    CHECK(weights.lm_head.data == weights.embed_tokens.data);
    CHECK(weights.lm_head.data != checkpoint.view("lm_head.weight").data);
  }
  // Different bytes: the file and tie_word_embeddings disagree about the model.
  (void)write_checkpoint(dir.path(), specs);
  CHECK_THAT(bind_error<TiedBf16>(dir.path()),
             Catch::StartsWith((dir / "model.safetensors").string() + ": tensor 'lm_head.weight' (BF16 [512, 128]) differs from "
                                                                       "'model.embed_tokens.weight'") &&
                 Catch::Contains("tie_word_embeddings true"));
  // A different shape or dtype too.
  check_bind_fails<TiedBf16>(specs, [](std::vector<Spec>& s) { s.back().shape = {511, 128}; }, "'lm_head.weight' (BF16 [511, 128]) differs");
  check_bind_fails<TiedBf16>(specs, [](std::vector<Spec>& s) { s.back().dtype = DType::F16; }, "'lm_head.weight' (F16 [512, 128]) differs");
}

TEST_CASE("weights: golden_fixtures.hpp agrees with the \"expect\" fields of tests/golden/reference", "[weights][golden]") {
  std::set<std::string> listed;
  for (const auto& f : testing::golden_fixtures) {
    INFO("fixture " << f.name);
    listed.insert(std::string(f.name));
    const json expect = io::read_json_file(testing::golden_reference(f.name)).at("expect");
    for (const auto& [key, value] : expect.items()) {
      INFO("expect." << key << " = " << value.dump());
      if (key == "arch") CHECK(value == f.arch);
      else if (key == "shape") CHECK(value == f.shape);
      else if (key == "dtype") CHECK(value == f.dtype);
      else if (key == "tie") CHECK(value == f.tie);
      else if (key == "sharded") CHECK(value == f.sharded);
      else if (key == "rope_scaling") {
        CHECK(value.at("rope_type") == "yarn");
        CHECK(value.at("factor") == f.yarn_factor);
        CHECK(value.at("original_max_position_embeddings") == f.yarn_original_max_position_embeddings);
        CHECK(value.size() == 3);
      } else if (key == "weight_block_size") CHECK(value == json::array({f.weight_block_size, f.weight_block_size}));
      else FAIL("golden_fixtures.hpp has no field for expect." << key);
    }
    // Fields the table sets must be stated by "expect" too.
    CHECK(expect.value("sharded", false) == f.sharded);
    CHECK(expect.contains("rope_scaling") == (f.yarn_factor != 0));
    CHECK(expect.contains("weight_block_size") == (f.weight_block_size != 0));
    // The type name is the one these fields describe.
    const std::string shape = std::string(f.shape) + (f.tie && f.arch == "Dense" ? "Tied" : "");
    CHECK(f.type == "Qwen3<" + std::string(f.arch) + ", " + shape + ", " + std::string(f.dtype) + ">");
  }
  std::set<std::string> on_disk;
  for (const auto& e : fs::directory_iterator(fs::path(QWEN_GOLDEN_DIR) / "reference"))
    if (e.path().extension() == ".json") on_disk.insert(e.path().stem().string());
  CHECK(on_disk == listed);
}

TEST_CASE("weights: every golden checkpoint loads as its type", "[weights]") {
  for (const auto& f : testing::golden_fixtures) {
    INFO("fixture " << f.name);
    const fs::path dir = testing::golden_checkpoint(f.name);
    REQUIRE(fs::exists(dir / "config.json"));
    const io::ModelConfig config = io::read_model_config(dir);
    const std::string loaded = dispatch_model<TestModels>(config, [&]<class Model>() {
      const auto checkpoint = load_checkpoint<Model>(dir, config);
      CHECK(checkpoint.weights.layers.size() == 2);
      CHECK(checkpoint.generation.has_value());
      CHECK(checkpoint.tokenizer.has_value());
      CHECK(std::string(Model::Arch::name) == f.arch);
      CHECK(Model::weight_traits::name == f.dtype);
      CHECK(Model::tie_word_embeddings == f.tie);
      CHECK(checkpoint.weights.lm_head_tied == f.tie);
      return Model::name();
    });
    CHECK(loaded == f.type);
    CHECK(config.yarn.has_value() == (f.yarn_factor != 0));
    CHECK(io::Checkpoint::open(dir).is_sharded() == f.sharded);
    if (f.sharded) CHECK(io::Checkpoint::open(dir).files().size() == 2);
  }
}

TEST_CASE("weights: a config.json without a dtype dispatches on the tensors' dtype", "[weights]") {
  ScratchDir dir("weights-no-dtype", testing::golden_checkpoint("dense_untied"));  // fp32 weights
  json config = io::read_json_file(dir / "config.json");
  REQUIRE(config.erase("torch_dtype") + config.erase("dtype") == 1);
  testing::write_file(dir / "config.json", config.dump(2));
  const io::ModelConfig plain = io::read_model_config(dir.path());
  CHECK_FALSE(plain.dtype);
  CHECK_THROWS_WITH(dispatch_model<TestModels>(plain, []<class M>() {}), Catch::Contains("states no dtype"));

  const io::ModelConfig c = io::read_checkpoint_config(dir.path());
  CHECK(c.dtype == "float32");
  CHECK(c.dtype_inferred);
  const std::string type = dispatch_model<TestModels>(c, [&]<class Model>() {
    const auto loaded = load_checkpoint<Model>(dir.path(), c);
    CHECK(loaded.weights.embed_tokens.dtype == DType::F32);
    return Model::name();
  });
  CHECK(type == "Qwen3<Dense, TinyDense, fp32>");  // not the bf16 type listed before it
  // A mismatch names the inferred dtype as such.
  CHECK_THROWS_WITH(validate_config<DenseBf16>(c),
                    Catch::Contains("field 'dtype (inferred from model.embed_tokens.weight)' is float32, expected bfloat16"));
  // A config that states its dtype is returned as read.
  CHECK_FALSE(io::read_checkpoint_config(testing::golden_checkpoint("dense_tied")).dtype_inferred);
  // bf16 and f16 tensors name their dtype too; fp8 checkpoints keep embed_tokens in bf16.
  CHECK(io::config_dtype_name(DType::BF16) == "bfloat16");
  CHECK(io::config_dtype_name(DType::F16) == "float16");
  CHECK(io::config_dtype_name(DType::F8_E4M3).empty());
  // No embed_tokens to ask: an error naming the tensor.
  fs::remove(dir / "model.safetensors");
  std::vector<float> one{1.0f};
  io::write_safetensors(dir / "model.safetensors", std::vector<io::NamedTensor>{{"x", TensorView(one.data(), DType::F32, {1})}});
  CHECK_THROWS_WITH(io::read_checkpoint_config(dir.path()), Catch::Contains("has no tensor 'model.embed_tokens.weight'"));
}
