// qwen-inspect end to end: it accepts every golden checkpoint (written by transformers) and
// rejects corrupted copies of them with exit status 1 and a message naming the problem.
// Each corruption is made here from a pristine golden checkpoint in a scratch directory.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <qwen/io/safetensors.hpp>
#include <qwen/io/safetensors_writer.hpp>

#include "golden_fixtures.hpp"
#include "run_process.hpp"
#include "scratch_dir.hpp"

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

namespace {

using Result = qwen::testing::ProcessResult;

using qwen::testing::read_file;
using qwen::testing::ScratchDir;
using qwen::testing::write_file;

Result run_inspect(const fs::path& dir) {
  return qwen::testing::run_process(qwen::testing::shell_quote(QWEN_INSPECT_EXE) + " " + qwen::testing::shell_quote(dir.string()));
}

// A scratch copy of a golden checkpoint, removed afterwards.
ScratchDir copy_of(std::string_view fixture) { return ScratchDir("inspect", qwen::testing::golden_checkpoint(fixture)); }

// The header of a safetensors file, as ordered JSON, and the data section behind it.
struct RawSafetensors {
  ordered_json header;
  std::string data;
};
RawSafetensors read_raw(const fs::path& file) {
  const std::string bytes = read_file(file);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  return {ordered_json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}
void write_raw(const fs::path& file, const RawSafetensors& raw) {
  std::string header = raw.header.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_file(file, bytes + header + raw.data);
}
void edit_header(const fs::path& file, const std::function<void(ordered_json&)>& edit) {
  RawSafetensors raw = read_raw(file);
  edit(raw.header);
  write_raw(file, raw);
}

// Rewrites a valid safetensors file through the library's writer after editing its tensor list.
struct OwnedTensor {
  std::string name;
  qwen::DType dtype;
  qwen::Shape shape;
  std::vector<std::byte> bytes;
};
void edit_tensors(const fs::path& file, const std::function<void(std::vector<OwnedTensor>&)>& edit) {
  std::vector<OwnedTensor> tensors;
  {
    const auto st = qwen::io::SafetensorsFile::open(file);
    for (const auto& info : st.tensors()) {
      const qwen::TensorView v = st.view(info.name);
      tensors.push_back({info.name, info.dtype, info.shape, std::vector<std::byte>(v.data, v.data + v.nbytes())});
    }
  }
  edit(tensors);
  std::vector<qwen::io::NamedTensor> named;
  for (const auto& t : tensors) named.emplace_back(t.name, qwen::TensorView(t.bytes.data(), t.dtype, t.shape));
  qwen::io::write_safetensors(file, named, {{"format", "pt"}});
}

void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config = nlohmann::json::parse(read_file(dir / "config.json"));
  edit(config);
  write_file(dir / "config.json", config.dump(2));
}

// The corruption must be rejected: exit status 1 (not a crash), the message on stderr.
void expect_rejected(const ScratchDir& s, const std::string& message) {
  const Result r = run_inspect(s.path());
  INFO("stderr: " << r.err);
  REQUIRE(r.exited);
  CHECK(r.status == 1);
  CHECK(r.err.find("qwen-inspect: error: ") != std::string::npos);
  CHECK(r.err.find(message) != std::string::npos);
  CHECK(r.out.find("status:      OK") == std::string::npos);
}

const char* const single = "model.safetensors";

}  // namespace

TEST_CASE("inspect accepts every golden checkpoint", "[inspect]") {
  for (const auto& fixture : qwen::testing::golden_fixtures) {
    INFO("fixture " << fixture.name);
    const Result r = run_inspect(qwen::testing::golden_checkpoint(fixture.name));
    INFO("stderr: " << r.err);
    REQUIRE(r.exited);
    CHECK(r.status == 0);
    CHECK(r.out.find("type:        " + std::string(fixture.type) + "\n") != std::string::npos);
    CHECK(r.out.find("status:      OK") != std::string::npos);
  }
}

