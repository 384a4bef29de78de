// The two threads' meeting points.
//
// EngineLoop: the engine's loop thread. It steps while there is work and sleeps until wake() (the
// server calls it after each submit and cancel), and after every step publishes the engine's
// statistics, which only the loop thread may read, as a snapshot any thread can take (/metrics,
// /health).
//
// Exchange: one HTTP request's engine requests (a completion may have several prompts; each is a
// "slot"). The engine's callbacks (loop thread) append what arrives under a mutex and notify; the
// HTTP handler's thread takes it from there, so a callback never waits on a client.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <stop_token>
#include <thread>
#include <vector>

#include <qwen/engine/engine.hpp>

#include "model_host.hpp"

namespace qwen_serve {

class EngineLoop {
 public:
  explicit EngineLoop(ServeEngine& engine) : engine_(engine), thread_([this](std::stop_token stop) { run(stop); }) {}
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;
  ~EngineLoop() {
    thread_.request_stop();
    thread_.join();
  }

  // Work arrived (a submit or a cancel): step again.
  void wake() {
    {
      std::lock_guard lock(mutex_);
      pending_ = true;
    }
    wake_.notify_one();
  }

  // The engine's statistics after the latest step.
  [[nodiscard]] qwen::engine::EngineStats stats() const {
    std::lock_guard lock(mutex_);
    return snapshot_;
  }

 private:
  void run(std::stop_token stop) {
    publish();
    while (!stop.stop_requested()) {
      bool busy = false;
      try {
        busy = engine_.step();
      } catch (const std::exception& e) {
        // The engine turns a request's failure into that request's error; reaching here means
        // its books may be inconsistent, so the server does not go on.
        std::fprintf(stderr, "qwen-serve: engine step failed: %s\n", e.what());
        std::abort();
      }
      publish();
      if (busy) continue;
      std::unique_lock lock(mutex_);
      wake_.wait(lock, stop, [&] { return pending_; });
      pending_ = false;
    }
  }
  void publish() {
    const qwen::engine::EngineStats s = engine_.stats();
    std::lock_guard lock(mutex_);
    snapshot_ = s;
  }

  ServeEngine& engine_;
  mutable std::mutex mutex_;
  std::condition_variable_any wake_;
  bool pending_ = false;
  qwen::engine::EngineStats snapshot_;
  std::jthread thread_;  // last: starts once the members above exist
};

// What one callback brought: a choice's delta and, with the request's last output, its result.
struct Arrival {
  std::size_t slot = 0;
  qwen::engine::ChoiceDelta delta;
  std::shared_ptr<const qwen::engine::RequestResult> result;
};

class Exchange {
 public:
  // `stream`: keep every delta (else only the results are kept).
  Exchange(std::size_t slots, bool stream, int sequences)
      : stream_(stream), sequences_(sequences), ids_(slots, 0), results_(slots) {}

  [[nodiscard]] int sequences() const noexcept { return sequences_; }
  [[nodiscard]] std::size_t slots() const noexcept { return results_.size(); }

  // Loop thread: the engine's callback for `slot`. Returns whether every slot now has its result.
  bool deliver(std::size_t slot, const qwen::engine::RequestOutput& out) {
    std::shared_ptr<const qwen::engine::RequestResult> result;
    if (out.result) result = std::make_shared<const qwen::engine::RequestResult>(*out.result);
    bool complete = false;
    {
      std::lock_guard lock(mutex_);
      if (stream_) arrivals_.push_back({slot, out.delta, result});
      if (result) {
        results_[slot] = result;
        ++finished_;
      }
      complete = finished_ == results_.size();
    }
    arrived_.notify_all();
    return complete;
  }

  // The engine id of `slot`'s request. Cancelled already (the server is stopping): cancels it.
  void set_id(std::size_t slot, qwen::engine::RequestId id, ServeEngine& engine) {
    bool cancel_now = false;
    {
      std::lock_guard lock(mutex_);
      ids_[slot] = id;
      cancel_now = cancelled_;
    }
    if (cancel_now) engine.cancel(id);
  }

  // Slots from `first` on will not be submitted (one was refused): they count as finished, with
  // no result. Returns whether every slot is now finished.
  bool abandon(std::size_t first) {
    bool complete = false;
    {
      std::lock_guard lock(mutex_);
      finished_ += results_.size() - first;
      complete = finished_ == results_.size();
    }
    arrived_.notify_all();
    return complete;
  }

  // Ends every request of the exchange (abort); those submitted later are cancelled on set_id.
  void cancel(ServeEngine& engine) {
    std::vector<qwen::engine::RequestId> ids;
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
      ids = ids_;
    }
    for (const auto id : ids)
      if (id != 0) engine.cancel(id);
  }

  struct Taken {
    std::vector<Arrival> arrivals;
    bool complete = false;  // every result has arrived, and these are the last arrivals
  };
  // Handler thread (stream): what arrived since the last call, waiting up to `wait` for something.
  [[nodiscard]] Taken take(std::chrono::milliseconds wait) {
    std::unique_lock lock(mutex_);
    arrived_.wait_for(lock, wait, [&] { return !arrivals_.empty() || finished_ == results_.size(); });
    Taken t;
    t.arrivals.assign(std::make_move_iterator(arrivals_.begin()), std::make_move_iterator(arrivals_.end()));
    arrivals_.clear();
    t.complete = finished_ == results_.size();
    return t;
  }

  // Handler thread (no stream): every slot's result, once all have arrived.
  [[nodiscard]] std::vector<std::shared_ptr<const qwen::engine::RequestResult>> wait_results() {
    std::unique_lock lock(mutex_);
    arrived_.wait(lock, [&] { return finished_ == results_.size(); });
    return results_;
  }

 private:
  const bool stream_;
  const int sequences_;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<Arrival> arrivals_;
  std::vector<qwen::engine::RequestId> ids_;  // 0: not submitted yet
  std::vector<std::shared_ptr<const qwen::engine::RequestResult>> results_;
  std::size_t finished_ = 0;
  bool cancelled_ = false;
};

}  // namespace qwen_serve
