#!/usr/bin/env python3
"""References for a bf16 KV cache: transformers' float32 forward pass with every key and value
rounded to bf16 where they enter the attention, for every golden checkpoint and the demo model.

    HF_HUB_OFFLINE=1 .venv-reference/bin/python tests/golden/make_kv_bf16_reference.py [--spread]

A model run in fp32 with its KV cache in bf16 computes exactly this: the projections, norms and
RoPE in fp32, then keys and values stored rounded to the nearest bf16 (torch's .to(bfloat16):
ties to even) and read back exactly. The C++ CPU backend with its default bf16 cache is tested
against these files (tests/test_forward.cpp, tests/test_generate_cli.cpp) within the tolerance
tests/golden_fixtures.hpp derives from --spread.

--spread writes nothing; it measures how uncertain the target is: the same runs with K and V
multiplied by (1 + u * 2^-21), u uniform in [-1, 1] (about 4 fp32 ulps, what another correct fp32
implementation may differ by) before the rounding, 5 draws per prompt, and prints the largest
max and mean |logit difference| to the reference as fractions of its logit range. It also prints
the mean distance of the fp32 references to these, which a bf16 tolerance must stay below.

For each checkpoint it first recomputes the committed fp32 logits (they must agree within 1e-4,
as check_golden.py requires), so the bf16 run is known to start from the same model; then
patches the eager attention function of the Qwen3 and Qwen3-MoE modules (the function
attn_implementation="eager" calls) to round its key and value inputs, and writes

    tests/golden/reference/<name>.kv_bf16.safetensors   (golden checkpoints)
    tests/demo/reference.kv_bf16.safetensors             (models/demo)

with the layout of the fp32 files: prompt{i}.input_ids I64 [n] (the same prompts),
prompt{i}.logits F32 [n, vocab] (every prompt position, one full forward), prompt{i}.greedy I64
[32] (argmax over full forwards, no end-of-sequence stop). It checks that rounding changed the
logits (so the patch took effect) and prints how far they moved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import check_golden  # noqa: E402  (offline environment, one torch thread, the loaders)
import torch  # noqa: E402
import transformers  # noqa: E402
import transformers.models.qwen3.modeling_qwen3 as qwen3  # noqa: E402
import transformers.models.qwen3_moe.modeling_qwen3_moe as qwen3_moe  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

ATOL = 1e-4
MODULES = (qwen3, qwen3_moe)
EAGER = {m: m.eager_attention_forward for m in MODULES}


def patch_kv(transform) -> None:
    """Makes the eager attention of the Qwen3 and Qwen3-MoE modules see transform(key) and
    transform(value); transform None restores it."""
    for m in MODULES:
        def patched(module, query, key, value, *args, _original=EAGER[m], **kwargs):
            return _original(module, query, transform(key), transform(value), *args, **kwargs)

        m.eager_attention_forward = EAGER[m] if transform is None else patched


def bf16_rounded(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).float()


def prompt_names(ref: dict) -> list[str]:
    return sorted({k.split(".")[0] for k in ref if k.endswith(".input_ids")})


def run(model, ids: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0].float()
        seq = ids[None]
        for _ in range(steps):
            nxt = model(input_ids=seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    return logits, seq[0, ids.numel():].to(torch.int64)


def make(model, fp32_file: Path, out: Path, what: str) -> None:
    ref = load_file(str(fp32_file))
    tensors = {}
    for p in prompt_names(ref):
        ids = ref[f"{p}.input_ids"]
        steps = ref[f"{p}.greedy"].numel()
        patch_kv(None)
        logits32 = model(input_ids=ids[None]).logits[0].float().detach()
        drift = float((logits32 - ref[f"{p}.logits"]).abs().max())
        assert drift <= ATOL, f"{what} {p}: this transformers gives fp32 logits {drift:.3g} away from the committed ones"
        patch_kv(bf16_rounded)
        logits, greedy = run(model, ids, steps)
        patch_kv(None)
        moved = float((logits - ref[f"{p}.logits"]).abs().max())
        assert moved > 0, f"{what} {p}: rounding K/V to bf16 changed nothing (the patch did not take effect)"
        same = int((greedy == ref[f"{p}.greedy"]).sum())
        span = float(ref[f"{p}.logits"].max() - ref[f"{p}.logits"].min())
        print(f"{what:13s} {p}: {ids.numel():3d} tokens, bf16 KV moves the logits by up to {moved:.3g} "
              f"({moved / span:.2e} of their range), greedy {same}/{steps} tokens as with fp32 KV")
        tensors[f"{p}.input_ids"] = ids.contiguous()
        tensors[f"{p}.logits"] = logits.contiguous()
        tensors[f"{p}.greedy"] = greedy.contiguous()
    # One metadata entry: safetensors writes several in a varying order, and the file should be
    # the same bytes on every run.
    save_file(tensors, str(out), metadata={"written_by": f"tests/golden/make_kv_bf16_reference.py with torch {torch.__version__}, "
                                           f"transformers {transformers.__version__}: keys and values rounded to bf16"})
    print(f"wrote {out.relative_to(ROOT)}")


def spread(model, fp32_file: Path, bf16_file: Path, what: str, worst: dict) -> None:
    ref, ref32 = load_file(str(bf16_file)), load_file(str(fp32_file))
    gen = torch.Generator().manual_seed(0)

    def noisy_rounded(x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(x.shape, generator=gen, dtype=torch.float32) * 2 - 1
        return bf16_rounded(x * (1 + u * 2.0 ** -21))

    patch_kv(noisy_rounded)
    for p in prompt_names(ref):
        target = ref[f"{p}.logits"]
        span = float(target.max() - target.min())
        for _ in range(5):
            with torch.no_grad():
                diff = (model(input_ids=ref[f"{p}.input_ids"][None]).logits[0].float() - target).abs()
            worst["max"] = max(worst["max"], float(diff.max()) / span)
            worst["mean"] = max(worst["mean"], float(diff.mean()) / span)
        fp32_mean = float((ref32[f"{p}.logits"] - target).abs().mean()) / span
        if what != "demo":  # the demo model's reference is not used to tell the caches apart
            worst["fp32_mean"] = min(worst.get("fp32_mean", 1.0), fp32_mean)
        print(f"{what:13s} {p}: perturbed runs so far up to {worst['max']:.2e} (max), {worst['mean']:.2e} (mean); "
              f"the fp32 reference is {fp32_mean:.2e} away in the mean")
    patch_kv(None)


def main() -> int:
    measure = "--spread" in sys.argv[1:]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    worst = {"max": 0.0, "mean": 0.0}
    runs = []
    for jf in sorted((HERE / "reference").glob("*.json")):
        info = json.loads(jf.read_text())
        d = HERE / info["checkpoint"]
        model = check_golden.load_fp8_dequantised(d) if info["expect"]["dtype"] == "fp8" else check_golden.load_fp32(d)
        runs.append((model, jf.with_suffix(".safetensors"), HERE / "reference" / f"{info['fixture']}.kv_bf16.safetensors", info["fixture"]))
    runs.append((check_golden.load_fp32(ROOT / "models" / "demo"), ROOT / "tests" / "demo" / "reference.safetensors",
                 ROOT / "tests" / "demo" / "reference.kv_bf16.safetensors", "demo"))
    for model, fp32_file, out, what in runs:
        if measure:
            spread(model, fp32_file, out, what, worst)
        else:
            make(model, fp32_file, out, what)
    if measure:
        print(f"largest over every prompt: max {worst['max']:.2e}, mean {worst['mean']:.2e} of the logit range; "
              f"smallest mean distance of a golden fp32 reference: {worst['fp32_mean']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
