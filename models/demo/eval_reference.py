#!/usr/bin/env python3
"""Held-out evaluation of the demo checkpoint with Hugging Face transformers (the reference the C++
evaluation is compared with, answer for answer).

Run from the repository root in the reference venv:

    HF_HUB_OFFLINE=1 .venv-reference/bin/python models/demo/eval_reference.py

It loads the checkpoint in models/demo (bf16 weights, computed in float32 as the C++ CPU forward pass
computes (--dtype bfloat16 for bf16 compute), eager attention, one request at a time, greedy
decoding with the KV cache until <|im_end|> / <|endoftext|> or MAX_NEW_TOKENS), runs the
held-out items defined in train.py (50 additions never seen in training, with thinking on and off;
20 cities never seen in training: the tool call with thinking on and off, and the answer after the
tool result), prints each item and the figures, and writes tests/demo/heldout.json (which the C++
test tests/test_generate_cli.cpp compares the engine's output with): for each item
the messages, tools, enable_thinking, the expected answer / city, the rendered prompt and its token
ids, and transformers' greedy output (ids and text, split into reasoning_content / content /
tool_calls the way the Qwen3 parsers split it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import train as demo  # noqa: E402  (held-out items, chat rendering)
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402

MAX_NEW_TOKENS = 200
TOOL_CALL_RE = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.S)


def split_output(text: str, enable_thinking: bool) -> dict:
    """Qwen3's reasoning and tool-call split: with thinking on the output starts with <think> and the
    reasoning ends at </think>; with thinking off the prompt already closed the think block."""
    reasoning = None
    content = text
    if "</think>" in text:
        head, content = text.split("</think>", 1)
        reasoning = head.split("<think>", 1)[-1].strip("\n")
        content = content.lstrip("\n")
    calls = []
    malformed = False
    for m in TOOL_CALL_RE.finditer(content):
        try:
            calls.append(json.loads(m.group(1)))
        except json.JSONDecodeError:
            malformed = True
    if "<tool_call>" in content:
        content_text = content.split("<tool_call>", 1)[0].strip()
    else:
        content_text = content.strip()
    return {"reasoning_content": reasoning, "content": content_text, "tool_calls": calls,
            "malformed_tool_call": malformed or content.count("<tool_call>") != len(calls)}


def judge(item: dict, out: dict) -> dict:
    k = item["kind"]
    think = item["enable_thinking"]
    has_reasoning = bool(out["reasoning_content"])
    r = {"reasoning_ok": has_reasoning if think else out["reasoning_content"] is None}
    if k.startswith("add"):
        r["exact"] = out["content"] == item["expected_answer"] and not out["tool_calls"]
        r["number_in_content"] = str(item["a"] + item["b"]) in re.findall(r"\d+", out["content"])
        r["correct"] = r["exact"] and r["reasoning_ok"]
    elif k.startswith("tool_call"):
        calls = out["tool_calls"]
        r["well_formed"] = len(calls) == 1 and not out["malformed_tool_call"] \
            and set(calls[0]) == {"name", "arguments"} and isinstance(calls[0]["arguments"], dict)
        r["right_city"] = r["well_formed"] and calls[0] == item["expected_tool_call"]
        r["correct"] = r["right_city"] and r["reasoning_ok"]
    else:
        res = item["tool_result"]
        r["exact"] = out["content"] == item["expected_answer"] and not out["tool_calls"]
        r["uses_result"] = all(s in out["content"] for s in (res["city"], str(res["temperature_c"]), res["condition"]))
        r["correct"] = r["exact"] and r["reasoning_ok"]
    return r


def load(ckpt: Path, dtype: torch.dtype):
    kw = {"dtype": dtype} if int(transformers.__version__.split(".")[0]) >= 5 else {"torch_dtype": dtype}
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), attn_implementation="eager", **kw).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    return model, tok


@torch.no_grad()
def greedy(model, tok, ids: list[int]) -> list[int]:
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    gcfg = GenerationConfig(do_sample=False, max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos, pad_token_id=eos[1],
                            num_beams=1, temperature=None, top_k=None, top_p=None)
    saved = model.generation_config
    model.generation_config = gcfg  # the checkpoint's sampling settings must not leak into greedy
    try:
        x = torch.tensor([ids], dtype=torch.long)
        seq = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gcfg)
    finally:
        model.generation_config = saved
    out = seq[0, len(ids):].tolist()
    if out and out[-1] in eos:
        out = out[:-1]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=HERE)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="float32",
                    help="compute dtype (weights are bf16 as saved either way)")
    ap.add_argument("--out", type=Path, default=HERE.parents[1] / "tests" / "demo" / "heldout.json", help="'-' to write nothing")
    ap.add_argument("--limit", type=int, default=0, help="only the first N items of each kind (for quick checks)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tok = load(args.checkpoint, getattr(torch, args.dtype))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, compute {args.dtype}", flush=True)

    items = demo.heldout_items()
    if args.limit:
        items = [it for it in items if sum(1 for j in items[:items.index(it)] if j["kind"] == it["kind"]) < args.limit]
    records = []
    for i, it in enumerate(items):
        prompt = demo.render(tok, it["messages"], it["tools"], it["enable_thinking"])
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        out_ids = greedy(model, tok, ids)
        text = tok.decode(out_ids, skip_special_tokens=False)
        parsed = split_output(text, it["enable_thinking"])
        verdict = judge(it, parsed)
        rec = dict(it)
        rec.update({"id": i, "prompt": prompt, "prompt_ids": ids,
                    "reference": {"output_ids": out_ids, "output_text": text, **parsed},
                    "verdict": verdict})
        records.append(rec)
        print(f"[{i:3d}] {it['kind']:17s} {'ok ' if verdict['correct'] else 'BAD'} "
              f"{json.dumps(it['messages'][0]['content'])} -> {json.dumps(text)}", flush=True)

    def frac(kind: str, key: str) -> tuple[int, int]:
        rs = [r for r in records if r["kind"] == kind]
        return sum(bool(r["verdict"][key]) for r in rs), len(rs)

    figures = {}
    for kind, keys in (("add_think", ("correct", "exact", "number_in_content", "reasoning_ok")),
                       ("add_nothink", ("correct", "exact", "number_in_content", "reasoning_ok")),
                       ("tool_call_think", ("correct", "right_city", "well_formed", "reasoning_ok")),
                       ("tool_call_nothink", ("correct", "right_city", "well_formed", "reasoning_ok")),
                       ("tool_followup", ("correct", "exact", "uses_result", "reasoning_ok"))):
        figures[kind] = {}
        for key in keys:
            n, d = frac(kind, key)
            figures[kind][key] = f"{n}/{d}"
    print("\nheld-out figures (transformers, greedy, compute " + args.dtype + "):")
    for kind, f in figures.items():
        print(f"  {kind:17s} " + ", ".join(f"{k} {v}" for k, v in f.items()))

    if str(args.out) != "-":
        doc = {
            "what": "held-out evaluation of models/demo: items never seen in training, with transformers' greedy "
                    "output for each (models/demo/eval_reference.py)",
            "how": {"model": f"AutoModelForCausalLM.from_pretrained(models/demo, dtype={args.dtype}, "
                             f"attn_implementation='eager'), one request at a time, KV cache",
                    "decoding": "greedy (argmax), stop at <|im_end|> or <|endoftext|> (not included in output_ids) "
                                f"or after {MAX_NEW_TOKENS} tokens",
                    "prompt": "tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, "
                              "enable_thinking=enable_thinking, tokenize=False), encoded without special-token "
                              "additions",
                    "judging": "add_*: content == expected_answer; tool_call_*: exactly one well-formed "
                               "<tool_call> whose JSON equals expected_tool_call; tool_followup: content == "
                               "expected_answer; with thinking on reasoning_content must be non-empty, with "
                               "thinking off absent"},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__,
                         "python": sys.version.split()[0]},
            "max_new_tokens": MAX_NEW_TOKENS,
            "figures": figures,
            "items": records,
        }
        args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
