// Whether this test binary is the sanitizer build's (tests/CMakeLists.txt defines
// QWEN_TEST_SANITIZED there). Unoptimised and instrumented code runs 10-50x slower, and the
// sanitizers look for memory and undefined-behaviour errors, which the same code paths show on
// smaller sweeps: the long statistical and shape sweeps run smaller in that build only, and each
// place that does so says what it keeps. The normal build always runs the full sweep.
#pragma once

namespace qwen_test {
#if defined(QWEN_TEST_SANITIZED)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
}  // namespace qwen_test
