#!/usr/bin/env python3
"""qwen-serve's /openapi.json, and schemathesis fuzzing the server from it (docs/server.md, "Tests").

    test_openapi_schemathesis.py QWEN_SERVE MODEL_DIR [--sanitized]

Starts qwen-serve on 127.0.0.1 with the dense tied golden checkpoint and a short context, checks
that /openapi.json describes exactly the routes the server answers, then runs schemathesis
(examples, coverage and fuzzing phases, positive and negative data, a fixed seed, a bounded number
of examples per route) with the checks the issue asks for: no 5xx, and every response's status
code, content type and body as the document describes. Afterwards the server must still answer
and exit 0 on SIGINT. Prints SKIPPED and exits 0 when schemathesis is missing (scripts/setup
installs it in .venv).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

BIN = os.path.dirname(sys.executable)
SCHEMATHESIS = os.path.join(BIN, "schemathesis") if os.path.exists(os.path.join(BIN, "schemathesis")) else shutil.which("schemathesis")
if not SCHEMATHESIS:
    print("SKIPPED: schemathesis is not installed (run scripts/setup)")
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_openai_server import Server  # noqa: E402 (after the skip check)

# Every route qwen-serve answers (examples/openai_server/server.hpp), with its method.
ROUTES = {("/v1/chat/completions", "post"), ("/v1/completions", "post"), ("/tokenize", "post"), ("/detokenize", "post"),
          ("/v1/models", "get"), ("/v1/models/{model}", "get"), ("/health", "get"), ("/metrics", "get"), ("/version", "get"),
          ("/openapi.json", "get")}
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def main():
    exe, model = sys.argv[1], sys.argv[2]
    examples = "8" if "--sanitized" in sys.argv[3:] else "25"
    server = Server(exe, model, "--served-model-name", "qwen-test", "--threads", "2", "--max-model-len", "96",
                    "--kv-cache-memory", "4M")
    failures = []
    try:
        status, headers, body = server.request("GET", "/openapi.json")
        doc = json.loads(body)
        described = {(path, method) for path, item in doc["paths"].items() for method in item}
        if status != 200 or not headers.get("content-type", "").startswith("application/json"):
            failures.append(f"/openapi.json answered {status} {headers.get('content-type')}")
        if doc.get("openapi") != "3.0.3" or not doc.get("info", {}).get("version"):
            failures.append(f"/openapi.json: openapi {doc.get('openapi')!r}, info {doc.get('info')!r}")
        # The served model's facts, as bounds (config.json read here, independently of the server).
        with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
            vocab = json.load(f)["vocab_size"]
        schemas = doc["components"]["schemas"]
        if schemas["SamplingFields"]["properties"]["model"].get("enum") != ["qwen-test", None]:
            failures.append(f"model enum {schemas['SamplingFields']['properties']['model'].get('enum')!r}, expected ['qwen-test', None]")
        if schemas["TokenIds"]["items"].get("maximum") != vocab - 1:
            failures.append(f"token id maximum {schemas['TokenIds']['items'].get('maximum')!r}, expected {vocab - 1}")
        if schemas["SamplingFields"]["properties"]["max_tokens"].get("maximum") != 96:
            failures.append(f"max_tokens maximum {schemas['SamplingFields']['properties']['max_tokens'].get('maximum')!r}, expected 96")
        if described != ROUTES:
            failures.append(f"/openapi.json describes {sorted(described ^ ROUTES)} differently from the server's routes")

        url = f"http://127.0.0.1:{server.port}/openapi.json"
        command = [SCHEMATHESIS, "--no-color", "run", url, "--checks", CHECKS, "--max-examples", examples, "--seed", "20261202",
                   "--phases", "examples,coverage,fuzzing", "--mode", "all", "--workers", "2", "--request-timeout", "60",
                   "--generation-database", "none", "--suppress-health-check", "all"]
        print("$ " + " ".join(command), flush=True)
        with tempfile.TemporaryDirectory() as scratch:  # schemathesis keeps a cache in its working directory
            run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, cwd=scratch)
        print(run.stdout[-12000:], flush=True)
        if run.returncode != 0:
            failures.append(f"schemathesis exited with {run.returncode}")
        if server.request("GET", "/health")[0] != 200:
            failures.append("the server stopped answering /health after the fuzzing")
        code = server.stop(signal.SIGINT)
        if code != 0:
            failures.append(f"qwen-serve exited with {code} after SIGINT")
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    if failures:
        print("server output (last lines):\n" + "".join(server.output[-30:]))
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("openapi.json and schemathesis: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
