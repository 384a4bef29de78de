// A fixed pool of worker threads for the CPU kernels. parallel_for splits [0, count) into
// contiguous chunks, runs them on the workers and the calling thread, and returns when all are
// done. Work is split by index only, never by timing, so results do not depend on scheduling
// (each index is computed by exactly one thread with the same instructions).
//
// Hand-over: a decode step makes hundreds of parallel_for calls a few tens of microseconds apart,
// and waking a sleeping thread costs about as much (futex + IPI, more under a hypervisor). So
// idle workers and the waiting caller spin on an atomic for up to spin_time before they sleep on
// a condition variable; back-to-back calls never sleep.
//
// parallel_for may be called from any thread, one call at a time per pool (concurrent calls are
// serialised). A parallel_for issued from inside a chunk runs inline on that thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "qwen/core/error.hpp"

namespace qwen::kernels::cpu {

class ThreadPool {
 public:
  // How long an idle thread polls for the next call before it sleeps.
  static constexpr std::chrono::microseconds spin_time{200};

  // The most threads a pool takes (more cores than any machine this toolkit targets has).
  static constexpr unsigned max_threads = 1024;

  // threads = total threads including the caller; 0 = std::thread::hardware_concurrency().
  // InvalidArgument above max_threads; Error naming how many threads started when the system
  // refuses one (the ones already started are stopped first, so nothing is left waiting).
  explicit ThreadPool(unsigned threads = 0) {
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    if (threads > max_threads)
      throw_error<InvalidArgument>("ThreadPool: ", threads, " threads requested, at most ", max_threads, " are supported");
    workers_.reserve(threads - 1);
    try {
      for (unsigned i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
    } catch (const std::exception& e) {  // std::system_error (EAGAIN), or bad_alloc for a thread's state
      const std::size_t running = workers_.size() + 1;  // the caller counts
      stop_workers();
      throw_error<Error>("ThreadPool: ", threads, " threads requested, but the system refused to start thread ", running + 1,
                         " (", e.what(), "); ask for fewer threads");
    }
  }
  ~ThreadPool() { stop_workers(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  [[nodiscard]] unsigned size() const noexcept { return static_cast<unsigned>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, count): chunk c of C covers
  // [c·count/C, (c+1)·count/C) with C = min(ceil(count/grain), size()), so there are never more
  // chunks than pieces of `grain` indices. Chunk 0 runs on the caller. Rethrows the first
  // exception a chunk threw, after every chunk has finished.
  template <class F>
  void parallel_for(std::int64_t count, std::int64_t grain, F&& fn) {
    if (count <= 0) return;
    grain = std::max<std::int64_t>(grain, 1);
    const std::int64_t chunks = std::min<std::int64_t>((count + grain - 1) / grain, size());
    if (chunks <= 1 || inside_task()) {
      fn(std::int64_t{0}, count);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    std::lock_guard call(call_mutex_);
    task_ = Task{[](const void* f, std::int64_t b, std::int64_t e) { (*static_cast<Fn*>(const_cast<void*>(f)))(b, e); },
                 std::addressof(fn), count, chunks};
    error_ = nullptr;
    pending_.store(static_cast<int>(chunks) - 1, std::memory_order_relaxed);
    {
      // Under the mutex, so that a worker that checked call_ and is about to sleep either sees
      // the new value or is already waiting when notify_all runs.
      std::lock_guard lock(mutex_);
      ++generation_;
      call_.store(generation_ << chunk_bits | static_cast<std::uint64_t>(chunks), std::memory_order_release);
      if (sleepers_ > 0) wake_.notify_all();
    }
    run_chunk(0);
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // call_ packs the call's generation with its chunk count, so that a worker learns both in one
  // load: a worker outside the call (index >= chunks) never reads task_, which the next call may
  // already be rewriting; a worker inside it holds the caller (and so task_) until it finishes.
  static constexpr unsigned chunk_bits = 16;
  static constexpr std::uint64_t chunk_mask = (1u << chunk_bits) - 1;
  static_assert(max_threads < (1u << chunk_bits), "a call's chunk count must fit in chunk_bits");

  void stop_workers() {
    {
      std::lock_guard lock(mutex_);
      stopping_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  struct Task {
    void (*call)(const void* fn, std::int64_t begin, std::int64_t end) = nullptr;
    const void* fn = nullptr;
    std::int64_t count = 0, chunks = 0;
  };

  static bool& inside_task() noexcept {
    thread_local bool inside = false;
    return inside;
  }

  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#else
    std::this_thread::yield();
#endif
  }

  // Polls ready() for up to spin_time; true once it holds.
  template <class Ready>
  static bool spin_until(const Ready& ready) {
    const auto deadline = std::chrono::steady_clock::now() + spin_time;
    for (;;) {
      for (int i = 0; i < 64; ++i) {
        if (ready()) return true;
        pause();
      }
      if (std::chrono::steady_clock::now() >= deadline) return ready();
    }
  }

  void run_chunk(std::int64_t chunk) {
    const Task task = task_;
    const std::int64_t begin = chunk * task.count / task.chunks;
    const std::int64_t end = (chunk + 1) * task.count / task.chunks;
    inside_task() = true;
    try {
      task.call(task.fn, begin, end);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    inside_task() = false;
  }

  void worker_loop(unsigned index) {
    std::uint64_t seen = 0;  // the last generation this worker looked at
    for (;;) {
      const auto ready = [&] {
        return call_.load(std::memory_order_acquire) >> chunk_bits != seen || stopping_.load(std::memory_order_acquire);
      };
      if (!spin_until(ready)) {
        std::unique_lock lock(mutex_);
        ++sleepers_;
        wake_.wait(lock, ready);
        --sleepers_;
      }
      if (stopping_.load(std::memory_order_acquire)) return;
      const std::uint64_t call = call_.load(std::memory_order_acquire);
      seen = call >> chunk_bits;
      if (index >= (call & chunk_mask)) continue;  // fewer chunks than workers: not part of this call
      run_chunk(index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        // The last chunk: the caller may be asleep on done_ (it checks pending_ under the mutex).
        std::lock_guard lock(mutex_);
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time
  std::mutex mutex_;       // sleeping, waking, errors
  std::condition_variable wake_, done_;
  Task task_;                   // written before call_ (release), read after it (acquire)
  std::uint64_t generation_ = 0;  // calls so far, under mutex_
  std::atomic<std::uint64_t> call_{0};  // generation_ << chunk_bits | chunks
  std::atomic<int> pending_{0};
  std::atomic<bool> stopping_{false};
  int sleepers_ = 0;  // workers waiting on wake_, under mutex_
  std::exception_ptr error_;
};

}  // namespace qwen::kernels::cpu
