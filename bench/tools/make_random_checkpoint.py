#!/usr/bin/env python3
"""Writes a Qwen3 checkpoint directory of an official dense shape with random bf16 weights, laid
out as the Hugging Face checkpoints are (config.json with the published values, one
model.safetensors, generation_config.json). For measuring qwen-generate's memory and speed on a
real shape without downloading weights; the values are random, so the text it generates is not.
With --zeros the weights are all zero and the file is sparse (for tests of a real-size load).

    .venv/bin/python bench/tools/make_random_checkpoint.py --shape 0.6B --out /tmp/qwen3-0.6b-random
"""
import argparse
import json
import os
import struct

import numpy as np

# hidden, layers, heads, kv heads, intermediate (the published config.json values; all tied)
SHAPES = {
    "0.6B": (1024, 28, 16, 8, 3072),
    "1.7B": (2048, 28, 16, 8, 6144),
}
VOCAB, HEAD_DIM = 151936, 128


def tensors(shape):
    hidden, layers, heads, kv_heads, inter = shape
    yield "model.embed_tokens.weight", (VOCAB, hidden), False
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (hidden,), True
        yield p + "post_attention_layernorm.weight", (hidden,), True
        yield p + "self_attn.q_proj.weight", (heads * HEAD_DIM, hidden), False
        yield p + "self_attn.k_proj.weight", (kv_heads * HEAD_DIM, hidden), False
        yield p + "self_attn.v_proj.weight", (kv_heads * HEAD_DIM, hidden), False
        yield p + "self_attn.o_proj.weight", (hidden, heads * HEAD_DIM), False
        yield p + "self_attn.q_norm.weight", (HEAD_DIM,), True
        yield p + "self_attn.k_norm.weight", (HEAD_DIM,), True
        yield p + "mlp.gate_proj.weight", (inter, hidden), False
        yield p + "mlp.up_proj.weight", (inter, hidden), False
        yield p + "mlp.down_proj.weight", (hidden, inter), False
    yield "model.norm.weight", (hidden,), True


def random_bf16(rng, count, norm):
    bits = rng.integers(0, 1 << 16, size=count, dtype=np.uint16)
    # norms near 1; other weights of magnitude ~2^-7 with random sign and mantissa (never NaN/inf)
    return (0x3F80 | (bits & 0x1F)) if norm else (0x3C00 | (bits & 0x807F))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--zeros", action="store_true",
                    help="all-zero weights, written as a sparse file (instant, no disk): for tests that need a real-size load")
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    hidden, layers, heads, kv_heads, inter = shape
    os.makedirs(args.out, exist_ok=True)

    header, offset = {}, 0
    for name, dims, _ in tensors(shape):
        size = int(np.prod(dims)) * 2
        header[name] = {"dtype": "BF16", "shape": list(dims), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(20261128)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        if args.zeros:
            f.truncate(8 + len(text) + offset)
        else:
            for _, dims, norm in tensors(shape):
                f.write(random_bf16(rng, int(np.prod(dims)), norm).astype("<u2").tobytes())

    config = {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": HEAD_DIM, "hidden_act": "silu",
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": inter,
        "max_position_embeddings": 40960, "max_window_layers": layers, "model_type": "qwen3",
        "num_attention_heads": heads, "num_hidden_layers": layers, "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
        "use_sliding_window": False, "vocab_size": VOCAB,
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 151643, "eos_token_id": [151645, 151643], "do_sample": True,
                   "temperature": 0.6, "top_k": 20, "top_p": 0.95}, f, indent=2)
    print(f"{args.out}: {offset} bytes of bf16 weights")


if __name__ == "__main__":
    main()
