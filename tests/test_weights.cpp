// Weight binding: a checkpoint's tensors → Weights<Model>. The expected tensor list is written
// out here independently of the binder (names and shapes from transformers' modeling_qwen3).
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <qwen/io/checkpoint.hpp>
#include <qwen/io/safetensors_writer.hpp>
#include <qwen/model/load.hpp>
#include <qwen/model/registry.hpp>
#include <qwen/model/weights.hpp>

#include "golden_fixtures.hpp"

using namespace qwen;
namespace fs = std::filesystem;

namespace {

using DenseBf16 = Qwen3Model<Dense, shapes::TinyDense, bf16>;
using TiedBf16 = Qwen3Model<Dense, shapes::TinyDenseTied, bf16>;
using DenseFp8 = Qwen3Model<Dense, shapes::TinyDense, fp8>;
using MoeBf16 = Qwen3Model<MoE, shapes::TinyMoE, bf16>;

struct Spec {
  std::string name;
  DType dtype;
  Shape shape;
};

// The tensors a Hugging Face checkpoint of TinyDense / TinyMoE holds.
std::vector<Spec> expected_tensors(bool moe, bool tied, bool fp8) {
  const std::int64_t vocab = 512, hidden = 128, heads = 2, kv_heads = 1, head_dim = 128, inter = 192;
  std::vector<Spec> t;
  auto linear = [&](const std::string& p, std::int64_t out, std::int64_t in) {
    if (fp8) {
      t.push_back({p + ".weight", DType::F8_E4M3, {out, in}});
      t.push_back({p + ".weight_scale_inv", DType::BF16, {(out + 127) / 128, (in + 127) / 128}});
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
struct Written {
  fs::path dir;
  std::vector<std::vector<std::byte>> data;
};
Written write_checkpoint(const std::vector<Spec>& specs, const std::string& tag) {
  Written w;
  w.dir = fs::temp_directory_path() / ("qwen-test-weights-" + tag + "-" + std::to_string(::getpid()));
  fs::remove_all(w.dir);
  fs::create_directories(w.dir);
  std::mt19937 rng(1234);
  std::vector<io::NamedTensor> named;
  for (const Spec& s : specs) {
    auto& bytes = w.data.emplace_back(static_cast<std::size_t>(element_count(s.shape)) * dtype_size(s.dtype));
    for (auto& b : bytes) b = static_cast<std::byte>(rng() & 0x3f);  // finite values in every dtype
    named.emplace_back(s.name, TensorView(bytes.data(), s.dtype, s.shape));
  }
  io::write_safetensors(w.dir / "model.safetensors", named);
  return w;
}

template <class Model>
void check_bind_fails(std::vector<Spec> specs, const std::function<void(std::vector<Spec>&)>& mutate, const std::string& tag,
                      const std::string& message) {
  mutate(specs);
  const Written w = write_checkpoint(specs, tag);
  const io::Checkpoint checkpoint = io::Checkpoint::open(w.dir);
  CHECK_THROWS_AS(bind_weights<Model>(checkpoint), WeightError);
  CHECK_THROWS_WITH(bind_weights<Model>(checkpoint), Catch::Contains(message));
  fs::remove_all(w.dir);
}

}  // namespace

TEST_CASE("weights: a complete dense checkpoint binds, zero-copy, every tensor where it belongs", "[weights]") {
  const auto specs = expected_tensors(false, false, false);
  const Written w = write_checkpoint(specs, "dense");
  const io::Checkpoint checkpoint = io::Checkpoint::open(w.dir);
  const Weights<DenseBf16> weights = bind_weights<DenseBf16>(checkpoint);
  REQUIRE(weights.layers.size() == 2);
  CHECK_FALSE(weights.lm_head_tied);
  CHECK(weights.layers[1].self_attn.q_proj.weight.shape == Shape{256, 128});
  CHECK(weights.layers[1].mlp.down_proj.weight.shape == Shape{128, 192});
  CHECK_FALSE(weights.layers[0].mlp.gate_proj.block_fp8());
  // The views are the file's bytes, in place: compare contents with what was written.
  auto same_bytes = [&](const TensorView& v, const std::string& name) {
    for (std::size_t i = 0; i < specs.size(); ++i)
      if (specs[i].name == name) return std::equal(w.data[i].begin(), w.data[i].end(), v.data, v.data + v.nbytes());
    return false;
  };
  CHECK(same_bytes(weights.embed_tokens, "model.embed_tokens.weight"));
  CHECK(same_bytes(weights.lm_head, "lm_head.weight"));
  CHECK(same_bytes(weights.layers[1].self_attn.k_norm, "model.layers.1.self_attn.k_norm.weight"));
  CHECK(same_bytes(weights.layers[0].mlp.up_proj.weight, "model.layers.0.mlp.up_proj.weight"));
  CHECK(same_bytes(weights.norm, "model.norm.weight"));
  fs::remove_all(w.dir);
}

TEST_CASE("weights: tied lm_head falls back to embed_tokens; MoE binds per-expert tensors; FP8 pairs", "[weights]") {
  {
    const Written w = write_checkpoint(expected_tensors(false, true, false), "tied");
    const io::Checkpoint checkpoint = io::Checkpoint::open(w.dir);
    const auto weights = bind_weights<TiedBf16>(checkpoint);
    CHECK(weights.lm_head_tied);
    CHECK(weights.lm_head.data == weights.embed_tokens.data);
    fs::remove_all(w.dir);
  }
  {
    const Written w = write_checkpoint(expected_tensors(true, false, false), "moe");
    const io::Checkpoint checkpoint = io::Checkpoint::open(w.dir);
    const auto weights = bind_weights<MoeBf16>(checkpoint);
    REQUIRE(weights.layers[1].mlp.experts.size() == 8);
    CHECK(weights.layers[1].mlp.router.shape == Shape{8, 128});
    CHECK(weights.layers[1].mlp.experts[7].down_proj.weight.shape == Shape{128, 64});
    fs::remove_all(w.dir);
  }
  {
    const Written w = write_checkpoint(expected_tensors(false, false, true), "fp8");
    const io::Checkpoint checkpoint = io::Checkpoint::open(w.dir);
    const auto weights = bind_weights<DenseFp8>(checkpoint);
    const LinearWeight& gate = weights.layers[0].mlp.gate_proj;
    REQUIRE(gate.block_fp8());
    CHECK(gate.weight.dtype == DType::F8_E4M3);
    CHECK(gate.scale_inv->shape == Shape{2, 1});  // ceil(192/128) x ceil(128/128)
    CHECK(weights.layers[0].mlp.down_proj.scale_inv->shape == Shape{1, 2});
    CHECK(weights.lm_head.dtype == DType::BF16);  // lm_head is never quantized
    // The bf16 model type does not accept FP8 tensors.
    CHECK_THROWS_WITH(bind_weights<DenseBf16>(checkpoint),
                      Catch::Contains("has dtype F8_E4M3, expected BF16") || Catch::Contains("unexpected tensor"));
    fs::remove_all(w.dir);
  }
}

TEST_CASE("weights: missing, mis-shaped, mistyped and unexpected tensors are named", "[weights]") {
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
  check_bind_fails<DenseBf16>(dense, erase("model.layers.1.self_attn.v_proj.weight"), "missing",
                              "missing tensor 'model.layers.1.self_attn.v_proj.weight' (expected BF16 [128, 128]");
  check_bind_fails<DenseBf16>(dense, erase("lm_head.weight"), "nohead", "missing tensor 'lm_head.weight' (expected BF16 [512, 128]");
  check_bind_fails<DenseBf16>(dense, modify("model.layers.0.mlp.up_proj.weight", [](Spec& s) { s.shape = {128, 192}; }),
                              "shape", "tensor 'model.layers.0.mlp.up_proj.weight' in ");
  check_bind_fails<DenseBf16>(dense, modify("model.layers.0.mlp.up_proj.weight", [](Spec& s) { s.shape = {128, 192}; }),
                              "shape2", "has shape [128, 192], expected [192, 128]");
  check_bind_fails<DenseBf16>(dense, modify("model.norm.weight", [](Spec& s) { s.dtype = DType::F16; }), "dtype",
                              "tensor 'model.norm.weight' in ");
  check_bind_fails<DenseBf16>(dense, modify("model.norm.weight", [](Spec& s) { s.dtype = DType::F16; }), "dtype2",
                              "has dtype F16, expected BF16");
  check_bind_fails<DenseBf16>(
      dense, [](std::vector<Spec>& s) { s.push_back({"model.layers.2.mlp.up_proj.weight", DType::BF16, {4}}); }, "extra",
      "1 unexpected tensor not used by Qwen3<Dense, TinyDense, bf16>: 'model.layers.2.mlp.up_proj.weight'");
  // A tied model with a stray lm_head.weight is reported, not silently ignored.
  check_bind_fails<TiedBf16>(dense, [](std::vector<Spec>&) {}, "stray", "'lm_head.weight'");

  const auto quantized = expected_tensors(false, false, true);
  check_bind_fails<DenseFp8>(quantized,
                             modify("model.layers.0.self_attn.o_proj.weight_scale_inv", [](Spec& s) { s.shape = {1, 1}; }),
                             "scale", "has shape [1, 1], expected [1, 2]");
  check_bind_fails<DenseFp8>(quantized,
                             modify("model.layers.0.self_attn.o_proj.weight_scale_inv", [](Spec& s) { s.dtype = DType::I32; }),
                             "scaletype", "has dtype I32, expected BF16 or F32 [1, 2]");
  // A quantized weight that lost its scale is F8 where BF16 is expected: never silently unscaled.
  check_bind_fails<DenseFp8>(quantized, erase("model.layers.1.mlp.down_proj.weight_scale_inv"), "noscale",
                             "tensor 'model.layers.1.mlp.down_proj.weight' in ");
}

TEST_CASE("weights: every golden checkpoint loads as its type", "[weights]") {
  for (const auto& [name, type] : testing::golden_fixtures) {
    INFO("fixture " << name);
    const fs::path dir = testing::golden_checkpoint(name);
    REQUIRE(fs::exists(dir / "config.json"));
    const io::ModelConfig config = io::read_model_config(dir);
    const std::string loaded = dispatch_model<TestModels>(config, [&]<class Model>() {
      const auto checkpoint = load_checkpoint<Model>(dir, config);
      CHECK(checkpoint.weights.layers.size() == 2);
      CHECK(checkpoint.generation.has_value());
      CHECK(checkpoint.tokenizer.has_value());
      return Model::name();
    });
    CHECK(loaded == type);
    if (name == "yarn") CHECK(config.yarn.has_value());
    if (name == "sharded") CHECK(io::Checkpoint::open(dir).files().size() == 2);
  }
}
