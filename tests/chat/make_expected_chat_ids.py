"""Writes tests/chat/expected_chat_ids.jsonl: for every request in expected_renders.json, the token
ids Hugging Face transformers' apply_chat_template(tokenize=True) gives with the official Qwen3
template and tokenizer (what `qwen-tokenize --chat` must print).

Run with the reference venv (transformers, tokenizers; no torch needed), from the repository root,
after make_expected_renders.py:
    HF_HUB_OFFLINE=1 /work/refvenv/bin/python tests/chat/make_expected_chat_ids.py ../shared/models/qwen3-tokenizer
"""
import json
import sys

from transformers import AutoTokenizer

sys.path.insert(0, "tests/chat")
from make_expected_renders import render  # noqa: E402  the same request -> arguments translation


def main():
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    with open("tests/chat/expected_renders.json", encoding="utf-8") as f:
        cases = json.load(f)["renders"]
    with open("tests/chat/expected_chat_ids.jsonl", "w", encoding="utf-8") as out:
        for case in cases:
            text = render(tokenizer, case["request"])
            assert text == case["expected"], case["name"]  # the renders file is current
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            out.write(json.dumps({"name": case["name"], "ids": ids}) + "\n")
    print(len(cases), "requests")


if __name__ == "__main__":
    main()
