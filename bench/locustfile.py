"""Locust scenarios against a running relaygate (`make bench-locust` sets everything up).

Users pick, per task (weights in brackets):
  * non-stream chat [10] on a mix of models (gpt-4o-mini, gpt-3.5-turbo), many tokens;
  * stream chat [6] (gpt-4o, gpt-4o-2024-08-06), reading the SSE answer to the end and
    checking it ends with ``data: [DONE]``;
  * refused, bad key [1]: must be 401 with an OpenAI error body;
  * refused, exhausted quota [1]: a token whose quota cannot cover one request, must be 429
    ``insufficient_quota``.
A refusal with the expected status counts as a success (its own row in the report); any
other status is a failure.

Tokens come from the JSON file in LOCUST_TOKENS_FILE (written by bench/run_locust.py):
``{"keys": [...], "exhausted": [...]}``.
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, between, task

TOKENS_FILE = os.environ.get("LOCUST_TOKENS_FILE", "bench/results/locust_tokens.json")
with open(TOKENS_FILE) as fh:
    _TOKENS = json.load(fh)
KEYS: list[str] = _TOKENS["keys"]
EXHAUSTED: list[str] = _TOKENS["exhausted"]
NS_MODELS = ("gpt-4o-mini", "gpt-3.5-turbo")
STREAM_MODELS = ("gpt-4o", "gpt-4o-2024-08-06")
PROMPTS = (
    "Say hello in five words.",
    "Summarize the plot of Hamlet in one sentence.",
    "List three prime numbers.",
    "Translate 'good morning' into French, German and Spanish.",
)
PATH = "/v1/chat/completions"


def _body(model: str, stream: bool) -> bytes:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
        "max_tokens": random.choice((16, 64, 256)),
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


class RelayUser(FastHttpUser):
    wait_time = between(0, 0.01)

    @task(10)
    def chat(self) -> None:
        model = random.choice(NS_MODELS)
        with self.client.post(
            PATH,
            data=_body(model, False),
            headers=_auth(random.choice(KEYS)),
            name=f"chat {model}",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
            elif b'"usage"' not in (resp.content or b""):
                resp.failure("no usage in the answer")

    @task(6)
    def chat_stream(self) -> None:
        model = random.choice(STREAM_MODELS)
        with self.client.post(
            PATH,
            data=_body(model, True),
            headers=_auth(random.choice(KEYS)),
            name=f"stream {model}",
            catch_response=True,
        ) as resp:
            content = resp.content or b""
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {content[:200]!r}")
            elif not content.rstrip().endswith(b"data: [DONE]"):
                resp.failure("stream did not end with [DONE]")
            elif b'"choices":[]' in content:
                resp.failure(
                    "the usage chunk the relay asked for leaked to a client that did not ask"
                )

    @task(1)
    def bad_key(self) -> None:
        with self.client.post(
            PATH,
            data=_body("gpt-4o-mini", False),
            headers=_auth("sk-" + "x" * 48),
            name="refused: bad key (401)",
            catch_response=True,
        ) as resp:
            if resp.status_code == 401 and b'"error"' in (resp.content or b""):
                resp.success()
            else:
                resp.failure(f"expected 401, got {resp.status_code}")

    @task(1)
    def exhausted(self) -> None:
        with self.client.post(
            PATH,
            data=_body("gpt-4o-mini", False),
            headers=_auth(random.choice(EXHAUSTED)),
            name="refused: exhausted quota (429)",
            catch_response=True,
        ) as resp:
            if resp.status_code == 429 and b"insufficient_quota" in (resp.content or b""):
                resp.success()
            else:
                resp.failure(f"expected 429 insufficient_quota, got {resp.status_code}")
