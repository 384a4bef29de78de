// Non-owning tensor views: a pointer, an element type, a shape and strides (in elements).
// The memory belongs to someone else (a mapped checkpoint file, a buffer of the caller's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qwen/core/dtype.hpp"
#include "qwen/core/error.hpp"

namespace qwen {

using Shape = std::vector<std::int64_t>;

// "[256, 128]"
[[nodiscard]] inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Row-major (C order) strides for a shape, in elements.
[[nodiscard]] inline Shape contiguous_strides(std::span<const std::int64_t> shape) {
  Shape strides(shape.size(), 1);
  for (std::size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

// Product of the extents; 1 for a scalar (empty shape).
[[nodiscard]] inline std::int64_t element_count(std::span<const std::int64_t> shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

struct TensorView {
  const std::byte* data = nullptr;
  DType dtype = DType::F32;
  Shape shape;
  Shape strides;  // in elements

  TensorView() = default;
  // A contiguous row-major view.
  TensorView(const void* data_, DType dtype_, Shape shape_)
      : data(static_cast<const std::byte*>(data_)), dtype(dtype_), shape(std::move(shape_)), strides(contiguous_strides(shape)) {}
  TensorView(const void* data_, DType dtype_, Shape shape_, Shape strides_)
      : data(static_cast<const std::byte*>(data_)), dtype(dtype_), shape(std::move(shape_)), strides(std::move(strides_)) {
    if (strides.size() != shape.size())
      throw_error<InvalidArgument>("TensorView: ", strides.size(), " strides for shape ", shape_string(shape));
  }

  [[nodiscard]] std::size_t rank() const noexcept { return shape.size(); }
  [[nodiscard]] std::int64_t numel() const { return element_count(shape); }
  [[nodiscard]] std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  [[nodiscard]] bool is_contiguous() const { return strides == contiguous_strides(shape); }
  [[nodiscard]] std::int64_t dim(std::size_t i) const {
    if (i >= shape.size()) throw_error<InvalidArgument>("TensorView: dim ", i, " of a rank-", shape.size(), " tensor");
    return shape[i];
  }

  // Typed pointer; the caller states the element type it expects and gets an error if it is wrong.
  template <class T>
  [[nodiscard]] const T* as(DType expected) const {
    if (dtype != expected)
      throw_error<InvalidArgument>("TensorView: expected ", dtype_name(expected), ", have ", dtype_name(dtype));
    return reinterpret_cast<const T*>(data);
  }
};

}  // namespace qwen
