// The engine: requests in, tokens and text out, many requests sharing each forward step.
//
//   submit() / cancel()  (any thread) ──► inbox ──► step() (one loop thread):
//       drain the inbox ─► schedule ─► plan_step ─► forward ─► sample ─► text ─► callbacks
//
// Scheduling (vLLM v1's policy, docs/engine.md):
//   - A request with n choices is n sequences; a sequence is waiting (no KV blocks) or running.
//   - Each step first serves the running sequences in admission order: each gets its remaining
//     tokens (one for a decode; the rest of its prompt, or a part of it, for a prefill in progress)
//     up to the step's token budget (max_num_batched_tokens). When the KV pool cannot hold a
//     sequence's next chunk, the most recently admitted running sequence is preempted: its blocks
//     are freed and it goes back to the front of the waiting queue, to be recomputed from its
//     tokens later (its full blocks stay in the prefix cache until evicted, so recomputing is
//     often a cache hit). The output is unchanged by a preemption: the forward pass is
//     batch-invariant bit for bit and each draw depends only on the request's seed and its count
//     of generated tokens.
//   - Then, if nothing was preempted in this step, waiting sequences are admitted first come first
//     served while a sequence slot (max_num_seqs), token budget and KV blocks are left. With
//     prefix caching on, an admitted sequence first takes the longest run of cached full blocks
//     of its tokens (all but the last: its logits are needed), and computes only the rest.
//   - A prompt longer than the budget is prefilled in chunks over several steps.
// Every sequence therefore makes progress: the oldest running sequence is never preempted while a
// younger one runs, and a single request always fits the pool (checked at submit).
//
// Stopping, per choice: a stop or end-of-sequence id (not before min_tokens), a stop string
// (text_stream.hpp), max_tokens or the context length (finish reason length), cancel (abort), or
// an error in this request (e.g. a penalty that makes a logit infinite): the request ends with
// finish reason error and its message; the engine and every other request go on.
//
// Model types: the engine sees the forward pass through StepModel (one virtual call per step), so
// Engine<BlockSize> is compiled once whatever the model; make_step_model<Model>() wraps a
// Qwen3Forward sized for the options.
//
// Threads: submit() and cancel() may be called from any thread, concurrently with step(); step(),
// run() and generate() from one thread at a time (the loop thread). Callbacks run on the loop
// thread, after the step's forward pass, and must not block for long; one that throws ends its
// request (abort) and nothing else.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "qwen/backend/cpu.hpp"
#include "qwen/chat/chat_template.hpp"
#include "qwen/chat/request.hpp"
#include "qwen/core/error.hpp"
#include "qwen/engine/request.hpp"
#include "qwen/engine/step_model.hpp"
#include "qwen/engine/text_stream.hpp"
#include "qwen/guided/grammar.hpp"
#include "qwen/guided/token_mask.hpp"
#include "qwen/io/model_config.hpp"
#include "qwen/kv/block_manager.hpp"
#include "qwen/model/forward.hpp"
#include "qwen/model/step.hpp"
#include "qwen/sampling/sampler.hpp"
#include "qwen/tokenizer/tokenizer.hpp"

namespace qwen::engine {

struct EngineOptions {
  int max_num_seqs = 64;                     // sequences in one step (running at once)
  std::int64_t max_num_batched_tokens = 512; // tokens in one step
  std::int64_t max_model_len = 0;            // context length; 0: max_position_embeddings (capped by the KV pool)
  std::int64_t kv_cache_bytes = 0;           // KV pool size; 0: default_kv_cache_bytes
  bool enable_prefix_caching = true;
};

// The text side of a checkpoint. Without a tokenizer the engine takes token-id prompts only and
// returns no text; without a chat template, no chat requests.
struct EngineText {
  const tokenizer::Tokenizer* tokenizer = nullptr;
  const chat::ChatTemplate* chat_template = nullptr;
  std::vector<std::int64_t> eos_token_ids;  // config.json's and generation_config.json's eos_token_id
};

struct EngineStats {
  std::int64_t steps = 0;
  std::int64_t scheduled_tokens = 0;         // tokens run through the forward pass
  std::int64_t prompt_tokens_computed = 0;   // of them, prompt positions (recomputation after preemption included)
  std::int64_t prompt_tokens_cached = 0;     // prompt positions taken from the prefix cache at first admission
  std::int64_t prompt_tokens = 0;            // prompt tokens of admitted sequences (first admission)
  std::int64_t generated_tokens = 0;
  std::int64_t preemptions = 0;
  std::int64_t requests_finished = 0;
  int running = 0, waiting = 0;
  int kv_blocks_free = 0, kv_blocks_total = 0;
  double schedule_seconds = 0;   // inbox, scheduling, step planning
  double forward_seconds = 0;    // the forward pass (logits to the host included)
  double sample_seconds = 0;
  double output_seconds = 0;     // stop checks, detokenizing, parsing, callbacks
};

// MemAvailable from /proc/meminfo in bytes, or 0 when it cannot be read.
[[nodiscard]] inline std::int64_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::int64_t value = 0;
  std::string unit;
  while (in >> key >> value >> unit)
    if (key == "MemAvailable:") return value * 1024;
  return 0;
}

