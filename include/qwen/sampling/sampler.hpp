// The batch sampler: one row of logits per request, each with its own parameters and random
// stream, on the CPU ThreadPool.
//
// Reproducibility: a row's token is a function of its logits, its parameters, its prompt and
// output tokens and its seed only (the draw is Philox keyed by the seed at counter = number of
// tokens generated so far). Which rows share the batch, their order, and how many threads run
// it change nothing: rows are independent and each is computed by one thread with the same
// instructions.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <qwen/kernels/cpu/thread_pool.hpp>

#include "qwen/core/error.hpp"
#include "qwen/sampling/logits_processors.hpp"
#include "qwen/sampling/params.hpp"
#include "qwen/sampling/row_sampler.hpp"

namespace qwen::sampling {

class Sampler {
 public:
  // The seed a request uses for its whole life: params.seed, or else 64 bits from
  // std::random_device, drawn once when the request is admitted (the engine keeps it with the
  // request and can report it, so an unseeded run can be replayed).
  [[nodiscard]] static std::uint64_t admit_seed(const SamplingParams& params) {
    if (params.seed) return *params.seed;
    std::random_device device;
    return std::uint64_t{device()} << 32 | device();
  }

  // One row on the calling thread. row: [vocab] logits, unchanged on return.
  [[nodiscard]] SampleResult sample(std::span<float> row, const RowRequest& request) {
    Lease scratch(*this);
    return sample_row(row, request, *scratch);
  }

  // logits: [rows.size(), vocab] row-major fp32 (as the forward pass returns them), unchanged on
  // return; out[i] receives row i's result. With a pool, rows are spread over its threads
  // (one row is the unit of work); errors name the row ("row 3: ...").
  void sample_batch(std::span<float> logits, std::int64_t vocab, std::span<const RowRequest> rows,
                    std::span<SampleResult> out, kernels::cpu::ThreadPool* pool = nullptr) {
    const auto count = static_cast<std::int64_t>(rows.size());
    if (vocab <= 0 || static_cast<std::int64_t>(logits.size()) != count * vocab)
      throw_error<InvalidArgument>("sample_batch: logits hold ", logits.size(), " values, expected ", count, " rows x ",
                                   vocab, " vocab");
    if (out.size() != rows.size())
      throw_error<InvalidArgument>("sample_batch: ", out.size(), " result slots for ", count, " rows");
    const auto run = [&](std::int64_t begin, std::int64_t end) {
      Lease scratch(*this);
      for (std::int64_t r = begin; r < end; ++r)
        out[static_cast<std::size_t>(r)] = sample_row(logits.subspan(static_cast<std::size_t>(r * vocab), static_cast<std::size_t>(vocab)),
                                                      rows[static_cast<std::size_t>(r)], *scratch,
                                                      "row " + std::to_string(r) + ": ");
    };
    if (pool) pool->parallel_for(count, 1, run);
    else run(0, count);
  }

 private:
  // Scratch buffers are reused across calls: each running chunk borrows one.
  class Lease {
   public:
    explicit Lease(Sampler& owner) : owner_(owner) {
      std::lock_guard lock(owner_.mutex_);
      if (owner_.free_.empty()) {
        scratch_ = std::make_unique<RowScratch>();
      } else {
        scratch_ = std::move(owner_.free_.back());
        owner_.free_.pop_back();
      }
    }
    ~Lease() {
      std::lock_guard lock(owner_.mutex_);
      owner_.free_.push_back(std::move(scratch_));
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    RowScratch& operator*() noexcept { return *scratch_; }

   private:
    Sampler& owner_;
    std::unique_ptr<RowScratch> scratch_;
  };

  std::mutex mutex_;
  std::vector<std::unique_ptr<RowScratch>> free_;
};

}  // namespace qwen::sampling
