// The CUDA backend: the ops of kernels/cuda on one stream of one GPU. It satisfies
// qwen::BackendFor (backend/backend.hpp, whose comment states the contract) for the dense
// models with bf16 or fp32 weights; FP8 weights and MoE models are refused with an error that
// says so (not yet on CUDA). Include it from a .cu file: nvcc compiles the kernels.
//
// Memory spaces:
//   activations  Buffer<float>: device memory, allocated by the forward pass at construction
//                for its largest step; ops never allocate. The residual stream stays fp32.
//   weights      uploaded once, at placement, through two pinned staging buffers (a progress
//                line on stderr when it is a terminal); a tensor placed twice (tied embeddings)
//                is uploaded once. Too little device memory is an error naming the tensor's
//                shape, its bytes, what is already placed and what the device has free.
//   KV cache     KVCache<BlockSize>: device pools of KV elements (bf16 by default, fp32 with
//                BasicCudaBackend<float>), laid out as the CPU's [layer][num_blocks][BlockSize]
//                [kv_heads][head_dim] for key and value.
//   step plan    prepare() packs the plan (token ids, positions, sequences, KV slots, logit
//                rows, block tables) and the step's RoPE cos/sin table into pinned memory and
//                uploads them with two copies; every op reads the uploaded step. The plan's
//                block copies run on the device.
//   logits       a Buffer<float>; copy_to_host is the step's one device -> host copy.
// Every op is enqueued on the backend's stream; nothing synchronises but copy_to_host (and
// prepare(), which waits until the previous step's upload has left the staging memory).
//
// Numerics against the CPU backend: the projections round their fp32 input to bf16 before a
// cuBLAS GEMM with fp32 accumulation (bf16 weights; kernels/cuda/linear.cuh), the KV cache holds
// bf16, and reductions run in another order. The forward pass is therefore not bit for bit the
// CPU's; tests/cuda/backend_gpu.cu states the tolerance against transformers per dtype.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <qwen/kernels/cpu/attention.hpp>
#include <qwen/kernels/cpu/rope.hpp>
#include <qwen/kernels/cuda/attention.cuh>
#include <qwen/kernels/cuda/common.cuh>
#include <qwen/kernels/cuda/elementwise.cuh>
#include <qwen/kernels/cuda/embedding.cuh>
#include <qwen/kernels/cuda/linear.cuh>
#include <qwen/kernels/cuda/rms_norm.cuh>
#include <qwen/kernels/cuda/rope.cuh>
#include <qwen/kernels/cuda/silu_mul.cuh>

#include "qwen/backend/backend.hpp"
#include "qwen/core/error.hpp"
#include "qwen/core/numeric.hpp"
#include "qwen/core/tensor.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/model/qwen3.hpp"
#include "qwen/model/rope_table.hpp"
#include "qwen/model/step.hpp"
#include "qwen/model/weights.hpp"

namespace qwen {

struct CudaBackendOptions {
  int device = 0;
  bool progress = true;  // a progress line on stderr while the weights upload (only when stderr is a terminal)
};

namespace cuda_detail {

[[noreturn]] inline void fail(const std::string& what, cudaError_t status) {
  throw_error<Error>("CudaBackend: ", what, ": ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
}
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail(what, status);
}

inline std::string memory_report() {
  std::size_t free = 0, total = 0;
  int device = -1;
  cudaGetDevice(&device);
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) return "device memory unknown";
  return detail::cat(free, " of ", total, " bytes free on device ", device);
}

// Owning device memory of count elements (none for count 0); move-only. The failure message
// names what the memory was for.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(std::int64_t count, const std::string& what) : count_(count) {
    if (count < 0) throw_error<InvalidArgument>("CudaBackend: ", what, ": negative size ", count);
    if (count == 0) return;
    const auto bytes = static_cast<std::size_t>(count) * sizeof(T);
    if (const cudaError_t status = cudaMalloc(&data_, bytes); status != cudaSuccess) {
      cudaGetLastError();  // clear the sticky allocation error
      throw_error<Error>("CudaBackend: cannot allocate ", bytes, " bytes of device memory for ", what, " (", cudaGetErrorString(status),
                         "; ", memory_report(), ")");
    }
  }
  DeviceArray(DeviceArray&& o) noexcept : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { release(); }

  [[nodiscard]] T* data() const noexcept { return data_; }
  [[nodiscard]] std::int64_t size() const noexcept { return count_; }

 private:
  void release() noexcept {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
  }
  T* data_ = nullptr;
  std::int64_t count_ = 0;
};

