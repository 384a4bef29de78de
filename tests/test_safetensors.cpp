// safetensors reading and writing: round trips on random data, zero-copy views, and every
// validation error produced from hand-crafted bytes. Checkpoint directories: test_checkpoint.cpp.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qwen/io/mapped_file.hpp"
#include "qwen/io/safetensors.hpp"
#include "qwen/io/safetensors_writer.hpp"
#include "scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace qwen;
using namespace qwen::io;
using nlohmann::json;

namespace {

std::mt19937_64& rng() {
  static std::mt19937_64 engine = [] {
    const auto seed = std::random_device{}();
    std::printf("test_safetensors: random seed %u\n", static_cast<unsigned>(seed));
    return std::mt19937_64(seed);
  }();
  return engine;
}

std::vector<std::byte> random_bytes(std::size_t n) {
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng()() & 0xFF);
  return out;
}

// Writes u64 length + header + `data_bytes` random bytes. `declared` overrides the length field.
void write_raw(const fs::path& path, const std::string& header, std::size_t data_bytes = 0,
               std::optional<std::uint64_t> declared = std::nullopt) {
  const std::uint64_t n = declared.value_or(header.size());
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  out << header;
  const auto data = random_bytes(data_bytes);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  REQUIRE(out.good());
}

void write_text(const fs::path& path, const std::string& text) { qwen::testing::write_file(path, text); }

// One header entry as JSON text.
std::string entry(const std::string& dtype, const std::string& shape, std::uint64_t begin, std::uint64_t end) {
  return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":[)" + std::to_string(begin) + "," +
         std::to_string(end) + "]}";
}

// Runs `f`, requires it to throw exactly E, and returns the message.
template <class E>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("threw the wrong exception type: " << e.what());
  }
  FAIL("did not throw");
  return {};
}

// Requires SafetensorsFile::open(path) to throw FormatError starting with the path and containing `words`.
void require_format_error(const fs::path& path, std::initializer_list<std::string> words) {
  const std::string msg = message_of<FormatError>([&] { (void)SafetensorsFile::open(path); });
  INFO("message: " << msg);
  CHECK(msg.rfind(path.string() + ": ", 0) == 0);
  for (const auto& w : words) CHECK_THAT(msg, Catch::Contains(w));
}

// Random tensors of the given dtypes and shapes; the bytes own the data the views point at.
struct Tensors {
  std::vector<std::vector<std::byte>> storage;
  std::vector<NamedTensor> named;
  void add(const std::string& name, DType dtype, Shape shape) {
    const auto n = static_cast<std::size_t>(element_count(shape)) * dtype_size(dtype);
    storage.push_back(random_bytes(n));
    named.emplace_back(name, TensorView(storage.back().data(), dtype, std::move(shape)));
  }
};

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.nbytes() == b.nbytes() && (a.nbytes() == 0 || std::memcmp(a.data, b.data, a.nbytes()) == 0);
}

}  // namespace

