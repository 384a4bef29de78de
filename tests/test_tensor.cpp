#include <catch2/catch.hpp>

#include <string>

#include <qwen/core/dtype.hpp>
#include <qwen/core/error.hpp>
#include <qwen/core/tensor.hpp>

using namespace qwen;

TEST_CASE("dtype names round-trip and sizes match safetensors", "[tensor]") {
  const struct {
    const char* name;
    std::size_t size;
  } expected[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
                  {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U8", 1},      {"BOOL", 1}};
  for (const auto& e : expected) {
    auto t = parse_dtype(e.name);
    REQUIRE(t.has_value());
    CHECK(dtype_name(*t) == e.name);
    CHECK(dtype_size(*t) == e.size);
  }
  CHECK_FALSE(parse_dtype("bf16").has_value());  // case matters, as in safetensors
  CHECK_FALSE(parse_dtype("F8_E4M3FN").has_value());
  CHECK_FALSE(parse_dtype("").has_value());
}

TEST_CASE("tensor views: strides, sizes and typed access", "[tensor]") {
  float data[24] = {};
  TensorView v(data, DType::F32, {2, 3, 4});
  CHECK(v.strides == Shape{12, 4, 1});
  CHECK(v.numel() == 24);
  CHECK(v.nbytes() == 96);
  CHECK(v.is_contiguous());
  CHECK(v.dim(1) == 3);
  CHECK_THROWS_AS(v.dim(3), InvalidArgument);
  CHECK(v.as<float>(DType::F32) == data);
  CHECK_THROWS_WITH(v.as<std::uint16_t>(DType::BF16), Catch::Contains("expected BF16, have F32"));

  TensorView transposed(data, DType::F32, {4, 6}, {1, 4});
  CHECK_FALSE(transposed.is_contiguous());
  CHECK_THROWS_AS(TensorView(data, DType::F32, {4, 6}, {1}), InvalidArgument);
  CHECK(shape_string(Shape{}) == "[]");
  CHECK(shape_string(Shape{151936, 1024}) == "[151936, 1024]");
  CHECK(element_count(Shape{}) == 1);
}

TEST_CASE("errors carry their message and type", "[tensor]") {
  try {
    throw_error<FormatError>("model.safetensors", ": header length ", 12345, " exceeds file size ", 100);
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "model.safetensors: header length 12345 exceeds file size 100");
    CHECK(dynamic_cast<const FormatError*>(&e) != nullptr);
  }
}