// The default KV pool: enough for max_num_seqs sequences of the full context, but at most half
// of the memory available now (1 GiB when that cannot be read).
[[nodiscard]] inline std::int64_t default_kv_cache_bytes(std::int64_t bytes_for_all_sequences) {
  const std::int64_t available = available_memory_bytes();
  const std::int64_t cap = available > 0 ? available / 2 : std::int64_t{1} << 30;
  return std::min(bytes_for_all_sequences, cap);
}

[[nodiscard]] inline EngineOptions checked_engine_options(const EngineOptions& o) {
  if (o.max_num_seqs < 1) throw_error<InvalidArgument>("engine: max_num_seqs is ", o.max_num_seqs, ", must be >= 1");
  if (o.max_num_batched_tokens < 1)
    throw_error<InvalidArgument>("engine: max_num_batched_tokens is ", o.max_num_batched_tokens, ", must be >= 1");
  if (o.max_model_len < 0) throw_error<InvalidArgument>("engine: max_model_len is ", o.max_model_len, ", must be >= 0 (0: the model's)");
  if (o.kv_cache_bytes < 0) throw_error<InvalidArgument>("engine: kv_cache_bytes is ", o.kv_cache_bytes, ", must be >= 0 (0: default)");
  return o;
}

// The context length the options ask for: max_model_len, or the model's max_position_embeddings.
[[nodiscard]] inline std::int64_t requested_model_len(const EngineOptions& o, std::int64_t max_positions) {
  if (o.max_model_len > max_positions)
    throw_error<InvalidArgument>("engine: max_model_len ", o.max_model_len, " exceeds the model's max_position_embeddings ", max_positions);
  return o.max_model_len > 0 ? o.max_model_len : max_positions;
}

// Blocks of BlockSize positions in the KV pool the options ask for (see default_kv_cache_bytes).
[[nodiscard]] inline int kv_pool_blocks(const EngineOptions& o, std::int64_t max_positions, std::int64_t bytes_per_token, int block_size) {
  const std::int64_t per_block = bytes_per_token * block_size;
  const std::int64_t len = requested_model_len(o, max_positions);
  const std::int64_t bytes = o.kv_cache_bytes > 0
                                 ? o.kv_cache_bytes
                                 : default_kv_cache_bytes(per_block * ((len + block_size - 1) / block_size) * o.max_num_seqs);
  const std::int64_t blocks = std::min<std::int64_t>(bytes / per_block, std::int64_t{1} << 30);
  if (blocks < 1)
    throw_error<InvalidArgument>("engine: a KV cache of ", bytes, " bytes holds no block of ", block_size, " positions (", per_block,
                                 " bytes each for this model)");
  return static_cast<int>(blocks);
}

// Qwen3Forward behind the StepModel interface, sized for the engine's options.
template <class Model, class BackendT, int BlockSize>
class ForwardStep final : public StepModel {
 public:
  ForwardStep(const Weights<Model>& weights, const io::ModelConfig& config, BackendT& backend, const EngineOptions& o)
      : bytes_per_token_(engine::kv_bytes_per_token<Model>(backend.kv_element_bytes())),
        blocks_(kv_pool_blocks(checked_engine_options(o), config.max_position_embeddings, bytes_per_token_, BlockSize)),
        backend_(backend),
        forward_(weights, config, backend,
                 {.max_tokens = o.max_num_batched_tokens, .max_sequences = o.max_num_seqs, .kv_blocks = blocks_,
                  .max_logit_rows = o.max_num_seqs}) {}
  [[nodiscard]] const StepLimits& limits() const noexcept override { return forward_.limits(); }
  [[nodiscard]] int kv_blocks() const noexcept override { return blocks_; }
  [[nodiscard]] std::int64_t kv_bytes_per_token() const noexcept override { return bytes_per_token_; }
  void run(const StepPlan& plan, std::vector<float>& logits) override { forward_.run(plan, logits); }
  [[nodiscard]] kernels::cpu::ThreadPool* pool() noexcept override {
    if constexpr (requires { backend_.pool(); }) return &backend_.pool();
    else return nullptr;
  }

 private:
  // In the backend's own KV element: the pool holds kv_cache_bytes / (this * BlockSize) blocks.
  std::int64_t bytes_per_token_;
  int blocks_;
  BackendT& backend_;
  Qwen3Forward<Model, BackendT, BlockSize> forward_;
};