TEST_CASE("safetensors: write then read round trip over every dtype", "[safetensors]") {
  const qwen::testing::ScratchDir dir("safetensors");
  Tensors t;
  t.storage.reserve(16);  // views point into storage: no reallocation
  t.add("a.bf16", DType::BF16, {3, 5});
  t.add("b.f32", DType::F32, {7});
  t.add("c.f16", DType::F16, {2, 3, 4});
  t.add("d.f64.scalar", DType::F64, {});
  t.add("e.i64", DType::I64, {2});
  t.add("f.i32", DType::I32, {1, 3});
  t.add("g.i16", DType::I16, {5});
  t.add("h.empty", DType::F32, {0, 4});
  t.add("i.i8", DType::I8, {9});
  t.add("j.u8", DType::U8, {17});
  t.add("k.bool", DType::BOOL, {3});
  t.add("l.e4m3", DType::F8_E4M3, {4, 3});
  t.add("m.e5m2", DType::F8_E5M2, {11});
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "ünïcode ✓"}};
  write_safetensors(dir / "x.safetensors", t.named, meta);

  const auto file = SafetensorsFile::open(dir / "x.safetensors");
  CHECK(file.metadata() == meta);
  CHECK(file.path() == dir / "x.safetensors");
  CHECK(file.data_offset() % 8 == 0);
  REQUIRE(file.tensor_count() == t.named.size());
  for (std::size_t i = 0; i < t.named.size(); ++i) {
    const auto& [name, original] = t.named[i];
    INFO(name);
    CHECK(file.tensors()[i].name == name);  // offset order == the order written
    const TensorInfo* info = file.find(name);
    REQUIRE(info != nullptr);
    CHECK(info->dtype == original.dtype);
    CHECK(info->shape == original.shape);
    const TensorView v = file.view(name);
    CHECK(v.dtype == original.dtype);
    CHECK(v.shape == original.shape);
    CHECK(v.is_contiguous());
    CHECK(same_bytes(v, original));
    // Zero copy: the view points into the mapped file.
    const auto bytes = file.data_section();
    CHECK(v.data >= bytes.data());
    CHECK(v.data + v.nbytes() <= bytes.data() + bytes.size());
  }
  CHECK(file.find("nope") == nullptr);
  const std::string msg = message_of<WeightError>([&] { (void)file.view("nope"); });
  CHECK_THAT(msg, Catch::Contains("nope") && Catch::Contains((dir / "x.safetensors").string()));
}

TEST_CASE("safetensors: written header follows the reference layout", "[safetensors]") {
  const qwen::testing::ScratchDir dir("safetensors");
  Tensors t;
  t.storage.reserve(2);
  t.add("w", DType::F32, {3});  // 12 bytes
  t.add("v", DType::BF16, {5});
  write_safetensors(dir / "x.safetensors", t.named);

  std::ifstream in(dir / "x.safetensors", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(raw[i]);
  CHECK(n % 8 == 0);
  REQUIRE(raw.size() == 8 + n + 12 + 10);
  const std::string header = raw.substr(8, n);
  CHECK(header.front() == '{');
  CHECK(header.find_last_not_of(' ') == header.rfind('}'));  // padding is spaces only
  const json j = json::parse(header);
  CHECK(j["w"]["data_offsets"] == json::array({0, 12}));
  CHECK(j["v"]["data_offsets"] == json::array({12, 22}));
  CHECK(j["v"]["dtype"] == "BF16");
  CHECK(!j.contains("__metadata__"));  // omitted when empty, as the reference does
}

TEST_CASE("safetensors: writer rejects bad tensors and leaves no file", "[safetensors]") {
  const qwen::testing::ScratchDir dir("safetensors");
  const auto target = dir / "x.safetensors";
  std::vector<float> data(12, 1.5f);
  auto rejects = [&](std::vector<NamedTensor> tensors, const std::string& word) {
    const std::string msg = message_of<InvalidArgument>([&] { write_safetensors(target, tensors); });
    CHECK_THAT(msg, Catch::Contains(word) && Catch::Contains(target.string()));
  };
  // A transposed (non-contiguous) view.
  rejects({{"t", TensorView(data.data(), DType::F32, {3, 4}, {1, 3})}}, "not contiguous");
  rejects({{"a", TensorView(data.data(), DType::F32, {2})}, {"a", TensorView(data.data(), DType::F32, {2})}}, "duplicate");
  rejects({{"__metadata__", TensorView(data.data(), DType::F32, {2})}}, "not allowed");
  rejects({{"n", TensorView(data.data(), DType::F32, {-2, 3})}}, "negative dimension");
  rejects({{"bad\xff", TensorView(data.data(), DType::F32, {2})}}, "UTF-8");
  rejects({{"huge", TensorView(data.data(), DType::F32, {std::int64_t{1} << 40, std::int64_t{1} << 40}, {1, 1})}}, "too large");
  CHECK(fs::is_empty(dir.path()));
}

TEST_CASE("safetensors: a failed write keeps the old file and leaves no temporary", "[safetensors]") {
  const qwen::testing::ScratchDir dir("safetensors");
  std::vector<float> data{1, 2, 3};
  const std::vector<NamedTensor> tensors{{"w", TensorView(data.data(), DType::F32, {3})}};

  // The target is a directory: the final rename fails.
  fs::create_directory(dir / "taken");
  const std::string msg = message_of<IoError>([&] { write_safetensors(dir / "taken", tensors); });
  CHECK_THAT(msg, Catch::Contains("taken") && Catch::Contains("rename"));
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);

  // Missing parent directory.
  CHECK_THROWS_AS(write_safetensors(dir / "no/such/dir/x.safetensors", tensors), IoError);

  // Overwriting an existing file with a bad request leaves it intact.
  write_safetensors(dir / "x.safetensors", tensors);
  std::vector<NamedTensor> bad{{"w", TensorView(data.data(), DType::F32, {3, 1}, {1, 3})}};
  CHECK_THROWS_AS(write_safetensors(dir / "x.safetensors", bad), InvalidArgument);
  CHECK(SafetensorsFile::open(dir / "x.safetensors").view("w").shape == Shape{3});
}

