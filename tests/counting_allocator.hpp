// Replaces every form of the global operator new / delete with a counting malloc / free, so that
// a test can check that a piece of code allocates nothing: compare allocation_count() before
// and after. Every form is replaced, so nothing this program frees with std::free came from
// another allocator (AddressSanitizer checks that new and free match); over-aligned requests
// are counted too. Include it in exactly one source file of a test executable.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace qwen::testing {
inline std::atomic<std::int64_t> allocations{0};
inline std::int64_t allocation_count() noexcept { return allocations.load(std::memory_order_relaxed); }
inline void* counted_allocation(std::size_t size, std::size_t alignment) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  size = std::max<std::size_t>(size, 1);
  void* p = alignment <= alignof(std::max_align_t) ? std::malloc(size)
                                                    : std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace qwen::testing

void* operator new(std::size_t size) { return qwen::testing::counted_allocation(size, 0); }
void* operator new[](std::size_t size) { return qwen::testing::counted_allocation(size, 0); }
void* operator new(std::size_t size, std::align_val_t alignment) { return qwen::testing::counted_allocation(size, static_cast<std::size_t>(alignment)); }
void* operator new[](std::size_t size, std::align_val_t alignment) { return qwen::testing::counted_allocation(size, static_cast<std::size_t>(alignment)); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return qwen::testing::counted_allocation(size, 0);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void* operator new(std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  try {
    return qwen::testing::counted_allocation(size, static_cast<std::size_t>(alignment));
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, std::align_val_t alignment, const std::nothrow_t& tag) noexcept {
  return operator new(size, alignment, tag);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
