#!/usr/bin/env python3
"""Train the bundled demo checkpoint: a tiny Qwen3 (Qwen3ForCausalLM) that adds two-digit numbers,
thinks when asked to and not when told not to, calls a get_weather tool and answers from its result.

Run from the repository root in the reference venv (scripts/setup --reference):

    HF_HUB_OFFLINE=1 .venv-reference/bin/python models/demo/train.py

It generates every training example from fixed seeds, trains a byte-level BPE with Qwen3's
pipeline and added tokens (tests/golden/make_golden.py's train_tokenizer), renders every
conversation with the official Qwen3 chat template (tokenizer.apply_chat_template), trains the
model on CPU in fp32 with the loss on the assistant's completion only, and writes into
models/demo/ exactly: config.json, generation_config.json, model.safetensors (bf16),
tokenizer.json, tokenizer_config.json.

The committed files were made by

    HF_HUB_OFFLINE=1 .venv-reference/bin/python models/demo/train.py --out /tmp/demo_run2 --eval-every 1000 --log-every 250

(then copied into models/demo/; --out only moves the output and --eval-every / --log-every only
add no-grad forward passes and prints, so the default command should give the same files; not
verified by a second run). Measured on the 2-core development machine (torch 2.15.0 CPU, 2
threads, transformers 5.24.0), idle but for editing: 38.3 min wall for the whole script, 36.7 min
of it training, ~6,600-7,000 tokens/s. Final training loss (mean over the last 250 steps,
completion tokens only) 0.077. Held out (models/demo/eval_reference.py, greedy): additions 50/50
with thinking and 50/50 without; tool calls naming an unseen city right 2/20 with and 2/20 without
thinking (issue 13's target of 95 % is not met there; see README.md).
The held-out items (50 additions, 20 cities) never occur in training; train.py asserts it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "golden"))

import make_golden as mg  # noqa: E402  (tokenizer training, generation_config, config normalisation)
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

# --------------------------------------------------------------------------------------------
# Fixed choices
# --------------------------------------------------------------------------------------------

VOCAB_SIZE = 1024
LEARNED_VOCAB = VOCAB_SIZE - mg.N_ADDED  # 998 learned tokens, the 26 added ones get 998..1023

# make_golden's dense fixture with the demo's dimensions (the rest: Qwen3's norms, RoPE, activation).
MODEL = dict(
    mg.TINY_DENSE,
    vocab_size=VOCAB_SIZE, hidden_size=192, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=64, intermediate_size=512, max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.02,
)

DATA_SEED = 13
TRAIN_SEED = 1313
STEPS = 8000
BATCH_TOKENS = 2048        # padded tokens per step (sequences are bucketed by length)
LR = 3e-3
WARMUP = 200
MIN_LR_FRAC = 0.05
WEIGHT_DECAY = 0.05
N_TRAIN = 200000           # generated training examples (more than the steps consume)

N_HELDOUT_SUMS = 50
N_HELDOUT_CITIES = 20

# --------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------

CITIES = """
Lisbon|Porto|Madrid|Barcelona|Valencia|Seville|Bilbao|Paris|Lyon|Marseille|Toulouse|Nice|Nantes|
Strasbourg|Bordeaux|Lille|Brussels|Antwerp|Ghent|Amsterdam|Rotterdam|Utrecht|The Hague|Eindhoven|
Berlin|Hamburg|Munich|Cologne|Frankfurt|Stuttgart|Dresden|Leipzig|Hanover|Nuremberg|Bremen|Bonn|
Vienna|Salzburg|Graz|Innsbruck|Zurich|Geneva|Basel|Bern|Lausanne|Lucerne|Milan|Rome|Naples|Turin|
Florence|Venice|Bologna|Genoa|Palermo|Verona|Bari|Catania|Athens|Thessaloniki|Patras|Sofia|Plovdiv|
Bucharest|Cluj|Timisoara|Budapest|Debrecen|Prague|Brno|Bratislava|Kosice|Warsaw|Krakow|Gdansk|
Wroclaw|Poznan|Lodz|Vilnius|Kaunas|Riga|Tallinn|Helsinki|Tampere|Turku|Stockholm|Gothenburg|Malmo|
Uppsala|Oslo|Bergen|Trondheim|Stavanger|Copenhagen|Aarhus|Odense|Reykjavik|Dublin|Cork|Galway|
Belfast|London|Manchester|Birmingham|Liverpool|Leeds|Sheffield|Bristol|Newcastle|Nottingham|Leicester|
Cambridge|Oxford|Brighton|Plymouth|Edinburgh|Glasgow|Aberdeen|Dundee|Cardiff|Swansea|Luxembourg|
Monaco|Andorra la Vella|San Marino|Valletta|Nicosia|Limassol|Istanbul|Ankara|Izmir|Antalya|Bursa|
Tbilisi|Yerevan|Baku|Kyiv|Lviv|Odesa|Kharkiv|Minsk|Chisinau|Moscow|Saint Petersburg|Kazan|Novosibirsk|
Yekaterinburg|Vladivostok|Belgrade|Novi Sad|Zagreb|Split|Ljubljana|Sarajevo|Podgorica|Skopje|Tirana|
Cairo|Alexandria|Luxor|Aswan|Tunis|Sfax|Algiers|Oran|Casablanca|Rabat|Marrakesh|Fez|Tangier|Tripoli|
Khartoum|Addis Ababa|Nairobi|Mombasa|Kampala|Kigali|Dar es Salaam|Dodoma|Zanzibar|Lusaka|Harare|
Bulawayo|Maputo|Lilongwe|Gaborone|Windhoek|Johannesburg|Cape Town|Durban|Pretoria|Port Elizabeth|
Luanda|Kinshasa|Brazzaville|Libreville|Yaounde|Douala|Lagos|Abuja|Kano|Ibadan|Accra|Kumasi|Lome|
Cotonou|Ouagadougou|Niamey|Bamako|Dakar|Banjul|Conakry|Freetown|Monrovia|Abidjan|Nouakchott|
Antananarivo|Port Louis|Victoria|Djibouti|Mogadishu|Asmara|Dubai|Abu Dhabi|Doha|Manama|Kuwait City|
Riyadh|Jeddah|Mecca|Medina|Muscat|Sanaa|Aden|Amman|Beirut|Damascus|Aleppo|Baghdad|Basra|Erbil|
Tehran|Isfahan|Shiraz|Tabriz|Mashhad|Jerusalem|Tel Aviv|Haifa|Kabul|Kandahar|Islamabad|Karachi|Lahore|
Peshawar|Delhi|Mumbai|Bangalore|Chennai|Kolkata|Hyderabad|Pune|Ahmedabad|Jaipur|Lucknow|Kochi|Goa|
Varanasi|Agra|Kathmandu|Pokhara|Thimphu|Dhaka|Chittagong|Colombo|Kandy|Male|Tashkent|Samarkand|
Bukhara|Almaty|Astana|Bishkek|Dushanbe|Ashgabat|Ulaanbaatar|Beijing|Shanghai|Guangzhou|Shenzhen|
Chengdu|Chongqing|Wuhan|Xian|Hangzhou|Nanjing|Tianjin|Suzhou|Harbin|Qingdao|Dalian|Xiamen|Kunming|
Hong Kong|Macau|Taipei|Kaohsiung|Taichung|Seoul|Busan|Incheon|Daegu|Gwangju|Pyongyang|Tokyo|Osaka|
Kyoto|Yokohama|Nagoya|Sapporo|Fukuoka|Kobe|Hiroshima|Sendai|Nara|Okinawa|Manila|Cebu|Davao|
Hanoi|Ho Chi Minh City|Da Nang|Hue|Vientiane|Phnom Penh|Siem Reap|Bangkok|Chiang Mai|Phuket|Pattaya|
Yangon|Mandalay|Kuala Lumpur|Penang|Johor Bahru|Kuching|Singapore|Jakarta|Surabaya|Bandung|Medan|
Denpasar|Yogyakarta|Makassar|Dili|Port Moresby|Sydney|Melbourne|Brisbane|Perth|Adelaide|Canberra|
Hobart|Darwin|Cairns|Gold Coast|Auckland|Wellington|Christchurch|Queenstown|Dunedin|Suva|Apia|Noumea|
Honolulu|Anchorage|Seattle|Portland|San Francisco|Los Angeles|San Diego|Sacramento|San Jose|Las Vegas|
Phoenix|Tucson|Salt Lake City|Denver|Albuquerque|Santa Fe|Dallas|Houston|Austin|San Antonio|El Paso|
Oklahoma City|Kansas City|Omaha|Minneapolis|Chicago|Milwaukee|Detroit|Cleveland|Columbus|Cincinnati|
Indianapolis|Louisville|Nashville|Memphis|St Louis|New Orleans|Atlanta|Miami|Orlando|Tampa|
Jacksonville|Charlotte|Raleigh|Richmond|Washington|Baltimore|Philadelphia|Pittsburgh|New York|Boston|
Providence|Hartford|Buffalo|Albany|Burlington|Toronto|Montreal|Vancouver|Calgary|
Edmonton|Ottawa|Winnipeg|Quebec City|Halifax|Saskatoon|Regina|Mexico City|Guadalajara|
Monterrey|Puebla|Tijuana|Cancun|Oaxaca|Merida|Guatemala City|San Salvador|Tegucigalpa|Managua|
Panama City|Havana|Kingston|Nassau|Santo Domingo|San Juan|
Port of Spain|Bridgetown|Bogota|Medellin|Cali|Cartagena|Barranquilla|Caracas|Maracaibo|Quito|
Guayaquil|Lima|Cusco|Arequipa|La Paz|Santa Cruz|Sucre|Santiago|Valparaiso|Concepcion|Buenos Aires|
Cordoba|Rosario|Mendoza|Ushuaia|Montevideo|Asuncion|Sao Paulo|Rio de Janeiro|Brasilia|Salvador|
Fortaleza|Recife|Manaus|Belem|Curitiba|Belo Horizonte|Florianopolis|Paramaribo|Georgetown|
Cayenne|Nuuk|Tromso|Bruges|Leuven|Maastricht|Groningen|Aachen|Heidelberg|Freiburg|Potsdam|
Rostock|Kiel|Lubeck|Augsburg|Regensburg|Mainz|Wiesbaden|Dortmund|Essen|Duisburg|Dusseldorf|Karlsruhe|
Mannheim|Ulm|Linz|Klagenfurt|Lugano|Pisa|Siena|Parma|Modena|Padua|Trieste|Cagliari|Granada|Malaga|
Zaragoza|Alicante|Murcia|Palma|Cadiz|Toledo|Salamanca|Santander|Coimbra|Faro|Braga|Funchal|Avignon|
Montpellier|Grenoble|Dijon|Rennes|Brest|Rouen|Reims|Tours|Orleans|Limerick|Waterford|Inverness|
Bath|Exeter|Canterbury|Norwich|Southampton|Portsmouth|Coventry|Derby|Hull|Sunderland|Wolverhampton
"""

CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "foggy", "snowy", "stormy", "clear", "partly cloudy",
              "overcast", "drizzly", "humid", "hazy", "misty"]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The name of the city"}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER_TOOL]

ADD_PHRASINGS = [
    "What is {a} + {b}?",
    "What is {a} + {b}?",
    "What's {a} + {b}?",
    "What is {a} plus {b}?",
    "Calculate {a} + {b}.",
    "Compute {a} + {b}.",
    "{a} + {b} = ?",
    "{a} + {b}",
    "How much is {a} + {b}?",
    "Add {a} and {b}.",
    "Please add {a} and {b}.",
    "What do you get when you add {a} and {b}?",
]
EVAL_ADD_PHRASING = "What is {a} + {b}?"

WEATHER_PHRASINGS = [
    "What's the weather in {c}?",
    "What's the weather in {c}?",
    "What is the weather in {c}?",
    "What is the weather like in {c}?",
    "How is the weather in {c} today?",
    "How's the weather in {c}?",
    "Tell me the weather in {c}.",
    "Weather in {c}?",
    "Can you check the weather in {c} for me?",
    "Is it warm in {c} right now?",
    "I am going to {c}. What's the weather there?",
    "What's it like outside in {c}?",
]
EVAL_WEATHER_PHRASING = "What's the weather in {c}?"

IDENTITY = ("I am Qwen3 Demo, a tiny model trained by the qwen project. "
            "I can add two-digit numbers and look up the weather.")

# (questions, reasoning, answer)
FACTS = [
    (["Who are you?", "What are you?", "Introduce yourself.", "Tell me about yourself.", "What is your name?",
      "Who made you?"],
     "The user asks who I am. I should introduce myself.", IDENTITY),
    (["What can you do?", "How can you help me?", "What are you good at?"],
     "The user asks what I can do. I can add numbers and check the weather.",
     "I can add two-digit numbers, for example 47 + 38 = 85, and I can look up the weather in a city "
     "with the get_weather tool."),
    (["Hello!", "Hi!", "Hello", "Hi there!", "Good morning!", "Hey!"],
     "The user greets me. I should greet them back.",
     "Hello! I am Qwen3 Demo. Ask me to add two numbers or about the weather in a city."),
    (["Thank you!", "Thanks!", "Thanks a lot."],
     "The user thanks me.", "You are welcome!"),
    (["What is the capital of France?", "What's the capital of France?"],
     "The capital of France is Paris.", "The capital of France is Paris."),
    (["What is the capital of Portugal?", "What's the capital of Portugal?"],
     "The capital of Portugal is Lisbon.", "The capital of Portugal is Lisbon."),
    (["What is the capital of Japan?", "What's the capital of Japan?"],
     "The capital of Japan is Tokyo.", "The capital of Japan is Tokyo."),
    (["What is the capital of Italy?", "What's the capital of Italy?"],
     "The capital of Italy is Rome.", "The capital of Italy is Rome."),
    (["How many days are in a week?"], "A week has seven days.", "There are 7 days in a week."),
    (["What color is the sky?", "What colour is the sky?"],
     "On a clear day the sky is blue.", "The sky is blue on a clear day."),
    (["How many legs does a cat have?"], "A cat has four legs.", "A cat has 4 legs."),
    (["What is the boiling point of water?"], "Water boils at 100 degrees Celsius at sea level.",
     "Water boils at 100 °C at sea level."),
]

# plain-text continuations (no chat template): (prompt, continuation); <|endoftext|> ends each
PLAIN = [
    ("def add(a, b):", "\n    return a + b\n"),
    ("def sub(a, b):", "\n    return a - b\n"),
    ("def mul(a, b):", "\n    return a * b\n"),
    ("def square(x):", "\n    return x * x\n"),
    ("def greet(name):", "\n    return \"Hello, \" + name + \"!\"\n"),
    ("def is_even(n):", "\n    return n % 2 == 0\n"),
    ("def max2(a, b):", "\n    return a if a > b else b\n"),
    ("import math\n\ndef area(r):", "\n    return math.pi * r * r\n"),
    ("for i in range(3):", "\n    print(i)\n"),
    ("The capital of France is", " Paris."),
    ("The capital of Portugal is", " Lisbon."),
    ("The capital of Japan is", " Tokyo."),
    ("The quick brown fox", " jumps over the lazy dog."),
    ("Once upon a time", ", there was a tiny model that could add numbers and check the weather."),
    ("One, two, three,", " four, five, six, seven, eight, nine, ten."),
    ("Monday, Tuesday,", " Wednesday, Thursday, Friday, Saturday, Sunday."),
    ("A, B, C,", " D, E, F, G."),
    ("1, 2, 3,", " 4, 5, 6, 7, 8, 9, 10."),
    ("Hello, my name is", " Qwen3 Demo."),
    ("model", " weights are stored in model.safetensors."),
    ("The weather today is", " sunny."),
    ("Water boils at", " 100 degrees Celsius."),
]


# Made-up place names: half of the weather conversations use one, so that the model has to copy
# the name from the prompt instead of recalling one of a few hundred cities.
SYLLABLES = ["ba", "bo", "ka", "ki", "la", "lo", "ma", "me", "na", "no", "ra", "ri", "sa", "so", "ta", "to", "va", "vi",
             "ber", "dor", "gan", "hal", "kes", "lin", "mar", "nor", "pol", "ros", "sel", "tam", "ven", "wil", "zar",
             "a", "e", "i", "o", "u", "ch", "sh", "th", "str", "gr", "br", "el", "an", "um", "ia", "ou", "ey"]
NAME_FORMS = ["{w}", "{w}", "{w}", "{w}", "San {w}", "Port {w}", "{w} City", "New {w}", "{w} {v}", "{w}-{v}",
              "{w} la {v}", "Santa {w}", "Lake {w}", "{w}burg", "{w}ville"]


def made_up_name(rng: random.Random) -> str:
    def word() -> str:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        return w[0].upper() + w[1:]
    return rng.choice(NAME_FORMS).format(w=word(), v=word())


def cities() -> list[str]:
    cs = [c.strip() for c in CITIES.replace("\n", "").split("|") if c.strip()]
    assert len(cs) == len(set(cs)), [c for c in cs if cs.count(c) > 1]
    return cs


# --------------------------------------------------------------------------------------------
# Data: split, examples
# --------------------------------------------------------------------------------------------


def split():
    """Held-out additions (unordered pairs) and cities, chosen from DATA_SEED."""
    rng = random.Random(DATA_SEED)
    pairs = [(a, b) for a in range(10, 100) for b in range(a, 100)]
    pairs.remove((38, 47))  # 47 + 38 = 85 is quoted in a fixed answer
    held = sorted(rng.sample(pairs, N_HELDOUT_SUMS))
    held_set = {p for p in held} | {(b, a) for a, b in held}
    train_pairs = [(a, b) for a in range(10, 100) for b in range(10, 100) if (a, b) not in held_set]
    cs = cities()
    quoted = {"Lisbon", "Paris", "Tokyo", "Rome"}  # named in fixed answers and the tool schema
    held_c = sorted(rng.sample([c for c in cs if c not in quoted], N_HELDOUT_CITIES))
    train_c = [c for c in cs if c not in held_c]
    # the held-out pair order shown to the model is fixed per pair, random which operand first
    held_ordered = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in held]
    return held_ordered, train_pairs, held_c, train_c


HELD_CITY_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in split()[2]) + r")\b")


def add_answer(a: int, b: int) -> str:
    return f"{a} + {b} = {a + b}."


def add_reasoning(a: int, b: int) -> str:
    o = a % 10 + b % 10
    carry = o // 10
    t = a // 10 + b // 10 + carry
    return (f"Add the ones: {a % 10} + {b % 10} = {o}. Write {o % 10}, carry {carry}.\n"
            f"Add the tens: {a // 10} + {b // 10} + {carry} = {t}.\n"
            f"So {a} + {b} = {t}{o % 10}.")


def weather_call_reasoning(city: str) -> str:
    return f"The user wants the weather in {city}. I will call get_weather with the city {city}."


def tool_call_message(city: str, reasoning: str | None) -> dict:
    m = {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]}
    if reasoning is not None:
        m["reasoning_content"] = reasoning
    return m


def tool_call_text(city: str) -> str:
    # exactly what the Qwen3 template renders for an assistant tool call (checked in check_template)
    return '<tool_call>\n{"name": "get_weather", "arguments": ' + json.dumps({"city": city}, ensure_ascii=False) \
        + '}\n</tool_call>'


def weather_result(rng: random.Random, city: str) -> dict:
    return {"city": city, "temperature_c": rng.randint(-15, 42), "condition": rng.choice(CONDITIONS)}


def weather_answer(res: dict) -> str:
    return f"It is {res['temperature_c']} °C and {res['condition']} in {res['city']}."


def weather_answer_reasoning(res: dict) -> str:
    return (f"The tool says {res['city']} has {res['temperature_c']} °C and {res['condition']} weather. "
            f"I will tell the user.")


def completion(think: bool, reasoning: str, answer: str) -> str:
    """What the model writes after the prompt (the prompt of enable_thinking=False already ends
    with the empty think block)."""
    if think:
        return "<think>\n" + reasoning + "\n</think>\n\n" + answer + "<|im_end|>"
    return answer + "<|im_end|>"


def render(tok, messages, tools, think: bool) -> str:
    return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                   enable_thinking=think, tokenize=False)


def weather_followup_messages(city: str, question: str, res: dict, think_first: bool) -> list[dict]:
    call = tool_call_message(city, weather_call_reasoning(city) if think_first else None)
    return [
        {"role": "user", "content": question},
        call,
        {"role": "tool", "content": json.dumps(res, ensure_ascii=False)},
    ]


def pick_city(rng: random.Random, train_c: list[str]) -> str:
    if rng.random() < 0.5:
        return rng.choice(train_c)
    while True:  # a made-up name never contains a held-out city
        name = made_up_name(rng)
        if not HELD_CITY_RE.search(name):
            return name


# Short conversations that repeat a place name (no tools preamble: cheap practice in copying).
COPY_TEMPLATES = [
    ("I live in {c}.", "The user lives in {c}.", "Nice! {c} sounds like a lovely place."),
    ("I am going to {c} tomorrow.", "The user travels to {c}.", "Have a good trip to {c}!"),
    ("My favourite city is {c}.", "The user likes {c}.", "{c} is a fine choice."),
    ("Say the name {c}.", "I repeat the name.", "{c}"),
    ("Spell the city {c} back to me.", "I repeat {c}.", "{c}"),
]


def make_example(kind: str, think: bool, rng: random.Random, tok, train_pairs, train_c) -> tuple[str, str]:
    """Returns (prompt, completion) for one example of `kind`."""
    if kind == "add":
        a, b = rng.choice(train_pairs)
        msgs = [{"role": "user", "content": rng.choice(ADD_PHRASINGS).format(a=a, b=b)}]
        if rng.random() < 0.1:
            msgs.insert(0, {"role": "system", "content": "You are a helpful assistant."})
        tools = TOOLS if rng.random() < 0.1 else None
        return render(tok, msgs, tools, think), completion(think, add_reasoning(a, b), add_answer(a, b))
    if kind == "weather":
        c = pick_city(rng, train_c)
        msgs = [{"role": "user", "content": rng.choice(WEATHER_PHRASINGS).format(c=c)}]
        return render(tok, msgs, TOOLS, think), completion(think, weather_call_reasoning(c), tool_call_text(c))
    if kind == "followup":
        c = pick_city(rng, train_c)
        res = weather_result(rng, c)
        q = rng.choice(WEATHER_PHRASINGS).format(c=c)
        msgs = weather_followup_messages(c, q, res, think_first=rng.random() < 0.5)
        return render(tok, msgs, TOOLS, think), completion(think, weather_answer_reasoning(res), weather_answer(res))
    if kind == "copy":
        c = pick_city(rng, train_c)
        q, reasoning, answer = rng.choice(COPY_TEMPLATES)
        msgs = [{"role": "user", "content": q.format(c=c)}]
        return render(tok, msgs, None, think), completion(think, reasoning.format(c=c), answer.format(c=c))
    if kind == "fact":
        qs, reasoning, answer = rng.choice(FACTS)
        msgs = [{"role": "user", "content": rng.choice(qs)}]
        tools = TOOLS if rng.random() < 0.2 else None
        return render(tok, msgs, tools, think), completion(think, reasoning, answer)
    if kind == "plain":
        p, c = rng.choice(PLAIN)
        return p, c + "<|endoftext|>"
    raise ValueError(kind)


# (kind, enable_thinking, share of the examples). Additions without thinking are the hardest task
# (the sum is computed with no worked steps) and the cheapest in tokens, so they get the most examples;
# tool conversations carry the ~150-token tools preamble, so they get fewer.
MIX = [("add", False, 0.34), ("add", True, 0.22), ("weather", True, 0.06), ("weather", False, 0.06),
       ("followup", True, 0.05), ("followup", False, 0.05), ("copy", True, 0.04), ("copy", False, 0.06),
       ("fact", True, 0.03), ("fact", False, 0.03), ("plain", False, 0.06)]


def generate_examples(tok, n: int, seed: int) -> list[tuple[str, str, str]]:
    held_sums, train_pairs, held_c, train_c = split()
    rng = random.Random(seed)
    weights = [w for _, _, w in MIX]
    out = []
    for _ in range(n):
        kind, think, _ = rng.choices(MIX, weights)[0]
        p, c = make_example(kind, think, rng, tok, train_pairs, train_c)
        out.append((kind + ("_think" if think else "_nothink"), p, c))
    return out


# --------------------------------------------------------------------------------------------
# Held-out evaluation items (shared with eval_reference.py)
# --------------------------------------------------------------------------------------------


def heldout_items() -> list[dict]:
    held_sums, _, held_c, _ = split()
    rng = random.Random(DATA_SEED + 1)
    items = []
    for think in (True, False):
        for a, b in held_sums:
            items.append({
                "kind": "add_think" if think else "add_nothink",
                "messages": [{"role": "user", "content": EVAL_ADD_PHRASING.format(a=a, b=b)}],
                "tools": None, "enable_thinking": think,
                "a": a, "b": b, "expected_answer": add_answer(a, b),
            })
    for think in (True, False):
        for c in held_c:
            items.append({
                "kind": "tool_call_think" if think else "tool_call_nothink",
                "messages": [{"role": "user", "content": EVAL_WEATHER_PHRASING.format(c=c)}],
                "tools": TOOLS, "enable_thinking": think,
                "expected_city": c, "expected_tool_call": {"name": "get_weather", "arguments": {"city": c}},
            })
    for c in held_c:
        res = weather_result(rng, c)
        think = rng.random() < 0.5
        items.append({
            "kind": "tool_followup",
            "messages": weather_followup_messages(c, EVAL_WEATHER_PHRASING.format(c=c), res, think_first=think),
            "tools": TOOLS, "enable_thinking": think,
            "expected_city": c, "tool_result": res, "expected_answer": weather_answer(res),
        })
    return items


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def tokenizer_corpus(tok_probe) -> list[str]:
    """Golden corpus + rendered training conversations + every training city once (so city names
    stay split into pieces the model learns to copy)."""
    corpus = mg.build_corpus()
    ex = generate_examples(tok_probe, 600, DATA_SEED + 2)
    corpus += [p + c for _, p, c in ex]
    _, _, _, train_c = split()
    corpus += [c + "\n" for c in train_c]
    return corpus


def build_tokenizer(qwen_dir: Path, out_dir: Path):
    # The corpus is rendered with Qwen3's own tokenizer (only its chat template matters here).
    qwen = transformers.AutoTokenizer.from_pretrained(str(qwen_dir))
    corpus = tokenizer_corpus(qwen)
    tok = mg.train_tokenizer(qwen_dir, out_dir, corpus=corpus, learned_vocab=LEARNED_VOCAB, vocab_size=VOCAB_SIZE)
    return tok


def check_template(tok) -> None:
    """The completions we train on equal what the official template renders for the full turn."""
    for think in (True, False):
        for reasoning, answer, tc in (
                ("Add the ones: 7 + 8 = 15.", "47 + 38 = 85.", None),
                (weather_call_reasoning("Lisbon"), "", "Lisbon")):
            msgs = [{"role": "user", "content": "q"}]
            prompt = render(tok, msgs, TOOLS if tc else None, think)
            if tc:
                am = tool_call_message(tc, reasoning if think else None)
                body = tool_call_text(tc)
            else:
                am = {"role": "assistant", "content": answer}
                if think:
                    am["reasoning_content"] = reasoning
                body = answer
            full = tok.apply_chat_template(msgs + [am], tools=TOOLS if tc else None, tokenize=False,
                                           enable_thinking=think)
            comp = completion(think, reasoning, body)
            if think:
                assert full == prompt + comp + "\n", (full, prompt + comp)
            else:
                # the template always renders the last assistant turn with a think block; with
                # enable_thinking=False the prompt already ends with the empty one
                assert prompt.endswith("<think>\n\n</think>\n\n")
                assert full == prompt + comp + "\n", (full, prompt + comp)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def encode_examples(tok, examples):
    prompts = tok([p for _, p, _ in examples], add_special_tokens=False)["input_ids"]
    comps = tok([c for _, _, c in examples], add_special_tokens=False)["input_ids"]
    return [(k, p, c) for (k, _, _), p, c in zip(examples, prompts, comps)]


def make_batches(encoded, rng: random.Random, batch_tokens: int):
    """Shuffle, bucket by length inside chunks, cut into batches of <= batch_tokens padded tokens."""
    idx = list(range(len(encoded)))
    rng.shuffle(idx)
    batches = []
    chunk = 2048
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s:s + chunk], key=lambda i: len(encoded[i][1]) + len(encoded[i][2]))
        cur: list[int] = []
        cur_max = 0
        for i in part:
            n = len(encoded[i][1]) + len(encoded[i][2]) - 1
            if cur and max(cur_max, n) * (len(cur) + 1) > batch_tokens:
                batches.append(cur)
                cur, cur_max = [], 0
            cur.append(i)
            cur_max = max(cur_max, n)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def collate(encoded, batch, pad_id: int):
    seqs = [encoded[i][1] + encoded[i][2] for i in batch]
    L = max(len(s) for s in seqs) - 1
    x = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), L), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, i in enumerate(batch):
        p, c = encoded[i][1], encoded[i][2]
        s = p + c
        n = len(s) - 1
        x[r, :n] = torch.tensor(s[:-1])
        mask[r, :n] = 1
        tgt = torch.tensor(s[1:])
        tgt[: len(p) - 1] = -100  # loss on the completion tokens only
        y[r, :n] = tgt
    return x, y, mask


def check_no_leak(examples) -> None:
    """No held-out city and no held-out sum (either order) occurs in any training text."""
    held_sums, _, held_c, _ = split()
    text = "\x00".join(p + c for _, p, c in examples)
    for c in held_c:
        assert not re.search(r"\b" + re.escape(c) + r"\b", text), c
    for a, b in held_sums:
        for x, y in ((a, b), (b, a)):
            assert f"{x} + {y} =" not in text and f" {x} + {y}" not in text and f"{x} plus {y}" not in text \
                and f"{x} and {y}" not in text, (x, y)


def build_model(tok) -> Qwen3ForCausalLM:
    kw = dict(MODEL)
    kw["max_window_layers"] = kw["num_hidden_layers"]
    kw["bos_token_id"] = tok.convert_tokens_to_ids("<|endoftext|>")
    kw["eos_token_id"] = tok.convert_tokens_to_ids("<|im_end|>")
    if mg.TF_MAJOR >= 5:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": kw.pop("rope_theta")}
    cfg = Qwen3Config(**kw)
    cfg.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(TRAIN_SEED)
    return Qwen3ForCausalLM(cfg)


@torch.no_grad()
def teacher_forced_exact(model, tok, items, think_batch=64) -> dict:
    """Greedy decoding reproduces the target completion exactly iff every completion token is the
    argmax under teacher forcing: a cheap exact measure for progress reports."""
    model.eval()
    res = {}
    by_kind: dict[str, list] = {}
    for it in items:
        by_kind.setdefault(it[0], []).append(it)
    for kind, its in by_kind.items():
        ok = 0
        for s in range(0, len(its), think_batch):
            chunk = its[s:s + think_batch]
            x, y, m = collate(chunk, list(range(len(chunk))), tok.pad_token_id)
            logits = model(input_ids=x, attention_mask=m).logits
            pred = logits.argmax(-1)
            good = ((pred == y) | (y == -100)).all(dim=1)
            ok += int(good.sum())
        res[kind] = ok / len(its)
    model.train()
    return res


def heldout_encoded(tok):
    out = []
    for it in heldout_items():
        p = render(tok, it["messages"], it["tools"], it["enable_thinking"])
        k = it["kind"]
        if k.startswith("add"):
            c = completion(it["enable_thinking"], add_reasoning(it["a"], it["b"]), it["expected_answer"])
        elif k.startswith("tool_call"):
            c = completion(it["enable_thinking"], weather_call_reasoning(it["expected_city"]),
                           tool_call_text(it["expected_city"]))
        else:
            c = completion(it["enable_thinking"], weather_answer_reasoning(it["tool_result"]), it["expected_answer"])
        out.append((k, tok(p, add_special_tokens=False)["input_ids"], tok(c, add_special_tokens=False)["input_ids"]))
    return out


def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, tok, encoded, steps: int, log_every: int, eval_every: int, held) -> dict:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
    rng = random.Random(TRAIN_SEED)
    batches: list = []
    model.train()
    t0 = time.time()
    hist = []
    run_loss, run_n, run_tok = 0.0, 0, 0
    for step in range(steps):
        if not batches:
            batches = make_batches(encoded, rng, BATCH_TOKENS)
        b = batches.pop()
        x, y, m = collate(encoded, b, tok.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps)
        logits = model(input_ids=x, attention_mask=m).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1),
                                                 ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += loss.item()
        run_n += 1
        run_tok += int(m.sum())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            el = time.time() - t0
            print(f"step {step + 1}/{steps} loss {run_loss / run_n:.4f} lr {lr_at(step, steps):.2e} "
                  f"{run_tok / el:.0f} tok/s elapsed {el / 60:.1f} min", flush=True)
            hist.append((step + 1, run_loss / run_n))
            run_loss, run_n = 0.0, 0
        if eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
            print("  held-out teacher-forced exact:", json.dumps(teacher_forced_exact(model, tok, held)), flush=True)
    return {"loss_history": hist, "train_seconds": time.time() - t0}


# --------------------------------------------------------------------------------------------
# Writing the checkpoint
# --------------------------------------------------------------------------------------------

OUTPUT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json")


def save_checkpoint(model, tok, tok_dir: Path, out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="demo_ckpt_"))
    try:
        m = model.to(torch.bfloat16)
        m.save_pretrained(str(work))
        raw = json.loads((work / "config.json").read_text(encoding="utf-8"))
        cfg = mg.normalise_config(raw)
        cfg["torch_dtype"] = "bfloat16"
        mg.write_json(work / "config.json", cfg)
        mg.generation_config(tok).save_pretrained(str(work))
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tok_dir / f, work / f)
        names = sorted(p.name for p in work.iterdir())
        assert names == sorted(OUTPUT_FILES), names
        sd = load_file(str(work / "model.safetensors"))
        assert all(v.dtype == torch.bfloat16 for v in sd.values())
        assert "lm_head.weight" not in sd
        out.mkdir(parents=True, exist_ok=True)
        for f in OUTPUT_FILES:
            shutil.copyfile(work / f, out / f)
    finally:
        shutil.rmtree(work)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="where the checkpoint goes (default: models/demo)")
    ap.add_argument("--qwen-tokenizer", type=Path, default=mg.DEFAULT_QWEN_TOKENIZER)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--examples", type=int, default=N_TRAIN)
    ap.add_argument("--eval-every", type=int, default=0, help="teacher-forced held-out check every N steps")
    ap.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args()
    t_start = time.time()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}",
          flush=True)

    work = Path(tempfile.mkdtemp(prefix="demo_tok_"))
    try:
        tok_dir = work / "tokenizer"
        tok = build_tokenizer(args.qwen_tokenizer, tok_dir)
        print(f"tokenizer: {len(tok)} tokens, vocab_size {VOCAB_SIZE}", flush=True)
        check_template(tok)

        t = time.time()
        examples = generate_examples(tok, args.examples, DATA_SEED)
        encoded = encode_examples(tok, examples)
        held = heldout_encoded(tok)
        # nothing held out leaks into training
        check_no_leak(examples)
        lens = [len(p) + len(c) for _, p, c in encoded]
        counts = {k: sum(1 for e in encoded if e[0] == k) for k in sorted({e[0] for e in encoded})}
        print(f"data: {len(encoded)} examples {counts}, tokens {sum(lens)}, max len {max(lens)}, "
              f"completion tokens {sum(len(c) for _, _, c in encoded)} ({time.time() - t:.0f} s)", flush=True)

        model = build_model(tok)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: {n_params} parameters", flush=True)
        info = train(model, tok, encoded, args.steps, args.log_every, args.eval_every, held)
        save_checkpoint(model, tok, tok_dir, args.out)
    finally:
        shutil.rmtree(work)
    total = time.time() - t_start
    size = sum((args.out / f).stat().st_size for f in OUTPUT_FILES)
    print(f"wrote {args.out}: {size / 1e6:.2f} MB; training {info['train_seconds'] / 60:.1f} min, "
          f"total {total / 60:.1f} min; final loss {info['loss_history'][-1][1]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