TEST_CASE("safetensors: accepted edge cases", "[safetensors]") {
  const qwen::testing::ScratchDir dir("safetensors");
  const auto p = dir / "x.safetensors";
  SECTION("no tensors, no data") {
    write_raw(p, "{}      ");
    CHECK(SafetensorsFile::open(p).tensor_count() == 0);
  }
  SECTION("null __metadata__, unknown extra fields and zero-size tensors") {
    write_raw(p, R"({"__metadata__":null,"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"extra":[1,{"k":2}]},)"
                 R"("a":)" + entry("U8", "[4]", 0, 4) + "}", 4);
    const auto f = SafetensorsFile::open(p);
    CHECK(f.metadata().empty());
    REQUIRE(f.tensor_count() == 2);
    CHECK(f.tensors()[0].name == "z");  // [0,0) sorts before [0,4)
    CHECK(f.view("a").nbytes() == 4);
  }
}

TEST_CASE("safetensors: every malformed file is a FormatError naming the problem", "[safetensors]") {
  const qwen::testing::ScratchDir dir("safetensors");
  const auto p = dir / "bad.safetensors";
  const std::string f32x4 = entry("F32", "[4]", 0, 16);

  SECTION("empty file") {
    write_text(p, "");
    require_format_error(p, {"empty file"});
  }
  SECTION("shorter than 8 bytes") {
    write_text(p, "abcde");
    require_format_error(p, {"5 bytes", "shorter than"});
  }
  SECTION("header length past the end of the file") {
    write_raw(p, "{}", 0, 100);
    require_format_error(p, {"header length 100", "past the end", "file size 10"});
  }
  SECTION("header length above the limit") {
    write_raw(p, "{}", 0, 100'000'001);
    require_format_error(p, {"100000001", "exceeds the limit", "100000000"});
  }
  SECTION("header length 0") {
    write_raw(p, "");
    require_format_error(p, {"not valid JSON"});
  }
  SECTION("header is not UTF-8") {
    write_raw(p, "{\"a\xC0\x80\":1}");  // overlong encoding of NUL
    require_format_error(p, {"header: not valid UTF-8 (byte 3 of the header)"});
  }
  SECTION("NUL byte in the header, also after the JSON value") {
    // nlohmann's parser stops at a NUL: `{...}\0garbage` would pass. The reference rejects it.
    write_raw(p, std::string("{}\0garbage", 10));
    require_format_error(p, {"header: NUL byte at offset 2 of the header"});
    write_raw(p, std::string("{\"__metadata__\":{\"a\":\"b\"}}\0\0\0\0\0", 31));
    require_format_error(p, {"NUL byte at offset 26 of the header"});
    write_raw(p, std::string("{\"a\0\":1}", 8));
    require_format_error(p, {"NUL byte at offset 3"});
  }
  SECTION("a number beyond double") {
    write_raw(p, R"({"__metadata__":null,"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1e999}})", 1);
    require_format_error(p, {"not valid JSON", "1e999"});
  }
  SECTION("header is not JSON") {
    write_raw(p, "{not json}");
    require_format_error(p, {"not valid JSON"});
  }
  SECTION("header is not an object") {
    write_raw(p, "[1, 2]");
    require_format_error(p, {"not a JSON object", "array"});
  }
  SECTION("entry is not an object") {
    write_raw(p, R"({"w": 3})");
    require_format_error(p, {"tensor \"w\"", "not an object", "number"});
  }
  SECTION("missing dtype, shape or data_offsets") {
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      json e = json::parse(f32x4);
      e.erase(field);
      write_raw(p, json{{"w", e}}.dump(), 16);
      require_format_error(p, {"tensor \"w\"", std::string("missing \"") + field + "\""});
    }
  }
  SECTION("dtype is not a string") {
    write_raw(p, R"({"w":{"dtype":5,"shape":[4],"data_offsets":[0,16]}})", 16);
    require_format_error(p, {"\"dtype\" is not a string", "number"});
  }
  SECTION("unknown dtype") {
    write_raw(p, "{\"w\":" + entry("Q4_K", "[4]", 0, 16) + "}", 16);
    require_format_error(p, {"unknown dtype \"Q4_K\""});
  }
  SECTION("shape is not an array of integers") {
    write_raw(p, "{\"w\":" + entry("F32", "4", 0, 16) + "}", 16);
    require_format_error(p, {"\"shape\" is not an array"});
    write_raw(p, "{\"w\":" + entry("F32", "[2.0, 2]", 0, 16) + "}", 16);
    require_format_error(p, {"\"shape\" holds a number"});
    write_raw(p, "{\"w\":" + entry("F32", "[\"2\", 2]", 0, 16) + "}", 16);
    require_format_error(p, {"\"shape\" holds a string"});
  }
  SECTION("negative dimension") {
    write_raw(p, "{\"w\":" + entry("F32", "[2, -3]", 0, 24) + "}", 24);
    require_format_error(p, {"negative dimension -3"});
  }
  SECTION("dimension beyond int64") {
    write_raw(p, "{\"w\":" + entry("U8", "[18446744073709551615]", 0, 16) + "}", 16);
    require_format_error(p, {"dimension 18446744073709551615", "too large"});
  }
  SECTION("data_offsets ill-typed") {
    for (const char* offsets : {"[16]", "[0,16,32]", "[-1,16]", "[\"0\",\"16\"]", "16", "[0.0,16]"}) {
      write_raw(p, std::string(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":)") + offsets + "}}", 16);
      require_format_error(p, {"\"data_offsets\" is not an array of two non-negative integers"});
    }
  }
  SECTION("begin after end") {
    write_raw(p, "{\"w\":" + entry("U8", "[4]", 8, 4) + "}", 16);
    require_format_error(p, {"[8, 4]", "begin is after end"});
  }
  SECTION("byte count disagrees with shape and dtype") {
    write_raw(p, "{\"w\":" + entry("F32", "[2, 3]", 0, 20) + "}", 20);
    require_format_error(p, {"[2, 3]", "F32", "needs 24 bytes", "span 20 bytes"});
  }
  SECTION("shape product overflows") {
    write_raw(p, "{\"w\":" + entry("F32", "[4294967296, 4294967296]", 0, 16) + "}", 16);
    require_format_error(p, {"[4294967296, 4294967296]", "overflows"});
    write_raw(p, "{\"w\":" + entry("F32", "[9223372036854775807]", 0, 16) + "}", 16);
    require_format_error(p, {"overflows"});
    // Zero elements, but the other extents would overflow int64 stride arithmetic.
    write_raw(p, "{\"w\":" + entry("U8", "[0, 4611686018427387904, 4611686018427387904]", 0, 0) + "}");
    require_format_error(p, {"overflows"});
  }
  SECTION("span past the end of the data section") {
    write_raw(p, "{\"w\":" + entry("F32", "[6]", 0, 24) + "}", 16);
    require_format_error(p, {"[0, 24]", "past the end of the data section", "16 bytes"});
  }
  SECTION("overlapping tensors") {
    write_raw(p, "{\"a\":" + entry("F32", "[4]", 0, 16) + ",\"b\":" + entry("F32", "[4]", 8, 24) + "}", 24);
    require_format_error(p, {"\"b\"", "[8, 24]", "overlap", "\"a\"", "[0, 16]"});
  }
  SECTION("hole between tensors") {
    write_raw(p, "{\"a\":" + entry("F32", "[2]", 0, 8) + ",\"b\":" + entry("F32", "[2]", 16, 24) + "}", 24);
    require_format_error(p, {"bytes [8, 16)", "belong to no tensor", "\"b\""});
  }
  SECTION("hole at the start") {
    write_raw(p, "{\"a\":" + entry("F32", "[2]", 4, 12) + "}", 12);
    require_format_error(p, {"bytes [0, 4)", "belong to no tensor"});
  }
  SECTION("trailing bytes after the last tensor") {
    write_raw(p, "{\"a\":" + entry("F32", "[2]", 0, 8) + "}", 12);
    require_format_error(p, {"data section is 12 bytes", "[0, 8)", "4 trailing bytes"});
    write_raw(p, "{}", 3);
    require_format_error(p, {"data section is 3 bytes", "3 trailing bytes"});
  }
  SECTION("__metadata__ is not a map of strings") {
    write_raw(p, R"({"__metadata__":[1]})");
    require_format_error(p, {"\"__metadata__\" is not an object of strings", "array"});
    write_raw(p, R"({"__metadata__":{"format":"pt","n":1}})");
    require_format_error(p, {"\"__metadata__\"", "value of \"n\"", "number"});
  }
  SECTION("duplicate tensor name") {
    write_raw(p, "{\"a\":" + entry("F32", "[2]", 0, 8) + ",\"a\":" + entry("F32", "[2]", 8, 16) + "}", 16);
    require_format_error(p, {"duplicate key \"a\"", "top-level"});
  }
  SECTION("duplicate field in an entry") {
    write_raw(p, R"({"a":{"dtype":"F32","dtype":"U8","shape":[2],"data_offsets":[0,8]}})", 8);
    require_format_error(p, {"duplicate key \"dtype\""});
  }
  SECTION("pathological nesting") {
    write_raw(p, R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":)" + std::string(100000, '[') +
                     std::string(100000, ']') + "}}", 1);
    require_format_error(p, {"deeper than 256 levels"});
  }
}

