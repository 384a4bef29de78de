#!/usr/bin/env python3
"""Writes tests/tokenizer/corpus.jsonl: the tokenizer test corpus, one JSON string per line.

Deterministic (fixed seed, no downloads): hand-written fragments in many scripts and styles are
combined into varied lines. Run with any Python 3:  python3 tests/tokenizer/make_corpus.py
The expected ids are made from this file by make_expected.py (reference venv only).
"""
import json
import random
from pathlib import Path

rng = random.Random(20261128)

CHINESE = ["今天天气很好，我们去公园散步吧。", "机器学习模型需要大量的数据进行训练。", "请把这段代码翻译成中文注释。",
           "北京是中国的首都，人口超过两千万。", "他说：“明天见！”然后就走了。", "这个问题的答案是四十二。",
           "人工智能正在改变世界", "我喜欢吃饺子和包子", "模型的参数量为六亿", "繁體中文也應該被正確處理。"]
JAPANESE = ["今日はとても良い天気ですね。", "東京タワーに行きたいです。", "カタカナとひらがなを混ぜた文章。",
            "お疲れ様でした！また明日。", "ﾊﾝｶｸｶﾀｶﾅも試します。", "これはペンです。"]
KOREAN = ["안녕하세요, 만나서 반갑습니다.", "오늘 날씨가 정말 좋네요!", "한국어 형태소 분석은 어렵다.",
          "서울특별시 강남구", "감사합니다 😊"]
ARABIC = ["مرحبا بالعالم", "اللغة العربية جميلة جداً.", "كيف حالك اليوم؟", "٠١٢٣٤٥٦٧٨٩ أرقام عربية"]
CYRILLIC = ["Привет, мир!", "Съешь же ещё этих мягких французских булок.", "Москва — столица России.",
            "ПРОГРАММИРОВАНИЕ на C++", "Українська мова: ґ, є, ї.", "Ђорђе и Љиљана"]
OTHER_SCRIPTS = ["Γειά σου Κόσμε", "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ", "Xin chào thế giới",
                 "Tiếng Việt có dấu", "ქართული ენა", "Հայերեն", "ᚠᚢᚦᚨᚱᚲ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝟙𝟚𝟛"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏿‍💻", "🧑🏻‍🤝‍🧑🏾", "❤️", "🇫🇷🇯🇵", "🤖✨", "👋🏻👋🏼👋🏽👋🏾👋🏿",
         "🙂‍↔️", "1️⃣", "©️®️™️", "🐍🦀☕"]
ENGLISH = ["The quick brown fox jumps over the lazy dog.", "I can't believe it's not butter!",
           "They're here, we've seen them, and I'm sure you'll agree they'd come.", "Don't STOP: it'S FINE, we'LL see.",
           "O'Neil's dog's bone", "rock 'n' roll", "Hello, World!", "e.g. i.e. etc. vs. Mr. Smith",
           "state-of-the-art, well-known, re-enter", "ALL CAPS SENTENCE WITH NUMBERS 2024", "camelCaseIdentifier and snake_case_name",
           "Ünïcödé lätin wïth äccents: café, naïve, façade, jalapeño", "ﬁnance ﬂow (ligatures)", "Ꮳherokee and ſtraße"]
CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }",
    "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * i).collect();\n    println!(\"{:?}\", x);\n}",
    "const f = async (x) => { await fetch(`/api/${x}`); };",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "<div class=\"row\"><span id='a'>&nbsp;text&amp;</span></div>",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "x = {'key': [1, 2.5, -3e10], \"other\": None}  # comment",
    "if [ -f \"$HOME/.bashrc\" ]; then source ~/.bashrc; fi",
    "public static void main(String[] args) throws IOException {}",
    "λx. x + 1 ≠ ∀y ∈ ℝ: y² ≥ 0", "a != b && c <= d || !e", "matrix[i][j] += alpha * beta;",
    "{\"name\": \"qwen\", \"version\": \"0.1.0\", \"tags\": [\"llm\", \"bpe\"]}",
    "<?php echo $var; ?>", "@decorator\nclass Foo(Bar):\n    pass",
]
URLS = ["https://huggingface.co/Qwen/Qwen3-0.6B/blob/main/tokenizer.json", "http://example.com/path?query=1&b=two#frag",
        "ftp://files.example.org/pub/file.tar.gz", "mailto:someone@example.com", "www.example.co.uk/index.html",
        "https://例子.测试/路径?参数=值"]
