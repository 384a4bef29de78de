// Checkpoint directories: one model.safetensors, or an index plus shards, as Hugging Face lays
// them out; which one is read when both exist; and every way such a directory can be broken,
// symbolic links included.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/io/checkpoint.hpp"
#include "qwen/io/safetensors_writer.hpp"
#include "scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace qwen;
using namespace qwen::io;
using nlohmann::json;
using qwen::testing::read_file;
using qwen::testing::ScratchDir;
using qwen::testing::write_file;

namespace {

// A small model-shaped tensor set with random bytes; `named` views point into `storage`.
struct ModelTensors {
  std::vector<std::vector<std::byte>> storage;
  std::vector<NamedTensor> named;
};
ModelTensors model_tensors() {
  static std::mt19937_64 rng(std::random_device{}());
  ModelTensors t;
  t.storage.reserve(8);
  auto add = [&](const std::string& name, DType dtype, Shape shape) {
    auto& bytes = t.storage.emplace_back(static_cast<std::size_t>(element_count(shape)) * dtype_size(dtype));
    for (auto& b : bytes) b = static_cast<std::byte>(rng() & 0xFF);
    t.named.emplace_back(name, TensorView(bytes.data(), dtype, std::move(shape)));
  };
  add("model.embed_tokens.weight", DType::BF16, {32, 8});
  add("model.layers.0.input_layernorm.weight", DType::BF16, {8});
  add("model.layers.0.self_attn.q_proj.weight", DType::BF16, {16, 8});
  add("model.layers.0.mlp.down_proj.weight", DType::F32, {8, 24});
  add("model.layers.0.mlp.down_proj.weight_scale_inv", DType::F32, {1, 1});
  add("model.norm.weight", DType::BF16, {8});
  return t;
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.nbytes() == b.nbytes() && std::equal(a.data, a.data + a.nbytes(), b.data);
}

void check_checkpoint_matches(const Checkpoint& ckpt, const ModelTensors& t) {
  REQUIRE(ckpt.tensor_count() == t.named.size());
  std::vector<std::string> expected;
  std::uint64_t total = 0;
  for (const auto& [name, view] : t.named) {
    INFO(name);
    expected.push_back(name);
    total += view.nbytes();
    REQUIRE(ckpt.contains(name));
    CHECK(ckpt.info(name).shape == view.shape);
    CHECK(same_bytes(ckpt.view(name), view));
  }
  std::sort(expected.begin(), expected.end());
  CHECK(ckpt.tensor_names() == expected);
  CHECK(ckpt.total_bytes() == total);
  CHECK_FALSE(ckpt.contains("lm_head.weight"));
  CHECK_THROWS_AS(ckpt.view("lm_head.weight"), WeightError);
  CHECK_THROWS_WITH(ckpt.view("lm_head.weight"), Catch::Contains("lm_head.weight") && Catch::Contains(ckpt.dir().string()));
}

}  // namespace

TEST_CASE("checkpoint: round trip, single file and sharded", "[safetensors][checkpoint]") {
  ScratchDir dir("checkpoint");
  const ModelTensors t = model_tensors();

  SECTION("single file") {
    write_safetensors(dir / "model.safetensors", t.named);
    const auto ckpt = Checkpoint::open(dir.path());
    CHECK_FALSE(ckpt.is_sharded());
    CHECK(ckpt.files() == std::vector<fs::path>{dir / "model.safetensors"});
    check_checkpoint_matches(ckpt, t);
  }
  SECTION("sharded") {
    // Bytes in order: 512, 16, 256, 768, 4, 16 -> shards 512+16+256 | 768 | 4+16.
    const auto shards = write_sharded_safetensors(dir.path(), t.named, 784, {{"format", "pt"}});
    REQUIRE(shards.size() == 3);
    CHECK(shards[0].filename() == "model-00001-of-00003.safetensors");
    const json index = json::parse(read_file(dir / "model.safetensors.index.json"));
    CHECK(index["weight_map"]["model.norm.weight"] == "model-00003-of-00003.safetensors");

    auto ckpt = Checkpoint::open(dir.path());
    CHECK(ckpt.is_sharded());
    CHECK(ckpt.files() == shards);
    CHECK(index["metadata"]["total_size"] == ckpt.total_bytes());
    CHECK(ckpt.file_of("model.embed_tokens.weight") == shards[0]);
    CHECK(ckpt.file_of("model.norm.weight") == shards[2]);
    REQUIRE(ckpt.safetensors_files().size() == 3);
    CHECK(ckpt.safetensors_files()[1].metadata().at("format") == "pt");
    check_checkpoint_matches(ckpt, t);
    const Checkpoint moved = std::move(ckpt);  // views stay valid across a move
    check_checkpoint_matches(moved, t);
  }
}

