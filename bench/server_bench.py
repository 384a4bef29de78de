#!/usr/bin/env python3
"""qwen-serve's cost over the engine, measured in one run (issue 12's two server figures).

    .venv/bin/python bench/server_bench.py --serve build/test/examples/qwen-serve \\
        --bench-engine build/test/bench/qwen-bench-engine [--model DIR] [--requests 200] [--rounds 3]

The model is the Qwen3-0.6B shape with random bf16 weights (bench/tools/make_random_checkpoint.py
writes it to a scratch directory unless --model names one) and the real Qwen3 tokenizer and chat
template (../shared/models/qwen3-tokenizer), the shape qwen-bench-engine builds in memory.

1. Overhead: REQUESTS streamed chat requests one after another (a 20-token question, one generated
   token). For each, the client's time from sending the request to the chunk that carries the
   first token, minus the engine's own time from submit to that token: the growth of
   qwen_time_to_first_token_seconds_sum in /metrics across that request (requests run one at a
   time, so the growth is exactly this request's). Reported: the median and the 90th percentile of
   the difference; the target is a median <= 1 ms.
2. Throughput: 32 clients streaming at once, each one chat request of about 128 prompt tokens and
   exactly 128 generated tokens (ignore_eos; temperature 0.7, top_p 0.8, top_k 20; the prompts
   are qwen-bench-engine's), generated tokens / wall time from the first request to the last
   [DONE]; against qwen-bench-engine --concurrency 32 --runs 1 (the offline engine, the same shape,
   options and requests), each ROUNDS times in one process (the first run of each pays for
   touching the KV pool's pages); their medians are compared.
   Target: >= 0.9x.
Run it on an otherwise idle machine; both programs use every core.
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(os.path.dirname(ROOT), "shared", "models", "qwen3-tokenizer")


def make_model(directory):
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "tools", "make_random_checkpoint.py"), "--shape", "0.6B",
                    "--out", directory], check=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(TOKENIZER, name), "rb") as src, open(os.path.join(directory, name), "wb") as dst:
            dst.write(src.read())


class Server:
    def __init__(self, exe, model):
        # qwen-bench-engine's engine options: 32 sequences, 512 tokens per step, context 1,024, a KV
        # pool of 272 positions per sequence (28 layers x K,V x 8 heads x 128 x fp32 = 229,376 B each).
        self.proc = subprocess.Popen([exe, model, "--host", "127.0.0.1", "--port", "0", "--served-model-name", "bench",
                                      "--max-num-seqs", "32", "--max-num-batched-tokens", "512", "--max-model-len", "1024",
                                      "--kv-cache-memory", str(32 * 272 * 229376)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError("qwen-serve did not start: " + line + self.proc.stdout.read())
        self.port = int(m.group(1))
        self.lines = [line]
        threading.Thread(target=lambda: [self.lines.append(x) for x in self.proc.stdout], daemon=True).start()
        deadline = time.time() + 300
        while self.get("/health")[0] != 200:
            if time.time() > deadline:
                raise RuntimeError("qwen-serve never became ready:\n" + "".join(self.lines))
            time.sleep(0.1)

    def get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        except OSError:
            return 0, ""
        finally:
            conn.close()

    def engine_ttft_sum(self):
        status, text = self.get("/metrics")
        m = re.search(r"^qwen_time_to_first_token_seconds_sum ([0-9.eE+-]+)$", text, re.M)
        if status != 200 or not m:
            raise RuntimeError("no qwen_time_to_first_token_seconds_sum in /metrics")
        return float(m.group(1))

    def stream_chat(self, body):
        """Streams one chat request: (seconds to the first token's chunk, seconds to [DONE], tokens)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            start = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            if r.status != 200:
                raise RuntimeError(f"status {r.status}: {r.read()[:300]}")
            first = None
            usage = None
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    break
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices", []):
                    delta = choice.get("delta", {})
                    if first is None and ("content" in delta and "role" not in delta or "reasoning_content" in delta
                                          or choice.get("finish_reason")):
                        first = time.perf_counter() - start
            return first, time.perf_counter() - start, (usage or {}).get("completion_tokens", 0)
        finally:
            conn.close()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def overhead(server, count):
    body = {"model": "bench", "messages": [{"role": "user", "content": "In one word: what colour is the sky on a clear day?"}],
            "max_tokens": 1, "stream": True, "stream_options": {"include_usage": True},
            "chat_template_kwargs": {"enable_thinking": False}, "temperature": 0}
    for _ in range(5):  # warm-up
        server.stream_chat(body)
    differences, client = [], []
    for _ in range(count):
        before = server.engine_ttft_sum()
        first, _, _ = server.stream_chat(body)
        engine = server.engine_ttft_sum() - before
        client.append(first)
        differences.append(first - engine)
    differences.sort()
    return {"requests": count, "client_ttft_median_ms": 1e3 * statistics.median(client),
            "overhead_median_ms": 1e3 * statistics.median(differences),
            "overhead_p90_ms": 1e3 * differences[int(0.9 * (len(differences) - 1))]}


WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "at", "by", "this", "had",
         "not", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you", "were", "her", "all"]


def bench_engine_question(i):
    """qwen-bench-engine's user turn for request i (bench/bench_engine.cpp): about 128 prompt tokens."""
    return f"Request {i}:" + "".join(" " + WORDS[(i * 131 + w * 17 + w * w) % 32] for w in range(104))


def throughput(server, clients, first_request):
    def body(i):
        return {"model": "bench", "messages": [{"role": "user", "content": bench_engine_question(i)}], "max_tokens": 128,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
                "chat_template_kwargs": {"enable_thinking": False}, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "seed": i}
    results = [None] * clients
    errors = []

    def client(i):
        try:
            results[i] = server.stream_chat(body(first_request + i))  # new prompts: the prefix cache serves nothing
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[:3]}")
    tokens = sum(r[2] for r in results)
    return {"clients": clients, "generated_tokens": tokens, "seconds": wall, "generated_per_second": tokens / wall}


