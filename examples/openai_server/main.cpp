// qwen-serve: an OpenAI-compatible HTTP server on the engine (docs/server.md).
//
//   qwen-serve MODEL_DIR [--host 127.0.0.1] [--port 8000] [--served-model-name NAME] [--api-key KEY] ...
//
// Startup: the options and config.json are checked (a bad one: the message, exit 2 or 1), the
// socket is bound and "qwen-serve: listening on http://HOST:PORT" printed (the port actually
// bound, for --port 0), then the checkpoint loads on a thread of its own while /health answers
// 503; "qwen-serve: ready ..." follows with the model type, the context length and the KV
// capacity. SIGINT or SIGTERM: new requests get 503, requests in flight are aborted (their
// streams end with finish_reason "abort"), the socket closes, and the process exits 0 once open
// connections end (at most the grace period later).
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <qwen/io/checkpoint_config.hpp>

#include "model_host.hpp"
#include "options.hpp"
#include "server.hpp"

namespace {

// Signals the main thread waits for. Blocked in every thread (they inherit the mask), so
// sigwait in main is the only place they are taken; SIGPIPE is ignored (a client that leaves
// makes a write fail instead).
sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qwen_serve;
  CLI::App app;
  ServerOptions options;
  try {
    options = parse_options(app, argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help
    std::fprintf(stderr, "qwen-serve: error: %s\nRun qwen-serve --help for the options.\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-serve: error: %s\n", e.what());
    return 2;
  }

  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  qwen::io::ModelConfig config;
  std::string model_type;
  try {
    config = qwen::io::read_checkpoint_config(options.model);
    model_type = model_type_name(config);
    if (options.max_model_len > config.max_position_embeddings)
      throw qwen::InvalidArgument("--max-model-len " + std::to_string(options.max_model_len) + " exceeds the model's max_position_embeddings " +
                                  std::to_string(config.max_position_embeddings));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-serve: error: %s\n", e.what());
    return 1;
  }

  ApiServer server(options, model_type);
  const int port = server.bind();
  if (port < 0) {
    std::fprintf(stderr, "qwen-serve: error: cannot listen on %s:%d\n", options.host.c_str(), options.port);
    return 1;
  }
  std::printf("qwen-serve: listening on http://%s:%d (model %s, served as '%s'; loading)\n", options.host.c_str(), port,
              model_type.c_str(), options.served_model_name.c_str());
  std::fflush(stdout);
  std::thread http([&] { server.listen(); });

  std::atomic<bool> load_failed{false};
  std::thread loader([&] {
    try {
      qwen::engine::LLMOptions llm;
      llm.engine.max_num_seqs = options.max_num_seqs;
      llm.engine.max_num_batched_tokens = options.max_num_batched_tokens;
      llm.engine.max_model_len = options.max_model_len;
      llm.engine.kv_cache_bytes = options.kv_cache_bytes;
      llm.engine.enable_prefix_caching = options.enable_prefix_caching;
      llm.threads = options.threads;
      llm.kv_cache_dtype = qwen::parse_kv_cache_dtype(options.kv_cache_dtype);
      std::unique_ptr<ModelHost> host = load_model(options.model, config, llm);
      const ServeEngine& engine = host->engine();
      std::printf("qwen-serve: ready: %s, context %lld tokens, KV cache %lld tokens (%lld blocks of %d, %.1f MiB, %s), max %d sequences, "
                  "CPU kernels %s%s%s\n",
                  model_type.c_str(), static_cast<long long>(engine.max_model_len()), static_cast<long long>(engine.kv_tokens()),
                  static_cast<long long>(engine.kv_blocks()), kv_block_size, static_cast<double>(engine.kv_cache_bytes()) / (1 << 20),
                  options.kv_cache_dtype.c_str(),
                  options.max_num_seqs, std::string(qwen::CpuBackend::isa()).c_str(), host->tokenizer() ? "" : " (no tokenizer: token ids only)",
                  host->chat_template() ? "" : " (no chat template: no chat requests)");
      std::fflush(stdout);
      server.set_model(std::move(host));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qwen-serve: error: cannot load %s: %s\n", options.model.string().c_str(), e.what());
      load_failed = true;
      kill(getpid(), SIGTERM);  // taken by the main thread's sigwait: shut down
    }
  });

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::printf("qwen-serve: %s, shutting down\n", load_failed ? "load failed" : (signal_number == SIGINT ? "SIGINT" : "SIGTERM"));
  std::fflush(stdout);

  // The grace period: requests in flight are aborted at once, but open connections may take up to
  // the keep-alive timeout to close.
  const auto grace = std::chrono::seconds(options.keep_alive_seconds + 5);
  server.abort_all(std::chrono::duration_cast<std::chrono::milliseconds>(grace));
  server.stop_listening();
  auto listening = std::async(std::launch::async, [&] { http.join(); });
  if (listening.wait_for(grace) != std::future_status::ready || !server.model()) {
    // Connections still open after the grace period, or the model still loading: nothing is in
    // flight, so leave without waiting for them.
    std::fflush(stdout);
    std::_Exit(load_failed ? 1 : 0);
  }
  loader.join();
  server.stop_engine();
  return load_failed ? 1 : 0;
}
