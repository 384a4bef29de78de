#!/usr/bin/env python3
"""Encode and decode throughput of qwen's tokenizer against Hugging Face tokenizers, same text,
same run, single thread.

    /work/refvenv/bin/python bench/compare_tokenizer.py --bench build/bench/qwen-bench-tokenizer \
        [--tokenizer ../shared/models/qwen3-tokenizer] [--text FILE] [--repeats 30]

Without --text the test corpus (tests/tokenizer/corpus.jsonl, lines joined with "\\n") is written
to a temporary file, and both sides read that file. Hugging Face runs with RAYON_NUM_THREADS=1
and TOKENIZERS_PARALLELISM=false; it times Tokenizer.encode(text) (and decode of its ids) on the
whole text REPEATS times after one warm-up call, like the benchmark's Encode/warm (the BPE word
caches of both are warm); qwen-bench-tokenizer is then run on the same file (5 repetitions).
Best and median MB/s of both are printed, by wall-clock time and by CPU time, with the ratio of
the medians. Needs `tokenizers` (the reference venv).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402  (after the thread settings)

root = Path(__file__).resolve().parent.parent


def timed(fn, repeats):
    """Seconds per call: (wall best, wall median, CPU best, CPU median); CPU is the process's."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), statistics.median(wall), min(cpu), statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="path to qwen-bench-tokenizer")
    ap.add_argument("--tokenizer", default=str(root.parent / "shared/models/qwen3-tokenizer"))
    ap.add_argument("--text", help="UTF-8 text file (default: the test corpus)")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()

    if args.text:
        text_path = Path(args.text)
    else:
        lines = [json.loads(l) for l in (root / "tests/tokenizer/corpus.jsonl").read_text(encoding="utf-8").split("\n") if l]
        tmp = tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False)
        tmp.write("\n".join(lines).encode("utf-8"))
        tmp.close()
        text_path = Path(tmp.name)
    raw = text_path.read_bytes()
    text = raw.decode("utf-8")
    mb = len(raw) / 1e6

    tok = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))
    ids = tok.encode(text).ids
    decoded_mb = len(tok.decode(ids).encode("utf-8")) / 1e6
    hf_enc = timed(lambda: tok.encode(text), args.repeats)
    hf_dec = timed(lambda: tok.decode(ids), args.repeats)

    out = subprocess.run([args.bench, f"--tokenizer={args.tokenizer}", f"--text={text_path}",
                          "--benchmark_format=json", "--benchmark_repetitions=5",
                          "--benchmark_filter=Encode/warm|Encode/cold|^Decode"],
                         check=True, capture_output=True, text=True).stdout
    runs = [b for b in json.loads(out)["benchmarks"] if b.get("run_type") == "iteration"]

    def qwen_seconds(name):
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
        rs = [b for b in runs if b["run_name"] == name]
        wall = [b["real_time"] * scale[b["time_unit"]] for b in rs]
        cpu = [b["cpu_time"] * scale[b["time_unit"]] for b in rs]
        return min(wall), statistics.median(wall), min(cpu), statistics.median(cpu)

    print(f"text: {text_path} ({len(raw)} bytes, {len(ids)} tokens); single thread; MB/s = 1e6 bytes/s")
    print("wall = elapsed time, cpu = CPU time of the process; on a busy machine trust cpu more")
    header = f"{'':24} {'':4} {'HF best':>8} {'HF median':>10} {'qwen best':>10} {'qwen median':>12} {'ratio (median)':>15}"
    print(header)
    for name, size, hf, qw in [("encode (warm caches)", mb, hf_enc, qwen_seconds("Encode/warm")),
                               ("encode (qwen cache cold)", mb, hf_enc, qwen_seconds("Encode/cold")),
                               ("decode", decoded_mb, hf_dec, qwen_seconds("Decode"))]:
        for clock, k in (("wall", 0), ("cpu", 2)):
            hf_best, hf_med, q_best, q_med = size / hf[k], size / hf[k + 1], size / qw[k], size / qw[k + 1]
            print(f"{name:24} {clock:4} {hf_best:8.2f} {hf_med:10.2f} {q_best:10.2f} {q_med:12.2f} {q_med / hf_med:14.1f}x")
    if not args.text:
        os.unlink(text_path)


if __name__ == "__main__":
    sys.exit(main())
