#!/usr/bin/env python3
"""qwen against llama.cpp and transformers on one random Qwen3-0.6B-shaped bf16 checkpoint, in
one window on this machine (run through bench/compare_peers, which picks the venv).

Steps, each skipped when its output is already under build/peers/:
  1. the checkpoint: bench/tools/make_random_checkpoint.py --shape 0.6B, plus the real Qwen3
     tokenizer files from ../shared/models/qwen3-tokenizer/ (llama.cpp's converter needs them);
  2. llama.cpp from the llama-cpp-python sdist on PyPI (its vendor/llama.cpp): llama-bench and
     llama-simple built with cmake (GGML_NATIVE), and the checkpoint converted to GGUF bf16 and
     f16 with its convert_hf_to_gguf.py (gguf-py on PYTHONPATH);
  3. proof that every engine runs the same weights: greedy continuations of one prompt from
     transformers (fp32), qwen-generate (with an fp32 KV cache, as transformers keeps) and
     llama-simple (bf16 GGUF) compared token by token
     (as text for llama-simple, which takes text), and the first position's five most likely
     tokens with their log-probabilities from transformers and qwen-generate;
  4. waits until the 1-minute load average is below --max-load (up to --wait seconds) and
     records the load before and after;
  5. in one window: llama-bench (bf16, f16: -p 512, -n 64 at depth 0 and at each context),
     transformers bf16 and fp32 (prefill 512 with logits_to_keep=1; decode: one-token forwards
     after a cache of each context), qwen-bench-model (Prefill/0.6B/512, Decode/0.6B,
     DecodeContext/0.6B with the KV cache in bf16, its default, and in fp32, DecodeBatch/0.6B):
     medians of --reps;
  6. prints the table and the ratios, writes DIR/peers.json and DIR/decode_context.png,
     DIR/batch.png.

qwen-bench-model makes its own random weights of the same shape (speed does not depend on the
values); the greedy check of step 3 runs qwen-generate on the checkpoint itself.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDIST = "llama-cpp-python==0.3.36"
PROMPT = "The history of the city begins"
GREEDY_TOKENS = 8


def log(*a):
    print("compare_peers:", *a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$", " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def output(cmd, **kw):
    return run(cmd, capture_output=True, text=True, **kw).stdout


# ---- 1, 2: the checkpoint, llama.cpp, the GGUF files ------------------------------------------

def make_checkpoint(work):
    ckpt = work / "qwen3-0.6b-random"
    if not (ckpt / "model.safetensors").exists():
        run([sys.executable, ROOT / "bench/tools/make_random_checkpoint.py", "--shape", "0.6B", "--out", ckpt])
    tok = ROOT.parent / "shared/models/qwen3-tokenizer"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (ckpt / name).exists():
            shutil.copy(tok / name, ckpt / name)
    return ckpt


def build_llama(work):
    src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
    if src is None:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", SDIST, "-d", work])
        archive = next(work.glob("llama_cpp_python-*.tar.gz"))
        run(["tar", "xzf", archive, "-C", work])
        src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
    build = work / "llama-build"
    bench, simple = build / "bin/llama-bench", build / "bin/llama-simple"
    if not (bench.exists() and simple.exists()):
        run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF"], stdout=subprocess.DEVNULL)
        run(["cmake", "--build", build, "-j", str(os.cpu_count() or 2), "--target", "llama-bench", "llama-simple"],
            stdout=subprocess.DEVNULL)
    version = src.parents[1].name.replace("llama_cpp_python-", "llama-cpp-python ")
    return src, bench, simple, version


def convert(src, ckpt, work, outtype):
    gguf = work / f"qwen3-0.6b-random-{outtype}.gguf"
    if not gguf.exists():
        env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"))
        with open(work / f"convert-{outtype}.log", "w") as logfile:  # its progress bars, kept apart
            run([sys.executable, src / "convert_hf_to_gguf.py", ckpt, "--outtype", outtype, "--outfile", gguf], env=env,
                stdout=logfile, stderr=logfile)
    return gguf


# ---- 3: the same weights ----------------------------------------------------------------------

def greedy_check(ckpt, qwen_build, simple, gguf, threads):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    ids = tokenizer(PROMPT)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False, min_new_tokens=GREEDY_TOKENS)
    reference = out[0, len(ids):].tolist()
    # The first position's five most likely tokens and their log-probabilities, from both.
    with torch.no_grad():
        first = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
    top = torch.topk(first, 5)
    reference_top = [[int(i), float(v)] for i, v in zip(top.indices, top.values)]
    del model
    ours_json = json.loads(output([qwen_build / "examples/qwen-generate", "--model", ckpt, "--prompt-ids", ",".join(map(str, ids)),
                                   "--max-tokens", 1, "--json", "--logprobs", 5, "--threads", threads, "--kv-cache-dtype", "fp32"]))
    ours_top = ours_json["logprobs"][0]

    ours_text = output([qwen_build / "examples/qwen-generate", "--model", ckpt, "--prompt-ids", ",".join(map(str, ids)),
                        "--max-tokens", GREEDY_TOKENS, "--temperature", "0", "--ignore-eos", "--threads", threads,
                        "--kv-cache-dtype", "fp32"])
    ours = [int(t) for t in ours_text.strip().split(",") if t.strip()]

    llama_out = run([simple, "-m", gguf, "-n", GREEDY_TOKENS, PROMPT], capture_output=True, text=True).stdout
    reference_text = tokenizer.decode(reference)
    # llama-simple prints the prompt and then the continuation.
    llama_text = llama_out.split(PROMPT, 1)[1] if PROMPT in llama_out else llama_out
    matched_ours = next((i for i, (a, b) in enumerate(zip(ours, reference)) if a != b), min(len(ours), len(reference)))
    # The longest prefix of the reference's tokens whose text llama.cpp's output starts with.
    matched_llama = 0
    for i in range(1, len(reference) + 1):
        if llama_text.startswith(tokenizer.decode(reference[:i])):
            matched_llama = i
    return {
        "prompt": PROMPT, "prompt_ids": ids, "transformers_fp32_ids": reference, "transformers_text": reference_text,
        "qwen_ids": ours, "llama_bf16_text": llama_text[:200],
        "qwen_tokens_matching": matched_ours, "llama_tokens_matching": matched_llama, "tokens": GREEDY_TOKENS,
        "transformers_fp32_top5": reference_top, "qwen_top5": ours_top,
        "top5_same_ids": [i for i, _ in ours_top] == [i for i, _ in reference_top],
        "top5_largest_logprob_difference": max(abs(a[1] - b[1]) for a, b in zip(ours_top, reference_top)),
    }


# ---- 4: an idle machine -----------------------------------------------------------------------

def wait_for_idle(max_load, wait):
    start = time.time()
    while os.getloadavg()[0] > max_load and time.time() - start < wait:
        log(f"load average {os.getloadavg()[0]:.2f} > {max_load}: waiting")
        time.sleep(30)
    return os.getloadavg()[0]


# ---- 5: the runs ------------------------------------------------------------------------------

def llama_bench(bench, gguf, threads, reps, contexts):
    runs = json.loads(output([bench, "-m", gguf, "-p", "512", "-n", "64", "-t", threads, "-r", reps, "-o", "json"]))
    result = {}
    for r in runs:
        key = "prefill_512" if r["n_prompt"] > 0 else "decode_0"
        result[key] = statistics.median(r["samples_ts"])
    depths = ",".join(str(c) for c in contexts)
    runs = json.loads(output([bench, "-m", gguf, "-p", "0", "-n", "64", "-d", depths, "-t", threads, "-r", reps, "-o", "json"]))
    result["decode_context"] = {str(r["n_depth"]): statistics.median(r["samples_ts"]) for r in runs}
    result["build"] = runs[0].get("build_commit", "") if runs else ""
    return result


def transformers_runs(ckpt, dtype_name, threads, reps, contexts):
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.set_num_threads(threads)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=dtype)
    model.eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    result = {}
    with torch.no_grad():
        prompt = torch.randint(0, vocab, (1, 512), generator=g)
        model(prompt[:, :16], logits_to_keep=1)  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(prompt, logits_to_keep=1)
            times.append(time.perf_counter() - t0)
        result["prefill_512"] = 512 / statistics.median(times)
        result["decode_context"] = {}
        steps = 16
        for context in contexts:
            ids = torch.randint(0, vocab, (1, context), generator=g)
            rates = []
            for _ in range(reps):
                cache = DynamicCache()
                out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                token = out.logits[:, -1:].argmax(-1)
                t0 = time.perf_counter()
                for _ in range(steps):
                    out = model(token, past_key_values=cache, use_cache=True)
                    token = out.logits[:, -1:].argmax(-1)
                rates.append(steps / (time.perf_counter() - t0))
            result["decode_context"][str(context)] = statistics.median(rates)
    return result


def qwen_runs(qwen_build, reps, contexts):  # qwen-bench-model's CpuBackend uses every core
    bench = qwen_build / "bench/qwen-bench-model"
    filt = "^(Prefill/0.6B/512|Decode/0.6B|DecodeContext/0.6B/.*|DecodeBatch/0.6B/.*)/"
    data = json.loads(output([bench, f"--benchmark_filter={filt}", f"--benchmark_repetitions={reps}",
                              "--benchmark_report_aggregates_only=true", "--benchmark_format=json"]))
    med = {b["run_name"]: b for b in data["benchmarks"] if b.get("aggregate_name") == "median"}

    def get(prefix):
        return next(v for k, v in med.items() if k.startswith(prefix))

    result = {
        "prefill_512": get("Prefill/0.6B/512")["tokens_per_second"],
        "prefill_peak_fraction": get("Prefill/0.6B/512")["peak_fraction"],
        "fp32_fma_probe": get("Prefill/0.6B/512")["fp32_fma_probe"],
        "bf16_dot_probe": get("Prefill/0.6B/512")["bf16_dot_probe"],
        "amx_bf16_probe": get("Prefill/0.6B/512").get("amx_bf16_probe", 0.0),
        "decode_context": {"128": get("Decode/0.6B/")["tokens_per_second"]},
        "decode_bandwidth_fraction": {"128": get("Decode/0.6B/")["bandwidth_fraction"]},
        "read_probe": get("Decode/0.6B/")["read_bandwidth_probe"],
        "batch": {"1": get("Decode/0.6B/")["tokens_per_second"]},
    }
    # DecodeContext/0.6B/C/K: K = 0 the bf16 KV cache (qwen's default, as Decode/0.6B), 1 fp32.
    result["decode_context_fp32_kv"] = {}
    for c in contexts:
        if c != 128:
            b = get(f"DecodeContext/0.6B/{c}/0/")
            result["decode_context"][str(c)] = b["tokens_per_second"]
            result["decode_bandwidth_fraction"][str(c)] = b["bandwidth_fraction"]
            result["decode_context_fp32_kv"][str(c)] = get(f"DecodeContext/0.6B/{c}/1/")["tokens_per_second"]
    for k, v in med.items():
        m = re.match(r"DecodeBatch/0.6B/(\d+)/", k)
        if m:
            result["batch"][m.group(1)] = v["tokens_per_second"]
            result.setdefault("batch_peak_fraction", {})[m.group(1)] = v["peak_fraction"]
    return result


# ---- 6: the report ----------------------------------------------------------------------------

def report(res, out):
    engines = [("qwen (qwen-bench-model; bf16 KV cache)", res["qwen"]), ("llama.cpp llama-bench, bf16 GGUF", res["llama_bf16"]),
               ("llama.cpp llama-bench, f16 GGUF", res["llama_f16"]), ("transformers, torch CPU, bf16", res["hf_bf16"]),
               ("transformers, fp32", res["hf_fp32"])]
    lines = ["| engine | prefill 512 tok/s | decode tok/s, context 128 | decode tok/s, context 4096 |", "|---|---|---|---|"]
    for name, r in engines:
        d = r["decode_context"]
        lines.append(f"| {name} | {r['prefill_512']:.1f} | {d.get('128', float('nan')):.1f} | {d.get('4096', float('nan')):.2f} |")
    q, lb, hf = res["qwen"], res["llama_bf16"], res["hf_fp32"]
    ratios = {
        "prefill: qwen / transformers fp32": q["prefill_512"] / hf["prefill_512"],
        "prefill: qwen / llama.cpp bf16": q["prefill_512"] / lb["prefill_512"],
        "prefill: fraction of the fp32-FMA probe": q["prefill_peak_fraction"] * max(q["fp32_fma_probe"], q["bf16_dot_probe"]) / q["fp32_fma_probe"],
        "decode 128: qwen / llama.cpp bf16": q["decode_context"]["128"] / lb["decode_context"]["128"],
        "decode 4096: qwen / llama.cpp bf16": q["decode_context"]["4096"] / lb["decode_context"]["4096"],
        "decode 4096, qwen with an fp32 KV cache: qwen / llama.cpp bf16": q["decode_context_fp32_kv"]["4096"] / lb["decode_context"]["4096"],
    }
    if "32" in q["batch"]:
        ratios["batch 32 / batch 1 decode throughput"] = q["batch"]["32"] / q["batch"]["1"]
    res["ratios"] = ratios
    res["table"] = "\n".join(lines)
    print(res["table"])
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    (out / "peers.json").write_text(json.dumps(res, indent=2))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in engines:
        xs = sorted(int(c) for c in r["decode_context"])
        ax.plot(xs, [r["decode_context"][str(c)] for c in xs], marker="o", label=name)
    xs = sorted(int(c) for c in q["decode_context_fp32_kv"])
    ax.plot(xs, [q["decode_context_fp32_kv"][str(c)] for c in xs], marker="o", linestyle="--", label="qwen, fp32 KV cache")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("decode tokens/s (one sequence)")
    ax.set_title(f"Qwen3-0.6B shape, bf16 weights, {res['machine']['threads']} threads")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "decode_context.png", dpi=110)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = sorted(int(b) for b in q["batch"])
    ax.plot(xs, [q["batch"][str(b)] for b in xs], marker="o", label="qwen: one decode step of B sequences (context 128)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("tokens/s")
    ax.set_title("Decode throughput against batch size (qwen only)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "batch.png", dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "build/peers/report"), help="where peers.json and the PNG plots go")
    ap.add_argument("--work", default=str(ROOT / "build/peers"))
    ap.add_argument("--qwen-build", default=str(ROOT / "build/test"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--contexts", default="128,512,1024,2048,4096")
    ap.add_argument("--max-load", type=float, default=0.5)
    ap.add_argument("--wait", type=float, default=900, help="seconds to wait for the load to fall")
    args = ap.parse_args()
    work, out, qwen_build = Path(args.work), Path(args.out), Path(args.qwen_build)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    contexts = [int(c) for c in args.contexts.split(",")]
    if 128 not in contexts or 4096 not in contexts:
        sys.exit("compare_peers: --contexts must include 128 and 4096 (the table's columns)")
    for tool in ("bench/qwen-bench-model", "examples/qwen-generate"):
        if not (qwen_build / tool).exists():
            sys.exit(f"compare_peers: {qwen_build / tool} is missing: build it first (cmake --build {qwen_build} --target {Path(tool).name})")

    if args.threads != os.cpu_count():
        sys.exit(f"compare_peers: --threads {args.threads} but qwen-bench-model runs on every core ({os.cpu_count()}): "
                 "the engines would not run on the same cores")

    ckpt = make_checkpoint(work)
    src, bench, simple, llama_version = build_llama(work)
    gguf = {t: convert(src, ckpt, work, t) for t in ("bf16", "f16")}
    same = greedy_check(ckpt, qwen_build, simple, gguf["bf16"], args.threads)
    log(f"greedy: qwen matches transformers fp32 on {same['qwen_tokens_matching']}/{GREEDY_TOKENS} tokens, "
        f"llama.cpp bf16 on {same['llama_tokens_matching']}/{GREEDY_TOKENS}; first position's top 5: same ids "
        f"{same['top5_same_ids']}, log-probabilities within {same['top5_largest_logprob_difference']:.2g}")

    load_before = wait_for_idle(args.max_load, args.wait)
    started = time.time()
    res = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip(),
        "machine": {"cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor()),
                    "cores": os.cpu_count(), "threads": args.threads},
        "llama_cpp": llama_version, "load_before": load_before, "reps": args.reps, "same_weights": same,
    }
    import torch
    import transformers
    res["transformers"] = f"transformers {transformers.__version__}, torch {torch.__version__}"
    res["qwen"] = qwen_runs(qwen_build, args.reps, contexts)
    res["llama_bf16"] = llama_bench(bench, gguf["bf16"], args.threads, args.reps, contexts)
    res["llama_f16"] = llama_bench(bench, gguf["f16"], args.threads, args.reps, contexts)
    res["hf_bf16"] = transformers_runs(ckpt, "bf16", args.threads, args.reps, contexts)
    res["hf_fp32"] = transformers_runs(ckpt, "fp32", args.threads, args.reps, contexts)
    res["load_after"] = os.getloadavg()[0]
    res["window_seconds"] = round(time.time() - started)
    report(res, out)
    log(f"wrote {out / 'peers.json'}, {out / 'decode_context.png'}, {out / 'batch.png'}")


if __name__ == "__main__":
    main()