def offline(bench_engine, clients, runs):
    """qwen-bench-engine's median generated tok/s over `runs` runs in one process."""
    run = subprocess.run([bench_engine, "--concurrency", str(clients), "--runs", str(runs)], check=True, stdout=subprocess.PIPE,
                         text=True)
    print(run.stdout, flush=True)
    for line in run.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == str(clients):
            return float(cells[2])  # concurrent, prompt tok/req, generated tok/s (the median run), ...
    raise RuntimeError("no row for concurrency %d in qwen-bench-engine's output" % clients)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", required=True)
    ap.add_argument("--bench-engine", required=True)
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    scratch = None
    model = args.model
    if not model:
        scratch = tempfile.TemporaryDirectory()
        model = scratch.name
        make_model(model)
    print(f"machine: {os.cpu_count()} cores; load average {open('/proc/loadavg').read().split()[:3]}", flush=True)
    server = Server(args.serve, model)
    try:
        o = overhead(server, args.requests)
        print(f"overhead over {o['requests']} requests: client TTFT median {o['client_ttft_median_ms']:.2f} ms, "
              f"HTTP minus engine median {o['overhead_median_ms']:.3f} ms, p90 {o['overhead_p90_ms']:.3f} ms (target median <= 1 ms)",
              flush=True)
        # Both sides run ROUNDS times in one process each and report the median: the first run of a
        # process pays for touching the KV pool's pages, the later ones do not.
        served = []
        for r in range(args.rounds):
            t = throughput(server, args.clients, 1000 + r * args.clients)
            served.append(t["generated_per_second"])
            print(f"server round {r + 1}: {args.clients} streaming clients, {t['generated_tokens']} tokens in {t['seconds']:.1f} s "
                  f"= {served[-1]:.1f} tok/s", flush=True)
    finally:
        server.stop()
    engine_rate = offline(args.bench_engine, args.clients, args.rounds)
    a = statistics.median(served)
    print(f"throughput medians: server {a:.1f} tok/s, offline engine {engine_rate:.1f} tok/s, ratio {a / engine_rate:.3f} "
          "(target >= 0.9)", flush=True)
    if scratch:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
