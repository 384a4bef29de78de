// qwen-serve's HTTP side: routes, authentication, limits, and the bridge between HTTP handler
// threads and the engine's loop thread (exchange.hpp). Compiled once, whatever the model.
//
// Routes (docs/server.md): POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
// GET /v1/models/{id}, GET /health, GET /metrics, POST /tokenize, POST /detokenize, GET /version.
// A known path with another method is a 405, any other path a 404; every error body is OpenAI's
// error object (api_error.hpp), and nothing a client sends makes a 500.
//
// Threads: cpp-httplib serves each connection on a thread of its pool (--http-threads). A
// handler parses and checks the body, submits to the engine (which renders and tokenizes on that
// thread, and refuses bad values with InvalidArgument: a 400), wakes the loop and waits on its
// Exchange. A streaming response is written by a chunked content provider that takes what has
// arrived every 250 ms at most; a failed write (the client left) cancels the requests, and a
// comment line (": keep-alive") every second while nothing arrives finds a client that left
// while its request waited.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <httplib.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>
#include <qwen/chat/chat_template.hpp>
#include <qwen/chat/request.hpp>
#include <qwen/core/error.hpp>

#include "api_error.hpp"
#include "exchange.hpp"
#include "metrics.hpp"
#include "model_host.hpp"
#include "openapi.hpp"
#include "options.hpp"
#include "request_translation.hpp"
#include "responses.hpp"

namespace qwen_serve {

// Equal strings, in a time that depends only on the length of `expected` (an API key).
[[nodiscard]] inline bool equal_constant_time(std::string_view given, std::string_view expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i)
    diff |= static_cast<unsigned char>((i < given.size() ? given[i] : 0) ^ expected[i]);
  return diff == 0;
}

