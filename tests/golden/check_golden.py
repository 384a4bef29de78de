#!/usr/bin/env python3
"""Re-check the committed golden fixtures against whatever transformers is installed.

    .venv-reference/bin/python tests/golden/check_golden.py [--root tests/golden] [--atol 1e-4]

For every checkpoint it reloads the files from disk (independently of make_golden.py), re-tokenises
the prompt texts, re-renders the chat prompt, recomputes the float32 logits and a greedy
continuation (plain argmax over full forwards, no generate()), and compares them with
reference/<name>.{json,safetensors}. Useful to confirm that another transformers version
(e.g. 4.5x, the one the hub Qwen3 checkpoints were written with) agrees with the fixtures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
_V = tuple(int(x) for x in transformers.__version__.split(".")[:2])
DTYPE_KW = "dtype" if _V >= (4, 56) else "torch_dtype"


def load_fp32(d: Path):
    return AutoModelForCausalLM.from_pretrained(str(d), **{DTYPE_KW: torch.float32},
                                                attn_implementation="eager").eval()


def load_fp8_dequantised(d: Path):
    """W = fp8 * weight_scale_inv[r // 128, c // 128]; everything else as stored."""
    sd = load_file(str(d / "model.safetensors"))
    out = {}
    for k, v in sd.items():
        if k.endswith("weight_scale_inv"):
            continue
        sk = k + "_scale_inv"
        if sk in sd:
            assert v.dtype == torch.float8_e4m3fn, (k, v.dtype)
            s = sd[sk].float()
            r = torch.arange(v.shape[0]) // 128
            c = torch.arange(v.shape[1]) // 128
            out[k] = v.float() * s[r][:, c]
        else:
            out[k] = v.float()
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("quantization_config")
    cfg["torch_dtype"] = "float32"
    tmp = Path(tempfile.mkdtemp())
    try:
        (tmp / "config.json").write_text(json.dumps(cfg))
        save_file(out, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        return load_fp32(tmp)
    finally:
        shutil.rmtree(tmp)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=HERE)
    ap.add_argument("--atol", type=float, default=1e-4)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    worst_all = 0.0
    ok = True
    for jf in sorted((args.root / "reference").glob("*.json")):
        ref = json.loads(jf.read_text())
        name = ref["fixture"]
        d = args.root / ref["checkpoint"]
        rt = load_file(str(jf.with_suffix(".safetensors")))
        tok = AutoTokenizer.from_pretrained(str(d))
        model = load_fp8_dequantised(d) if ref["expect"]["dtype"] == "fp8" else load_fp32(d)
        worst = 0.0
        fixture_ok = True
        for i, p in enumerate(ref["prompts"]):
            ids = rt[f"prompt{i}.input_ids"]
            assert ids.tolist() == p["input_ids"]
            assert tok(p["text"])["input_ids"] == p["input_ids"], f"{name} prompt{i}: tokenizer differs"
            if i == 2:
                chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                               tokenize=False, add_generation_prompt=True, enable_thinking=False)
                assert chat == p["text"], f"{name}: chat template renders differently: {chat!r}"
            with torch.no_grad():
                logits = model(input_ids=ids[None]).logits[0].float()
                diff = float((logits - rt[f"prompt{i}.logits"]).abs().max())
                worst = max(worst, diff)
                seq = ids[None]
                for _ in range(rt[f"prompt{i}.greedy"].numel()):
                    nxt = model(input_ids=seq).logits[0, -1].argmax()
                    seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
            greedy = seq[0, ids.numel():]
            g_ok = torch.equal(greedy, rt[f"prompt{i}.greedy"])
            if diff > args.atol or not g_ok:
                ok = fixture_ok = False
                print(f"FAIL {name} prompt{i}: max|dlogits| {diff:.3g}, greedy match {g_ok}")
        worst_all = max(worst_all, worst)
        print(f"{name:13s} max|dlogits| {worst:.3g}  {'ok' if fixture_ok else 'FAIL'}")
    print("ALL OK" if ok else "MISMATCH", f"(worst max|dlogits| {worst_all:.3g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
