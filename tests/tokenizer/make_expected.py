#!/usr/bin/env python3
"""Writes the expected outputs of the tokenizer tests with Hugging Face `tokenizers` (the reference).

Run from the repository root with the reference venv (tokenizers installed):
    /work/refvenv/bin/python tests/tokenizer/make_expected.py [TOKENIZER_DIR]
TOKENIZER_DIR defaults to ../shared/models/qwen3-tokenizer. Writes, beside this script:
  expected_lines.jsonl  one object per corpus line: ids, decode with and without special tokens
  expected_text.json    the same for the whole corpus as one text (lines joined with "\n")
  expected_invalid.json byte strings that are not UTF-8: the offset of the first bad byte (Python's
                        strict decoder) and the ids of the lenient form (each maximal invalid
                        subpart replaced by U+FFFD, Python's errors="replace", then encoded by HF)
  expected_fuzz.jsonl   4,000 short random strings over characters that stress the pre-tokenizer
                        regex and NFC (kinds of whitespace, newlines, apostrophes, U+017F, digits,
                        letters, combining marks, Hangul jamo, emoji, tags), with their ids
  expected_decode.json  id sequences whose bytes are not UTF-8 (single-byte tokens cut out of
                        characters), with HF's decode of each
"""
import json
import random
import sys
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

here = Path(__file__).parent
tok_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/models/qwen3-tokenizer")
tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))

INVALID = [b"abc\xffdef", b"\xc3", b"caf\xc3", b"\xe4\xbd", b"ok \xe4\xbd\xa0\xe5\xa5 end", b"\xf0\x9f\x98",
           b"\xf0\x9f\x98\x80\x80", b"\xc0\xaf", b"\xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80 too big",
           b"\xe0\x80\xaf overlong", b"\xfe\xfe", b"x\x80y\xbfz", b"\xf0\x28\x8c\xbc", b"<|im_end|>\xff<think>",
           b"\xe2\x82", b"\xe2\x82\x28", b"good\xf5bad", b"\xf1\x80\x80", b"\x80"]


def record(text):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert ids == tok.encode(text).ids  # Qwen3's post-processor adds nothing
    return {"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)}


def byte_token_ids(raw):
    """The ids of the single-byte tokens that spell `raw` (GPT-2's byte-to-character alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    alphabet, extra = {}, 0
    for b in range(256):
        if b in keep:
            alphabet[b] = chr(b)
        else:
            alphabet[b] = chr(256 + extra)
            extra += 1
    return [tok.token_to_id(alphabet[b]) for b in raw]


DECODE_BYTES = [b"\xe4\xbd\xa0", b"\xe4\xbd", b"\xe4A", b"\xf0\x9f\x98\x80\x80\x80", b"\xff\xfe", b"\xed\xa0\x80",
                b"a\xc3", b"\xc3\xa9\xc3", b"\xf0\x9f", b"\xf4\x90\x80\x80", b"\xe0\x80\xaf", b"\xc0\xaf", b"\xf0\x9f\x98 "]


FUZZ_POOL = (list(" \t\n\r\x0b\x0c\u00a0\u3000\u2009\u2028\u0085") + ["'", "\u2019", '"'] +
             ["'s", "'S", "'ll", "'LL", "'re", "'ve", "'m", "'d", "'t", "\u017f"] +
             list("aZé1٣五²Ⅻ") + list("e\u0301\u0308\u0323\u1100\u1161\u11a8\uac00\u212b") +
             list(".,!?-_()[]{}<>/\\#@$%^&*+=~`|;:") +
             ["😀", "👍🏽", "\u200d", "\ufe0f", "中文", "ｶﾀ", "ＡＢ", "abc", "Hello", "123", "<think>", "<|im_end|>", "<|im_end"])


def fuzz_strings(count):
    rng = random.Random(4)
    return ["".join(rng.choice(FUZZ_POOL) for _ in range(rng.randint(1, 12))) for _ in range(count)]


def main():
    lines = [json.loads(l) for l in (here / "corpus.jsonl").read_text(encoding="utf-8").split("\n") if l]
    with (here / "expected_lines.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for text in lines:
            f.write(json.dumps(record(text), ensure_ascii=False) + "\n")
    whole = record("\n".join(lines))
    (here / "expected_text.json").write_text(json.dumps(whole, ensure_ascii=False) + "\n", encoding="utf-8")
    invalid = []
    for raw in INVALID:
        try:
            raw.decode("utf-8")
            raise SystemExit(f"{raw!r} is valid UTF-8")
        except UnicodeDecodeError as e:
            offset = e.start
        lenient = raw.decode("utf-8", errors="replace")
        invalid.append({"hex": raw.hex(), "offset": offset, "lenient_text": lenient,
                        "lenient_ids": tok.encode(lenient, add_special_tokens=False).ids})
    (here / "expected_invalid.json").write_text(json.dumps(invalid, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    with (here / "expected_fuzz.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for text in fuzz_strings(4000):
            f.write(json.dumps({"text": text, "ids": tok.encode(text, add_special_tokens=False).ids}, ensure_ascii=False) + "\n")
    decode_cases = []
    for raw in DECODE_BYTES:
        ids = byte_token_ids(raw)
        specials = [151644, 151667]  # <|im_start|> (special) and <think> (not special) around the bytes
        for seq in (ids, [specials[0]] + ids + [specials[1]] + ids):
            decode_cases.append({"ids": seq, "decoded": tok.decode(seq, skip_special_tokens=False),
                                 "decoded_skip_special": tok.decode(seq, skip_special_tokens=True)})
    (here / "expected_decode.json").write_text(json.dumps(decode_cases, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"tokenizers {tokenizers.__version__}: {len(lines)} lines, {len(whole['ids'])} ids for the whole text, "
          f"{len(invalid)} invalid inputs")


if __name__ == "__main__":
    main()
