"""qwen's safetensors reader and writer against the Python safetensors library.

1. Python writes a file with random tensors of many dtypes (safetensors.numpy.save_file).
2. qwen reads it and writes a copy (tests/interop/safetensors_copy.cpp).
3. Python loads the copy: every tensor equal, metadata kept; and since both writers lay the
   tensors out in the same order, the headers must agree and the data sections be identical.

usage: check_safetensors_interop.py COPY_TOOL WORK_DIR
"""
import json
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def split(path):
    """(parsed header, raw header bytes, data section) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8:8 + n], raw[8 + n:]


def main() -> int:
    tool, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(20261122)
    tensors = {
        "model.embed_tokens.weight": rng.standard_normal((17, 5)).astype(np.float32),
        "half": rng.standard_normal((3, 7)).astype(np.float16),
        "double": rng.standard_normal((4,)).astype(np.float64),
        "ids": rng.integers(-2**40, 2**40, size=(9,), dtype=np.int64),
        "i32": rng.integers(-2**30, 2**30, size=(2, 3), dtype=np.int32),
        "i16": rng.integers(-2**14, 2**14, size=(5,), dtype=np.int16),
        "bytes": rng.integers(0, 255, size=(3, 3), dtype=np.uint8),
        "i8": rng.integers(-100, 100, size=(7,), dtype=np.int8),
        "flags": rng.integers(0, 2, size=(6,)).astype(np.bool_),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    original = os.path.join(work, "python.safetensors")
    copy = os.path.join(work, "qwen.safetensors")
    save_file(tensors, original, metadata={"format": "np", "note": "ünïcode"})
    result = subprocess.run([tool, original, copy], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"FAILED: {tool} exited {result.returncode}: {result.stderr}")
        return 1
    loaded = load_file(copy)
    failures = 0
    for name, expected in tensors.items():
        got = loaded.get(name)
        if got is None or got.dtype != expected.dtype or got.shape != expected.shape or not np.array_equal(got, expected):
            print(f"FAILED: tensor {name} differs after qwen's round trip")
            failures += 1
    # The headers must say the same (key order aside: the reference keeps __metadata__ in a hash
    # map, so its order varies from run to run), and the data sections must be byte-identical.
    a, b = split(original), split(copy)
    if a[0] != b[0] or len(a[1]) != len(b[1]):
        print(f"FAILED: headers differ:\n  python {a[0]}\n  qwen   {b[0]}")
        failures += 1
    if a[2] != b[2]:
        print("FAILED: qwen's data section differs from the Python library's")
        failures += 1
    print(f"{len(tensors)} tensors checked after qwen's round trip; {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
