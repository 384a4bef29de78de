#!/usr/bin/env python3
"""Build the golden fixtures for the qwen C++ toolkit with Hugging Face's own code.

Run from the reference venv (see tests/golden/README.md):

    .venv-reference/bin/python tests/golden/make_golden.py [--out DIR] [--qwen-tokenizer DIR]

It writes, under tests/golden/ (or --out):

  checkpoints/<name>/   tiny Qwen3 / Qwen3-MoE checkpoints written by transformers' save_pretrained
                        (plus a tiny byte-level BPE tokenizer with Qwen3's pipeline and added tokens)
  reference/<name>.safetensors + reference/<name>.json
                        float32 eager-attention logits at every position and 32-token greedy
                        continuations for four fixed prompts

Everything is deterministic (fixed seeds, one torch thread, sorted JSON): two runs give
byte-identical files on the same machine and library versions.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

HERE = Path(__file__).resolve().parent
DEFAULT_QWEN_TOKENIZER = HERE.parents[2] / "shared" / "models" / "qwen3-tokenizer"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

TF_MAJOR = int(transformers.__version__.split(".")[0])

# --------------------------------------------------------------------------------------------
# Fixed choices
# --------------------------------------------------------------------------------------------

VOCAB_SIZE = 512          # config vocab_size (rows of embed_tokens / lm_head)
LEARNED_VOCAB = 478       # 256 byte symbols + 222 merges; the 26 added tokens get ids 478..503
N_ADDED = 26              # ids 504..511 are unused rows, like Qwen3's 151669..151935
INIT_RANGE = 0.2          # initializer_range: large so that logits span several units
NEW_TOKENS = 32
MIN_GREEDY_MARGIN = 5e-3  # every greedy step's top1 - top2 logit gap must be at least this
MAX_SEED_ATTEMPTS = 50

TINY_DENSE = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=128,
    intermediate_size=192,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    hidden_act="silu",
    attention_bias=False,
    attention_dropout=0.0,
    use_sliding_window=False,
    initializer_range=INIT_RANGE,
)
TINY_MOE = dict(
    TINY_DENSE,
    num_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=64,
    norm_topk_prob=True,
    decoder_sparse_step=1,
    mlp_only_layers=[],
    tie_word_embeddings=False,
)

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}

# name -> how to build it; "expect" is the C++ type the fixture must load as
FIXTURES = {
    "dense_tied": dict(arch="dense", tie=True, dtype="bf16", seed=1001,
                       expect={"arch": "Dense", "shape": "TinyDense", "tie": True, "dtype": "bf16"}),
    "dense_untied": dict(arch="dense", tie=False, dtype="fp32", seed=1002,
                         expect={"arch": "Dense", "shape": "TinyDense", "tie": False, "dtype": "fp32"}),
    "moe": dict(arch="moe", tie=False, dtype="bf16", seed=1003,
                expect={"arch": "MoE", "shape": "TinyMoE", "tie": False, "dtype": "bf16"}),
    "yarn": dict(arch="dense", tie=True, dtype="bf16", seed=1004, rope_scaling=YARN,
                 expect={"arch": "Dense", "shape": "TinyDense", "tie": True, "dtype": "bf16",
                         "rope_scaling": YARN}),
    "fp8": dict(arch="dense", tie=False, dtype="fp8", seed=1005,
                expect={"arch": "Dense", "shape": "TinyDense", "tie": False, "dtype": "fp8",
                        "weight_block_size": [128, 128]}),
    "sharded": dict(arch="dense", tie=False, dtype="bf16", seed=1006, shards=2,
                    expect={"arch": "Dense", "shape": "TinyDense", "tie": False, "dtype": "bf16",
                            "sharded": True}),
}

FP8_QUANTIZATION_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128],
}
FP8_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FP8_MAX = 448.0

# --------------------------------------------------------------------------------------------
# Tokenizer training corpus (embedded; deterministic)
# --------------------------------------------------------------------------------------------

CORPUS_EN = """\
The quick brown fox jumps over the lazy dog. The dog was not amused, but it didn't move.
It's a truth universally acknowledged that a model in possession of good weights must be in want of a tokenizer.
We'll test the tokenizer on English, code, numbers, Chinese and emoji. They're all bytes in the end.
In the beginning the model knew nothing; after training it knew a little; after testing we knew it worked.
Attention is all you need, they said, and then they added normalization, rotary embeddings and experts.
Please answer the question briefly. What is the capital of France? The capital of France is Paris.
The weather today is sunny with a high of 23 degrees and a low of 14 degrees.
I'd like to book a table for two at 7:30 pm on Friday, the 12th of March.
She sells sea shells by the sea shore; the shells she sells are surely sea shells.
A large language model predicts the next token given the previous tokens in the context window.
The server streams tokens to the client as soon as they are generated, one chunk at a time.
If the user asks for a tool call, the assistant writes the call between the tool call tags.
THE END IS NEAR. DON'T PANIC. YOU'LL BE FINE. WE'RE READY. I'M HERE. IT'S OK. THEY'VE GONE.
Thinking step by step: first read the question, then recall the facts, then write the answer.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 2048 4096 65536 3.14159 2.71828 -17 +8 1e-6 1,000,000.
Dates and times: 2024-05-01, 12:34:56, 1999/12/31, version 3.11.4, build #1234, room 404.
"""

CORPUS_CODE = """\
def add(a, b):
    return a + b