TEST_CASE("inspect rejects a truncated safetensors file", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  fs::resize_file(s.path() / single, fs::file_size(s.path() / single) - 1000);
  expect_rejected(s, "run past the end of the data section");
}

TEST_CASE("inspect rejects a header length past the end of the file", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  std::string bytes = read_file(s.path() / single);
  const std::uint64_t n = bytes.size() + 100;
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  write_file(s.path() / single, bytes);
  expect_rejected(s, "runs past the end of the file");
}

TEST_CASE("inspect rejects a header that is not JSON", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  std::string bytes = read_file(s.path() / single);
  bytes.replace(8, 8, "garbage!");
  write_file(s.path() / single, bytes);
  expect_rejected(s, "not valid JSON");
}

TEST_CASE("inspect rejects an empty safetensors file", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  fs::resize_file(s.path() / single, 0);
  expect_rejected(s, "empty file");
}

TEST_CASE("inspect rejects an unknown dtype", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  edit_header(s.path() / single, [](ordered_json& h) { h["model.norm.weight"]["dtype"] = "BF17"; });
  expect_rejected(s, "unknown dtype \"BF17\"");
}

TEST_CASE("inspect rejects a shape that disagrees with the byte span", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  edit_header(s.path() / single, [](ordered_json& h) { h["model.norm.weight"]["shape"] = {127}; });
  expect_rejected(s, "shape [127] of BF16 needs 254 bytes");
}

TEST_CASE("inspect rejects overlapping data offsets", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  edit_header(s.path() / single, [](ordered_json& h) {
    // Move the tensor that starts latest 2 bytes back, into its predecessor.
    std::string last;
    std::uint64_t latest = 0;
    for (auto& [name, v] : h.items())
      if (name != "__metadata__" && v["data_offsets"][0].get<std::uint64_t>() >= latest) {
        latest = v["data_offsets"][0].get<std::uint64_t>();
        last = name;
      }
    auto& offsets = h[last]["data_offsets"];
    offsets = {offsets[0].get<std::uint64_t>() - 2, offsets[1].get<std::uint64_t>() - 2};
  });
  expect_rejected(s, "overlap tensor");
}

TEST_CASE("inspect rejects data offsets past the end of the file", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  edit_header(s.path() / single, [](ordered_json& h) {
    auto& offsets = h["model.norm.weight"]["data_offsets"];
    offsets = {offsets[0].get<std::uint64_t>() + 1000000, offsets[1].get<std::uint64_t>() + 1000000};
  });
  expect_rejected(s, "run past the end of the data section");
}

TEST_CASE("inspect rejects a missing tensor", "[inspect]") {
  const ScratchDir s = copy_of("dense_untied");
  edit_tensors(s.path() / single, [](std::vector<OwnedTensor>& t) {
    std::erase_if(t, [](const OwnedTensor& x) { return x.name == "model.layers.1.mlp.down_proj.weight"; });
  });
  expect_rejected(s, "missing tensor 'model.layers.1.mlp.down_proj.weight' (expected F32 [128, 192]");
}

TEST_CASE("inspect rejects a mis-shaped tensor", "[inspect]") {
  const ScratchDir s = copy_of("moe");
  edit_tensors(s.path() / single, [](std::vector<OwnedTensor>& t) {
    for (auto& x : t)
      if (x.name == "model.layers.0.self_attn.q_norm.weight") x.shape = {2, 64};
  });
  expect_rejected(s, "tensor 'model.layers.0.self_attn.q_norm.weight'");
  expect_rejected(s, "has shape [2, 64], expected [128]");
}

TEST_CASE("inspect rejects a tensor of the wrong dtype", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  edit_tensors(s.path() / single, [](std::vector<OwnedTensor>& t) {
    for (auto& x : t)
      if (x.name == "model.norm.weight") x.dtype = qwen::DType::F16;
  });
  expect_rejected(s, "has dtype F16, expected BF16");
}

