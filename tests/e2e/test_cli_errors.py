"""Every admin command, with Redis or PostgreSQL unreachable, prints one clear line and exits
non-zero; every subcommand and option has help text, and the README names them all."""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from relaygate.cli.parser import build_parser

from ..conftest import free_port
from .procs import BIN, env_for

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def admin_calls(user_id: int, token_id: int) -> dict[str, list[str]]:
    """One valid call of each admin subcommand, on rows that exist."""
    u, t = str(user_id), str(token_id)
    return {
        "create-user": ["--username", "someone"],
        "create-channel": ["--name", "c", "--base-url", "http://127.0.0.1:9", "--key", "k", "--models", "m"],
        "create-token": ["--user-id", u, "--name", "t2", "--remain-quota", "10"],
        "update-token": ["--id", t, "--remain-quota", "20"],
        "show-token": ["--id", t],
        "show-user": ["--id", u],
        "top-up": ["--user-id", u, "--quota", "5"],
        "set-option": ["--key", "ModelRatio", "--value", '{"m": 1}'],
    }  # fmt: skip


def admin_subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    admin = top.choices["admin"]
    sub = next(a for a in admin._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_the_calls_cover_every_admin_command():
    assert set(admin_calls(1, 1)) == set(admin_subcommands())


@pytest.mark.parametrize("down", ["redis", "postgres"])
async def test_admin_commands_with_a_dependency_down(settings, env, down):
    user_id, _ = await env.root_user()
    token = await env.admin.create_token(user_id, "t", remain_quota=100)
    dead = f"127.0.0.1:{free_port()}"
    broken = (
        {"RELAYGATE_REDIS_URL": f"redis://{dead}/0"}
        if down == "redis"
        else {"RELAYGATE_DATABASE_URL": f"postgresql://postgres@{dead}/relaygate"}
    )
    expected = "cannot use Redis" if down == "redis" else "cannot use PostgreSQL"
    for name, args in admin_calls(user_id, token.id).items():
        done = await asyncio.to_thread(
            subprocess.run,
            [str(BIN), "admin", name, *args],
            env=env_for(settings, **broken),
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, (name, done.stdout)
        assert len(lines) == 1 and expected in lines[0] and dead in lines[0], (name, done.stderr)
        assert lines[0].startswith("relaygate: ") and "Traceback" not in done.stderr
        assert done.stdout == "", name


def all_parsers() -> list[tuple[str, argparse.ArgumentParser, str | None]]:
    """(command path, parser, its help line in the parent) for every (sub)command."""
    found: list[tuple[str, argparse.ArgumentParser, str | None]] = []

    def walk(path: str, parser: argparse.ArgumentParser, help_text: str | None) -> None:
        found.append((path, parser, help_text))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in action._choices_actions}
                for name, child in action.choices.items():
                    walk(f"{path} {name}".strip(), child, helps.get(name))

    walk("", build_parser(), "relaygate")
    return found


def test_every_subcommand_and_option_has_help():
    missing = []
    for path, parser, help_text in all_parsers():
        if not help_text:
            missing.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def command_blocks(section: str) -> dict[str, str]:
    """Each ``relaygate ...`` line of the README's code blocks with its indented
    continuation lines, by the command path it starts with (``admin create-token``)."""
    blocks: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        if line.startswith("relaygate "):
            words = line.split()
            path = " ".join(words[1:3]) if words[1] == "admin" else words[1]
            current = path
            blocks[path] = blocks.get(path, "") + line + "\n"
        elif current is not None and line.startswith((" ", "\t")):
            blocks[current] += line + "\n"
        else:
            current = None
    return blocks


def test_readme_lists_every_subcommand_and_option():
    """The README's "Running it" section has a line for every command naming each of its
    options (the one-flag-per-setting options of serve/dev/worker/migrate/admin are named
    by the configuration table, and the section says so)."""
    text = README.read_text()
    section = text[text.index("## Running it") : text.index("## Install and dependencies")]
    blocks = command_blocks(section)
    setting_flags = {f"--{n.replace('_', '-')}" for n in _setting_names()}
    missing = []
    for path, parser, _ in all_parsers():
        if path in ("", "admin"):
            continue
        block = blocks.get(path)
        if block is None:
            missing.append(path)
            continue
        for action in parser._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help") or (flag in setting_flags and path != "mock-upstream"):
                    continue
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", block):
                    missing.append(f"{path} {flag}")
    assert not missing, missing


def _setting_names() -> list[str]:
    from relaygate.config import FIELDS

    return list(FIELDS)


@pytest.mark.parametrize("down", ["redis", "postgres"])
@pytest.mark.parametrize("command", [["serve", "--workers", "2"], ["worker"], ["migrate"]])
async def test_service_commands_with_a_dependency_down(settings, down, command):
    dead = f"127.0.0.1:{free_port()}"
    broken = (
        {"RELAYGATE_REDIS_URL": f"redis://{dead}/0"}
        if down == "redis"
        else {"RELAYGATE_DATABASE_URL": f"postgresql://postgres@{dead}/relaygate"}
    )
    if command == ["migrate"] and down == "redis":
        pytest.skip("migrate does not use Redis")
    done = await asyncio.to_thread(
        subprocess.run,
        [str(BIN), *command, "--port", str(free_port())]
        if command[0] == "serve"
        else [str(BIN), *command],
        env=env_for(settings, **broken),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith("relaygate: cannot use ") and dead in lines[0], (
        done.stderr
    )
