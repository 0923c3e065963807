"""The load of tests/e2e/test_top_locust.py: a few locust users sending non-stream chats
with one token (RG_LOCUST_KEY), at a modest pace so the 2-vCPU test machine keeps room for
the relay and ``relaygate top``. Any status but 200 is a failure in locust's report."""

from __future__ import annotations

import json
import os

from locust import FastHttpUser, between, task

KEY = os.environ["RG_LOCUST_KEY"]
BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
).encode()
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


class TopLoad(FastHttpUser):
    wait_time = between(0.02, 0.05)

    @task
    def chat(self) -> None:
        with self.client.post(
            "/v1/chat/completions", data=BODY, headers=HEADERS, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
