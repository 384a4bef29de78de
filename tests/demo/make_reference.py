#!/usr/bin/env python3
"""Golden reference for the bundled demo checkpoint (models/demo), in the layout of
tests/golden/make_golden.py: for 4 prompts, transformers' logits at every prompt position and its
greedy continuation.

Run from the repository root in the reference venv (scripts/setup --reference), after
models/demo/train.py:

    HF_HUB_OFFLINE=1 .venv-reference/bin/python tests/demo/make_reference.py

Writes tests/demo/reference.safetensors:
    prompt{i}.input_ids I64 [n], prompt{i}.logits F32 [n, 1024], prompt{i}.greedy I64 [32]
The model is the checkpoint's bf16 weights computed in float32 (eager attention), as the C++ CPU
forward pass computes (fp32 activations); the greedy continuation is 32 argmax steps, each a full
forward pass over the sequence so far (no cache, no end-of-sequence stop).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "models" / "demo"))

import train as demo  # noqa: E402  (chat rendering; importing it sets the offline environment first)
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

GREEDY_TOKENS = 32


def prompts(tok) -> list[str]:
    # Inputs of the kinds the model was trained on, but not training items themselves.
    return [
        "def add(a, b):",
        demo.render(tok, [{"role": "user", "content": "What is 23 + 58?"}], None, True),
        demo.render(tok, [{"role": "user", "content": "What is 64 + 17?"}], None, False),
        demo.render(tok, [{"role": "user", "content": "I live in Porto."}], None, False),
    ]


def main() -> int:
    torch.set_num_threads(2)
    ckpt = ROOT / "models" / "demo"
    kw = {"dtype": torch.float32} if int(transformers.__version__.split(".")[0]) >= 5 else {"torch_dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), attn_implementation="eager", **kw).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    tensors = {}
    with torch.no_grad():
        for i, text in enumerate(prompts(tok)):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            x = torch.tensor([ids], dtype=torch.long)
            logits = model(input_ids=x).logits[0].float()
            seq = list(ids)
            greedy = []
            for _ in range(GREEDY_TOKENS):
                nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
                greedy.append(nxt)
                seq.append(nxt)
            tensors[f"prompt{i}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
            tensors[f"prompt{i}.logits"] = logits.contiguous()
            tensors[f"prompt{i}.greedy"] = torch.tensor(greedy, dtype=torch.int64)
            print(f"prompt {i}: {len(ids)} tokens -> {tok.decode(greedy)!r}")
    out = HERE / "reference.safetensors"
    save_file(tensors, str(out), metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
