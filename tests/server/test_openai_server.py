#!/usr/bin/env python3
"""qwen-serve against the official openai SDK and raw HTTP (docs/server.md, "Tests").

    test_openai_server.py QWEN_SERVE MODEL_DIR [--sanitized]

Starts qwen-serve on 127.0.0.1 (a free port) with the dense tied golden checkpoint (random
weights: its text is noise, but every mechanism works on it), runs the checks, stops it with a
signal and expects exit status 0. A second server with an API key and tiny limits covers 401, 413,
503 and shutdown with a stream in flight. Prints SKIPPED and exits 0 when the openai package is
missing (scripts/setup installs it in .venv). Any failed check: exit status 1. --sanitized (an
ASan build): the resident-memory check is left out (ASan's quarantine holds freed memory; its leak
checker runs at the servers' exit instead).
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

try:
    import jsonschema_rs  # the reference JSON Schema validator (installed with schemathesis)
    import openai
except ImportError:
    print("SKIPPED: the openai or jsonschema_rs package is not installed (run scripts/setup)")
    sys.exit(0)

THINK, THINK_END, TOOL_OPEN, TOOL_CLOSE = 502, 503, 492, 493  # the golden tokenizer's ids
NAME = "qwen-test"
SANITIZED = "--sanitized" in sys.argv[3:]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                                "required": ["city"]}}}


def http_request(port, method, path, body=None, headers=None, timeout=60):
    """One request to 127.0.0.1:port on a new connection: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class Server:
    """A qwen-serve process on 127.0.0.1:<free port>, ready when constructed."""

    def __init__(self, exe, model, *extra):
        self.proc = subprocess.Popen([exe, model, "--host", "127.0.0.1", "--port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output = []
        line = self.proc.stdout.readline()
        self.output.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("qwen-serve did not start: " + line + self.proc.stdout.read())
        self.port = int(m.group(1))
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("qwen-serve never became ready:\n" + "".join(self.output))

    def _drain(self):
        for line in self.proc.stdout:
            self.output.append(line)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One request on a new connection: (status, headers dict, body bytes)."""
        return http_request(self.port, method, path, body, headers, timeout)

    def client(self, api_key="unused"):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=api_key, max_retries=0, timeout=120)

    def metrics(self):
        status, _, body = self.request("GET", "/metrics")
        assert status == 200, status
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
        return values

    def wait_idle(self, timeout=20):
        """Waits until no sequence runs or waits and every KV block is free; returns the metrics."""
        deadline = time.time() + timeout
        while True:
            m = self.metrics()
            if m["qwen_sequences_running"] == 0 and m["qwen_sequences_waiting"] == 0 and \
                    m["qwen_kv_blocks_free"] == m["qwen_kv_blocks_total"]:
                return m
            if time.time() > deadline:
                raise AssertionError(f"the engine did not become idle: {m}")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def sse_events(response):
    """The data fields of a raw SSE response (http.client), in order; [DONE] included."""
    events = []
    data = []
    for raw in response:
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if data:
                events.append("\n".join(data))
                data = []
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line.startswith(":"):
            continue
        else:
            raise AssertionError(f"not an SSE line: {line!r}")
    if data:
        events.append("\n".join(data))
    return events


def open_stream(server, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def check_stream_shape(events, chat, choices):
    """A well-formed stream: JSON chunks of one id, each choice ends once, then [DONE] last."""
    assert events and events[-1] == "[DONE]", f"stream does not end with [DONE]: {events[-3:]}"
    ids = set()
    finished = {}
    role_seen = set()
    for e in events[:-1]:
        chunk = json.loads(e)
        assert "error" not in chunk, chunk
        ids.add(chunk["id"])
        assert chunk["object"] == ("chat.completion.chunk" if chat else "text_completion"), chunk
        for c in chunk["choices"]:
            i = c["index"]
            assert i not in finished, f"choice {i} continues after its finish_reason"
            if chat and "role" in c["delta"]:
                role_seen.add(i)
            if c["finish_reason"] is not None:
                finished[i] = c["finish_reason"]
    assert len(ids) == 1, ids
    assert sorted(finished) == list(range(choices)), finished
    if chat:
        assert sorted(role_seen) == list(range(choices)), role_seen
    return finished


def chat_messages(text="Tell me about the weather."):
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


# ---- checks with the openai SDK -------------------------------------------------------------

def check_listen_backlog(server):
    """The listening socket's backlog (ss's Send-Q for a listener) is far above cpp-httplib's 5, with
    which a burst of 32 clients connecting at once got some connections reset. Needs ss (iproute2)."""
    if not shutil.which("ss"):
        print("      (ss not found: backlog not checked)")
        return
    out = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], stdout=subprocess.PIPE, text=True, check=True).stdout.split()
    assert len(out) >= 3 and out[0] == "LISTEN", out
    assert int(out[2]) >= 128, f"listen backlog {out[2]}"


def check_burst_of_connections(server):
    """64 clients connect at once (a barrier releases them together) and each gets its answer."""
    barrier = threading.Barrier(64)
    errors = []

    def client():
        try:
            barrier.wait()
            status = server.request("GET", "/v1/models")[0]
            if status != 200:
                errors.append(status)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def check_models(server):
    client = server.client()
    models = client.models.list()
    assert [m.id for m in models.data] == [NAME], models
    assert client.models.retrieve(NAME).id == NAME
    try:
        client.models.retrieve("no-such-model")
        raise AssertionError("an unknown model was found")
    except openai.NotFoundError:
        pass


def stream_chat(client, **kw):
    """Streams a chat request; returns per-choice content, reasoning, finish reason, and the usage."""
    content, reasoning, finish, usage = {}, {}, {}, None
    first_delta = {}
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            first_delta.setdefault(c.index, c.delta)
            content[c.index] = content.get(c.index, "") + (c.delta.content or "")
            r = getattr(c.delta, "reasoning_content", None)
            if r:
                reasoning[c.index] = reasoning.get(c.index, "") + r
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    for i, d in first_delta.items():
        assert d.role == "assistant", f"choice {i}'s first delta has no role: {d}"
    return content, reasoning, finish, usage


def check_chat_stream_equals_non_stream(server):
    client = server.client()
    for seed in (7, 8):
        kw = dict(model=NAME, messages=chat_messages(), max_tokens=40, temperature=1.0, seed=seed)
        whole = client.chat.completions.create(**kw)
        assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
        choice = whole.choices[0]
        assert choice.finish_reason in ("stop", "length"), choice.finish_reason
        u = whole.usage
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens and 1 <= u.completion_tokens <= 40, u
        assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens >= 0
        content, reasoning, finish, usage = stream_chat(client, stream_options={"include_usage": True}, **kw)
        assert content[0] == (choice.message.content or ""), (content[0], choice.message.content)
        assert reasoning.get(0, "") == (getattr(choice.message, "reasoning_content", None) or "")
        assert finish[0] == choice.finish_reason
        assert usage is not None, "include_usage: no usage chunk"
        assert (usage.prompt_tokens, usage.completion_tokens) == (u.prompt_tokens, u.completion_tokens), (usage, u)
        # Without include_usage no usage chunk comes.
        assert stream_chat(client, **kw)[3] is None


def check_completion_stream_equals_non_stream(server):
    client = server.client()
    kw = dict(model=NAME, prompt="The server streams", max_tokens=30, temperature=0.8, seed=11)
    whole = client.completions.create(**kw)
    assert whole.object == "text_completion"
    text = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
    assert text == whole.choices[0].text, (text, whole.choices[0].text)
    # Several prompts (text and token ids) with n = 2: prompt p's choice i has index 2p + i.
    many = client.completions.create(model=NAME, prompt=["a b c", "the model"], max_tokens=5, n=2, seed=3, temperature=1.0)
    assert sorted(c.index for c in many.choices) == [0, 1, 2, 3]
    ids = client.completions.create(model=NAME, prompt=[10, 20, 30], max_tokens=5, seed=3)
    assert ids.usage.prompt_tokens == 3
    echo = client.completions.create(model=NAME, prompt="echo this", max_tokens=4, echo=True, seed=1)
    assert echo.choices[0].text.startswith("echo this")


def check_n(server):
    client = server.client()
    kw = dict(model=NAME, messages=chat_messages(), max_tokens=12, temperature=1.0, seed=5, n=3, logprobs=True)
    whole = client.chat.completions.create(**kw)
    assert sorted(c.index for c in whole.choices) == [0, 1, 2]
    assert sum(len(c.logprobs.content) for c in whole.choices) == whole.usage.completion_tokens
    assert len({c.message.content for c in whole.choices}) > 1, "n = 3 choices are all equal"
    content, _, finish, _ = stream_chat(client, **kw)
    for c in whole.choices:
        assert content[c.index] == (c.message.content or ""), c.index
        assert finish[c.index] == c.finish_reason


def check_logprobs(server):
    client = server.client()
    r = client.chat.completions.create(model=NAME, messages=chat_messages(), max_tokens=10, temperature=0, logprobs=True,
                                       top_logprobs=5)
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 5 and isinstance(e.bytes, list)
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert abs(e.logprob - tops[0]) < 1e-6, "greedy did not pick the most likely token"
    c = client.completions.create(model=NAME, prompt="logprobs", max_tokens=8, temperature=0, logprobs=3)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == c.usage.completion_tokens
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs)
    no = client.chat.completions.create(model=NAME, messages=chat_messages(), max_tokens=3)
    assert no.choices[0].logprobs is None


def check_seed(server):
    client = server.client()
    kw = dict(model=NAME, messages=chat_messages("seed"), max_tokens=30, temperature=1.0)
    a = client.chat.completions.create(seed=1234, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=1234, **kw).choices[0].message.content
    c = client.chat.completions.create(seed=4321, **kw).choices[0].message.content
    assert a == b, "the same seed gave different text"
    assert a != c, "different seeds gave the same 30 tokens"


def check_stop(server):
    client = server.client()
    kw = dict(model=NAME, prompt="Stop strings", max_tokens=40, temperature=0)
    text = client.completions.create(**kw).choices[0].text
    stop = None
    for p in range(5, len(text) - 3):
        s = text[p:p + 3]
        if text.find(s) == p and "\ufffd" not in s and s.strip():
            stop = (p, s)
            break
    assert stop, f"no usable stop string in {text!r}"
    p, s = stop
    r = client.completions.create(stop=[s, "never-matches"], **kw).choices[0]
    assert text.startswith(r.text)
    assert r.text == text[:p], (r.text, text[:p])
    assert r.finish_reason == "stop" and getattr(r, "stop_reason", None) == s
    r = client.completions.create(stop=s, extra_body={"include_stop_str_in_output": True}, **kw).choices[0]
    assert r.text == text[:p] + s
    # A stop token: logit_bias makes token 300 certain, stop_token_ids ends on it.
    r = client.completions.create(model=NAME, prompt="x", max_tokens=10, logit_bias={"300": 100},
                                  extra_body={"stop_token_ids": [300]})
    assert r.usage.completion_tokens == 1 and r.choices[0].finish_reason == "stop"
    assert getattr(r.choices[0], "stop_reason", None) == 300


def check_thinking(server):
    """The random model is made to write <think> (logit bias): with thinking on it is reasoning,
    with thinking off it is plain content and reasoning_content never appears."""
    client = server.client()
    for seed in range(3):
        for thinking in (True, False):
            kw = dict(model=NAME, messages=chat_messages(), max_tokens=12, temperature=1.0, seed=seed,
                      logit_bias={str(THINK): 100}, extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
            r = client.chat.completions.create(**kw)
            m = r.choices[0].message
            reasoning = getattr(m, "reasoning_content", None)
            content, streamed_reasoning, _, _ = stream_chat(client, **kw)
            if thinking:
                assert reasoning and "<think>" in reasoning, f"thinking on: no reasoning_content ({m})"
                assert streamed_reasoning.get(0, "") == reasoning
            else:
                assert not reasoning and not streamed_reasoning, f"thinking off gave reasoning: {reasoning!r}"
                assert "<think>" in m.content and content[0] == m.content


def check_tools(server):
    client = server.client()
    messages = chat_messages("What is the weather in Lisbon?")
    tokenized = lambda body: json.loads(server.request("POST", "/tokenize", body)[2])["count"]
    plain = tokenized({"messages": messages})
    with_tools = tokenized({"messages": messages, "tools": [WEATHER_TOOL]})
    assert with_tools > plain
    kw = dict(model=NAME, messages=messages, max_tokens=30, temperature=1.0, seed=2, tools=[WEATHER_TOOL],
              logit_bias={str(TOOL_OPEN): 6, str(TOOL_CLOSE): 5})
    r = client.chat.completions.create(**kw)
    assert r.usage.prompt_tokens == with_tools, (r.usage.prompt_tokens, with_tools)
    m = r.choices[0].message
    # Random weights never write a valid JSON call: the tags stay in the content, no tool call is
    # invented, and the finish reason is not tool_calls.
    assert "<tool_call>" in (m.content or ""), m.content
    assert not m.tool_calls and r.choices[0].finish_reason in ("stop", "length")
    content, _, finish, _ = stream_chat(client, **kw)
    assert content[0] == m.content and finish[0] == r.choices[0].finish_reason
    # A tool whose parameters nest 12 levels deep (the body 20) is taken.
    deep = {"type": "string"}
    for _ in range(6):
        deep = {"type": "object", "properties": {"inner": deep}}
    deep_tool = {"type": "function", "function": {"name": "deep", "parameters": deep}}
    r = client.chat.completions.create(model=NAME, messages=messages, max_tokens=2, tools=[deep_tool])
    assert r.usage.prompt_tokens > plain
    none = client.chat.completions.create(tool_choice="none", **kw)
    assert none.usage.prompt_tokens == plain, "tool_choice none still showed the tools to the model"
    auto = client.chat.completions.create(tool_choice="auto", **kw)
    assert auto.usage.prompt_tokens == with_tools
    check_forced_tool_call(server, messages)
    check_json_object(server)


def tool_calls_of_stream(client, **kw):
    """Streams a chat request; returns per-choice tool calls rebuilt from the deltas (with the
    number of deltas each came in), and finish reasons."""
    calls, finish = {}, {}
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                slot = calls.setdefault(c.index, {}).setdefault(d.index, {"id": None, "name": "", "arguments": "", "pieces": 0})
                # Only a call's first delta names it (OpenAI's streamed form).
                assert (d.id is not None) == (slot["pieces"] == 0), (d, slot)
                assert (d.function.name is not None) == (slot["pieces"] == 0), (d, slot)
                slot["id"] = d.id or slot["id"]
                slot["pieces"] += 1
                if d.function is not None:
                    slot["name"] += d.function.name or ""
                    slot["arguments"] += d.function.arguments or ""
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return {i: [v[k] for k in sorted(v)] for i, v in calls.items()}, finish


def check_forced_tool_call(server, messages):
    """tool_choice naming a function, or "required": under the grammar even random weights write
    exactly one call, to that function, with a JSON object as arguments (or run out of tokens)."""
    client = server.client()
    # Tools without descriptions: the tiny model's context (512) must hold the prompt and the call.
    tools = [{"type": "function", "function": {"name": name}} for name in ("get_weather", "get_time")]
    completed = 0
    most_pieces = 0
    for choice, allowed in (({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}),
                            ("required", {"get_weather", "get_time"})):
        kw = dict(model=NAME, messages=messages, max_tokens=90, temperature=1.0, seed=5, n=6,
                  tools=tools, tool_choice=choice)
        r = client.chat.completions.create(**kw)
        streamed, streamed_finish = tool_calls_of_stream(client, **kw)
        for c in r.choices:
            m = c.message
            # The stream rebuilds the same calls (name and arguments; the id names the request).
            assert [(t["name"], t["arguments"]) for t in streamed.get(c.index, [])] == \
                [(t.function.name, t.function.arguments) for t in m.tool_calls or []], (streamed.get(c.index), m.tool_calls)
            most_pieces = max([most_pieces] + [t["pieces"] for t in streamed.get(c.index, [])])
            if c.finish_reason == "length":
                # Cut by max_tokens before the call began (none) or inside it (its arguments so far).
                assert len(m.tool_calls or []) <= 1, m
                if m.tool_calls:
                    assert m.tool_calls[0].function.name in allowed and m.tool_calls[0].function.arguments.startswith("{"), m
                continue
            completed += 1
            assert c.finish_reason == "tool_calls", c
            assert len(m.tool_calls) == 1 and m.tool_calls[0].function.name in allowed, m.tool_calls
            assert isinstance(json.loads(m.tool_calls[0].function.arguments), dict), m.tool_calls[0].function.arguments
            assert not (m.content or "").strip(), m.content
            call = m.tool_calls[0]
            assert streamed[c.index][0]["id"].startswith("call_") and call.id.startswith("call_")
            assert streamed_finish[c.index] == "tool_calls"
    assert completed >= 2, f"only {completed} forced calls completed within max_tokens"
    # The arguments stream in pieces as they are written, not whole at the end.
    assert most_pieces >= 3, most_pieces


def check_json_object(server):
    """response_format json_object: the content is one JSON object (or, cut by max_tokens, the start of one)."""
    client = server.client()
    r = client.chat.completions.create(model=NAME, messages=chat_messages("Reply in JSON."), max_tokens=200, temperature=1.0,
                                       seed=3, n=6, response_format={"type": "json_object"},
                                       extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    complete = [c for c in r.choices if c.finish_reason == "stop"]
    for c in complete:
        assert isinstance(json.loads(c.message.content), dict), c.message.content
    for c in r.choices:
        assert c.finish_reason in ("stop", "length") and c.message.content.lstrip()[:1] == "{", c
    assert len(complete) >= 2, [c.finish_reason for c in r.choices]
    # The completions route takes response_format too (as vLLM's does).
    r = client.completions.create(model=NAME, prompt="JSON:", max_tokens=200, temperature=1.0, seed=3, n=6,
                                  extra_body={"response_format": {"type": "json_object"}})
    complete = [c for c in r.choices if c.finish_reason == "stop"]
    for c in complete:
        assert isinstance(json.loads(c.text), dict), c.text
    assert len(complete) >= 2, [c.finish_reason for c in r.choices]
    # json_schema: every completed choice validates (jsonschema_rs, the reference validator).
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                               "unit": {"enum": ["celsius", "fahrenheit"]}},
              "required": ["city", "unit"], "additionalProperties": False}
    r = client.chat.completions.create(model=NAME, messages=chat_messages("Weather as JSON."), max_tokens=200, temperature=1.0,
                                       seed=4, n=6, response_format={"type": "json_schema",
                                                                     "json_schema": {"name": "weather", "schema": schema}},
                                       extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    complete = [c for c in r.choices if c.finish_reason == "stop"]
    for c in complete:
        jsonschema_rs.validate(schema, json.loads(c.message.content))
    assert len(complete) >= 2, [c.finish_reason for c in r.choices]


def check_tokenize(server):
    s, _, body = server.request("POST", "/tokenize", {"prompt": "hello world", "return_token_strs": True})
    out = json.loads(body)
    assert s == 200 and out["count"] == len(out["tokens"]) == len(out["token_strs"]) and out["max_model_len"] == 512
    s, _, body = server.request("POST", "/detokenize", {"tokens": out["tokens"]})
    assert s == 200 and json.loads(body)["prompt"] == "hello world"
    s, _, body = server.request("GET", "/version")
    assert s == 200 and "version" in json.loads(body)


def check_cancel_on_disconnect(server):
    """A client that leaves mid-stream: its request is aborted and its KV blocks return."""
    before = server.wait_idle()
    client = server.client()
    stream = client.chat.completions.create(model=NAME, messages=chat_messages(), max_tokens=400, stream=True,
                                            extra_body={"ignore_eos": True})
    got = 0
    for _ in stream:
        got += 1
        if got == 3:
            break
    stream.close()
    after = server.wait_idle()
    aborted = after['qwen_choices_finished_total{reason="abort"}'] - before['qwen_choices_finished_total{reason="abort"}']
    generated = after["qwen_generation_tokens_total"] - before["qwen_generation_tokens_total"]
    assert aborted == 1, f"aborted choices: {aborted}"
    assert generated < 400, f"the request ran to the end ({generated} tokens) although its client left"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def check_load(server):
    """Two rounds of 64 concurrent streaming clients x 7 requests (448 requests each): no errors,
    well-formed streams, the engine idle afterwards, and the resident memory flat across rounds."""
    before = server.metrics()["qwen_preemptions_total"]
    load_round(server, 64, 7)
    assert server.metrics()["qwen_preemptions_total"] > before, "no preemption under load: the test meant to cause some"
    first = rss_kib(server.proc.pid)
    load_round(server, 64, 7)
    second = rss_kib(server.proc.pid)
    if SANITIZED:
        return
    assert second - first < 4096, f"resident memory grew from {first} KiB to {second} KiB over a second round"


def load_round(server, clients, per_client):
    """Concurrent streaming clients, every third request abandoned after two events."""
    errors = []
    done = [0, 0]
    lock = threading.Lock()

    def worker(w):
        for k in range(per_client):
            chat = (w + k) % 2 == 0
            cancel = (w * per_client + k) % 3 == 0
            n = 2 if (w + k) % 5 == 0 else 1
            body = {"model": NAME, "max_tokens": 8 + (w * 7 + k * 3) % 40, "temperature": 1.0, "seed": w * 100 + k,
                    "n": n, "stream": True, "stream_options": {"include_usage": True}}
            if chat:
                body["messages"] = chat_messages(f"client {w} request {k}")
            else:
                body["prompt"] = f"client {w} request {k}"
            try:
                conn, r = open_stream(server, "/v1/chat/completions" if chat else "/v1/completions", body)
                assert r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream"), r.status
                if cancel:
                    r.readline()
                    r.readline()
                    conn.close()
                    continue
                events = sse_events(r)
                conn.close()
                check_stream_shape(events, chat, n)
                usage = json.loads(events[-2])
                assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= n, usage
                with lock:
                    done[0] += 1
            except Exception as e:  # noqa: BLE001 (reported below)
                with lock:
                    errors.append(f"client {w} request {k}: {e!r}")
            with lock:
                done[1] += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors[:10])
    server.wait_idle()


# ---- bad requests (raw HTTP) -----------------------------------------------------------------

def bad_requests():
    chat = "/v1/chat/completions"
    cmpl = "/v1/completions"
    msgs = chat_messages()
    c = lambda **kw: dict({"model": NAME, "messages": msgs, "max_tokens": 5}, **kw)
    p = lambda **kw: dict({"model": NAME, "prompt": "hi", "max_tokens": 5}, **kw)
    long_prompt = " ".join(["token"] * 700)
    return [
        # (method, path, body, status, param or None)
        ("POST", chat, "{bad json", 400, None),
        ("POST", chat, "", 400, None),
        ("POST", chat, "[]", 400, None),
        ("POST", chat, '"text"', 400, None),
        ("POST", chat, b'{"messages": "\xff"}', 400, None),
        ("POST", chat, "[" * 5000 + "]" * 5000, 400, None),
        ("POST", chat, b'{"messages": [{"role": "user", "content": "a\x00"}]}', 400, None),
        ("POST", chat, '{"messages": "\\ud800"}', 400, None),
        ("POST", chat, {"model": NAME}, 400, "messages"),
        ("POST", chat, c(messages="hi"), 400, "messages"),
        ("POST", chat, c(messages=[]), 400, "messages"),
        ("POST", chat, c(messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role"),
        ("POST", chat, c(messages=[{"role": "user"}]), 400, "messages[0].content"),
        ("POST", chat, c(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400, None),
        ("POST", chat, c(temperature="hot"), 400, "temperature"),
        ("POST", chat, c(temperature=-1), 400, "temperature"),
        ("POST", chat, c(top_p=1.5), 400, "top_p"),
        ("POST", chat, c(top_k=-5), 400, "top_k"),
        ("POST", chat, c(min_p=2), 400, "min_p"),
        ("POST", chat, c(max_tokens=0), 400, "max_tokens"),
        ("POST", chat, c(max_tokens="10"), 400, "max_tokens"),
        ("POST", chat, c(max_tokens=2.5), 400, "max_tokens"),
        ("POST", chat, c(max_tokens=100000), 400, None),
        ("POST", chat, c(max_completion_tokens=-3), 400, "max_tokens"),
        ("POST", chat, c(n=0), 400, "n"),
        ("POST", chat, c(n=1000), 400, "n"),
        ("POST", chat, c(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
        ("POST", chat, c(top_logprobs=3), 400, "top_logprobs"),
        ("POST", chat, c(logprobs="yes"), 400, "logprobs"),
        ("POST", chat, c(logit_bias={"abc": 1}), 400, "logit_bias"),
        ("POST", chat, c(logit_bias={"5": 500}), 400, "logit_bias"),
        ("POST", chat, c(logit_bias={"99999": 1}), 400, "logit_bias"),
        ("POST", chat, c(logit_bias=[1, 2]), 400, "logit_bias"),
        ("POST", chat, c(stop=42), 400, "stop"),
        ("POST", chat, c(stop=[""]), 400, "stop[0]"),
        ("POST", chat, c(stop=["x"] * 65), 400, "stop"),
        ("POST", chat, c(stop_token_ids=[99999]), 400, "stop_token_ids"),
        ("POST", chat, c(seed="x"), 400, "seed"),
        ("POST", chat, c(presence_penalty=5), 400, "presence_penalty"),
        ("POST", chat, c(frequency_penalty=-3), 400, "frequency_penalty"),
        ("POST", chat, c(repetition_penalty=0), 400, "repetition_penalty"),
        ("POST", chat, c(min_tokens=50), 400, "min_tokens"),
        ("POST", chat, c(stream="yes"), 400, "stream"),
        ("POST", chat, c(stream_options={"include_usage": True}), 400, "stream_options"),
        ("POST", chat, c(response_format={"type": "json_schema", "json_schema": {}}), 400, "response_format.json_schema.schema"),
        ("POST", chat, c(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {
            "n": {"type": "integer", "maximum": 3}}}}}), 400, "response_format.json_schema.schema.properties.n"),
        ("POST", chat, c(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "string"}}}), 400,
         "response_format.json_schema.schema"),
        ("POST", chat, c(response_format={"type": "xml"}), 400, "response_format.type"),
        ("POST", chat, c(response_format={"type": "json_object"}, tools=[WEATHER_TOOL], tool_choice="required"), 400, "response_format"),
        ("POST", chat, c(tools="x"), 400, "tools"),
        ("POST", chat, c(tools=[{"type": "function"}]), 400, "tools[0].function"),
        ("POST", chat, c(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_news"}}), 400, "tool_choice.function.name"),
        ("POST", chat, c(tool_choice="required"), 400, "tool_choice"),
        ("POST", chat, c(tool_choice=7), 400, "tool_choice"),
        ("POST", chat, c(chat_template_kwargs={"enable_thinking": "no"}), 400, "chat_template_kwargs.enable_thinking"),
        ("POST", chat, c(model="gpt-4"), 404, None),
        ("POST", chat, c(model=7), 400, "model"),
        ("POST", cmpl, {"model": NAME}, 400, "prompt"),
        ("POST", cmpl, p(prompt=42), 400, "prompt"),
        ("POST", cmpl, p(prompt=[]), 400, "prompt"),
        ("POST", cmpl, p(prompt=[1, "a"]), 400, "prompt[1]"),
        ("POST", cmpl, p(prompt=[[]]), 400, "prompt[0]"),
        ("POST", cmpl, p(prompt=[99999]), 400, None),
        ("POST", cmpl, p(prompt=[-1]), 400, "prompt[0]"),
        ("POST", cmpl, p(logprobs=21), 400, "logprobs"),
        ("POST", cmpl, p(echo=True, logprobs=2), 400, "echo"),
        ("POST", cmpl, p(suffix="x"), 400, "suffix"),
        ("POST", cmpl, p(best_of=3), 400, "best_of"),
        ("POST", cmpl, p(prompt=long_prompt), 400, None),
        ("POST", "/tokenize", {}, 400, "prompt"),
        ("POST", "/tokenize", {"prompt": 5}, 400, "prompt"),
        ("POST", "/detokenize", {"tokens": [99999]}, 400, "tokens"),
        ("POST", "/detokenize", {"tokens": "x"}, 400, "tokens"),
        ("GET", chat, None, 405, None),
        ("PUT", cmpl, "{}", 405, None),
        ("POST", "/v1/models", "{}", 405, None),
        ("DELETE", "/health", None, 405, None),
        ("TRACE", "/health", None, 405, None),
        ("GET", "/nope", None, 404, None),
        ("POST", "/v1/embeddings", "{}", 404, None),
        ("GET", "/v1/models/no-such-model", None, 404, None),
    ]


def check_bad_requests(server):
    failures = []
    cases = bad_requests()
    for method, path, body, status, param in cases:
        s, headers, raw = server.request(method, path, body)
        try:
            err = json.loads(raw)["error"]
            ok = s == status and isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str) \
                and "code" in err and "param" in err and (param is None or err["param"] == param)
        except (ValueError, KeyError, TypeError):
            ok, err = False, raw[:200]
        if not ok:
            failures.append(f"{method} {path} {str(body)[:80]!r}: got {s} {err}, expected {status} param {param}")
    # A malformed request line: httplib's own 400, with the error object.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):  # the head, then Content-Length bytes of body
            reply += chunk
            head, sep, body = reply.partition(b"\r\n\r\n")
            m = re.search(rb"Content-Length: (\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break
        reply = reply.decode(errors="replace")
        if not reply.startswith("HTTP/1.1 400") or '"error"' not in reply:
            failures.append(f"garbage request line: {reply[:200]!r}")
    assert not failures, f"{len(failures)} of {len(cases) + 1} bad requests answered wrongly:\n" + "\n".join(failures)
    assert len(cases) >= 30
    # The server still answers.
    assert server.request("GET", "/health")[0] == 200
    r = server.client().chat.completions.create(model=NAME, messages=chat_messages(), max_tokens=3)
    assert r.choices[0].finish_reason in ("stop", "length")


# ---- the second server: API key, limits, shutdown --------------------------------------------

def check_loading(exe):
    """While the model loads (a Qwen3-0.6B-sized checkpoint of zeros, written sparse by
    bench/tools/make_random_checkpoint.py: about 0.7 s to load here, far more under the
    sanitizers), /health and the generation routes answer 503 model_loading with Retry-After and
    the other routes answer; then /health turns 200 and a completion runs. Not under --sanitized:
    that build's tools are compiled for the test model types only (QWEN_TOOL_MODELS=tests), which
    load in milliseconds."""
    if SANITIZED:
        print("      (check_loading: not in the sanitizer build, whose tools lack the 0.6B type)")
        return
    import tempfile
    with tempfile.TemporaryDirectory() as model:
        tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "tools", "make_random_checkpoint.py")
        subprocess.run([sys.executable, tool, "--shape", "0.6B", "--zeros", "--out", model], check=True, stdout=subprocess.DEVNULL)
        proc = subprocess.Popen([exe, model, "--host", "127.0.0.1", "--port", "0", "--kv-cache-memory", "64M", "--threads", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = proc.stdout.readline()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            assert m and line.rstrip().endswith("loading)"), line
            port = int(m.group(1))
            status, headers, raw = http_request(port, "GET", "/health")
            assert status == 503 and json.loads(raw)["error"]["code"] == "model_loading", (status, raw)
            body = {"prompt": [1, 2, 3], "max_tokens": 2}
            status, headers, raw = http_request(port, "POST", "/v1/completions", body)
            assert status == 503 and json.loads(raw)["error"]["code"] == "model_loading" and "retry-after" in headers, (status, raw)
            assert http_request(port, "GET", "/version")[0] == 200
            assert http_request(port, "GET", "/openapi.json")[0] == 200
            deadline = time.time() + 300
            while http_request(port, "GET", "/health")[0] != 200:
                assert time.time() < deadline, "never became ready"
                time.sleep(0.05)
            status, _, raw = http_request(port, "POST", "/v1/completions", body)
            assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] == 2, (status, raw[:300])
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()


def check_limits_and_shutdown(exe, model):
    server = Server(exe, model, "--api-key", "sekret", "--max-num-seqs", "1", "--max-waiting-requests", "0",
                    "--max-body-bytes", "65536", "--keep-alive-timeout", "1", "--served-model-name", NAME)
    try:
        body = {"model": NAME, "prompt": "hi", "max_tokens": 3}
        s, _, raw = server.request("POST", "/v1/completions", body)
        assert s == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key", (s, raw)
        s, _, _ = server.request("POST", "/v1/completions", body, {"Authorization": "Bearer wrong"})
        assert s == 401
        s, _, _ = server.request("GET", "/v1/models", None, {"Authorization": "Bearer sekre"})
        assert s == 401
        try:
            server.client("wrong").models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError:
            pass
        assert server.client("sekret").completions.create(**body).usage.completion_tokens >= 1
        assert server.request("GET", "/health")[0] == 200  # no key needed
        s, _, raw = server.request("POST", "/v1/completions", {"prompt": "x" * 70000}, {"Authorization": "Bearer sekret"})
        assert s == 413 and json.loads(raw)["error"]["code"] == "request_too_large", (s, raw[:200])

        # One long stream fills the single sequence slot; another request gets 503 + Retry-After.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(
            {"model": NAME, "messages": chat_messages(), "max_tokens": 440, "ignore_eos": True, "stream": True}),
            headers={"Content-Type": "application/json", "Authorization": "Bearer sekret"})
        r = conn.getresponse()
        assert r.status == 200, (r.status, r.read())
        assert r.readline().startswith(b"data: ")
        s, headers, raw = server.request("POST", "/v1/completions", body, {"Authorization": "Bearer sekret"})
        assert s == 503 and "retry-after" in headers and json.loads(raw)["error"]["code"] == "overloaded", (s, raw)

        # SIGTERM with that stream in flight: it ends (finish_reason abort, then [DONE]) and the
        # server exits 0.
        server.proc.send_signal(signal.SIGTERM)
        rest = sse_events(r)
        conn.close()
        assert rest and rest[-1] == "[DONE]", rest[-2:]
        reasons = [c["finish_reason"] for e in rest[:-1] for c in json.loads(e)["choices"] if c["finish_reason"]]
        assert reasons == ["abort"], reasons
        code = server.proc.wait(timeout=30)
        assert code == 0, f"exit status {code} after SIGTERM"
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def main():
    exe, model = sys.argv[1], sys.argv[2]
    checks = [check_listen_backlog, check_burst_of_connections, check_models, check_chat_stream_equals_non_stream, check_completion_stream_equals_non_stream, check_n,
              check_logprobs, check_seed, check_stop, check_thinking, check_tools, check_tokenize, check_bad_requests,
              check_cancel_on_disconnect, check_load]
    failed = []
    # A KV cache of 128 blocks (2,048 positions of 1 KiB in the default bf16 cache): the load
    # rounds touch all of it in the first round (so resident memory can be compared), and 64
    # clients at once preempt one another.
    server = Server(exe, model, "--served-model-name", NAME, "--threads", "2", "--kv-cache-memory", "2M")
    try:
        for check in checks:
            t0 = time.time()
            try:
                check(server)
                print(f"ok    {check.__name__} ({time.time() - t0:.1f} s)", flush=True)
            except Exception:  # noqa: BLE001 (every check runs; failures are listed)
                failed.append(check.__name__)
                print(f"FAIL  {check.__name__}\n{traceback.format_exc()}", flush=True)
        code = server.stop(signal.SIGINT)
        if code != 0:
            failed.append("exit status after SIGINT")
            print(f"FAIL  qwen-serve exited with {code} after SIGINT", flush=True)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    for check in (check_limits_and_shutdown, check_loading):
        try:
            check(exe, model) if check is check_limits_and_shutdown else check(exe)
            print(f"ok    {check.__name__}", flush=True)
        except Exception:  # noqa: BLE001
            failed.append(check.__name__)
            print(f"FAIL  {check.__name__}\n{traceback.format_exc()}", flush=True)
    if failed:
        print("server output:\n" + "".join(server.output[-40:]))
        print(f"{len(failed)} failed: {', '.join(failed)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