// The forward pass of `Model` for an Engine<BlockSize> with these options.
template <class Model, class BackendT = CpuBackend, int BlockSize = 16>
[[nodiscard]] std::unique_ptr<StepModel> make_step_model(const Weights<Model>& weights, const io::ModelConfig& config, BackendT& backend,
                                                         const EngineOptions& options) {
  return std::make_unique<ForwardStep<Model, BackendT, BlockSize>>(weights, config, backend, options);
}

template <int BlockSize = 16>
class Engine {
 public:
  using Callback = std::function<void(const RequestOutput&)>;
  static constexpr int block_size = BlockSize;

  // `model` from make_step_model<Model, Backend, BlockSize>(..., options) with the same options.
  Engine(std::unique_ptr<StepModel> model, const EngineOptions& options = {}, EngineText text = {})
      : options_(checked_engine_options(options)),
        text_(std::move(text)),
        model_(std::move(model)),
        vocab_(model_->limits().vocab_size),
        kv_blocks_(model_->kv_blocks()),
        max_model_len_(std::min<std::int64_t>(requested_model_len(options_, model_->limits().max_positions),
                                              std::int64_t{kv_blocks_} * BlockSize)),
        books_(kv_blocks_) {
    if (model_->limits().max_sequences < options_.max_num_seqs || model_->limits().max_tokens < options_.max_num_batched_tokens ||
        model_->limits().max_logit_rows < std::min<std::int64_t>(options_.max_num_seqs, options_.max_num_batched_tokens))
      throw_error<InvalidArgument>("engine: the step model was built for smaller steps than the options ask for");
    for (const std::int64_t id : text_.eos_token_ids) {
      if (id < 0 || id >= vocab_)
        throw_error<ConfigError>("engine: end-of-sequence id ", id, " (eos_token_id) is outside the vocabulary [0, ", vocab_, ")");
      if (std::find(eos_.begin(), eos_.end(), static_cast<std::int32_t>(id)) == eos_.end())
        eos_.push_back(static_cast<std::int32_t>(id));
    }
  }

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- what the engine holds ----
  [[nodiscard]] int kv_blocks() const noexcept { return kv_blocks_; }
  [[nodiscard]] std::int64_t kv_tokens() const noexcept { return std::int64_t{kv_blocks_} * BlockSize; }
  [[nodiscard]] std::int64_t kv_cache_bytes() const noexcept { return kv_tokens() * model_->kv_bytes_per_token(); }
  [[nodiscard]] std::int64_t vocab_size() const noexcept { return vocab_; }
  // The context length: the option (or max_position_embeddings), capped by the KV pool.
  [[nodiscard]] std::int64_t max_model_len() const noexcept { return max_model_len_; }
  [[nodiscard]] const EngineOptions& options() const noexcept { return options_; }
  [[nodiscard]] const EngineText& text() const noexcept { return text_; }

  // ---- any thread ----

  // Checks the request (InvalidArgument naming the field and value; nothing is queued then),
  // tokenizes or renders its prompt, and queues it. `callback` receives its outputs on the loop
  // thread (may be empty). Returns its id.
  RequestId submit(Request request, Callback callback = {}) {
    auto parent = std::make_unique<Parent>();
    parent->id = next_id_.fetch_add(1) + 1;
    prepare(*parent, std::move(request));
    parent->callback = std::move(callback);
    const RequestId id = parent->id;
    {
      std::lock_guard lock(mutex_);
      inbox_.push_back(std::move(parent));
    }
    wake_.notify_all();
    return id;
  }

  // Ends a request with finish reason abort before the next step; its KV blocks are back in the
  // pool when that step is scheduled. Unknown or finished ids are ignored.
  void cancel(RequestId id) {
    {
      std::lock_guard lock(mutex_);
      cancels_.push_back(id);
    }
    wake_.notify_all();
  }

  // ---- the loop thread ----

