#!/usr/bin/env python3
"""Encode and decode throughput of qwen's tokenizer against Hugging Face tokenizers, same text,
same run, single thread.

    /work/refvenv/bin/python bench/compare_tokenizer.py --bench build/bench/qwen-bench-tokenizer \
        [--tokenizer ../shared/models/qwen3-tokenizer] [--text FILE] [--repeats 30]

Without --text the test corpus (tests/tokenizer/corpus.jsonl, lines joined with "\\n") is written
to a temporary file, and both sides read that file. Hugging Face runs with RAYON_NUM_THREADS=1
and TOKENIZERS_PARALLELISM=false; it times Tokenizer.encode(text) (and decode of its ids) on the
whole text REPEATS times after one warm-up call, like the benchmark's Encode/warm (the BPE word
caches of both are warm). qwen-bench-tokenizer is then run on the same file, and the best and
median of both are printed with the ratio. Needs `tokenizers` (the reference venv).
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
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


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

    def qwen_rates(name):
        rates = [b["bytes_per_second"] / 1e6 for b in runs if b["run_name"] == name]
        return max(rates), statistics.median(rates)

    print(f"text: {text_path} ({len(raw)} bytes, {len(ids)} tokens); single thread")
    rows = [("encode", (mb / hf_enc[0], mb / hf_enc[1]), qwen_rates("Encode/warm")),
            ("encode, qwen cache cold", (mb / hf_enc[0], mb / hf_enc[1]), qwen_rates("Encode/cold")),
            ("decode", (decoded_mb / hf_dec[0], decoded_mb / hf_dec[1]), qwen_rates("Decode"))]
    print(f"{'':26} {'HF best':>9} {'HF median':>10} {'qwen best':>10} {'qwen median':>12} {'ratio (median)':>15}")
    for name, hf, qw in rows:
        print(f"{name:26} {hf[0]:8.1f}  {hf[1]:9.1f}  {qw[0]:9.1f}  {qw[1]:11.1f}  {qw[1] / hf[1]:13.2f}x   (MB/s)")
    if not args.text:
        os.unlink(text_path)


if __name__ == "__main__":
    sys.exit(main())