TEST_CASE("checkpoint: model.safetensors wins over an index beside it, as in transformers", "[safetensors][checkpoint]") {
  // transformers 5.23 (modeling_utils.py, _get_resolved_checkpoint_files) tries a local
  // directory's model.safetensors before model.safetensors.index.json.
  ScratchDir dir("checkpoint-precedence");
  const ModelTensors t = model_tensors();
  const auto shards = write_sharded_safetensors(dir.path(), t.named, 784);
  REQUIRE(shards.size() == 3);
  write_safetensors(dir / "model.safetensors", t.named);
  {
    const auto ckpt = Checkpoint::open(dir.path());
    CHECK_FALSE(ckpt.is_sharded());
    CHECK(ckpt.files() == std::vector<fs::path>{dir / "model.safetensors"});
    check_checkpoint_matches(ckpt, t);
  }
  // So the single file's tensors are the ones bound, even when the index names others.
  std::vector<float> other{1, 2};
  write_safetensors(dir / "model.safetensors", std::vector<NamedTensor>{{"other", TensorView(other.data(), DType::F32, {2})}});
  const auto ckpt = Checkpoint::open(dir.path());
  CHECK(ckpt.tensor_names() == std::vector<std::string>{"other"});
  // A broken single file is reported, not skipped in favour of the index.
  write_file(dir / "model.safetensors", "");
  CHECK_THROWS_WITH(Checkpoint::open(dir.path()), Catch::Contains("model.safetensors: empty file"));
}

TEST_CASE("checkpoint: symbolic links that dangle or loop are errors naming the path", "[safetensors][checkpoint]") {
  ScratchDir dir("checkpoint-links");
  const ModelTensors t = model_tensors();
  SECTION("the single file loops") {
    fs::create_symlink("model.safetensors", dir / "model.safetensors");
    CHECK_THROWS_AS(Checkpoint::open(dir.path()), IoError);  // not std::filesystem::filesystem_error
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()),
                      Catch::Contains((dir / "model.safetensors").string() + ": cannot stat: Too many levels of symbolic links"));
  }
  SECTION("the single file dangles: broken, not absent (the index beside it is not used)") {
    write_sharded_safetensors(dir.path(), t.named, 784);
    fs::create_symlink("blobs/abc123", dir / "model.safetensors");
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()),
                      Catch::Contains("model.safetensors: dangling symbolic link (its target 'blobs/abc123' does not exist)"));
  }
  SECTION("a shard loops or dangles") {
    const auto shards = write_sharded_safetensors(dir.path(), t.named, 784);
    fs::remove(shards[1]);
    fs::create_symlink(shards[1].filename(), shards[1]);
    CHECK_THROWS_AS(Checkpoint::open(dir.path()), IoError);
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()), Catch::Contains(shards[1].string() + ": cannot stat: Too many levels") &&
                                                        !Catch::Contains("does not exist"));
    fs::remove(shards[1]);
    fs::create_symlink("elsewhere.safetensors", shards[1]);
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()), Catch::Contains(shards[1].string() + ": dangling symbolic link"));
  }
  SECTION("the index loops") {
    fs::create_symlink("model.safetensors.index.json", dir / "model.safetensors.index.json");
    CHECK_THROWS_AS(Checkpoint::open(dir.path()), IoError);
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()), Catch::Contains("model.safetensors.index.json: cannot stat"));
  }
  SECTION("the directory loops") {
    fs::create_symlink("loop", dir / "loop");
    CHECK_THROWS_AS(Checkpoint::open(dir / "loop"), IoError);
    CHECK_THROWS_WITH(Checkpoint::open(dir / "loop"), Catch::Contains("loop: cannot stat"));
  }
  SECTION("links to real files are followed") {
    write_safetensors(dir / "real.safetensors", t.named);
    fs::create_symlink("real.safetensors", dir / "model.safetensors");
    check_checkpoint_matches(Checkpoint::open(dir.path()), t);
  }
}