def fibonacci(n: int) -> int:
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)

for i in range(10):
    print(f"fib({i}) = {fibonacci(i)}")

class Tokenizer:
    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.merges = merges

    def encode(self, text):
        return [self.vocab[t] for t in text.split()]

#include <vector>
#include <cstdint>

int main(int argc, char** argv) {
    std::vector<int> v{1, 2, 3};
    for (auto x : v) { std::printf("%d\\n", x); }
    return 0;
}

template <typename T>
T max(T a, T b) { return a > b ? a : b; }

{"role": "user", "content": "Hello, world!"}
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
if (x != nullptr && y >= 0) { z = x[y] * 2; } else { z = -1; }
    	mixed tabs and spaces   trailing   
\r\nwindows line ending\r\n
"""

CORPUS_ZH = """\
你好，世界！今天天气很好。我们一起去公园散步吧。
人工智能正在改变世界。大语言模型可以回答问题、写代码和翻译文章。
请用中文回答：北京是中国的首都。上海是一个大城市。
模型的权重保存在文件中，分词器把文本变成数字。
"""

CORPUS_EMOJI = """\
Great job! 🎉🎉 Thanks 🙏 I love it ❤️ 😀😃😄 👍 🚀 launch! 🐍 python 🦀 rust ☕ coffee.
Weather: ☀️ 🌧️ ❄️ 🌈. Flags: 🇫🇷 🇯🇵. Family: 👨‍👩‍👧‍👦. Math: ∑ ∫ √ ≤ ≥ ≠ ∞ π. Café, naïve, résumé, Ångström.
"""

CORPUS_WORDS = (
    "model token weight layer attention expert router norm rotary cache block prefix batch "
    "stream server client request response sample greedy logits softmax temperature tensor "
    "matrix vector kernel thread memory bandwidth compute quantize scale float integer"
).split()


def build_corpus() -> list[str]:
    lines: list[str] = []
    for block in (CORPUS_EN, CORPUS_CODE, CORPUS_ZH, CORPUS_EMOJI):
        lines.extend(block.splitlines(keepends=True))
    rng = random.Random(20240501)
    for i in range(400):
        words = [rng.choice(CORPUS_WORDS) for _ in range(rng.randint(4, 12))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        sep = rng.choice([" ", " ", " ", ", "])
        num = rng.choice(["", f" {rng.randint(0, 9999)}", f" {rng.random():.3f}"])
        lines.append(sep.join(words) + num + rng.choice([".\n", "!\n", "?\n", "\n"]))
    # three copies of the fixed text so its words dominate the merges
    fixed = lines[: -400]
    return fixed * 3 + lines[-400:]


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------

PROMPT0 = "model"
PROMPT1 = "def add(a, b):"
PROMPT2_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT3 = (
    "The server streams tokens to the client: 你好，世界！🎉 3.14159\n"
    "def get(self, key):\n    return self.blocks[key] * 2\n"
    "The model reads the prompt, fills the cache and samples greedy logits."
)

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def log(*a):
    print("[make_golden]", *a, flush=True)


def write_json(path: Path, obj) -> None:
    # same style as transformers' config writers
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def fixed_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# 1. Tokenizer
# --------------------------------------------------------------------------------------------


def train_tokenizer(qwen_dir: Path, out_dir: Path, corpus: list[str] | None = None,
                    learned_vocab: int = LEARNED_VOCAB, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of `learned_vocab` tokens on `corpus` (default: build_corpus()) with
    Qwen3's normalizer, pre-tokenizer, decoder and post-processor, append Qwen3's 26 added tokens
    (ids learned_vocab..learned_vocab+25, at most vocab_size) and write tokenizer.json and
    tokenizer_config.json (Qwen3's own, chat template included, added-token ids remapped) to out_dir.
    models/demo/train.py reuses it with its own corpus and sizes."""
    if corpus is None:
        corpus = build_corpus()
    assert learned_vocab + N_ADDED <= vocab_size, (learned_vocab, vocab_size)
    qwen_tok = json.loads((qwen_dir / "tokenizer.json").read_text(encoding="utf-8"))
    qwen_cfg = json.loads((qwen_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert len(qwen_tok["added_tokens"]) == N_ADDED, len(qwen_tok["added_tokens"])

    # Train a BPE with Qwen3's normalizer and pre-tokenizer.
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    split_regex = qwen_tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=learned_vocab,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    trained = json.loads(tok.to_str())
    vocab = trained["model"]["vocab"]
    merges = trained["model"]["merges"]
    assert len(vocab) == learned_vocab, f"trainer produced {len(vocab)} tokens, wanted {learned_vocab}"
    assert sorted(vocab.values()) == list(range(learned_vocab))

    # Assemble tokenizer.json from Qwen3's own file: everything but the learned vocab/merges and
    # the added-token ids is copied verbatim.
    tj = copy.deepcopy(qwen_tok)
    tj["model"]["vocab"] = vocab
    tj["model"]["merges"] = merges
    for i, at in enumerate(tj["added_tokens"]):
        at["id"] = learned_vocab + i
    base = Tokenizer.from_str(json.dumps(tj, ensure_ascii=False))

    # Wrap it the way transformers does and let transformers write the files.
    special_added = [at for at in qwen_tok["added_tokens"] if at["special"]]
    extra = [at["content"] for at in special_added if at["content"] not in ("<|endoftext|>",)]
    assert extra == qwen_cfg["additional_special_tokens"], extra
    kwargs = dict(
        tokenizer_object=base,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        chat_template=qwen_cfg["chat_template"],
        model_max_length=qwen_cfg["model_max_length"],
        clean_up_tokenization_spaces=qwen_cfg["clean_up_tokenization_spaces"],
        split_special_tokens=qwen_cfg["split_special_tokens"],
        add_prefix_space=False,
        errors="replace",
    )
    if TF_MAJOR >= 5:
        kwargs["extra_special_tokens"] = extra
    else:
        kwargs["additional_special_tokens"] = extra
    hf = PreTrainedTokenizerFast(**kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir), save_jinja_files=False)
    for f in out_dir.iterdir():  # keep only the two files every checkpoint carries
        if f.name not in ("tokenizer.json", "tokenizer_config.json"):
            f.unlink()
    as_saved = json.loads((out_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert as_saved["chat_template"] == qwen_cfg["chat_template"]
    assert as_saved["eos_token"] == "<|im_end|>" and as_saved["pad_token"] == "<|endoftext|>"

    # tokenizer_config.json: transformers 5 no longer writes added_tokens_decoder (and names the class
    # "TokenizersBackend"), so write Qwen3's own tokenizer_config.json verbatim with only the
    # added-token ids remapped to the tiny ones. That is the layout of the hub checkpoints.
    cfg = copy.deepcopy(qwen_cfg)
    q_ids = sorted(int(k) for k in qwen_cfg["added_tokens_decoder"])
    assert q_ids == [at["id"] for at in qwen_tok["added_tokens"]]
    cfg["added_tokens_decoder"] = {
        str(learned_vocab + i): qwen_cfg["added_tokens_decoder"][str(q)] for i, q in enumerate(q_ids)}
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    # --- checks ---------------------------------------------------------------------------
    saved = json.loads((out_dir / "tokenizer.json").read_text(encoding="utf-8"))
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"):
        assert saved[key] == qwen_tok[key], f"tokenizer.json {key} differs from Qwen3's"
    for k in qwen_tok["model"]:
        if k not in ("vocab", "merges"):
            assert saved["model"][k] == qwen_tok["model"][k], f"model.{k} differs"
    assert saved["model"]["vocab"] == vocab and saved["model"]["merges"] == merges
    assert len(saved["added_tokens"]) == N_ADDED
    for i, (a, b) in enumerate(zip(saved["added_tokens"], qwen_tok["added_tokens"])):
        bb = dict(b, id=learned_vocab + i)
        assert a == bb, (a, bb)
    for i, at in enumerate(saved["added_tokens"]):
        v = cfg["added_tokens_decoder"][str(at["id"])]
        assert v["content"] == at["content"] and v["special"] == at["special"]

    reloaded = AutoTokenizer.from_pretrained(str(out_dir))
    assert len(reloaded) == learned_vocab + N_ADDED <= vocab_size
    assert reloaded.eos_token == "<|im_end|>" and reloaded.pad_token == "<|endoftext|>"
    assert reloaded.bos_token is None
    raw = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    for text in corpus[:50] + [PROMPT0, PROMPT1, PROMPT3, "<|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>"]:
        assert reloaded.encode(text, add_special_tokens=False) == raw.encode(text).ids, text
        assert reloaded(text)["input_ids"] == raw.encode(text).ids, text
    return reloaded


def token_id(tok, s: str) -> int:
    i = tok.convert_tokens_to_ids(s)
    assert isinstance(i, int) and i >= LEARNED_VOCAB, (s, i)
    return i


# --------------------------------------------------------------------------------------------
# 2. Checkpoints
# --------------------------------------------------------------------------------------------


def normalise_config(raw: dict) -> dict:
    """Rewrite a config.json written by transformers >= 4.56 / 5.x into the schema of the official
    Qwen3 / Qwen3-MoE checkpoints on the hub (written by transformers 4.51):
    dtype -> torch_dtype, rope_parameters -> rope_theta + rope_scaling, num_local_experts ->
    num_experts, no layer_types, no null pad_token_id. Values are unchanged."""
    c = dict(raw)
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    if "rope_parameters" in c:
        rp = dict(c.pop("rope_parameters"))
        c["rope_theta"] = rp.pop("rope_theta")
        rt = rp.get("rope_type", "default")
        c["rope_scaling"] = None if rt == "default" and len(rp) <= 1 else rp
    if "num_local_experts" in c:
        c["num_experts"] = c.pop("num_local_experts")
    c.pop("layer_types", None)
    if c.get("pad_token_id", 0) is None:
        c.pop("pad_token_id")
    return c


def build_config(spec: dict, tok) -> Qwen3Config | Qwen3MoeConfig:
    kw = copy.deepcopy(TINY_MOE if spec["arch"] == "moe" else TINY_DENSE)
    if spec["arch"] == "dense":
        kw["tie_word_embeddings"] = spec["tie"]
        kw["max_window_layers"] = kw["num_hidden_layers"]  # as in the official dense configs
    kw["bos_token_id"] = token_id(tok, "<|endoftext|>")
    kw["eos_token_id"] = token_id(tok, "<|im_end|>")
    rope = spec.get("rope_scaling")
    if TF_MAJOR >= 5:
        theta = kw.pop("rope_theta")
        kw["rope_parameters"] = dict(rope or {"rope_type": "default"}, rope_theta=theta)
    elif rope:
        kw["rope_scaling"] = dict(rope)
    cls = Qwen3MoeConfig if spec["arch"] == "moe" else Qwen3Config
    cfg = cls(**kw)
    cfg.architectures = ["Qwen3MoeForCausalLM" if spec["arch"] == "moe" else "Qwen3ForCausalLM"]
    return cfg


def perturb_norms(model: torch.nn.Module, seed: int) -> None:
    """Random init sets every RMSNorm weight to 1; make them random so that a kernel that drops
    a norm weight (or uses the wrong one) fails."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.25 * torch.randn(p.shape, generator=g))


def make_model(spec: dict, tok):
    cfg = build_config(spec, tok)
    fixed_seed(spec["seed"])
    cls = Qwen3MoeForCausalLM if spec["arch"] == "moe" else Qwen3ForCausalLM
    model = cls(cfg).eval()
    perturb_norms(model, spec["seed"] + 7)
    if spec["tie"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def generation_config(tok) -> GenerationConfig:
    eot, im_end = token_id(tok, "<|endoftext|>"), token_id(tok, "<|im_end|>")
    return GenerationConfig(
        bos_token_id=eot,
        do_sample=True,
        eos_token_id=[im_end, eot],
        pad_token_id=eot,
        temperature=0.6,
        top_k=20,
        top_p=0.95,
    )


def finish_dir(d: Path, tok_dir: Path, tok, torch_dtype: str, extra_cfg: dict | None = None) -> dict:
    """Normalise config.json, write generation_config.json, copy the tokenizer."""
    raw = json.loads((d / "config.json").read_text(encoding="utf-8"))
    cfg = normalise_config(raw)
    cfg["torch_dtype"] = torch_dtype
    if extra_cfg:
        cfg.update(extra_cfg)
    write_json(d / "config.json", cfg)
    generation_config(tok).save_pretrained(str(d))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tok_dir / f, d / f)
    return raw


def quantize_fp8_block(w: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Official Qwen3-FP8 layout: q F8_E4M3 [out,in], scale_inv BF16 [ceil(out/128), ceil(in/128)],
    W ~= q * scale_inv[r//128, c//128]."""
    w = w.float()
    out_f, in_f = w.shape
    nr, nc = math.ceil(out_f / block), math.ceil(in_f / block)
    scale = torch.empty(nr, nc, dtype=torch.bfloat16)
    q = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn)
    for r in range(nr):
        for c in range(nc):
            blk = w[r * block:(r + 1) * block, c * block:(c + 1) * block]
            s = (blk.abs().max() / FP8_MAX).to(torch.bfloat16)
            assert s.float() > 0
            scale[r, c] = s
            # s is rounded to bf16, so |W/s| may exceed 448 by < 0.4 %: clamp to the finite range
            qb = (blk / s.float()).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
            q[r * block:(r + 1) * block, c * block:(c + 1) * block] = qb
    assert torch.isfinite(q.float()).all()
    return q, scale


def dequantize_fp8_block(q: torch.Tensor, scale: torch.Tensor, block: int = 128) -> torch.Tensor:
    s = scale.float().repeat_interleave(block, 0).repeat_interleave(block, 1)
    return q.float() * s[: q.shape[0], : q.shape[1]]


def write_checkpoint(name: str, spec: dict, out: Path, tok_dir: Path, tok) -> dict:
    d = out / "checkpoints" / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    model = make_model(spec, tok)
    info: dict = {}

    if spec["dtype"] == "fp32":
        model.save_pretrained(str(d))
        info["config_as_saved_by_transformers"] = finish_dir(d, tok_dir, tok, "float32")
    elif spec["dtype"] == "bf16":
        model = model.to(torch.bfloat16)
        if spec.get("shards"):
            # pick a max_shard_size that yields exactly `shards` files
            total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
            max_shard = (total // spec["shards"]) + 4096
            model.save_pretrained(str(d), max_shard_size=max_shard)
            info["max_shard_size"] = max_shard
        else:
            model.save_pretrained(str(d))
        info["config_as_saved_by_transformers"] = finish_dir(d, tok_dir, tok, "bfloat16")
    elif spec["dtype"] == "fp8":
        # 1) let transformers write the bf16 checkpoint (config + layout), 2) quantise the
        # projection weights in the official block layout and rewrite model.safetensors.
        model = model.to(torch.bfloat16)
        model.save_pretrained(str(d))
        info["config_as_saved_by_transformers"] = finish_dir(
            d, tok_dir, tok, "bfloat16", {"quantization_config": FP8_QUANTIZATION_CONFIG})
        path = d / "model.safetensors"
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            sd = {k: f.get_tensor(k) for k in f.keys()}
        assert meta == {"format": "pt"}, meta
        qsd: dict[str, torch.Tensor] = {}
        deq: dict[str, torch.Tensor] = {}
        for k, v in sd.items():
            parts = k.split(".")
            if len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in FP8_PROJ:
                q, s = quantize_fp8_block(v)
                qsd[k] = q
                qsd[k[: -len("weight")] + "weight_scale_inv"] = s
                deq[k] = dequantize_fp8_block(q, s)
            else:
                qsd[k] = v
                deq[k] = v.float()
        path.unlink()
        save_file(qsd, str(path), metadata={"format": "pt"})
        info["dequantized_state_dict"] = deq
        info["fp8_max_abs_dequant_error"] = max(
            float((deq[k] - sd[k].float()).abs().max()) for k in deq if k in sd and k.split(".")[-2] in FP8_PROJ)
    else:
        raise ValueError(spec["dtype"])

    info["in_memory_state_dict"] = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    return info


# --------------------------------------------------------------------------------------------
# 3. Reference outputs
# --------------------------------------------------------------------------------------------


def load_reference_model(name: str, spec: dict, d: Path, info: dict):
    if spec["dtype"] == "fp8":
        # Reference = dequantised weights in a plain fp32 Qwen3ForCausalLM (no activation quant).
        cfg_dict = json.loads((d / "config.json").read_text(encoding="utf-8"))
        cfg_dict.pop("quantization_config")
        tmp = Path(tempfile.mkdtemp(prefix="fp8deq_"))
        try:
            write_json(tmp / "config.json", dict(cfg_dict, torch_dtype="float32"))
            save_file({k: v.contiguous() for k, v in info["dequantized_state_dict"].items()},
                      str(tmp / "model.safetensors"), metadata={"format": "pt"})
            model = Qwen3ForCausalLM.from_pretrained(str(tmp), dtype=torch.float32, attn_implementation="eager")
        finally:
            shutil.rmtree(tmp)
        expected = info["dequantized_state_dict"]
    else:
        cls = Qwen3MoeForCausalLM if spec["arch"] == "moe" else Qwen3ForCausalLM
        model = cls.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager")
        expected = info["in_memory_state_dict"]
    model.eval()
    # The loaded model must hold exactly the weights we generated (catches config/name mapping bugs).
    got = {k: v.detach().float() for k, v in model.state_dict().items()}
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    for k in expected:
        assert torch.equal(got[k], expected[k]), f"{name}: {k} differs after reload"
    assert model.config.model_type == ("qwen3_moe" if spec["arch"] == "moe" else "qwen3")
    return model


def rope_info(model) -> dict:
    re = model.model.rotary_emb
    return {"attention_scaling": float(re.attention_scaling), "inv_freq": re.inv_freq.detach().float().clone()}


def prompts(tok) -> list[tuple[str, str]]:
    chat = tok.apply_chat_template(PROMPT2_MESSAGES, tokenize=False, add_generation_prompt=True,
                                   enable_thinking=False)
    return [
        (PROMPT0, "plain text, one token"),
        (PROMPT1, "python code"),
        (chat, "apply_chat_template(%s, add_generation_prompt=True, enable_thinking=False), official template"
         % json.dumps(PROMPT2_MESSAGES, ensure_ascii=False)),
        (PROMPT3, "mixed English, Chinese, emoji, numbers, code"),
    ]


@torch.no_grad()
def reference_outputs(name: str, spec: dict, model, tok, out: Path, info: dict) -> dict:
    tensors: dict[str, torch.Tensor] = {}
    recs = []
    lo, hi = math.inf, -math.inf
    for i, (text, what) in enumerate(prompts(tok)):
        ids = tok(text, add_special_tokens=True)["input_ids"]
        assert ids == tok.encode(text, add_special_tokens=False), "no BOS/EOS is added"
        x = torch.tensor([ids], dtype=torch.long)
        logits = model(input_ids=x).logits[0].float()
        assert logits.shape == (len(ids), VOCAB_SIZE)
        # Greedy: pure argmax for exactly NEW_TOKENS steps. No eos is configured, so nothing can stop
        # or mask the run (min_new_tokens would instead *mask* eos logits, changing the argmax).
        gcfg = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=None,
                                pad_token_id=0, bos_token_id=None, num_beams=1,
                                temperature=None, top_k=None, top_p=None)
        # transformers merges the checkpoint's generation_config.json (eos ids!) into the one passed
        # in, so replace the model's own generation config for the duration of the call.
        saved_gc = model.generation_config
        model.generation_config = gcfg
        try:
            seq = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gcfg)
        finally:
            model.generation_config = saved_gc
        greedy = seq[0, len(ids):]
        assert greedy.numel() == NEW_TOKENS, greedy.numel()
        # Teacher-forced check: every greedy token is the argmax of a full (no KV cache) forward.
        full = model(input_ids=seq).logits[0].float()
        steps = full[len(ids) - 1: len(ids) - 1 + NEW_TOKENS]
        assert torch.equal(steps.argmax(-1), greedy), f"{name} prompt{i}: generate != argmax"
        assert torch.allclose(full[: len(ids)], logits, atol=1e-4, rtol=1e-4)
        top2 = steps.topk(2, dim=-1).values
        margins = top2[:, 0] - top2[:, 1]
        margin = float(margins.min())
        tensors[f"prompt{i}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"prompt{i}.logits"] = logits.contiguous()
        tensors[f"prompt{i}.greedy"] = greedy.to(torch.int64).contiguous()
        lo, hi = min(lo, float(logits.min()), float(steps.min())), max(hi, float(logits.max()), float(steps.max()))
        recs.append({
            "text": text,
            "what": what,
            "n_tokens": len(ids),
            "input_ids": ids,
            "greedy": greedy.tolist(),
            "greedy_text": tok.decode(greedy.tolist(), skip_special_tokens=False),
            "greedy_min_top1_top2_margin": round(margin, 6),
            "greedy_top1_top2_margins": [round(float(m), 6) for m in margins],
            "logits_min": round(float(logits.min()), 6),
            "logits_max": round(float(logits.max()), 6),
            "logits_std": round(float(logits.std()), 6),
        })
    ref = {
        "fixture": name,
        "checkpoint": f"checkpoints/{name}",
        "expect": spec["expect"],
        "prompts": recs,
        "tensors": {
            "prompt{i}.input_ids": "I64 [n]: prompt token ids (tiny tokenizer, no BOS)",
            "prompt{i}.logits": "F32 [n, 512]: logits at every prompt position, one full forward",
            "prompt{i}.greedy": f"I64 [{NEW_TOKENS}]: greedy continuation (argmax, KV cache, eos never stops it)",
        },
        "reference": {
            "how": "transformers from_pretrained(dtype=float32, attn_implementation='eager'), model.eval(), "
                   "torch.no_grad(), one CPU thread",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "logits_range": [round(lo, 6), round(hi, 6)],
        "seed": spec["seed"],
        "initializer_range": INIT_RANGE,
    }
    if "rope_scaling" in spec:
        ri = rope_info(model)
        tensors["rope.inv_freq"] = ri["inv_freq"].contiguous()
        ref["rope"] = {
            "attention_scaling": ri["attention_scaling"],
            "note": "rope.inv_freq (F32 [64]) in the .safetensors is transformers' YaRN inv_freq; "
                    "cos and sin are multiplied by attention_scaling = 0.1*ln(factor)+1",
        }
    if spec["dtype"] == "fp8":
        ref["fp8"] = {
            "reference_is": "the DEQUANTISED weights (fp8.float() * weight_scale_inv.float()) loaded into a plain "
                            "Qwen3ForCausalLM in float32; activations are NOT quantised in the reference",
            "quantised": [f"model.layers.*.{'self_attn' if p in FP8_PROJ[:4] else 'mlp'}.{p}.weight" for p in FP8_PROJ],
            "scale": "per 128x128 block s = bf16(max|W_block| / 448); q = float8_e4m3fn(clamp(W / s, +-448))",
            "max_abs_dequant_error_vs_bf16": info["fp8_max_abs_dequant_error"],
        }
    if "max_shard_size" in info:
        ref["max_shard_size"] = info["max_shard_size"]
    ref["config_as_saved_by_transformers"] = info["config_as_saved_by_transformers"]
    rdir = out / "reference"
    rdir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(rdir / f"{name}.safetensors"), metadata={"format": "pt"})
    write_json(rdir / f"{name}.json", ref)
    return ref


# --------------------------------------------------------------------------------------------
# Checks of the written checkpoints
# --------------------------------------------------------------------------------------------


def expected_tensor_names(spec: dict) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not spec["tie"]:
        names.add("lm_head.weight")
    for i in range(TINY_DENSE["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight",
                  p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"}
        names |= {p + f"self_attn.{x}_proj.weight" for x in "qkvo"}
        if spec["arch"] == "moe":
            names.add(p + "mlp.gate.weight")
            names |= {p + f"mlp.experts.{e}.{x}_proj.weight"
                      for e in range(TINY_MOE["num_experts"]) for x in ("gate", "up", "down")}
        else:
            names |= {p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")}
    if spec["dtype"] == "fp8":
        names |= {n[: -len("weight")] + "weight_scale_inv" for n in list(names)
                  if n.split(".")[-2] in FP8_PROJ}
    return names


def check_checkpoint(name: str, spec: dict, d: Path, info: dict) -> None:
    files = sorted(p.name for p in d.iterdir())
    if spec.get("shards"):
        shards = [f for f in files if f.startswith("model-") and f.endswith(".safetensors")]
        assert len(shards) == spec["shards"], files
        assert "model.safetensors.index.json" in files and "model.safetensors" not in files
        index = json.loads((d / "model.safetensors.index.json").read_text())
        wm = index["weight_map"]
        assert sorted(set(wm.values())) == shards
    else:
        assert "model.safetensors" in files and not any(f.startswith("model-") for f in files), files
        shards = ["model.safetensors"]
        wm = None
    header: dict[str, tuple[str, list[int]]] = {}
    for s in shards:
        raw = (d / s).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        h = json.loads(raw[8: 8 + n])
        assert h.pop("__metadata__") == {"format": "pt"}
        for k, v in h.items():
            assert k not in header
            header[k] = (v["dtype"], v["shape"])
            if wm is not None:
                assert wm[k] == s
    want = expected_tensor_names(spec)
    assert set(header) == want, (sorted(set(header) - want), sorted(want - set(header)))
    dt = {"fp32": "F32", "bf16": "BF16", "fp8": "BF16"}[spec["dtype"]]
    for k, (dtype, shape) in header.items():
        if spec["dtype"] == "fp8" and k.endswith("_proj.weight"):
            assert dtype == "F8_E4M3", (k, dtype)
            sk = k[: -len("weight")] + "weight_scale_inv"
            assert header[sk][0] == "BF16" and header[sk][1] == [math.ceil(shape[0] / 128), math.ceil(shape[1] / 128)]
        else:
            assert dtype == dt, (k, dtype)
    if spec["arch"] == "moe":
        # save_pretrained of transformers 5 un-fuses gate_up_proj: check the halves landed right.
        sd = info["in_memory_state_dict"]
        f = load_file(str(d / "model.safetensors"))
        if "model.layers.0.mlp.experts.gate_up_proj" in sd:
            I = TINY_MOE["moe_intermediate_size"]
            for i in range(TINY_DENSE["num_hidden_layers"]):
                gu = sd[f"model.layers.{i}.mlp.experts.gate_up_proj"]
                dn = sd[f"model.layers.{i}.mlp.experts.down_proj"]
                for e in range(TINY_MOE["num_experts"]):
                    p = f"model.layers.{i}.mlp.experts.{e}."
                    assert torch.equal(f[p + "gate_proj.weight"].float(), gu[e, :I])
                    assert torch.equal(f[p + "up_proj.weight"].float(), gu[e, I:])
                    assert torch.equal(f[p + "down_proj.weight"].float(), dn[e])
        for i in range(TINY_DENSE["num_hidden_layers"]):
            p = f"model.layers.{i}.mlp.experts.0."
            assert list(f[p + "gate_proj.weight"].shape) == [64, 128]
            assert list(f[p + "up_proj.weight"].shape) == [64, 128]
            assert list(f[p + "down_proj.weight"].shape) == [128, 64]
            assert list(f[f"model.layers.{i}.mlp.gate.weight"].shape) == [8, 128]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["tie_word_embeddings"] == spec["tie"]
    assert cfg["vocab_size"] == VOCAB_SIZE
    for k in ("torch_dtype", "rope_theta", "rope_scaling"):
        assert k in cfg, k
    assert "rope_parameters" not in cfg and "dtype" not in cfg


def check_yarn(model) -> None:
    """Verify transformers really applies YaRN (and compute it independently)."""
    re = model.model.rotary_emb
    dim, base, factor, orig = 128, 1e6, YARN["factor"], YARN["original_max_position_embeddings"]
    assert abs(re.attention_scaling - (0.1 * math.log(factor) + 1.0)) < 1e-12, re.attention_scaling
    pos = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extra, inter = 1.0 / pos, 1.0 / (factor * pos)

    def corr(nrot):
        return (dim * math.log(orig / (nrot * 2 * math.pi))) / (2 * math.log(base))
    low, high = max(math.floor(corr(32)), 0), min(math.ceil(corr(1)), dim - 1)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    ef = 1 - ramp
    want = inter * (1 - ef) + extra * ef
    assert torch.allclose(re.inv_freq.float(), want, rtol=1e-6, atol=0), "YaRN inv_freq mismatch"
    assert not torch.allclose(re.inv_freq.float(), extra), "inv_freq is plain RoPE: YaRN not applied"


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="output root (default: tests/golden)")
    ap.add_argument("--qwen-tokenizer", type=Path,
                    default=Path(os.environ.get("QWEN3_TOKENIZER_DIR", DEFAULT_QWEN_TOKENIZER)),
                    help="directory with Qwen3's tokenizer.json and tokenizer_config.json")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    if not (args.qwen_tokenizer / "tokenizer.json").is_file():
        sys.exit(f"Qwen3 tokenizer files not found in {args.qwen_tokenizer} (use --qwen-tokenizer)")
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")

    for sub in ("checkpoints", "reference"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    work = Path(tempfile.mkdtemp(prefix="golden_tok_"))
    try:
        tok_dir = work / "tokenizer"
        tok = train_tokenizer(args.qwen_tokenizer, tok_dir)
        # Determinism of the tokenizer: train again and compare bytes.
        tok_dir2 = work / "tokenizer2"
        train_tokenizer(args.qwen_tokenizer, tok_dir2)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            assert (tok_dir / f).read_bytes() == (tok_dir2 / f).read_bytes(), f"{f} is not deterministic"
        log(f"tokenizer: {len(tok)} tokens (learned {LEARNED_VOCAB} + added {N_ADDED}), vocab_size {VOCAB_SIZE}")

        summary = {}
        for name, base_spec in FIXTURES.items():
            # Deterministic seed search: take the first seed whose greedy paths are varied and never
            # decided by a near-tie (so an fp32 implementation with ~1e-5 relative error reproduces them).
            for attempt in range(MAX_SEED_ATTEMPTS):
                spec = dict(base_spec, seed=base_spec["seed"] + 100 * attempt)
                info = write_checkpoint(name, spec, out, tok_dir, tok)
                d = out / "checkpoints" / name
                check_checkpoint(name, spec, d, info)
                model = load_reference_model(name, spec, d, info)
                if "rope_scaling" in spec:
                    check_yarn(model)
                else:
                    assert model.model.rotary_emb.attention_scaling == 1.0
                ref = reference_outputs(name, spec, model, tok, out, info)
                greedy = [tuple(p["greedy"]) for p in ref["prompts"]]
                varied = all(len(set(g)) >= 8 for g in greedy)
                min_margin = min(p["greedy_min_top1_top2_margin"] for p in ref["prompts"])
                wide = ref["logits_range"][1] - ref["logits_range"][0] > 8.0
                if varied and wide and min_margin >= MIN_GREEDY_MARGIN:
                    break
                log(f"{name}: seed {spec['seed']} rejected (min margin {min_margin}, varied {varied}, wide {wide})")
            else:
                raise SystemExit(f"{name}: no acceptable seed in {MAX_SEED_ATTEMPTS} attempts")
            summary[name] = {
                "logits_range": ref["logits_range"],
                "distinct_greedy_tokens": [len(set(g)) for g in greedy],
                "min_margin": min_margin,
                "seed": spec["seed"],
                "n_tokens": [p["n_tokens"] for p in ref["prompts"]],
            }
            log(name, json.dumps(summary[name]))
    finally:
        shutil.rmtree(work)

    total = sum(p.stat().st_size for sub in ("checkpoints", "reference") for p in (out / sub).rglob("*") if p.is_file())
    log(f"total size {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