TEST_CASE("inspect rejects an unexpected extra tensor", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  edit_tensors(s.path() / single, [](std::vector<OwnedTensor>& t) {
    t.push_back({"model.layers.0.mlp.bias", qwen::DType::BF16, {4}, std::vector<std::byte>(8)});
  });
  expect_rejected(s, "unexpected tensor not used by Qwen3<Dense, TinyDenseTied, bf16>: 'model.layers.0.mlp.bias'");
}

TEST_CASE("inspect rejects an FP8 weight whose block scales are missing or mis-shaped", "[inspect]") {
  {
    const ScratchDir s = copy_of("fp8");
    edit_tensors(s.path() / single, [](std::vector<OwnedTensor>& t) {
      std::erase_if(t, [](const OwnedTensor& x) { return x.name == "model.layers.0.mlp.up_proj.weight_scale_inv"; });
    });
    expect_rejected(s, "tensor 'model.layers.0.mlp.up_proj.weight'");
    expect_rejected(s, "has dtype F8_E4M3, expected BF16");
  }
  {
    const ScratchDir s = copy_of("fp8");
    edit_tensors(s.path() / single, [](std::vector<OwnedTensor>& t) {
      for (auto& x : t)
        if (x.name == "model.layers.0.mlp.up_proj.weight_scale_inv") {
          x.shape = {1, 1};
          x.bytes.resize(2);
        }
    });
    expect_rejected(s, "has shape [1, 1], expected [2, 1]");
  }
}

TEST_CASE("inspect rejects a config.json field that disagrees with every compiled type", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  edit_config(s.path(), [](nlohmann::json& c) { c["num_attention_heads"] = 4; });
  expect_rejected(s, "field 'num_attention_heads' is 4, expected 2");
}

TEST_CASE("inspect rejects a config.json that disagrees with the tensors", "[inspect]") {
  // tie_word_embeddings flipped: the config now matches TinyDense, whose lm_head.weight is missing.
  const ScratchDir s = copy_of("dense_tied");
  edit_config(s.path(), [](nlohmann::json& c) { c["tie_word_embeddings"] = false; });
  expect_rejected(s, "missing tensor 'lm_head.weight'");
}

TEST_CASE("inspect rejects a config.json with a missing field", "[inspect]") {
  const ScratchDir s = copy_of("moe");
  edit_config(s.path(), [](nlohmann::json& c) { c.erase("hidden_size"); });
  expect_rejected(s, "config.json: required field 'hidden_size' is missing");
}

TEST_CASE("inspect rejects a config.json that is not JSON, or absent", "[inspect]") {
  {
    const ScratchDir s = copy_of("dense_tied");
    write_file(s.path() / "config.json", "{\"model_type\": \"qwen3\",");
    expect_rejected(s, "config.json: not valid JSON");
  }
  {
    const ScratchDir s = copy_of("dense_tied");
    fs::remove(s.path() / "config.json");
    expect_rejected(s, "config.json: file not found");
  }
}

TEST_CASE("inspect rejects a sharded checkpoint with a missing shard", "[inspect]") {
  const ScratchDir s = copy_of("sharded");
  std::vector<fs::path> shards;
  for (const auto& e : fs::directory_iterator(s.path()))
    if (e.path().extension() == ".safetensors") shards.push_back(e.path());
  REQUIRE(shards.size() == 2);
  std::sort(shards.begin(), shards.end());
  fs::remove(shards[1]);
  expect_rejected(s, "missing shard \"" + shards[1].filename().string() + "\"");
}

TEST_CASE("inspect rejects an index whose weight_map disagrees with the shards", "[inspect]") {
  const ScratchDir s = copy_of("sharded");
  nlohmann::json index = nlohmann::json::parse(read_file(s.path() / "model.safetensors.index.json"));
  std::string first_shard = index["weight_map"].begin().value();
  index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = first_shard;
  write_file(s.path() / "model.safetensors.index.json", index.dump());
  expect_rejected(s, "weight_map puts tensor \"model.layers.9.mlp.up_proj.weight\" in shard");
}