TEST_CASE("checkpoint: every broken checkpoint directory is reported", "[safetensors][checkpoint]") {
  ScratchDir dir("checkpoint-broken");
  const ModelTensors t = model_tensors();
  const auto index_path = dir / "model.safetensors.index.json";
  const std::string where = index_path.string();
  auto format_error = [&](std::initializer_list<std::string> words) {
    CHECK_THROWS_AS(Checkpoint::open(dir.path()), FormatError);
    for (const auto& w : words) CHECK_THROWS_WITH(Checkpoint::open(dir.path()), Catch::Contains(w));
  };
  // Two shards, a.safetensors = {embed, norm}, b.safetensors = the rest.
  auto in_a = [](const std::string& name) { return name == "model.embed_tokens.weight" || name == "model.norm.weight"; };
  auto write_two_shards = [&](std::map<std::string, std::string> weight_map) {
    std::vector<NamedTensor> a, b;
    for (const auto& nt : t.named) (in_a(nt.first) ? a : b).push_back(nt);
    write_safetensors(dir / "a.safetensors", a);
    write_safetensors(dir / "b.safetensors", b);
    if (weight_map.empty())
      for (const auto& nt : t.named) weight_map[nt.first] = in_a(nt.first) ? "a.safetensors" : "b.safetensors";
    write_safetensors_index(dir.path(), weight_map, 0);
    return weight_map;
  };

  SECTION("directory missing") {
    CHECK_THROWS_AS(Checkpoint::open(dir / "absent"), IoError);
    CHECK_THROWS_WITH(Checkpoint::open(dir / "absent"), Catch::Contains("absent") && Catch::Contains("does not exist"));
  }
  SECTION("not a directory") {
    write_file(dir / "file", "x");
    CHECK_THROWS_WITH(Checkpoint::open(dir / "file"), Catch::Contains("not a directory"));
  }
  SECTION("neither file present") {
    CHECK_THROWS_AS(Checkpoint::open(dir.path()), IoError);
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()),
                      Catch::Contains(dir.path().string()) && Catch::Contains("neither model.safetensors nor"));
  }
  SECTION("index is not JSON, not an object, or lacks a proper weight_map") {
    write_file(index_path, "{\"weight_map\": ");
    format_error({where, "not valid JSON"});
    write_file(index_path, "[]");
    format_error({where, "not a JSON object"});
    write_file(index_path, R"({"metadata": {}})");
    format_error({where, "no \"weight_map\""});
    write_file(index_path, R"({"weight_map": []})");
    format_error({where, "\"weight_map\" is not an object", "array"});
    write_file(index_path, R"({"weight_map": {}})");
    format_error({where, "\"weight_map\" is empty"});
    write_file(index_path, R"({"weight_map": {"w": 3}})");
    format_error({where, "tensor \"w\"", "number, not a file name"});
    write_file(index_path, R"({"weight_map": {"w": "a.safetensors", "w": "b.safetensors"}})");
    format_error({where, "duplicate key \"w\""});
  }
  SECTION("index goes through the strict JSON parser: NUL, depth, size") {
    write_two_shards({});
    const std::string valid = read_file(index_path);
    write_file(index_path, valid + std::string("\0{\"weight_map\": {}}", 19));
    format_error({where, "NUL byte at offset " + std::to_string(valid.size())});
    write_file(index_path, R"({"metadata": )" + std::string(1000, '[') + std::string(1000, ']') + "}");
    format_error({where, "JSON nests deeper than 256 levels"});
    write_file(index_path, valid);
    fs::resize_file(index_path, kMaxJsonFileBytes + 1);
    format_error({where, "above the limit of 67108864 bytes (64 MiB)"});
  }
  SECTION("shard path escapes the directory") {
    for (const char* shard : {"../x.safetensors", "/etc/passwd", "sub/../../x.safetensors", ""}) {
      write_file(index_path, json{{"weight_map", {{"w", shard}}}}.dump());
      format_error({where, "escapes the checkpoint directory", std::string("\"") + shard + "\"", "tensor \"w\""});
    }
  }
  SECTION("missing shard") {
    write_two_shards({});
    fs::remove(dir / "b.safetensors");
    CHECK_THROWS_AS(Checkpoint::open(dir.path()), IoError);
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()), Catch::Contains(where) && Catch::Contains("missing shard \"b.safetensors\""));
  }
  SECTION("tensor in weight_map but not in its shard") {
    auto wm = write_two_shards({});
    wm["lm_head.weight"] = "a.safetensors";
    write_safetensors_index(dir.path(), wm, 0);
    format_error({where, "\"lm_head.weight\"", "\"a.safetensors\"", "does not contain it"});
  }
  SECTION("weight_map names the wrong shard") {
    auto wm = write_two_shards({});
    wm["model.norm.weight"] = "b.safetensors";
    write_safetensors_index(dir.path(), wm, 0);
    format_error({where, "\"model.norm.weight\"", "in shard \"b.safetensors\"", "it is in shard \"a.safetensors\""});
  }
  SECTION("tensor in a shard but absent from weight_map") {
    auto wm = write_two_shards({});
    wm.erase("model.norm.weight");
    write_safetensors_index(dir.path(), wm, 0);
    format_error({where, "\"model.norm.weight\"", "shard \"a.safetensors\"", "absent from weight_map"});
  }
  SECTION("same tensor in two shards") {
    auto wm = write_two_shards({});
    std::vector<float> extra(8, 0.25f);
    const std::vector<NamedTensor> c{{"model.norm.weight", TensorView(extra.data(), DType::F32, {8})}};
    write_safetensors(dir / "c.safetensors", c);
    wm["model.extra"] = "c.safetensors";  // makes c a listed shard
    write_safetensors_index(dir.path(), wm, 0);
    format_error({where, "\"model.norm.weight\"", "two shards", "\"a.safetensors\"", "\"c.safetensors\""});
  }
  SECTION("a malformed shard names the shard file") {
    write_two_shards({});
    write_file(dir / "b.safetensors", std::string("\x02\0\0\0\0\0\0\0{}12345", 15));  // 5 trailing bytes
    CHECK_THROWS_AS(Checkpoint::open(dir.path()), FormatError);
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()), Catch::StartsWith((dir / "b.safetensors").string()) && Catch::Contains("trailing"));
  }
  SECTION("a malformed single file") {
    write_file(dir / "model.safetensors", "");
    CHECK_THROWS_AS(Checkpoint::open(dir.path()), FormatError);
    CHECK_THROWS_WITH(Checkpoint::open(dir.path()), Catch::Contains("model.safetensors") && Catch::Contains("empty file"));
  }
}

TEST_CASE("checkpoint: golden Hugging Face checkpoints open", "[safetensors][checkpoint][golden]") {
  const fs::path root = fs::path(QWEN_GOLDEN_DIR) / "checkpoints";
  int opened = 0;
  for (const auto& d : fs::directory_iterator(root)) {
    if (!d.is_directory()) continue;
    INFO(d.path().string());
    const auto ckpt = Checkpoint::open(d.path());
    CHECK(ckpt.tensor_count() > 0);
    REQUIRE(ckpt.contains("model.embed_tokens.weight"));
    CHECK(ckpt.info("model.embed_tokens.weight").shape == Shape{512, 128});
    CHECK(ckpt.is_sharded() == (d.path().filename() == "sharded"));
    ++opened;
  }
  CHECK(opened == 6);
}