FULLWIDTH = ["ＡＢＣ１２３", "（全角括号）", "！？：；", "ｈｅｌｌｏ　ｗｏｒｌｄ", "＄１００．００"]
COMBINING = ["e\u0301", "a\u0308", "n\u0303o", "A\u030a", "\u1100\u1161\u11a8", "o\u0308\u0304", "c\u0327a",
             "Cafe\u0301 au lait", "\u212b ngstrom", "q\u0307\u0323", "u\u031b\u0301", "\u0041\u0301\u0323"]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
           "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|vision_start|>", "<|image_pad|>", "<|box_start|>",
           "<|im_start|", "<|im_end", "< think>", "<tool_call", "<|endoftext|><|endoftext|>"]
NUMBERS = ["3.14159265358979323846", "1234567890123456789012345678901234567890", "1,000,000", "-42", "0x1F", "1e-9",
           "2026-11-28T06:30:00Z", "+1 (555) 123-4567", "١٢٣", "½ ¾ ²³", "Ⅻ", "①②③"]
WHITESPACE = ["   ", "\t\t", "\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n ", "\t \t", "        ", " " * 33, "\n" * 7,
              "\u00a0", "\u3000", "\u2009", " \r", "\r", "\x0b", "\x0c", "\u2028", "\u0085", "  \t\n  "]
PUNCT = ["...", "!!!", "???", "—", "–", "«quoted»", "„deutsch“", "“curly”", "‘single’", "'", "''", "`", "~", "§", "¶", "•",
         "…", "©", "°C", "€100", "¥500", "£3", "#hashtag", "@mention", "%", "^_^", "(>_<)"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D", "'Ll", "'rE",
                "'ſ", "'x", "''s", "’s"]

POOLS = [CHINESE, JAPANESE, KOREAN, ARABIC, CYRILLIC, OTHER_SCRIPTS, EMOJI, ENGLISH, CODE, URLS, FULLWIDTH, COMBINING,
         SPECIAL, NUMBERS, WHITESPACE, PUNCT, CONTRACTIONS]
SEPARATORS = ["", " ", " ", " ", "  ", "\t", "\n", "\r\n", "\n\n", "   ", ", ", ". "]


def random_digits():
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(5, 60)))


def line():
    kind = rng.random()
    if kind < 0.25:  # one fragment
        return rng.choice(rng.choice(POOLS))
    if kind < 0.35:
        return random_digits() if rng.random() < 0.5 else rng.choice(WHITESPACE) * rng.randint(1, 20)
    parts = []
    for _ in range(rng.randint(2, 8)):
        pool = rng.choice(POOLS)
        parts.append(rng.choice(pool))
        parts.append(rng.choice(SEPARATORS))
    text = "".join(parts)
    if rng.random() < 0.15:
        text = text.upper() if rng.random() < 0.5 else text.swapcase()
    return text


def main():
    lines = []
    # Every fragment once on its own, then random mixtures.
    for pool in POOLS:
        lines.extend(pool)
    lines.extend(a + b for a in CONTRACTIONS for b in ["", " ok", "x"])
    while len(lines) < 2400:
        lines.append(line())
    out = Path(__file__).with_name("corpus.jsonl")
    with out.open("w", encoding="utf-8", newline="\n") as f:
        for text in lines:
            f.write(json.dumps(text, ensure_ascii=False) + "\n")
    print(f"{out}: {len(lines)} lines")


if __name__ == "__main__":
    main()