class ApiServer {
 public:
  ApiServer(ServerOptions options, std::string model_type) : options_(std::move(options)), model_type_(std::move(model_type)) {
    http_.new_task_queue = [threads = options_.http_threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
    http_.set_payload_max_length(options_.max_body_bytes);
    http_.set_keep_alive_timeout(options_.keep_alive_seconds);
    http_.set_keep_alive_max_count(1000);
    http_.set_read_timeout(30);
    http_.set_write_timeout(30);
    // The listening socket, to raise its backlog after bind (below).
    http_.set_socket_options([this](socket_t sock) {
      httplib::default_socket_options(sock);
      listen_socket_ = sock;
    });
    openapi_loading_ = openapi_document(QWEN_SERVE_VERSION).dump();
    routes();
  }
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds the listening socket; returns the port (the one picked for --port 0), or -1.
  // cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed when Debian's
  // library was compiled), so a burst of clients connecting at once overflowed it and some got
  // their connection reset; listen() again on the bound socket raises it to the system's maximum.
  int bind() {
    const int port = options_.port == 0 ? http_.bind_to_any_port(options_.host)
                                        : (http_.bind_to_port(options_.host, options_.port) ? options_.port : -1);
    if (port > 0 && listen_socket_ != INVALID_SOCKET && ::listen(listen_socket_, SOMAXCONN) != 0) return -1;
    return port;
  }
  // Serves until stop(); run on a thread of its own.
  bool listen() { return http_.listen_after_bind(); }

  // The model is loaded: generation routes open, the engine loop starts.
  void set_model(std::unique_ptr<ModelHost> host) {
    host_ = std::move(host);
    loop_ = std::make_unique<EngineLoop>(host_->engine());
    // Now the document can bound token ids, lengths and the model name.
    const OpenApiModelFacts facts{options_.served_model_name, host_->config().vocab_size, host_->engine().max_model_len()};
    openapi_ready_ = openapi_document(QWEN_SERVE_VERSION, &facts).dump();
    ready_.store(true, std::memory_order_release);
  }
  [[nodiscard]] ModelHost* model() const noexcept { return ready_.load(std::memory_order_acquire) ? host_.get() : nullptr; }

  // Shutdown, step 1: refuse new work (503) and abort every request in flight; their streams
  // end with finish_reason "abort". Returns once no request is left and every stream has written
  // its end, or after `grace`.
  void abort_all(std::chrono::milliseconds grace) {
    stopping_.store(true);
    std::list<std::shared_ptr<Exchange>> active;
    {
      std::lock_guard lock(active_mutex_);
      active = active_;
    }
    if (ModelHost* host = model()) {
      for (const auto& ex : active) ex->cancel(host->engine());
      loop_->wake();
    }
    std::unique_lock lock(active_mutex_);
    active_changed_.wait_for(lock, grace, [&] { return active_.empty() && open_streams_ == 0; });
  }
  // Shutdown, step 2: close the listening socket; listen() returns once open connections end.
  void stop_listening() { http_.stop(); }
  // Shutdown, step 3 (after listen() returned): stop the engine loop.
  void stop_engine() { loop_.reset(); }

 private:
  using Request = httplib::Request;
  using Response = httplib::Response;

  // ---- plumbing ---------------------------------------------------------------------------

  static void send_json(Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(dump_json(body), "application/json");
  }
  static void send_error(Response& res, const ApiError& e) {
    send_json(res, e.status(), e.body());
    if (e.status() == 503) res.set_header("Retry-After", "1");
  }

  // Runs a handler, turning whatever it throws into an OpenAI error response.
  template <class F>
  void guarded(Response& res, F&& handler) {
    try {
      handler();
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const qwen::InvalidArgument& e) {  // the engine's and the chat parser's checks of client values
      send_error(res, bad_request(e.what(), param_of_library_message(e.what())));
    } catch (const nlohmann::json::exception& e) {  // a JSON value of an unexpected type
      send_error(res, bad_request(std::string("bad value in the request: ") + e.what()));
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, std::string("internal error: ") + e.what(), "server_error", std::nullopt, "internal_error"));
    }
  }

  // /v1 routes need the key when one is set: "Authorization: Bearer KEY".
  void authorize(const Request& req) const {
    if (options_.api_key.empty()) return;
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view scheme = "Bearer ";
    if (header.empty()) throw ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", "authentication_error", std::nullopt, "invalid_api_key");
    const std::string_view given = std::string_view(header).starts_with(scheme) ? std::string_view(header).substr(scheme.size()) : std::string_view();
    if (!equal_constant_time(given, options_.api_key))
      throw ApiError(401, "invalid API key", "authentication_error", std::nullopt, "invalid_api_key");
  }

  [[nodiscard]] ModelHost& ready_model() {
    if (stopping_.load()) throw unavailable("the server is shutting down", "shutting_down");
    ModelHost* host = model();
    if (!host) throw unavailable("the model is still loading; try again shortly", "model_loading");
    return *host;
  }

  [[nodiscard]] static json parse_body(const Request& req) { return parse_request_body(req.body); }

  void check_model_name(const json& body) const {
    if (!body.is_object()) return;
    if (const std::optional<std::string> name = requested_model(body); name && *name != options_.served_model_name)
      throw not_found("the model '" + *name + "' does not exist; this server serves '" + options_.served_model_name + "'", "model_not_found");
  }

  [[nodiscard]] std::string new_id(const char* prefix) {
    std::lock_guard lock(id_mutex_);
    static constexpr char hex[] = "0123456789abcdef";
    std::string id = prefix;
    for (int i = 0; i < 2; ++i) {
      std::uint64_t v = id_random_();
      for (int k = 0; k < 16; ++k, v >>= 4) id += hex[v & 15];
    }
    return id;
  }
  [[nodiscard]] static std::int64_t now_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  // ---- exchanges --------------------------------------------------------------------------

  // Registers an exchange of `slots` engine requests holding `sequences` sequences in all; 503
  // when that would take the sequences in flight past max_num_seqs + max_waiting_requests.
  std::shared_ptr<Exchange> open_exchange(std::size_t slots, bool stream, int sequences) {
    auto ex = std::make_shared<Exchange>(slots, stream, sequences);
    std::lock_guard lock(active_mutex_);
    if (active_sequences_ + sequences > options_.max_num_seqs + options_.max_waiting_requests)
      throw unavailable("the server is overloaded (" + std::to_string(active_sequences_) + " sequences in flight); try again shortly", "overloaded");
    active_sequences_ += sequences;
    active_.push_back(ex);
    return ex;
  }
  void close_exchange(const std::shared_ptr<Exchange>& ex) {
    {
      std::lock_guard lock(active_mutex_);
      for (auto it = active_.begin(); it != active_.end(); ++it)
        if (*it == ex) {
          active_sequences_ -= ex->sequences();
          active_.erase(it);
          break;
        }
    }
    active_changed_.notify_all();
  }

  // Submits every request of the exchange, slot by slot. A refused one (400) cancels those
  // already submitted and is rethrown.
  void submit_all(ModelHost& host, const std::shared_ptr<Exchange>& ex, std::vector<qwen::engine::Request> requests) {
    ServeEngine& engine = host.engine();
    for (std::size_t slot = 0; slot < requests.size(); ++slot) {
      try {
        const qwen::engine::RequestId id = engine.submit(std::move(requests[slot]), [this, ex, slot](const qwen::engine::RequestOutput& out) {
          // Loop thread; must not throw or block.
          try {
            if (out.result) metrics_.request_finished(*out.result);
            if (ex->deliver(slot, out)) close_exchange(ex);
          } catch (...) {
          }
        });
        ex->set_id(slot, id, engine);
      } catch (...) {
        ex->cancel(engine);
        if (ex->abandon(slot)) close_exchange(ex);
        loop_->wake();
        throw;
      }
    }
    loop_->wake();
  }

  // A choice that ended in error: its message, for a 400 (or an error event when streaming).
  [[nodiscard]] static std::optional<ApiError> choice_error(const qwen::engine::RequestResult& r) {
    for (const auto& c : r.choices)
      if (c.finish_reason == qwen::engine::FinishReason::error) return bad_request("generation failed: " + c.error);
    return std::nullopt;
  }
  [[nodiscard]] static bool aborted(const qwen::engine::RequestResult& r) {
    for (const auto& c : r.choices)
      if (c.finish_reason == qwen::engine::FinishReason::abort) return true;
    return false;
  }

  // A streamed response has written its end (or its client left): shutdown may close the socket,
  // which would cut a stream short.
  void stream_ended() {
    {
      std::lock_guard lock(active_mutex_);
      --open_streams_;
    }
    active_changed_.notify_all();
  }

  // The streamed response: `format(arrival)` gives an arrival's events; at the end the usage event
  // (when asked) and [DONE].
  template <class Format, class Usage>
  void stream_response(Response& res, std::shared_ptr<Exchange> ex, Format format, Usage usage_event, bool include_usage) {
    struct State {
      std::shared_ptr<Exchange> ex;
      Format format;
      Usage usage_event;
      bool include_usage;
      qwen::engine::Usage usage;
      std::optional<ApiError> error;
      bool done = false;
      int idle = 0;
    };
    auto st = std::make_shared<State>(State{std::move(ex), std::move(format), std::move(usage_event), include_usage, {}, std::nullopt, false, 0});
    ServeEngine* engine = &host_->engine();
    EngineLoop* loop = loop_.get();
    {
      std::lock_guard lock(active_mutex_);
      ++open_streams_;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, st, engine, loop](std::size_t, httplib::DataSink& sink) {
          Exchange::Taken taken = st->ex->take(std::chrono::milliseconds(250));
          std::string out;
          for (const Arrival& a : taken.arrivals) {
            out += st->format(a);
            if (a.result) {
              st->usage = add_usage(st->usage, a.result->usage);
              if (!st->error) st->error = choice_error(*a.result);
            }
          }
          if (taken.complete) {
            if (st->error) out += sse_event(st->error->body());
            if (st->include_usage) out += st->usage_event(st->usage);
            out += sse_done;
            st->done = true;
          } else if (out.empty()) {
            if (++st->idle % 4 != 0) return true;
            out = ": keep-alive\n\n";
          }
          if (!sink.write(out.data(), out.size())) {
            st->ex->cancel(*engine);
            loop->wake();
            return false;
          }
          if (st->done) {
            sink.done();
            stream_ended();
          }
          return true;
        },
        [this, st, engine, loop](bool) {
          if (!st->done) {  // the client left, or the server stopped: the requests end
            st->ex->cancel(*engine);
            loop->wake();
            stream_ended();
          }
        });
  }

  // ---- handlers ---------------------------------------------------------------------------

  void chat_completions(const Request& req, Response& res) {
    authorize(req);
    const json body = parse_body(req);
    check_model_name(body);
    ModelHost& host = ready_model();
    ChatCall call = read_chat_request(body, host.default_params());
    qwen::engine::validate_generation_params(call.request.params, host.engine().vocab_size());  // a 400 before a 503
    const int n = call.request.params.n;
    auto ex = open_exchange(1, call.stream.stream, n);
    std::vector<qwen::engine::Request> requests;
    requests.push_back(std::move(call.request));
    submit_all(host, ex, std::move(requests));
    const ResponseHead head{new_id("chatcmpl-"), now_seconds(), options_.served_model_name};
    const qwen::tokenizer::Tokenizer* tok = host.tokenizer();
    if (call.stream.stream) {
      auto chunks = std::make_shared<ChatStream>(head, n, call.logprobs, call.stream.include_usage, tok);
      stream_response(
          res, ex,
          [chunks](const Arrival& a) {
            const qwen::engine::Choice* final_choice = a.result ? &a.result->choices.at(static_cast<std::size_t>(a.delta.index)) : nullptr;
            return chunks->on_delta(a.delta, final_choice);
          },
          [chunks](const qwen::engine::Usage& u) { return chunks->usage_event(u); }, call.stream.include_usage);
      return;
    }
    const auto results = ex->wait_results();
    if (auto e = choice_error(*results[0])) throw *e;
    if (aborted(*results[0])) throw unavailable("the request was aborted: the server is shutting down", "shutting_down");
    send_json(res, 200, chat_completion_json(head, *results[0], call.logprobs, tok));
  }

  void completions(const Request& req, Response& res) {
    authorize(req);
    const json body = parse_body(req);
    check_model_name(body);
    ModelHost& host = ready_model();
    CompletionCall call = read_completion_request(body, host.default_params());
    qwen::engine::validate_generation_params(call.requests.front().params, host.engine().vocab_size());  // a 400 before a 503
    const int n = call.requests.front().params.n;
    const qwen::tokenizer::Tokenizer* tok = host.tokenizer();
    std::vector<std::string> echo;
    if (call.echo)
      for (const auto& r : call.requests) {
        if (r.prompt) echo.push_back(*r.prompt);
        else {
          std::string text;
          for (const std::int32_t id : r.prompt_ids) text += token_bytes(tok, id);
          echo.push_back(std::move(text));
        }
      }
    auto ex = open_exchange(call.requests.size(), call.stream.stream, n * static_cast<int>(call.requests.size()));
    submit_all(host, ex, std::move(call.requests));
    const ResponseHead head{new_id("cmpl-"), now_seconds(), options_.served_model_name};
    const bool logprobs = call.logprobs.has_value();
    if (call.stream.stream) {
      auto chunks = std::make_shared<CompletionStream>(head, std::move(echo), n, logprobs, call.stream.include_usage, tok);
      stream_response(
          res, ex,
          [chunks](const Arrival& a) {
            const qwen::engine::Choice* final_choice = a.result ? &a.result->choices.at(static_cast<std::size_t>(a.delta.index)) : nullptr;
            return chunks->on_delta(a.slot, a.delta, final_choice);
          },
          [chunks](const qwen::engine::Usage& u) { return chunks->usage_event(u); }, call.stream.include_usage);
      return;
    }
    std::vector<qwen::engine::RequestResult> results;
    for (const auto& r : ex->wait_results()) {
      if (auto e = choice_error(*r)) throw *e;
      if (aborted(*r)) throw unavailable("the request was aborted: the server is shutting down", "shutting_down");
      results.push_back(*r);
    }
    send_json(res, 200, completion_json(head, results, echo, logprobs, tok));
  }

  [[nodiscard]] json model_card() const {
    json card = {{"id", options_.served_model_name}, {"object", "model"}, {"created", started_}, {"owned_by", "qwen"},
                 {"root", options_.model.string()}, {"parent", nullptr}};
    if (ModelHost* host = model()) card["max_model_len"] = host->engine().max_model_len();
    return card;
  }

  // /tokenize and /detokenize: the body as an object, naming this model if any, and the
  // ready model's tokenizer.
  std::pair<json, const qwen::tokenizer::Tokenizer*> tokenizer_request(const Request& req) {
    json body = parse_body(req);
    if (!body.is_object()) throw bad_request("the request body must be a JSON object");
    check_model_name(body);
    const qwen::tokenizer::Tokenizer* tok = ready_model().tokenizer();
    if (!tok) throw bad_request("this model has no tokenizer (tokenizer.json)");
    return {std::move(body), tok};
  }

  void tokenize(const Request& req, Response& res) {
    const auto [body, tok] = tokenizer_request(req);
    ModelHost& host = ready_model();
    std::string text;
    if (field(body, "messages")) {
      if (!host.chat_template()) throw bad_request("this model has no chat template", "messages");
      text = host.chat_template()->render(qwen::chat::parse_chat_request(body));
    } else if (const std::optional<std::string> prompt = get_string(body, "prompt")) {
      text = *prompt;
    } else {
      throw bad_request("give 'prompt' (a string) or 'messages'", "prompt");
    }
    const std::vector<std::int32_t> ids = tok->encode(text);
    json out = {{"count", ids.size()}, {"max_model_len", host.engine().max_model_len()}, {"tokens", ids}, {"token_strs", nullptr}};
    if (get_bool(body, "return_token_strs").value_or(false)) {
      json strs = json::array();
      for (const std::int32_t id : ids) strs.push_back(token_bytes(tok, id));
      out["token_strs"] = std::move(strs);
    }
    send_json(res, 200, out);
  }

  void detokenize(const Request& req, Response& res) {
    const auto [body, tok] = tokenizer_request(req);
    const json* tokens = field(body, "tokens");
    if (!tokens) throw bad_request("'tokens' is missing", "tokens");
    if (!tokens->is_array()) throw bad_request("'tokens' must be a list of token ids", "tokens");
    const std::vector<std::int32_t> ids = token_ids(*tokens, "tokens");
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (!tok->has_token(ids[i]))
        throw bad_request("'tokens[" + std::to_string(i) + "]' is " + std::to_string(ids[i]) + ", which names no token", "tokens");
    send_json(res, 200, {{"prompt", tok->decode(ids)}});
  }

  void routes() {
    const auto route = [this](auto member) {
      return [this, member](const Request& req, Response& res) { guarded(res, [&] { (this->*member)(req, res); }); };
    };
    http_.Post("/v1/chat/completions", route(&ApiServer::chat_completions));
    http_.Post("/v1/completions", route(&ApiServer::completions));
    http_.Post("/tokenize", route(&ApiServer::tokenize));
    http_.Post("/detokenize", route(&ApiServer::detokenize));
    http_.Get("/v1/models", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        authorize(req);
        send_json(res, 200, {{"object", "list"}, {"data", json::array({model_card()})}});
      });
    });
    http_.Get("/v1/models/(.+)", [this](const Request& req, Response& res) {
      guarded(res, [&] {
        authorize(req);
        const std::string id = req.matches[1];
        if (id != options_.served_model_name) throw not_found("the model '" + id + "' does not exist", "model_not_found");
        send_json(res, 200, model_card());
      });
    });
    http_.Get("/health", [this](const Request&, Response& res) {
      guarded(res, [&] {
        (void)ready_model();
        send_json(res, 200, {{"status", "ok"}});
      });
    });
    http_.Get("/metrics", [this](const Request&, Response& res) {
      guarded(res, [&] {
        qwen::engine::EngineStats stats;
        EngineLoop* loop = model() ? loop_.get() : nullptr;
        if (loop) stats = loop->stats();
        res.set_content(metrics_.prometheus(stats, loop != nullptr), "text/plain; version=0.0.4");
      });
    });
    http_.Get("/version", [](const Request&, Response& res) { send_json(res, 200, {{"version", QWEN_SERVE_VERSION}}); });
    http_.Get("/openapi.json", [this](const Request&, Response& res) {
      res.status = 200;
      res.set_content(model() ? openapi_ready_ : openapi_loading_, "application/json");  // ready_'s release orders the write
    });

    // Everything else: 405 for a known path with another method, else 404.
    const auto fallback = [](const Request& req, Response& res) {
      static const std::vector<std::pair<std::string, std::string>> known = {
          {"/v1/chat/completions", "POST"}, {"/v1/completions", "POST"}, {"/tokenize", "POST"}, {"/detokenize", "POST"},
          {"/v1/models", "GET, HEAD"},      {"/health", "GET, HEAD"},    {"/metrics", "GET, HEAD"}, {"/version", "GET, HEAD"},
          {"/openapi.json", "GET, HEAD"}};
      for (const auto& [path, allow] : known)
        if (req.path == path || (path == "/v1/models" && req.path.starts_with("/v1/models/"))) {
          res.set_header("Allow", allow);
          send_error(res, ApiError(405, "method " + req.method + " is not allowed on " + req.path + " (allowed: " + allow + ")",
                                   "invalid_request_error", std::nullopt, "method_not_allowed"));
          return;
        }
      send_error(res, not_found("no route " + req.method + " " + req.path, "not_found"));
    };
    http_.Get(".*", fallback);
    http_.Post(".*", fallback);
    http_.Put(".*", fallback);
    http_.Patch(".*", fallback);
    http_.Delete(".*", fallback);
    http_.Options(".*", fallback);

    // Responses httplib makes itself (a body over the limit, an unknown method, a malformed
    // request): give them OpenAI's error body.
    http_.set_error_handler(httplib::Server::HandlerWithResponse([this](const Request& req, Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      if (res.status == 413)
        send_error(res, ApiError(413, "the request body is larger than " + std::to_string(options_.max_body_bytes) + " bytes",
                                 "invalid_request_error", std::nullopt, "request_too_large"));
      else if (res.status == 400 && !req.path.empty() && req.method != "GET" && req.method != "HEAD" && req.method != "POST" &&
               req.method != "PUT" && req.method != "PATCH" && req.method != "DELETE" && req.method != "OPTIONS")
        send_error(res, ApiError(405, "method " + req.method + " is not allowed", "invalid_request_error", std::nullopt, "method_not_allowed"));
      else
        send_error(res, ApiError(res.status, "HTTP error " + std::to_string(res.status), res.status >= 500 ? "server_error" : "invalid_request_error"));
      return httplib::Server::HandlerResponse::Handled;
    }));
    http_.set_exception_handler([](const Request&, Response& res, std::exception_ptr) {
      send_error(res, ApiError(500, "internal error", "server_error", std::nullopt, "internal_error"));
    });
    http_.set_logger([this](const Request&, const Response& res) { metrics_.count_response(res.status); });
  }

  ServerOptions options_;
  std::string model_type_;
  std::int64_t started_ = now_seconds();
  httplib::Server http_;
  Metrics metrics_;

  socket_t listen_socket_ = INVALID_SOCKET;
  std::string openapi_loading_, openapi_ready_;  // GET /openapi.json before and after the model is loaded
  std::unique_ptr<ModelHost> host_;
  std::unique_ptr<EngineLoop> loop_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};

  std::mutex active_mutex_;
  std::condition_variable active_changed_;
  std::list<std::shared_ptr<Exchange>> active_;  // exchanges whose requests have not all finished
  int active_sequences_ = 0;
  int open_streams_ = 0;  // streamed responses that have not written their end

  std::mutex id_mutex_;
  std::mt19937_64 id_random_{std::random_device{}()};
};

}  // namespace qwen_serve