TEST_CASE("inspect rejects a directory with no weights, and a path that is no directory", "[inspect]") {
  {
    const ScratchDir s = copy_of("dense_tied");
    fs::remove(s.path() / single);
    expect_rejected(s, "neither model.safetensors nor model.safetensors.index.json found");
  }
  const Result r = run_inspect(qwen::testing::golden_checkpoint("no-such-checkpoint"));
  REQUIRE(r.exited);
  CHECK(r.status == 1);
  CHECK(r.err.find("no-such-checkpoint: not a directory") != std::string::npos);
}

TEST_CASE("inspect rejects deeply nested JSON in config.json and tokenizer_config.json without crashing", "[inspect]") {
  {
    // Used to overflow the stack: the error message dumped the value recursively.
    const ScratchDir s = copy_of("dense_tied");
    std::string config = read_file(s.path() / "config.json");
    const auto at = config.find("\"hidden_size\": 128");
    REQUIRE(at != std::string::npos);
    config.replace(at, 18, "\"hidden_size\": " + std::string(200000, '[') + std::string(200000, ']'));
    write_file(s.path() / "config.json", config);
    expect_rejected(s, "config.json: JSON nests deeper than 256 levels");
  }
  {
    const ScratchDir s = copy_of("dense_tied");
    write_file(s.path() / "tokenizer_config.json", "{\"chat_template\": " + std::string(200000, '[') + std::string(200000, ']') + "}");
    expect_rejected(s, "tokenizer_config.json: JSON nests deeper than 256 levels");
  }
}

TEST_CASE("inspect rejects a NUL byte after the JSON of config.json or a safetensors header", "[inspect]") {
  {
    const ScratchDir s = copy_of("dense_tied");
    const std::string config = read_file(s.path() / "config.json");
    write_file(s.path() / "config.json", config + std::string("\0garbage", 8));
    expect_rejected(s, "config.json: NUL byte at offset " + std::to_string(config.size()));
  }
  {
    // The header's trailing padding spaces become NULs and garbage: same length, same layout.
    const ScratchDir s = copy_of("dense_tied");
    std::string bytes = read_file(s.path() / single);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
    const std::size_t close = bytes.rfind('}', 8 + n - 1);
    REQUIRE(close != std::string::npos);
    std::string header = bytes.substr(8, close - 8 + 1);
    header += std::string("\0junk", 5);
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    write_file(s.path() / single, out + header + bytes.substr(8 + n));
    expect_rejected(s, "header: NUL byte at offset " + std::to_string(close - 8 + 1) + " of the header");
  }
}

TEST_CASE("inspect rejects config values that overflow their integer type", "[inspect]") {
  {
    const ScratchDir s = copy_of("fp8");
    edit_config(s.path(), [](nlohmann::json& c) { c["quantization_config"]["weight_block_size"] = {4294967424ULL, 128}; });
    expect_rejected(s, "field 'weight_block_size[0]' must be an integer in [1, 2147483647], got 4294967424");
  }
  {
    const ScratchDir s = copy_of("dense_tied");
    edit_config(s.path(), [](nlohmann::json& c) { c["rms_norm_eps"] = 0; });
    write_file(s.path() / "config.json", [&] {
      std::string t = read_file(s.path() / "config.json");
      return t.replace(t.find("\"rms_norm_eps\": 0"), 17, "\"rms_norm_eps\": 1e999");
    }());
    expect_rejected(s, "config.json: not valid JSON");
  }
}

TEST_CASE("inspect rejects a symbolic link loop or a dangling link instead of calling it absent", "[inspect]") {
  {
    const ScratchDir s = copy_of("dense_tied");
    fs::remove(s.path() / single);
    fs::create_symlink(single, s.path() / single);
    expect_rejected(s, "model.safetensors: cannot stat: Too many levels of symbolic links");
  }
  {
    const ScratchDir s = copy_of("dense_tied");
    fs::remove(s.path() / "generation_config.json");
    fs::create_symlink("missing.json", s.path() / "generation_config.json");
    expect_rejected(s, "generation_config.json: dangling symbolic link");
  }
}

