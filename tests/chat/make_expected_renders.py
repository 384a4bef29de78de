"""Writes tests/chat/expected_renders.json: chat requests and the text Hugging Face transformers'
apply_chat_template renders for them with the official Qwen3 template.

Run with the reference venv (transformers, jinja2; no torch needed), from the repository root:
    HF_HUB_OFFLINE=1 /work/refvenv/bin/python tests/chat/make_expected_renders.py ../shared/models/qwen3-tokenizer

Each case is an OpenAI chat request (messages, tools, add_generation_prompt, chat_template_kwargs).
It is turned into apply_chat_template's arguments the way an OpenAI server does it: content given
as a list of text parts is joined with "\n" (vLLM's rule for templates that take string content),
add_generation_prompt defaults to true, chat_template_kwargs are passed as template variables.
"""
import json
import sys

from transformers import AutoTokenizer

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
# Non-ASCII, escapes, key order and numbers that tojson (json.dumps) must format exactly.
UNICODE_TOOL = {
    "type": "function",
    "function": {
        "name": "translate",
        "description": "翻译文本 — traduit le texte « ainsi » 😀; line\u2028sep, tab\there, quote \" backslash \\ ctrl \u0001\u001f del \u007f",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "target": {"type": "string", "default": "日本語"},
                "temperature": {"type": "number", "default": 1.0, "minimum": 1e-7, "maximum": 1e16},
                "max_len": {"type": "integer", "default": 9007199254740993, "minimum": -42},
                "scale": {"type": "number", "default": 0.1, "exclusiveMaximum": 123456.789e3, "small": 0.0001, "smaller": 0.00001},
                "negzero": {"type": "number", "default": -0.0, "big": 1e15, "bigger": 1.5e300},
                "flags": {"type": "array", "items": {"type": "boolean"}, "default": [True, False, None]},
                "empty": {"type": "object", "properties": {}, "default": []},
            },
            "required": ["text", "target"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "top_k": {"type": "integer"}}, "required": ["query"]},
    },
}
TOOLS = [WEATHER_TOOL, SEARCH_TOOL]


def call(name, arguments, with_id=True):
    c = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if with_id:
        c = {"id": "call_" + name, **c}
    return c


def user(text):
    return {"role": "user", "content": text}


def assistant(text, **extra):
    m = {"role": "assistant", "content": text}
    m.update(extra)
    return m


def tool(text, **extra):
    m = {"role": "tool", "content": text}
    m.update(extra)
    return m


CONVERSATIONS = {
    "single_user": [user("Hello!")],
    "system_user": [SYSTEM, user("What is 2+2?")],
    "multi_turn": [user("Hi"), assistant("Hello! How can I help?"), user("Tell me a joke.")],
    "multi_turn_system": [SYSTEM, user("Hi"), assistant("Hello!"), user("Bye"), assistant("Goodbye!")],
    "ends_with_assistant": [SYSTEM, user("Hi"), assistant("Hello there.")],
    "reasoning_content_last": [user("2+2?"), assistant("4", reasoning_content="Two plus two is four.")],
    "reasoning_content_history": [
        user("2+2?"), assistant("4", reasoning_content="Simple sum."), user("3+3?"), assistant("6", reasoning_content="Also simple."),
        user("4+4?")],
    "reasoning_null": [user("a"), assistant("b", reasoning_content=None)],
    "reasoning_empty_string": [user("a"), assistant("b", reasoning_content="")],
    "reasoning_newlines": [user("a"), assistant("\n\nanswer\n", reasoning_content="\n\nthinking\n\n")],
    "think_in_content_last": [user("Why?"), assistant("<think>\nBecause.\n</think>\n\nThat is why.")],
    "think_in_content_history": [user("Why?"), assistant("<think>\nBecause.\n</think>\n\nThat is why."), user("And?")],
    "think_close_without_open": [user("q"), assistant("some reasoning\n</think>\n\nanswer")],
    "think_several_close_tags": [user("q"), assistant("<think>a</think>b</think>\n\nc")],
    "think_in_content_and_reasoning": [user("q"), assistant("<think>x</think>y", reasoning_content="given")],
    "think_only_open_tag": [user("q"), assistant("<think>unfinished")],
    "assistant_empty_content": [user("q"), assistant("")],
    "leading_trailing_newlines": [{"role": "system", "content": "\nsys\n"}, user("\n\nhello\n\n"), assistant("\n\nworld\n\n"), user("\nagain\n")],
    "system_not_first": [user("hi"), {"role": "system", "content": "Be brief."}, user("ok")],
    "two_systems": [SYSTEM, {"role": "system", "content": "Second system."}, user("hi")],
    "content_parts": [{"role": "system", "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]},
                      {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "text", "text": "here"}]}],
    "content_parts_assistant": [user("x"), {"role": "assistant", "content": [{"type": "text", "text": "a"}]}, user("y")],
    "non_ascii_messages": [user("你好，世界！ Ça va? 😀"), assistant("我很好。", reasoning_content="用户在问好。"), user("Ünïcödé\u2028line")],
    "special_chars_content": [user("quotes \" and \\ and \t tab and <tool_call> text"), assistant("{\"json\": true}")],
    "assistant_contains_think_word": [user("q"), assistant("I think </thinking> not a tag")],
}

