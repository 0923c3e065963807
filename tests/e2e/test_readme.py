"""The README's runnable shell blocks work as written (issue 14: "every README command works
as written in a fresh clone").

Blocks meant to run carry a ``<!-- readme-test -->`` line right before their fence. They
run in order, in one bash (``set -euo pipefail``), in an empty folder that has only the
project's ``.venv`` (as a fresh clone after ``make dev`` would), with a minimal environment
(no ``relaygate`` on ``PATH``: the README's own ``export PATH`` line must provide it), a
relay and mock upstream this test starts, and the test's own database and Redis key prefix.
The one rewrite: the README's fixed ports (3000 relay, 3001 mock) become the free ports of
this run.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest

from ..conftest import free_port
from .procs import Stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = "<!-- readme-test -->"
BLOCK = re.compile(re.escape(MARKER) + r"\n```(?:bash|sh)\n(.*?)\n```", re.S)


def runnable_blocks(text: str) -> list[str]:
    blocks = BLOCK.findall(text)
    markers = sum(1 for line in text.splitlines() if line.strip() == MARKER)
    assert len(blocks) == markers, "a readme-test marker not right before a ```bash fence"
    return blocks


def json_documents(text: str) -> list[dict]:
    """The JSON objects printed one after another (curl adds no newline after a body)."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (at := text.find("{", at)) >= 0:
        doc, at = decoder.raw_decode(text, at)
        found.append(doc)
    return found


def test_markers_are_found():
    assert len(runnable_blocks(README.read_text())) >= 2


async def test_readme_shell_blocks_run_as_written(settings, stack: Stack, tmp_path: Path):
    mock = await stack.mock(free_port())
    relay = await stack.relay(free_port(), with_worker=True)
    script = "\n".join(runnable_blocks(README.read_text()))
    script = script.replace("127.0.0.1:3000", f"127.0.0.1:{relay.port}")
    script = script.replace("127.0.0.1:3001", f"127.0.0.1:{mock.port}")
    work = tmp_path / "clone"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "RELAYGATE_DATABASE_URL": settings.database_url,
        "RELAYGATE_REDIS_URL": settings.redis_url,
        "RELAYGATE_KEY_PREFIX": settings.key_prefix,
        "RELAYGATE_SHARDS": str(settings.shards),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", f"set -euo pipefail\n{script}"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{done.stderr}\n--- stdout:\n{done.stdout}"
    # Every JSON answer printed: no relay error, no New API business error.
    answers = json_documents(done.stdout)
    assert answers, done.stdout
    for answer in answers:
        assert "error" not in answer and answer.get("success", True) is True, answer
    assert any("choices" in a for a in answers)
    assert "Traceback" not in done.stderr


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_stay_inside_the_repository():
    """A fresh clone has every file the README and docs/ link to (no ../shared/ links)."""
    broken = []
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{doc.name}: {target}")
    assert not broken, broken