TEST_CASE("inspect reads model.safetensors, not the index, when both are present (as transformers does)", "[inspect]") {
  // The sharded fixture is untied; a tied model's single file has no lm_head.weight, so the
  // message proves which file was bound.
  const ScratchDir s = copy_of("sharded");
  fs::copy_file(qwen::testing::golden_checkpoint("dense_tied") / single, s.path() / single);
  expect_rejected(s, "missing tensor 'lm_head.weight'");
}

TEST_CASE("inspect dispatches a config.json without a dtype on the tensors' dtype", "[inspect]") {
  const ScratchDir s = copy_of("dense_untied");  // fp32 tensors
  edit_config(s.path(), [](nlohmann::json& c) { c.erase("torch_dtype"); });
  const Result r = run_inspect(s.path());
  INFO("stderr: " << r.err);
  REQUIRE(r.exited);
  CHECK(r.status == 0);
  CHECK(r.out.find("type:        Qwen3<Dense, TinyDense, fp32>\n") != std::string::npos);
  CHECK(r.out.find("float32 (not in config.json: inferred from model.embed_tokens.weight)") != std::string::npos);
}

TEST_CASE("inspect reads the chat template from chat_template.jinja when present", "[inspect]") {
  const ScratchDir s = copy_of("dense_tied");
  write_file(s.path() / "chat_template.jinja", "0123456789");
  const Result r = run_inspect(s.path());
  INFO("stderr: " << r.err);
  CHECK(r.status == 0);
  CHECK(r.out.find("chat template 10 bytes (from " + (s.path() / "chat_template.jinja").string() + ")") != std::string::npos);
}

TEST_CASE("inspect accepts a tied checkpoint whose lm_head.weight copies embed_tokens, rejects another", "[inspect]") {
  {
    const ScratchDir s = copy_of("dense_tied");
    edit_tensors(s.path() / single, [](std::vector<OwnedTensor>& t) {
      for (const auto& x : std::vector<OwnedTensor>(t))
        if (x.name == "model.embed_tokens.weight") t.push_back({"lm_head.weight", x.dtype, x.shape, x.bytes});
    });
    const Result r = run_inspect(s.path());
    INFO("stderr: " << r.err);
    CHECK(r.status == 0);
    CHECK(r.out.find("status:      OK") != std::string::npos);
  }
  {
    const ScratchDir s = copy_of("dense_tied");
    edit_tensors(s.path() / single, [](std::vector<OwnedTensor>& t) {
      for (const auto& x : std::vector<OwnedTensor>(t))
        if (x.name == "model.embed_tokens.weight") {
          t.push_back({"lm_head.weight", x.dtype, x.shape, x.bytes});
          t.back().bytes[100] ^= std::byte{1};
        }
    });
    expect_rejected(s, "tensor 'lm_head.weight' (BF16 [512, 128]) differs from 'model.embed_tokens.weight'");
  }
}

// qwen-generate refuses an end-of-sequence id outside the vocabulary; qwen-inspect must not call
// such a checkpoint OK (both load through load_checkpoint, which checks them).
TEST_CASE("inspect rejects an end-of-sequence id outside the vocabulary", "[inspect]") {
  {
    const ScratchDir s = copy_of("dense_tied");
    nlohmann::json g = nlohmann::json::parse(read_file(s.path() / "generation_config.json"));
    g["eos_token_id"] = {480, 512};
    write_file(s.path() / "generation_config.json", g.dump(2));
    expect_rejected(s, "generation_config.json: field 'eos_token_id' holds 512 (item 1), outside the vocabulary [0, 512)");
  }
  {
    const ScratchDir s = copy_of("dense_tied");
    edit_config(s.path(), [](nlohmann::json& c) { c["eos_token_id"] = 600; });
    expect_rejected(s, "config.json: field 'eos_token_id' holds 600, outside the vocabulary [0, 512)");
  }
}