TOOL_CONVERSATIONS = {
    "tools_no_system": [user("Weather in Paris?")],
    "tools_with_system": [SYSTEM, user("Weather in Paris?")],
    "tools_call_string_args": [SYSTEM, user("Weather in Paris?"),
                               assistant("", tool_calls=[call("get_weather", "{\"city\": \"Paris\"}")])],
    "tools_call_object_args": [user("Weather in Paris?"),
                               assistant("", tool_calls=[call("get_weather", {"city": "Paris", "unit": "celsius"})])],
    "tools_call_object_args_key_order": [user("x"),
                                         assistant("", tool_calls=[call("search", {"z": 1, "a": [1.0, 2.5e-8, "ü"], "m": {"y": None, "b": True}})])],
    "tools_call_with_content": [user("Weather?"), assistant("Let me check.", tool_calls=[call("get_weather", {"city": "Oslo"})])],
    "tools_call_flat_format": [user("Weather?"), assistant("", tool_calls=[{"name": "get_weather", "arguments": {"city": "Rome"}}])],
    "tools_call_no_id": [user("Weather?"), assistant("", tool_calls=[call("get_weather", {"city": "Rome"}, with_id=False)])],
    "tools_call_raw_string_args_odd": [user("x"), assistant("", tool_calls=[call("search", "not json at all {")])],
    "tools_several_calls": [user("Weather in Paris and Oslo?"),
                            assistant("", tool_calls=[call("get_weather", {"city": "Paris"}), call("get_weather", "{\"city\":\"Oslo\"}")])],
    "tools_several_calls_with_content": [user("Weather in Paris and Oslo?"),
                                         assistant("Checking both.", tool_calls=[call("get_weather", {"city": "Paris"}), call("search", {"query": "Oslo"})])],
    "tools_response": [user("Weather in Paris?"), assistant("", tool_calls=[call("get_weather", {"city": "Paris"})]),
                       tool("{\"temp\": 21}", tool_call_id="call_get_weather")],
    "tools_consecutive_responses": [user("Weather in Paris and Oslo?"),
                                    assistant("", tool_calls=[call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Oslo"})]),
                                    tool("21 C"), tool("5 C"), assistant("Paris is 21 C, Oslo 5 C.")],
    "tools_multi_step": [SYSTEM, user("Plan my day in Paris."),
                         assistant("", reasoning_content="Need weather first.", tool_calls=[call("get_weather", {"city": "Paris"})]),
                         tool("sunny"),
                         assistant("", reasoning_content="Now search events.", tool_calls=[call("search", {"query": "Paris events"})]),
                         tool("Louvre open"),
                         assistant("Go to the Louvre.", reasoning_content="Combine results.")],
    "tools_multi_step_pending": [user("Plan my day."),
                                 assistant("", reasoning_content="Weather first.", tool_calls=[call("get_weather", {"city": "Paris"})]),
                                 tool("sunny")],
    "tools_multi_step_no_reasoning": [user("Plan."), assistant("", tool_calls=[call("get_weather", {"city": "Paris"})]), tool("sunny"),
                                      assistant("Ok.", tool_calls=[call("search", {"query": "x"})]), tool("y")],
    "tools_wrapped_user_response": [user("Plan."), assistant("<think>\nhmm\n</think>\n\n", tool_calls=[call("get_weather", {"city": "Paris"})]),
                                    user("<tool_response>\nsunny\n</tool_response>"), assistant("Done.", reasoning_content="ok")],
    "tools_user_half_wrapped": [user("Plan."), assistant("a", reasoning_content="r1"),
                                user("<tool_response>\nsunny"), assistant("b", reasoning_content="r2")],
    "tools_only_wrapped_users": [user("<tool_response>x</tool_response>"), assistant("a", reasoning_content="r1"),
                                 user("<tool_response>y</tool_response>"), assistant("b", reasoning_content="r2")],
    "tools_history_then_new_query": [user("Weather?"), assistant("", reasoning_content="call it", tool_calls=[call("get_weather", {"city": "Paris"})]),
                                     tool("sunny"), assistant("It is sunny.", reasoning_content="report"), user("Thanks! And tomorrow?")],
    "tools_unicode_description": [SYSTEM, user("Translate 'hello'.")],
    "tools_tool_first_message": [tool("orphan response"), user("hi")],
    "tools_tool_last_then_generation": [user("x"), assistant("", tool_calls=[call("search", {"query": "x", "top_k": 3})]), tool("r1"), tool("r2"), tool("r3")],
    "tools_empty_list": [user("no tools here")],
    "tools_content_parts_in_tool": [user("x"), assistant("", tool_calls=[call("search", {"query": "x"})]),
                                    {"role": "tool", "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}]}],
    "tools_system_parts": [{"role": "system", "content": [{"type": "text", "text": "S1"}, {"type": "text", "text": "S2"}]}, user("q")],
    "tools_think_in_content_with_call": [user("q"), assistant("<think>\nplan\n</think>\n\nCalling.", tool_calls=[call("search", {"query": "q"})]), tool("res")],
}


# Values whose json.dumps(ensure_ascii=False) text (transformers' tojson) is checked one by one.
TOJSON_VALUES = [
    1.0, 1e-7, 1e16, 1e15, 9999999999999998.0, 123.456, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 1e22, 1e21,
    2.5e-05, 0.0001, 0.00011, 100.0, 1234567890123456.7, -1.5e-10, 3.0e100, 1 / 3,
    0, -1, 9007199254740993, -9223372036854775808, 9223372036854775807, 18446744073709551615,
    "".join(chr(c) for c in range(0, 32)) + "\x7f \u2028 \u2029 \"quoted\" back\\slash / é 中文 😀",
    "", [], {}, [None, True, False], {"z": 1, "a": {"y": [1, 2.0], "b": "c"}, "m": []},
]


def tools_for(name):
    if name == "tools_empty_list":
        return []
    if name == "tools_unicode_description":
        return [UNICODE_TOOL, WEATHER_TOOL]
    return TOOLS


def flatten(content):
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content)
    return content


def render(tokenizer, request):
    messages = []
    for m in request["messages"]:
        m = dict(m)
        m["content"] = flatten(m.get("content"))
        messages.append(m)
    kwargs = dict(request.get("chat_template_kwargs", {}))
    return tokenizer.apply_chat_template(
        messages, tools=request.get("tools"), add_generation_prompt=request.get("add_generation_prompt", True),
        tokenize=False, **kwargs)


def main():
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    settings = [
        ("", {}),
        ("thinking_off", {"chat_template_kwargs": {"enable_thinking": False}}),
        ("thinking_on", {"chat_template_kwargs": {"enable_thinking": True}}),
        ("no_generation_prompt", {"add_generation_prompt": False}),
        ("no_generation_prompt_thinking_off", {"add_generation_prompt": False, "chat_template_kwargs": {"enable_thinking": False}}),
    ]
    cases = []
    for group in (CONVERSATIONS, TOOL_CONVERSATIONS):
        for name, messages in group.items():
            # Every conversation with the default settings; most with thinking off; a few with the others.
            chosen = [settings[0], settings[1]]
            if len(cases) % 3 == 0:
                chosen.append(settings[2])
            if len(cases) % 4 == 1 or messages[-1]["role"] == "assistant":
                chosen.append(settings[3])
            if len(cases) % 7 == 2:
                chosen.append(settings[4])
            for suffix, extra in chosen:
                request = {"messages": messages}
                if group is TOOL_CONVERSATIONS:
                    request["tools"] = tools_for(name)
                request.update(extra)
                cases.append({"name": name + ("/" + suffix if suffix else ""), "request": request, "expected": render(tokenizer, request)})
    tojson = [{"value": v, "expected": json.dumps(v, ensure_ascii=False)} for v in TOJSON_VALUES]
    with open("tests/chat/expected_renders.json", "w", encoding="utf-8") as f:
        json.dump({"renders": cases, "tojson": tojson}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(len(cases), "cases,", len(CONVERSATIONS) + len(TOOL_CONVERSATIONS), "conversations")


if __name__ == "__main__":
    main()