  // One step. Returns whether requests remain unfinished afterwards.
  bool step() {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    drain_inbox();
    schedule();
    if (chunks_.empty()) {
      flush_outputs();
      return !parents_.empty();
    }
    ++stats_.steps;
    rows_.clear();
    try {
      plan_step(books_, std::span<const SequenceChunk>(chunks_), model_->limits(), plan_);
    } catch (const std::exception& e) {
      fail_scheduled(e.what());
      flush_outputs();
      return !parents_.empty();
    }
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
      stats_.scheduled_tokens += static_cast<std::int64_t>(chunks_[c].tokens.size());
      const std::int64_t prompt_end = scheduled_[c]->prompt_len;
      stats_.prompt_tokens_computed +=
          std::max<std::int64_t>(0, std::min<std::int64_t>(prompt_end, chunks_[c].start_position + static_cast<std::int64_t>(chunks_[c].tokens.size())) -
                                        chunks_[c].start_position);
      if (chunks_[c].logits == Logits::last) rows_.push_back(scheduled_[c]);
    }
    const auto t1 = clock::now();
    try {
      model_->run(plan_, logits_);
    } catch (const std::exception& e) {
      fail_scheduled(e.what());
      flush_outputs();
      return !parents_.empty();
    }
    const auto t2 = clock::now();
    sample_rows();
    const auto t3 = clock::now();
    for (std::size_t r = 0; r < rows_.size(); ++r) accept(*rows_[r], r);
    flush_outputs();
    const auto t4 = clock::now();
    const auto seconds = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    stats_.schedule_seconds += seconds(t0, t1);
    stats_.forward_seconds += seconds(t1, t2);
    stats_.sample_seconds += seconds(t2, t3);
    stats_.output_seconds += seconds(t3, t4);
    return !parents_.empty();
  }

  // Steps while there is work and sleeps while there is none, until `stop` is requested.
  void run(std::stop_token stop) {
    while (!stop.stop_requested()) {
      if (step()) continue;
      std::unique_lock lock(mutex_);
      wake_.wait(lock, stop, [&] { return !inbox_.empty() || !cancels_.empty(); });
    }
  }

  // Whether a submitted request has not finished (any thread may ask, but only the loop thread's
  // answer is current).
  [[nodiscard]] bool has_work() {
    std::lock_guard lock(mutex_);
    return !parents_.empty() || !inbox_.empty() || !cancels_.empty();
  }

  // Offline: runs `requests` to the end on the calling thread (no loop thread may be running)
  // and returns their results in input order. A bad request throws (naming its index) before any
  // is run.
  std::vector<RequestResult> generate(std::vector<Request> requests) {
    std::vector<RequestResult> results(requests.size());
    std::vector<RequestId> submitted;
    try {
      for (std::size_t i = 0; i < requests.size(); ++i) {
        try {
          submitted.push_back(submit(std::move(requests[i]), [&results, i](const RequestOutput& out) {
            if (out.result) results[i] = *out.result;
          }));
        } catch (const Error& e) {
          throw_error<InvalidArgument>("prompt ", i, ": ", e.what());
        }
      }
    } catch (...) {
      for (const RequestId id : submitted) cancel(id);
      while (step()) {
      }
      throw;
    }
    while (step()) {
    }
    return results;
  }

  [[nodiscard]] EngineStats stats() const {
    EngineStats s = stats_;
    s.running = static_cast<int>(running_.size());
    s.waiting = static_cast<int>(waiting_.size());
    s.kv_blocks_free = books_.num_free_blocks();
    s.kv_blocks_total = kv_blocks_;
    return s;
  }
  [[nodiscard]] const BlockManager<BlockSize>& books() const noexcept { return books_; }

  // Throws std::logic_error naming a broken invariant of the books or the queues (tests).
  void check_invariants() const {
    books_.check_invariants();
    int with_blocks = 0;
    for (const Seq* s : running_) {
      if (s->seq < 0 || !books_.contains(s->seq)) throw std::logic_error("engine: a running sequence holds no books entry");
      if (books_.length(s->seq) > static_cast<int>(s->tokens.size()))
        throw std::logic_error("engine: a running sequence has more cached positions than tokens");
      ++with_blocks;
    }
    for (const Seq* s : waiting_)
      if (s->seq >= 0) throw std::logic_error("engine: a waiting sequence holds KV blocks");
    if (books_.num_sequences() != with_blocks) throw std::logic_error("engine: the books hold sequences no request runs");
    if (running_.size() > static_cast<std::size_t>(options_.max_num_seqs)) throw std::logic_error("engine: more running than max_num_seqs");
  }

 private:
  struct Parent;
  struct Seq {
    Parent* parent = nullptr;
    int index = 0;
    std::vector<std::int32_t> tokens;  // prompt + output
    std::int64_t prompt_len = 0;
    int seq = -1;                      // books id while it holds blocks
    bool admitted = false;             // admitted at least once
    bool finished = false;
    std::uint64_t seed = 0;
    std::optional<OutputText> text;
    std::optional<guided::GuideState> guide;  // guided decoding: progress through parent->grammar
    ChoiceDelta delta;                 // this step's news
    bool touched = false;
    [[nodiscard]] std::int64_t generated() const noexcept { return static_cast<std::int64_t>(tokens.size()) - prompt_len; }
  };
  struct Parent {
    RequestId id = 0;
    GenerationParams params;           // sampling.stop_token_ids: the effective list (eos included)
    std::optional<guided::Grammar> grammar;  // params.guided, built at submit
    std::int64_t max_tokens = 0;
    Callback callback;
    RequestResult result;
    std::vector<Seq> seqs;
    int unfinished = 0;
    bool result_delivered = false;
    std::chrono::steady_clock::time_point submitted;
  };

  // ---- submit side ----
  void prepare(Parent& p, Request r) {
    validate_generation_params(r.params, vocab_);
    const int sources = (r.prompt_ids.empty() ? 0 : 1) + (r.prompt ? 1 : 0) + (r.chat ? 1 : 0);
    if (sources != 1)
      throw_error<InvalidArgument>("request: give exactly one of prompt token ids, prompt text or a chat request (", sources,
                                   " given)");
    const tokenizer::Tokenizer* tok = text_.tokenizer;
    ChatParsing parsing;
    std::vector<std::string> tool_names;  // a chat request's tools
    std::vector<nlohmann::ordered_json> tool_parameters;  // and their "parameters" (null: none)
    std::vector<std::int32_t> ids;
    if (r.prompt) {
      if (!tok) throw_error<InvalidArgument>("request: a text prompt needs a tokenizer, and this engine has none");
      ids = tok->encode(*r.prompt);
    } else if (r.chat) {
      if (!tok || !text_.chat_template)
        throw_error<InvalidArgument>("request: a chat request needs a tokenizer and a chat template, and this engine lacks ",
                                     tok ? "the chat template" : "the tokenizer");
      const chat::ChatRequest request = chat::parse_chat_request(*r.chat);
      const std::string prompt = text_.chat_template->render(request);
      ids = tok->encode(prompt);
      parsing.enabled = true;
      parsing.reasoning_start = chat::reasoning_start_for(prompt);
      parsing.tools = !request.tools.empty();
      for (const auto& tool : request.tools) {
        const auto& function = tool["function"];
        tool_names.push_back(function["name"].get<std::string>());
        const auto parameters = function.find("parameters");
        tool_parameters.push_back(parameters != function.end() ? *parameters : nlohmann::ordered_json());
      }
    } else {
      ids = std::move(r.prompt_ids);
    }
    if (!r.params.stop.empty() && !tok) throw_error<InvalidArgument>("request: 'stop' strings need a tokenizer, and this engine has none");
    if (ids.empty()) throw_error<InvalidArgument>("request: the prompt is empty");
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= vocab_)
        throw_error<InvalidArgument>("request: prompt token [", i, "] is ", ids[i], ", outside the vocabulary [0, ", vocab_, ")");
    const auto prompt_len = static_cast<std::int64_t>(ids.size());
    if (prompt_len >= max_model_len_)
      throw_error<InvalidArgument>("request: the prompt has ", prompt_len, " tokens, the context length is ", max_model_len_,
                                   " (the prompt must leave room for at least one generated token)");
    p.max_tokens = r.params.max_tokens ? *r.params.max_tokens : max_model_len_ - prompt_len;
    if (prompt_len + p.max_tokens > max_model_len_)
      throw_error<InvalidArgument>("request: the prompt (", prompt_len, " tokens) plus max_tokens ", p.max_tokens,
                                   " exceed the context length ", max_model_len_);
    if (r.params.guided.kind != GuidedOutput::Kind::none)
      p.grammar = guided_grammar(r.params.guided, parsing, r.chat.has_value(), tool_names, tool_parameters);
    p.params = std::move(r.params);
    auto& stop_ids = p.params.sampling.stop_token_ids;
    if (!p.params.ignore_eos)
      for (const std::int32_t id : eos_)
        if (std::find(stop_ids.begin(), stop_ids.end(), id) == stop_ids.end()) stop_ids.push_back(id);
    const std::uint64_t seed = sampling::Sampler::admit_seed(p.params.sampling);
    p.result.id = p.id;
    p.result.prompt_ids = ids;
    p.result.seed = seed;
    p.result.usage.prompt_tokens = prompt_len;
    p.result.choices.resize(static_cast<std::size_t>(p.params.n));
    p.seqs.resize(static_cast<std::size_t>(p.params.n));
    for (int i = 0; i < p.params.n; ++i) {
      Seq& s = p.seqs[static_cast<std::size_t>(i)];
      s.parent = &p;
      s.index = i;
      s.tokens = ids;
      s.prompt_len = prompt_len;
      s.seed = seed + static_cast<std::uint64_t>(i);
      s.delta.index = i;
      if (p.grammar) s.guide = guided::guide_start(*p.grammar);
      p.result.choices[static_cast<std::size_t>(i)].index = i;
      if (tok) {
        parsing.tool_call_id_prefix = qwen::detail::cat("call_", p.id, "_", i, "_");
        s.text.emplace(*tok, p.params, parsing);
      }
    }
    p.unfinished = p.params.n;
    p.submitted = std::chrono::steady_clock::now();
  }

  // The grammar of a guided request (tokenizer checked by the caller's text prompt or here).
  guided::Grammar guided_grammar(const GuidedOutput& g, const ChatParsing& parsing, bool chat, const std::vector<std::string>& tools,
                                 const std::vector<nlohmann::ordered_json>& parameters) {
    if (!text_.tokenizer) throw_error<InvalidArgument>("request: guided decoding needs a tokenizer, and this engine has none");
    std::call_once(token_bytes_once_, [&] { token_bytes_ = std::make_unique<guided::TokenBytes>(*text_.tokenizer, vocab_); });
    guided::ThinkBlock think = guided::ThinkBlock::none;
    if (chat && parsing.reasoning_start == chat::ReasoningStart::InsideThink) think = guided::ThinkBlock::inside;
    if (chat && parsing.reasoning_start == chat::ReasoningStart::Detect) think = guided::ThinkBlock::optional;
    if (g.kind == GuidedOutput::Kind::json_object || g.kind == GuidedOutput::Kind::json_schema) {
      if (!g.tool_names.empty()) throw_error<InvalidArgument>("request: 'guided.tool_names' is only for a tool call");
      if (g.kind == GuidedOutput::Kind::json_object) {
        if (!g.schema.is_null()) throw_error<InvalidArgument>("request: 'guided.schema' is only for json_schema");
        return guided::json_object_grammar(think);
      }
      return guided::json_object_grammar(think, std::make_shared<const guided::JsonSchema>(g.schema, "request: guided.schema"));
    }
    if (!g.schema.is_null()) throw_error<InvalidArgument>("request: 'guided.schema' is only for json_schema (a call follows its tool's parameters)");
    if (!chat || tools.empty())
      throw_error<InvalidArgument>("request: a forced tool call needs a chat request with tools, and this request has ",
                                   chat ? "no tools" : "no chat messages");
    for (const std::string& name : g.tool_names)
      if (std::find(tools.begin(), tools.end(), name) == tools.end())
        throw_error<InvalidArgument>("request: the forced tool call names function \"", name, "\", which is not among the request's tools");
    // Each function's arguments follow its "parameters" (checked here: a schema beyond the subset is refused).
    const std::vector<std::string>& names = g.tool_names.empty() ? tools : g.tool_names;
    std::vector<std::shared_ptr<const guided::JsonSchema>> schemas;
    for (const std::string& name : names) {
      const auto i = static_cast<std::size_t>(std::find(tools.begin(), tools.end(), name) - tools.begin());
      schemas.push_back(!parameters[i].is_null() ? std::make_shared<const guided::JsonSchema>(
                                                       parameters[i], qwen::detail::cat("chat request: tools[", i, "].function.parameters"))
                                                 : nullptr);
    }
    return guided::tool_call_grammar(names, think, schemas);
  }

  // ---- loop side ----
  void drain_inbox() {
    std::vector<std::unique_ptr<Parent>> arrived;
    std::vector<RequestId> cancels;
    {
      std::lock_guard lock(mutex_);
      arrived.swap(inbox_);
      cancels.swap(cancels_);
    }
    for (auto& p : arrived) {
      for (Seq& s : p->seqs) waiting_.push_back(&s);
      const RequestId id = p->id;
      parents_.emplace(id, std::move(p));
    }
    for (const RequestId id : cancels) {
      const auto it = parents_.find(id);
      if (it != parents_.end()) abort_request(*it->second, FinishReason::abort, "");
    }
  }

  void schedule() {
    chunks_.clear();
    scheduled_.clear();
    std::int64_t budget = options_.max_num_batched_tokens;
    int committed = 0;  // blocks the chunks so far take from the pool
    bool preempted = false;
    const auto add_chunk = [&](Seq& s, int begin, std::int64_t count) {
      const std::span<const std::int32_t> tokens = std::span<const std::int32_t>(s.tokens).subspan(
          static_cast<std::size_t>(begin), static_cast<std::size_t>(count));
      const bool last = begin + count == static_cast<std::int64_t>(s.tokens.size());
      chunks_.push_back({s.seq, begin, tokens, last ? Logits::last : Logits::none});
      scheduled_.push_back(&s);
      budget -= count;
    };
    for (std::size_t i = 0; i < running_.size() && budget > 0;) {
      Seq& s = *running_[i];
      const int begin = books_.length(s.seq);
      const std::int64_t count = std::min<std::int64_t>(static_cast<std::int64_t>(s.tokens.size()) - begin, budget);
      bool keep = true;
      int blocks = books_.blocks_needed(s.seq, begin, static_cast<int>(count));
      while (committed + blocks > books_.num_free_blocks()) {
        Seq* victim = running_.back();
        preempt(*victim);
        preempted = true;
        if (victim == &s) {
          keep = false;
          break;
        }
        blocks = books_.blocks_needed(s.seq, begin, static_cast<int>(count));
      }
      if (!keep) break;
      committed += blocks;
      add_chunk(s, begin, count);
      ++i;
    }
    for (std::size_t k = 0; !preempted && k < waiting_.size() && running_.size() < static_cast<std::size_t>(options_.max_num_seqs) &&
                            budget > 0;) {
      Seq& s = *waiting_[k];
      if (sibling_prefilling(s)) {  // wait for its prompt's blocks in the cache (below)
        ++k;
        continue;
      }
      s.seq = books_.add_sequence();
      int cached = 0;
      if (options_.enable_prefix_caching)
        cached = books_.match_prefix(s.seq, std::span<const std::int32_t>(s.tokens).first(s.tokens.size() - 1));
      const std::int64_t count = std::min<std::int64_t>(static_cast<std::int64_t>(s.tokens.size()) - cached, budget);
      const int blocks = books_.blocks_needed(s.seq, cached, static_cast<int>(count));
      if (committed + blocks > books_.num_free_blocks()) {
        books_.free_sequence(s.seq);
        s.seq = -1;
        break;
      }
      if (!s.admitted) {
        s.admitted = true;
        const std::int64_t cached_prompt = std::min<std::int64_t>(cached, s.prompt_len);
        stats_.prompt_tokens_cached += cached_prompt;
        stats_.prompt_tokens += s.prompt_len;
        if (s.index == 0) s.parent->result.usage.cached_prompt_tokens = cached_prompt;
      }
      waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(k));
      running_.push_back(&s);
      committed += blocks;
      add_chunk(s, cached, count);
    }
  }

  // Choices of one request share their prompt. While a sibling admitted before this one has not
  // finished computing the prompt, this one waits (other requests behind it may go first): once
  // the sibling's prompt blocks are registered, this one takes them from the prefix cache instead
  // of computing the prompt again. Only with prefix caching, and only on first admission.
  [[nodiscard]] bool sibling_prefilling(const Seq& s) const {
    if (!options_.enable_prefix_caching || s.admitted) return false;
    for (const Seq& sibling : s.parent->seqs) {
      if (&sibling == &s) break;
      if (!sibling.finished && sibling.seq >= 0 && books_.length(sibling.seq) < s.prompt_len) return true;
    }
    return false;
  }

  void preempt(Seq& s) {
    books_.free_sequence(s.seq);
    s.seq = -1;
    running_.erase(std::find(running_.begin(), running_.end(), &s));
    waiting_.push_front(&s);
    ++stats_.preemptions;
  }

  void sample_rows() {
    const auto rows = static_cast<std::int64_t>(rows_.size());
    results_.resize(rows_.size());
    errors_.assign(rows_.size(), std::string());
    const auto run = [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r = begin; r < end; ++r) {
        const Seq& s = *rows_[static_cast<std::size_t>(r)];
        const std::span<const std::int32_t> all(s.tokens);
        const sampling::RowRequest request{&s.parent->params.sampling, s.seed, all.first(static_cast<std::size_t>(s.prompt_len)),
                                           all.subspan(static_cast<std::size_t>(s.prompt_len))};
        try {
          const std::span<float> row =
              std::span<float>(logits_).subspan(static_cast<std::size_t>(r * vocab_), static_cast<std::size_t>(vocab_));
          if (s.guide && guided::mask_logits(*s.parent->grammar, *s.guide, *token_bytes_, row) == 0)
            throw_error<InvalidArgument>("guided decoding: no token of the vocabulary continues the output");
          results_[static_cast<std::size_t>(r)] = sampler_.sample(row, request);
        } catch (const std::exception& e) {
          errors_[static_cast<std::size_t>(r)] = e.what();
        }
      }
    };
    if (kernels::cpu::ThreadPool* pool = model_->pool()) pool->parallel_for(rows, 1, run);
    else run(0, rows);
  }

  // The sampled token of row r joins its sequence; stop checks, text.
  void accept(Seq& s, std::size_t r) {
    if (s.finished) return;  // ended by a sibling's error in this step
    if (!errors_[r].empty()) {
      fail_request(*s.parent, errors_[r]);
      return;
    }
    sampling::SampleResult& res = results_[r];
    Parent& p = *s.parent;
    s.tokens.push_back(res.token);
    ++stats_.generated_tokens;
    ++p.result.usage.completion_tokens;
    if (p.result.time_to_first_token < 0)
      p.result.time_to_first_token = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.submitted).count();
    s.touched = true;
    s.delta.tokens.push_back({res.token, res.logprob, std::move(res.top_logprobs)});
    Choice& choice = p.result.choices[static_cast<std::size_t>(s.index)];
    std::optional<FinishReason> reason;
    if (res.stop) {
      reason = FinishReason::stop;
      choice.stop_token = res.token;
    }
    if (s.text) {
      const bool search = s.generated() >= p.params.sampling.min_tokens;
      std::optional<std::string> matched;
      try {
        matched = s.text->push(res.token, res.stop, search, s.delta);
      } catch (const std::exception& e) {
        fail_request(p, e.what());
        return;
      }
      if (matched && !reason) {
        reason = FinishReason::stop;
        choice.stop_string = std::move(matched);
      }
    }
    if (s.guide && !reason) {
      if (!guided::guide_step(*p.grammar, *s.guide, token_bytes_->bytes(res.token))) {
        fail_request(p, qwen::detail::cat("guided decoding: token ", res.token, " does not continue the output"));
        return;
      }
      if (guided::guide_complete(*p.grammar, *s.guide)) reason = FinishReason::stop;
    }
    if (!reason && (s.generated() >= p.max_tokens || static_cast<std::int64_t>(s.tokens.size()) >= max_model_len_))
      reason = FinishReason::length;
    if (reason) finish(s, *reason, "");
  }

  void finish(Seq& s, FinishReason reason, const std::string& error) {
    if (s.finished) return;
    if (s.seq >= 0) {
      books_.free_sequence(s.seq);
      s.seq = -1;
      running_.erase(std::find(running_.begin(), running_.end(), &s));
    } else if (const auto it = std::find(waiting_.begin(), waiting_.end(), &s); it != waiting_.end()) {
      waiting_.erase(it);
    }
    if (s.text) s.text->finish(s.delta);
    s.delta.finish_reason = reason;
    s.touched = true;
    s.finished = true;
    Choice& choice = s.parent->result.choices[static_cast<std::size_t>(s.index)];
    choice.finish_reason = reason;
    choice.error = error;
    if (s.text) choice.reasoning_content = s.text->reasoning_content();
    --s.parent->unfinished;
  }

  void abort_request(Parent& p, FinishReason reason, const std::string& error) {
    for (Seq& s : p.seqs) finish(s, reason, error);
  }
  // An error in one choice ends it with the error and its siblings with abort.
  void fail_request(Parent& p, const std::string& error) {
    for (Seq& s : p.seqs) finish(s, FinishReason::error, error);
  }
  void fail_scheduled(const std::string& error) {
    for (Seq* s : scheduled_) fail_request(*s->parent, error);
  }

  // Delivers the step's deltas: appended to the results, then to the callbacks; a finished
  // request's last delta carries its result, and the request is forgotten.
  void flush_outputs() {
    outputs_.clear();
    for (auto& [id, p] : parents_) {
      for (Seq& s : p->seqs) {
        if (!s.touched) continue;
        Choice& c = p->result.choices[static_cast<std::size_t>(s.index)];
        c.text += s.delta.text;
        c.content += s.delta.content;
        for (const auto& piece : s.delta.tool_calls) chat::append_fragment(c.tool_calls, piece);
        c.tokens.insert(c.tokens.end(), s.delta.tokens.begin(), s.delta.tokens.end());
        outputs_.push_back({p.get(), &s});
      }
    }
    for (std::size_t i = 0; i < outputs_.size(); ++i) {
      auto [p, s] = outputs_[i];
      const bool last_of_request = p->unfinished == 0 && (i + 1 == outputs_.size() || outputs_[i + 1].first != p);
      if (last_of_request && !p->result_delivered) {
        p->result.duration = std::chrono::duration<double>(std::chrono::steady_clock::now() - p->submitted).count();
        ++stats_.requests_finished;
      }
      const bool deliver_result = last_of_request && !p->result_delivered;
      if (deliver_result) p->result_delivered = true;
      RequestOutput out{p->id, std::move(s->delta), deliver_result ? &p->result : nullptr};
      s->delta = ChoiceDelta{};
      s->delta.index = s->index;
      s->touched = false;
      if (p->callback) {
        try {
          p->callback(out);
        } catch (...) {
          p->callback = nullptr;  // it gets nothing more
          if (p->unfinished > 0) abort_request(*p, FinishReason::abort, "");
        }
      }
    }
    for (auto it = parents_.begin(); it != parents_.end();) {
      const bool done = it->second->unfinished == 0 &&
                        std::none_of(it->second->seqs.begin(), it->second->seqs.end(), [](const Seq& s) { return s.touched; });
      it = done ? parents_.erase(it) : std::next(it);
    }
  }

  const EngineOptions options_;
  const EngineText text_;
  std::unique_ptr<StepModel> model_;
  const std::int64_t vocab_;
  const int kv_blocks_;
  const std::int64_t max_model_len_;
  std::vector<std::int32_t> eos_;
  BlockManager<BlockSize> books_;
  sampling::Sampler sampler_;
  std::once_flag token_bytes_once_;                  // built by the first guided request
  std::unique_ptr<guided::TokenBytes> token_bytes_;

  // Shared with submitters.
  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::vector<std::unique_ptr<Parent>> inbox_;
  std::vector<RequestId> cancels_;
  std::atomic<RequestId> next_id_{0};

  // Loop thread only.
  std::unordered_map<RequestId, std::unique_ptr<Parent>> parents_;
  std::vector<Seq*> running_;      // admission order
  std::deque<Seq*> waiting_;
  std::vector<SequenceChunk> chunks_;
  std::vector<Seq*> scheduled_;    // per chunk
  std::vector<Seq*> rows_;         // per logit row
  std::vector<sampling::SampleResult> results_;
  std::vector<std::string> errors_;
  std::vector<std::pair<Parent*, Seq*>> outputs_;
  std::vector<float> logits_;
  StepPlan plan_;
  EngineStats stats_;
};

}  // namespace qwen::engine