// Owning pinned host memory; move-only.
template <class T>
class PinnedArray {
 public:
  PinnedArray() = default;
  PinnedArray(std::int64_t count, const char* what) : count_(count) {
    if (count > 0) check(cudaMallocHost(&data_, static_cast<std::size_t>(count) * sizeof(T)), what);
  }
  PinnedArray(PinnedArray&& o) noexcept : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  PinnedArray& operator=(PinnedArray&& o) noexcept {
    if (this != &o) {
      if (data_ != nullptr) cudaFreeHost(data_);
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  ~PinnedArray() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  [[nodiscard]] T* data() const noexcept { return data_; }
  [[nodiscard]] std::int64_t size() const noexcept { return count_; }

 private:
  T* data_ = nullptr;
  std::int64_t count_ = 0;
};

// The device a backend runs on: checked and made current when the backend is constructed, before
// any of its other members (events, stream, cuBLAS handle, memory) is created on it, and made
// current again at each of the backend's entry points, so a thread that switched devices in
// between does not enqueue work or allocate on the wrong one.
class Device {
 public:
  explicit Device(int index) : index_(index) {
    int devices = 0;
    if (const cudaError_t s = cudaGetDeviceCount(&devices); s != cudaSuccess || devices == 0)
      throw_error<Error>("CudaBackend: no CUDA device (", s == cudaSuccess ? "0 devices" : cudaGetErrorString(s), ")");
    if (index < 0 || index >= devices)
      throw_error<InvalidArgument>("CudaBackend: device ", index, " does not exist (", devices, " devices)");
    use();
    cudaDeviceProp properties{};
    check(cudaGetDeviceProperties(&properties, index), "cudaGetDeviceProperties");
    name_ = properties.name;
  }
  void use() const { check(cudaSetDevice(index_), "cudaSetDevice"); }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  int index_;
  std::string name_;
};

// Owns a non-blocking stream; destroying it waits for the work enqueued on it.
class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  [[nodiscard]] cudaStream_t get() const noexcept { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() { check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate"); }
  Event(Event&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}
  Event& operator=(Event&&) = delete;
  Event(const Event&) = delete;
  ~Event() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  [[nodiscard]] cudaEvent_t get() const noexcept { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>)
    return DType::F32;
  else
    return DType::BF16;
}

inline std::string shape_text(const TensorView& t) {
  std::string s = "[";
  for (std::size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "] " + std::string(dtype_name(t.dtype));
}

// Rows of a block table the step buffers are sized for: every sequence of a step may reach
// max_positions, in blocks of at least this many positions.
inline constexpr std::int64_t min_block_size = 16;

}  // namespace cuda_detail

template <kernels::cuda::StorageFloat KV = bf16>
class BasicCudaBackend {
 public:
  using Activation = float;
  using KVElement = KV;
  template <class T>
  using Buffer = cuda_detail::DeviceArray<T>;
  // A placed weight [out, in] in device memory (W = bf16 or float; fp8 is refused at placement).
  template <class W>
  struct Linear {
    const W* weight = nullptr;
    std::int64_t out = 0, in = 0;
  };
  template <class T>
  using Vector = const T*;

  // One layer's key and value pools per layer: [num_blocks][BlockSize][num_kv_heads][head_dim].
  template <int BlockSize>
  class KVCache {
    static_assert(BlockSize >= cuda_detail::min_block_size, "CudaBackend: the step's block tables are sized for blocks of >= 16 positions");

   public:
    KVCache(int num_layers, int num_kv_heads, int head_dim, int num_blocks)
        : num_layers_(num_layers), num_kv_heads_(num_kv_heads), head_dim_(head_dim), num_blocks_(num_blocks),
          pool_elements_(std::int64_t{num_blocks} * BlockSize * num_kv_heads * head_dim),
          pools_(checked_total(num_layers, num_kv_heads, head_dim, num_blocks),
                 detail::cat("the KV cache (", num_blocks, " blocks of ", BlockSize, " positions, ", num_layers, " layers)")) {}
    [[nodiscard]] int num_blocks() const noexcept { return num_blocks_; }
    [[nodiscard]] int num_layers() const noexcept { return num_layers_; }
    [[nodiscard]] KV* key_pool(int layer) const noexcept { return pools_.data() + (2 * std::int64_t{layer}) * pool_elements_; }
    [[nodiscard]] KV* value_pool(int layer) const noexcept { return key_pool(layer) + pool_elements_; }
    [[nodiscard]] std::int64_t block_elements() const noexcept { return std::int64_t{BlockSize} * num_kv_heads_ * head_dim_; }

   private:
    static std::int64_t checked_total(int num_layers, int num_kv_heads, int head_dim, int num_blocks) {
      if (num_layers <= 0 || num_kv_heads <= 0 || head_dim <= 0 || num_blocks <= 0)
        throw_error<InvalidArgument>("CudaBackend KV cache: num_layers ", num_layers, ", num_kv_heads ", num_kv_heads, ", head_dim ",
                                     head_dim, ", num_blocks ", num_blocks, " must all be positive");
      return 2 * std::int64_t{num_layers} * num_blocks * BlockSize * num_kv_heads * head_dim;
    }
    int num_layers_, num_kv_heads_, head_dim_, num_blocks_;
    std::int64_t pool_elements_;
    cuda_detail::DeviceArray<KV> pools_;
  };

  explicit BasicCudaBackend(const CudaBackendOptions& options = {})
      : options_(options),
        device_(options.device),
        cublas_workspace_(static_cast<std::int64_t>(kernels::cuda::linear_cublas_workspace_bytes), "the cuBLAS workspace") {
    for (auto& s : staging_) s = cuda_detail::PinnedArray<std::byte>(staging_bytes, "cudaMallocHost (weight staging)");
  }
  BasicCudaBackend(const BasicCudaBackend&) = delete;
  BasicCudaBackend& operator=(const BasicCudaBackend&) = delete;
  // Waits for the stream before any member (weights, workspaces) is freed.
  ~BasicCudaBackend() { cudaStreamSynchronize(stream_.get()); }

  [[nodiscard]] cudaStream_t stream() const noexcept { return stream_.get(); }
  [[nodiscard]] const std::string& device_name() const noexcept { return device_.name(); }
  [[nodiscard]] std::int64_t placed_weight_bytes() const noexcept { return placed_bytes_; }
  // Bytes of one K or V element in the caches this backend makes (the engine sizes its pool by it).
  [[nodiscard]] static constexpr std::int64_t kv_element_bytes() noexcept { return sizeof(KV); }
  void synchronize() const { cuda_detail::check(cudaStreamSynchronize(stream_.get()), "a step's kernels"); }

  // ---- memory ----
  template <class T>
  [[nodiscard]] Buffer<T> allocate(std::int64_t count) {
    device_.use();
    return Buffer<T>(count, detail::cat("an activation buffer of ", count, " elements"));
  }
  template <class T>
  [[nodiscard]] static T* data(Buffer<T>& b) noexcept {
    return b.data();
  }
  template <class T>
  [[nodiscard]] static const T* data(const Buffer<T>& b) noexcept {
    return b.data();
  }
  // The step's device -> host copy; waits for everything enqueued before it.
  template <class T>
  void copy_to_host(const Buffer<T>& src, std::int64_t count, T* dst) const {
    if (count <= 0) return;
    if (count > src.size()) throw_error<InvalidArgument>("CudaBackend::copy_to_host: ", count, " elements from a buffer of ", src.size());
    device_.use();
    cuda_detail::check(cudaMemcpyAsync(dst, src.data(), static_cast<std::size_t>(count) * sizeof(T), cudaMemcpyDeviceToHost, stream_.get()),
                       "copy to host");
    synchronize();
  }

  template <int BlockSize>
  [[nodiscard]] KVCache<BlockSize> make_kv_cache(int num_layers, int num_kv_heads, int head_dim, int num_blocks) {
    device_.use();
    end_progress();
    return KVCache<BlockSize>(num_layers, num_kv_heads, head_dim, num_blocks);
  }

  // The model types this backend runs: MoE models and FP8 weights are refused.
  template <Qwen3Type Model>
  static void refuse_unsupported() {
    if constexpr (Model::is_moe)
      throw_error<InvalidArgument>("CudaBackend: ", Model::name(), " is a mixture-of-experts model; MoE is not yet supported on CUDA",
                                   " (use the CPU backend)");
    else if constexpr (std::is_same_v<typename Model::WeightType, fp8>)
      throw_error<InvalidArgument>("CudaBackend: ", Model::name(), " has FP8 weights; FP8 is not yet supported on CUDA",
                                   " (use the CPU backend)");
  }

  // Called by Qwen3Forward before it places a model's weights: refuses what this backend does
  // not run, and starts a new placement. A tensor placed twice within one model (tied
  // embeddings) is uploaded once; across models nothing is shared, since the host memory of an
  // earlier model may since have been reused at the same addresses. Placed weights stay on the
  // device as long as the backend lives.
  template <Qwen3Type Model>
  void check_model() {
    refuse_unsupported<Model>();
    placed_.clear();
    placement_open_ = true;
    placement_first_ = weights_.size();
    placement_start_bytes_ = placed_bytes_;
  }

  // ---- weight placement ----
  template <class W>
  [[nodiscard]] Linear<W> place_linear(const LinearWeight& w) {
    if constexpr (std::is_same_v<W, fp8>) {
      throw_error<InvalidArgument>("CudaBackend: FP8 weights (", cuda_detail::shape_text(w.weight),
                                   ") are not yet supported on CUDA; use the CPU backend for -FP8 checkpoints");
    } else {
      if (w.scale_inv) throw_error<InvalidArgument>("CudaBackend::place_linear: a block-FP8 weight for a model whose weight type is not fp8");
      if (w.weight.shape.size() != 2)
        throw_error<InvalidArgument>("CudaBackend::place_linear: weight ", cuda_detail::shape_text(w.weight), " is not a matrix");
      const W* host = w.weight.as<W>(cuda_detail::dtype_of<W>());
      return {upload(host, w.weight.numel(), w.weight), w.weight.shape[0], w.weight.shape[1]};
    }
  }
  template <class T>
  [[nodiscard]] Vector<T> place_vector(const TensorView& t) {
    return upload(t.as<T>(cuda_detail::dtype_of<T>()), t.numel(), t);
  }

  // ---- the step ----
  template <Qwen3Type Model>
  class Step {
   public:
    static constexpr int head_dim = Model::head_dim;

    Step(const StepLimits& limits, const io::ModelConfig& config)
        : limits_(limits),
          max_indices_(std::int64_t{limits.max_sequences} *
                       ((limits.max_positions + cuda_detail::min_block_size - 1) / cuda_detail::min_block_size)),
          rope_(rope_frequencies(config, Model::head_dim)),
          host_ints_(ints_size(), "cudaMallocHost (step plan staging)"),
          host_cos_sin_(limits.max_tokens * head_dim, "cudaMallocHost (RoPE table staging)"),
          ints_(ints_size(), "the step plan"),
          cos_sin_(limits.max_tokens * head_dim, "the step's RoPE table"),
          attention_workspace_(static_cast<std::int64_t>(kernels::cuda::paged_attention_workspace_bytes<head_dim, Model::group_size>(
                                   limits.max_tokens, Model::num_kv_heads, limits.max_positions)),
                               "the attention workspace"),
          blocks_read_(static_cast<std::size_t>(limits.max_sequences)) {}

   private:
    friend class BasicCudaBackend;
    // Sections of the int32 arena, in upload order (the block table last, so a step uploads
    // only the prefix it uses).
    [[nodiscard]] std::int64_t ints_size() const {
      return 4 * limits_.max_tokens + limits_.max_logit_rows + limits_.max_sequences + 1 + max_indices_;
    }
    [[nodiscard]] std::int64_t tokens_at() const noexcept { return 0; }
    [[nodiscard]] std::int64_t positions_at() const noexcept { return limits_.max_tokens; }
    [[nodiscard]] std::int64_t sequence_of_token_at() const noexcept { return 2 * limits_.max_tokens; }
    [[nodiscard]] std::int64_t kv_slot_at() const noexcept { return 3 * limits_.max_tokens; }
    [[nodiscard]] std::int64_t logit_rows_at() const noexcept { return 4 * limits_.max_tokens; }
    [[nodiscard]] std::int64_t indptr_at() const noexcept { return logit_rows_at() + limits_.max_logit_rows; }
    [[nodiscard]] std::int64_t indices_at() const noexcept { return indptr_at() + limits_.max_sequences + 1; }
    [[nodiscard]] const std::int32_t* device(std::int64_t at) const noexcept { return ints_.data() + at; }

    StepLimits limits_;
    std::int64_t max_indices_;
    kernels::cpu::RopeFrequencies rope_;
    cuda_detail::PinnedArray<std::int32_t> host_ints_;
    cuda_detail::PinnedArray<float> host_cos_sin_;
    cuda_detail::DeviceArray<std::int32_t> ints_;
    cuda_detail::DeviceArray<float> cos_sin_;
    cuda_detail::DeviceArray<std::byte> attention_workspace_;
    cuda_detail::Event uploaded_;
    std::vector<std::int64_t> blocks_read_;  // scratch of the plan check, one per sequence
    bool pending_upload_ = false;
    std::int64_t num_tokens_ = 0, num_logit_rows_ = 0;
    int max_context_ = 0;
  };

  template <Qwen3Type Model>
  [[nodiscard]] Step<Model> make_step(const StepLimits& limits, const io::ModelConfig& config) {
    refuse_unsupported<Model>();
    device_.use();
    end_progress();
    // The projections' bf16 copy of their input: the widest input of any projection.
    std::int64_t widest = std::max<std::int64_t>(Model::hidden_size, Model::q_size);
    if constexpr (!Model::is_moe) widest = std::max<std::int64_t>(widest, Model::intermediate_size);
    if (limits.max_tokens * widest > x_bf16_.size()) x_bf16_ = Buffer<bf16>(limits.max_tokens * widest, "the projections' bf16 input");
    return Step<Model>(limits, config);
  }

  // The plan against the step's capacity and the cache, with the CPU backend's errors: arrays of
  // the right lengths, token ids in the vocabulary, block tables and positions
  // (kernels::cpu::attention_detail's checks, as CpuBackend's attention plan makes them), KV
  // slots and block copies inside the pool, logit rows among the step's tokens.
  template <Qwen3Type Model, int BlockSize>
  void check_plan(Step<Model>& step, const StepPlan& plan, const KVCache<BlockSize>& kv) const {
    constexpr const char* op = "CudaBackend::prepare";
    if (plan.block_size != BlockSize) throw_error<InvalidArgument>(op, ": the plan has block size ", plan.block_size, ", the cache ", BlockSize);
    const std::int64_t n = plan.num_tokens(), rows = plan.num_logit_rows();
    const int sequences = plan.num_sequences();
    const auto indices = static_cast<std::int64_t>(plan.block_table_indices.size());
    if (n > step.limits_.max_tokens || rows > step.limits_.max_logit_rows || sequences > step.limits_.max_sequences ||
        indices > step.max_indices_)
      throw_error<InvalidArgument>(op, ": a plan of ", n, " tokens, ", rows, " logit rows, ", sequences, " sequences and ", indices,
                                   " block-table entries; the step holds at most ", step.limits_.max_tokens, ", ",
                                   step.limits_.max_logit_rows, ", ", step.limits_.max_sequences, " and ", step.max_indices_,
                                   " (block tables of blocks of at least ", cuda_detail::min_block_size, " positions)");
    const auto size_n = static_cast<std::size_t>(n);
    if (plan.positions.size() != size_n || plan.sequence_of_token.size() != size_n || plan.kv_slot.size() != size_n ||
        plan.block_table_indptr.size() != static_cast<std::size_t>(sequences) + 1)
      throw_error<InvalidArgument>(op, ": a plan of ", n, " tokens and ", sequences, " sequences has ", plan.positions.size(),
                                   " positions, ", plan.sequence_of_token.size(), " sequence indices, ", plan.kv_slot.size(),
                                   " KV slots and ", plan.block_table_indptr.size(), " block-table offsets");
    for (std::size_t t = 0; t < size_n; ++t)
      if (plan.tokens[t] < 0 || plan.tokens[t] >= Model::vocab_size)
        throw_error<InvalidArgument>(op, ": token ", t, " has id ", plan.tokens[t], ", outside the vocabulary [0, ", Model::vocab_size, ")");
    const kernels::cpu::PagedAttentionBatch batch{plan.sequence_of_token, plan.positions, plan.block_table_indptr,
                                                  plan.block_table_indices};
    const int tables = kernels::cpu::attention_detail::check_block_tables(op, batch);
    kernels::cpu::attention_detail::check_tokens(op, batch, tables, kv.num_blocks(), BlockSize,
                                                 std::span(step.blocks_read_).first(static_cast<std::size_t>(tables)));
    const std::int64_t slots = std::int64_t{kv.num_blocks()} * BlockSize;
    for (std::size_t t = 0; t < size_n; ++t)
      if (plan.kv_slot[t] < -1 || plan.kv_slot[t] >= slots)
        throw_error<InvalidArgument>(op, ": token ", t, " has KV slot ", plan.kv_slot[t], ", the cache has ", slots, " (-1: none)");
    for (const std::int32_t r : plan.logit_rows)
      if (r < 0 || r >= n) throw_error<InvalidArgument>(op, ": logit row ", r, " is not one of the step's ", n, " tokens");
    for (const BlockCopy& c : plan.block_copies)
      if (c.src < 0 || c.src >= kv.num_blocks() || c.dst < 0 || c.dst >= kv.num_blocks())
        throw_error<InvalidArgument>(op, ": a block copy from ", c.src, " to ", c.dst, ", the cache has ", kv.num_blocks(), " blocks");
  }

  // Once per step, before any op: checks the plan on the host (every check the CPU backend's
  // ops make as they go: kernels cannot throw), uploads it and its RoPE table, then runs the
  // plan's block copies on the device.
  template <Qwen3Type Model, int BlockSize>
  void prepare(Step<Model>& step, const StepPlan& plan, KVCache<BlockSize>& kv) {
    device_.use();
    placement_open_ = false;
    check_plan<Model>(step, plan, kv);
    const std::int64_t n = plan.num_tokens(), rows = plan.num_logit_rows();
    const auto indices = static_cast<std::int64_t>(plan.block_table_indices.size());
    // The previous step's upload must have left the staging memory before it is rewritten.
    if (step.pending_upload_) cuda_detail::check(cudaEventSynchronize(step.uploaded_.get()), "the previous step's upload");

    std::int32_t* h = step.host_ints_.data();
    auto put = [&](std::int64_t at, const std::vector<std::int32_t>& v) { std::copy(v.begin(), v.end(), h + at); };
    put(step.tokens_at(), plan.tokens);
    put(step.positions_at(), plan.positions);
    put(step.sequence_of_token_at(), plan.sequence_of_token);
    put(step.kv_slot_at(), plan.kv_slot);
    put(step.logit_rows_at(), plan.logit_rows);
    put(step.indptr_at(), plan.block_table_indptr);
    put(step.indices_at(), plan.block_table_indices);
    kernels::cpu::rope_cos_sin(step.rope_, plan.positions.data(), n, step.host_cos_sin_.data());
    const std::int64_t max_position = plan.positions.empty() ? 0 : *std::max_element(plan.positions.begin(), plan.positions.end());

    try {
      cuda_detail::check(cudaMemcpyAsync(step.ints_.data(), h, static_cast<std::size_t>(step.indices_at() + indices) * sizeof(std::int32_t),
                                         cudaMemcpyHostToDevice, stream_.get()),
                         "step plan upload");
      if (n > 0)
        cuda_detail::check(cudaMemcpyAsync(step.cos_sin_.data(), step.host_cos_sin_.data(),
                                           static_cast<std::size_t>(n * Model::head_dim) * sizeof(float), cudaMemcpyHostToDevice,
                                           stream_.get()),
                           "RoPE table upload");
      cuda_detail::check(cudaEventRecord(step.uploaded_.get(), stream_.get()), "cudaEventRecord");
    } catch (...) {
      cudaStreamSynchronize(stream_.get());  // no copy may still read the staging memory the next step rewrites
      step.pending_upload_ = false;
      throw;
    }
    step.pending_upload_ = true;

    const auto block_bytes = static_cast<std::size_t>(kv.block_elements()) * sizeof(KV);
    for (const BlockCopy& c : plan.block_copies)
      for (int l = 0; l < kv.num_layers(); ++l)
        for (KV* pool : {kv.key_pool(l), kv.value_pool(l)})
          cuda_detail::check(cudaMemcpyAsync(pool + c.dst * kv.block_elements(), pool + c.src * kv.block_elements(), block_bytes,
                                             cudaMemcpyDeviceToDevice, stream_.get()),
                             "KV block copy");
    step.num_tokens_ = n;
    step.num_logit_rows_ = rows;
    step.max_context_ = static_cast<int>(max_position + 1);
  }

  // ---- ops ----
  template <Qwen3Type Model, class T>
  void embedding(const Step<Model>& step, Vector<T> table, float* out) {
    launched(kernels::cuda::embedding(table, Model::vocab_size, Model::hidden_size, step.device(step.tokens_at()), step.num_tokens_, out,
                                      stream_.get()),
             "embedding");
  }

  template <class T>
  void rms_norm(const float* x, std::int64_t rows, std::int64_t dim, Vector<T> weight, float eps, float* out) {
    launched(kernels::cuda::rms_norm(x, rows, dim, weight, eps, out, stream_.get()), "rms_norm");
  }

  // y[p][n, w[p].out] = x[n, in] · w[p]ᵀ for each p (q/k/v, gate/up): one cuBLAS GEMM per
  // projection, x rounded to bf16 once for all of them (bf16 weights).
  template <class W, std::size_t K>
  void linear(const float* x, std::int64_t n, const std::array<Linear<W>, K>& w, const std::array<float*, K>& y) {
    const std::int64_t in = w[0].in;
    for (const Linear<W>& l : w)
      if (l.in != in) throw_error<InvalidArgument>("CudaBackend::linear: projections of one input with inputs of ", in, " and ", l.in);
    bool converted = false;
    if constexpr (std::is_same_v<W, bf16>) {
      if (n * in > x_bf16_.size())
        throw_error<InvalidArgument>("CudaBackend::linear: ", n, " rows of ", in, " inputs; the step's bf16 scratch holds ", x_bf16_.size());
      launched(kernels::cuda::convert_to_bf16(x, x_bf16_.data(), n * in, stream_.get()), "convert_to_bf16");
      converted = true;
    }
    for (std::size_t p = 0; p < K; ++p) project(x, n, w[p], y[p], converted);
  }
  template <class W>
  void linear(const float* x, std::int64_t n, const Linear<W>& w, float* y) {
    project(x, n, w, y, false);
  }

  // The fused input side of attention (kernels/cuda/rope.cuh): q_norm, k_norm, RoPE, KV append.
  template <Qwen3Type Model, int BlockSize, class T>
  void qk_norm_rope_write_kv(const Step<Model>& step, KVCache<BlockSize>& kv, int layer, Vector<T> q_norm, Vector<T> k_norm, float eps,
                             float* q, const float* k, const float* v) {
    const kernels::cuda::QkNormRopeShape shape{.n = step.num_tokens_,
                                               .num_heads = Model::num_heads,
                                               .num_kv_heads = Model::num_kv_heads,
                                               .q_stride = Model::q_size,
                                               .k_stride = Model::kv_size,
                                               .v_stride = Model::kv_size,
                                               .num_slots = std::int64_t{kv.num_blocks()} * BlockSize,
                                               .eps = eps};
    launched(kernels::cuda::qk_norm_rope_write_kv<Model::head_dim>(q, k, v, q_norm, k_norm, step.cos_sin_.data(),
                                                                   step.device(step.kv_slot_at()), kv.key_pool(layer),
                                                                   kv.value_pool(layer), shape, stream_.get()),
             "qk_norm_rope_write_kv");
  }

  template <Qwen3Type Model, int BlockSize>
  void attention(Step<Model>& step, const KVCache<BlockSize>& kv, int layer, const float* q, float scale, float* out) {
    const kernels::cuda::PagedAttentionArgs<KV> args{.q = q,
                                                     .sequence_of_token = step.device(step.sequence_of_token_at()),
                                                     .position = step.device(step.positions_at()),
                                                     .block_table_indptr = step.device(step.indptr_at()),
                                                     .block_table_indices = step.device(step.indices_at()),
                                                     .key = kv.key_pool(layer),
                                                     .value = kv.value_pool(layer),
                                                     .out = out,
                                                     .n_tokens = step.num_tokens_,
                                                     .num_kv_heads = Model::num_kv_heads,
                                                     .block_size = BlockSize,
                                                     .num_blocks = kv.num_blocks(),
                                                     .max_context = std::max(step.max_context_, 1),
                                                     .scale = scale};
    launched(kernels::cuda::paged_attention<Model::head_dim, Model::group_size>(args, step.attention_workspace_.data(),
                                                                                  step.attention_workspace_.size(), stream_.get()),
             "attention");
  }

  void silu_mul(const float* gate, const float* up, float* out, std::int64_t count) {
    launched(kernels::cuda::silu_mul(gate, up, out, count, stream_.get()), "silu_mul");
  }
  void add(float* x, const float* y, std::int64_t count) { launched(kernels::cuda::add(x, y, count, stream_.get()), "add"); }

  // Present for the concept only: check_model refuses MoE models before a step exists.
  template <Qwen3Type Model, class Placed>
  void moe(Step<Model>&, const Placed&, const float*, float*) {
    refuse_unsupported<Model>();
  }

  template <Qwen3Type Model>
  void gather_logit_rows(const Step<Model>& step, const float* src, float* dst) {
    launched(kernels::cuda::gather_rows(src, step.device(step.logit_rows_at()), step.num_logit_rows_, Model::hidden_size, dst, stream_.get()),
             "gather_logit_rows");
  }

 private:
  static constexpr std::int64_t staging_bytes = std::int64_t{32} << 20;

  template <class W>
  void project(const float* x, std::int64_t n, const Linear<W>& w, float* y, bool x_bf16_ready) {
    const kernels::cuda::LinearWorkspace workspace{.x_bf16 = x_bf16_.data(),
                                                   .x_bf16_capacity = x_bf16_.size(),
                                                   .cublas = cublas_workspace_.data(),
                                                   .cublas_bytes = static_cast<std::size_t>(cublas_workspace_.size()),
                                                   .x_bf16_ready = x_bf16_ready};
    launched(kernels::cuda::linear(x, n, w.in, w.weight, w.out, y, workspace, cublas_.get(), stream_.get()), "linear");
  }

  static void launched(cudaError_t status, const char* op) {
    if (status != cudaSuccess) cuda_detail::fail(detail::cat("launching ", op), status);
  }

  // Copies count elements at host (a tensor of the checkpoint) to new device memory, once per
  // host address, through the pinned staging buffers.
  template <class T>
  const T* upload(const T* host, std::int64_t count, const TensorView& tensor) {
    if (const auto found = placed_.find(host); found != placed_.end()) return static_cast<const T*>(found->second);
    try {
      device_.use();
      const auto bytes = static_cast<std::int64_t>(count * static_cast<std::int64_t>(sizeof(T)));
      cuda_detail::DeviceArray<std::byte> device(bytes, detail::cat("a weight ", cuda_detail::shape_text(tensor), " (", placed_bytes_,
                                                                    " bytes of weights already placed)"));
      const auto* src = reinterpret_cast<const std::byte*>(host);
      std::byte* dst = device.data();
      // Chunks go through the two staging buffers in turn, across tensors, so that the memcpy
      // into one overlaps the upload from the other.
      for (std::int64_t done = 0; done < bytes; ++staging_turn_) {
        const std::int64_t size = std::min(staging_bytes, bytes - done);
        cuda_detail::PinnedArray<std::byte>& stage = staging_[staging_turn_ % 2];
        cuda_detail::Event& free_again = staging_free_[staging_turn_ % 2];
        cuda_detail::check(cudaEventSynchronize(free_again.get()), "weight upload");
        std::memcpy(stage.data(), src + done, static_cast<std::size_t>(size));
        cuda_detail::check(cudaMemcpyAsync(dst + done, stage.data(), static_cast<std::size_t>(size), cudaMemcpyHostToDevice, stream_.get()),
                           "weight upload");
        cuda_detail::check(cudaEventRecord(free_again.get(), stream_.get()), "cudaEventRecord");
        done += size;
      }
      placed_bytes_ += bytes;
      const auto* result = reinterpret_cast<const T*>(device.data());  // cudaMalloc aligns to 256 bytes
      placed_.emplace(host, result);
      weights_.push_back(std::move(device));
      report_progress();
      return result;
    } catch (...) {
      abandon_placement();
      throw;
    }
  }

  // A model's placement that failed part way (device memory short) frees what it had uploaded,
  // so that a retry, say with a smaller model, starts from the memory there was before it. A
  // placement is open from check_model (Qwen3Forward places its weights last, after its KV
  // cache, step and buffers) until the first step is prepared.
  void abandon_placement() noexcept {
    end_progress();
    if (!placement_open_) return;
    cudaStreamSynchronize(stream_.get());  // no upload may still write the memory freed below
    while (weights_.size() > placement_first_) weights_.pop_back();
    placed_bytes_ = placement_start_bytes_;
    placed_.clear();
    placement_open_ = false;
  }

  void report_progress() {
    if (!options_.progress || isatty(STDERR_FILENO) == 0) return;
    constexpr std::int64_t every = std::int64_t{256} << 20;
    if (placed_bytes_ / every == last_reported_ / every) return;
    last_reported_ = placed_bytes_;
    std::fprintf(stderr, "\rqwen: %.2f GiB of weights on %s", static_cast<double>(placed_bytes_) / (1 << 30), device_.name().c_str());
    progress_open_ = true;
  }
  void end_progress() {
    if (!progress_open_) return;
    std::fprintf(stderr, "\rqwen: %.2f GiB of weights on %s\n", static_cast<double>(placed_bytes_) / (1 << 30), device_.name().c_str());
    progress_open_ = false;
  }

  CudaBackendOptions options_;
  cuda_detail::Device device_;  // first: every member below is created on it
  cuda_detail::Stream stream_;
  Buffer<std::byte> cublas_workspace_;
  kernels::cuda::CublasHandle cublas_;  // destroyed before the workspace and the stream it was given
  Buffer<bf16> x_bf16_;
  std::array<cuda_detail::PinnedArray<std::byte>, 2> staging_;
  std::array<cuda_detail::Event, 2> staging_free_;
  std::int64_t staging_turn_ = 0;  // the staging buffer the next chunk of weights goes through
  std::unordered_map<const void*, const void*> placed_;
  std::deque<cuda_detail::DeviceArray<std::byte>> weights_;
  bool placement_open_ = false;
  std::size_t placement_first_ = 0;  // weights_[placement_first_ ..] belong to the model being placed
  std::int64_t placement_start_bytes_ = 0;
  std::int64_t placed_bytes_ = 0, last_reported_ = 0;
  bool progress_open_ = false;
};

using CudaBackend = BasicCudaBackend<bf16>;

static_assert(Backend<CudaBackend>, "CudaBackend must satisfy qwen::Backend");

}  // namespace qwen