TEST_CASE("safetensors: MappedFile maps regular files only", "[safetensors]") {
  const qwen::testing::ScratchDir dir("safetensors");
  SECTION("missing file names path and reason") {
    const std::string msg = message_of<IoError>([&] { (void)MappedFile::open(dir / "nope.bin"); });
    CHECK_THAT(msg, Catch::Contains("nope.bin") && Catch::Contains("No such file"));
  }
  SECTION("directory") {
    CHECK_THAT(message_of<IoError>([&] { (void)MappedFile::open(dir.path()); }), Catch::Contains("not a regular file"));
  }
  SECTION("a FIFO is rejected without waiting for a writer") {
    REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
    CHECK_THAT(message_of<IoError>([&] { (void)MappedFile::open(dir / "fifo"); }), Catch::Contains("not a regular file"));
  }
  SECTION("empty file is size 0, unmapped") {
    write_text(dir / "empty", "");
    const auto f = MappedFile::open(dir / "empty");
    CHECK(f.size() == 0);
    CHECK(f.data() == nullptr);
  }
  SECTION("moves transfer the mapping") {
    write_text(dir / "a", "hello");
    auto a = MappedFile::open(dir / "a");
    const std::byte* p = a.data();
    MappedFile b = std::move(a);
    CHECK(b.data() == p);
    CHECK(b.size() == 5);
    CHECK(std::memcmp(b.data(), "hello", 5) == 0);
    write_text(dir / "c", "xy");
    b = MappedFile::open(dir / "c");
    CHECK(b.size() == 2);
  }
}

