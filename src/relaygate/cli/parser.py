"""The argument parser: one small function per subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from relaygate.config import FIELDS

DESCRIPTION = """``relaygate`` command line: serve, worker, migrate, dev, mock-upstream, admin, top.

Every setting comes from ``RELAYGATE_*`` env vars; flags override them. A bad setting or an
unreachable dependency at start-up ends the program with one clear line, not a traceback.
Admin commands print one JSON object each, for scripting.
"""

COMMON = ("database_url", "redis_url", "log_level", "key_prefix", "shards")
# ``serve`` and ``dev`` take a flag for every setting (``--with-worker`` is their own switch)
# but the worker's metrics port; ``worker`` for every setting but the relay's listening ones
# (``--host`` stays: its metrics listener binds it).
_WORKER_ONLY = ("worker_metrics_port",)
SERVE = tuple(name for name in FIELDS if name != "with_worker" and name not in _WORKER_ONLY)
_LISTENING = ("port", "workers", "trusted_proxies", "cors_origins", "api_cors_origins")
WORKER = (*(n for n in SERVE if n not in _LISTENING), *_WORKER_ONLY)

# What ``add_subparsers()`` returns; argparse keeps its class private.
Subparsers = Any


def add_setting_flags(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        var, _ = FIELDS[name]
        p.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=None, help=f"overrides {var}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaygate", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_serve, _worker, _migrate, _dev, _mock_upstream, _admin, _top):
        add(sub)
    return parser


def _serve(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the relay (and optionally the flusher)")
    add_setting_flags(p, SERVE)
    p.add_argument(
        "--with-worker", action="store_true", default=None, help="run the flusher in-process"
    )


def _worker(sub: Subparsers) -> None:
    p = sub.add_parser(
        "worker",
        help="run the usage flusher (and, with --worker-metrics-port, its /metrics)",
    )
    add_setting_flags(p, WORKER)


def _migrate(sub: Subparsers) -> None:
    p = sub.add_parser("migrate", help="apply database migrations")
    add_setting_flags(p, COMMON)


def _dev(sub: Subparsers) -> None:
    p = sub.add_parser("dev", help="local stack: services, migrate, seed, serve")
    add_setting_flags(p, SERVE)
    p.add_argument(
        "--mock-port", type=int, default=3001, help="port of the mock upstream (default 3001)"
    )
    p.add_argument("--no-serve", action="store_true", help="set up and seed, then exit")


def _mock_upstream(sub: Subparsers) -> None:
    p = sub.add_parser("mock-upstream", help="an OpenAI-compatible fake upstream")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=3001, help="listen port (default 3001)")
    p.add_argument("--prompt-tokens", type=int, default=10, help="usage.prompt_tokens it reports")
    p.add_argument(
        "--completion-tokens", type=int, default=20, help="usage.completion_tokens it reports"
    )
    p.add_argument("--stream-chunks", type=int, default=5, help="content chunks per stream")
    p.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")


def _top(sub: Subparsers) -> None:
    from relaygate.top import DEFAULT_MAX_KEYS, SORT_KEYS

    p = sub.add_parser(
        "top",
        help="live view of the Redis quota ledger (tokens and users by spend rate)",
        description="Keys: q quit, s next sort key, / filter, u tokens/users. Reads Redis "
        "only; PostgreSQL once at start for names.",
    )
    add_setting_flags(p, COMMON)
    p.add_argument(
        "--sort", default="rate", help=f"order by: {', '.join(SORT_KEYS)} (default rate)"
    )
    p.add_argument(
        "--filter", default="", help="only rows matching user:N, token:N, an id, or part of a name"
    )
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    p.add_argument("--once", action="store_true", help="take two samples, print, exit")
    p.add_argument("--json", action="store_true", help="with --once: print JSON")
    p.add_argument(
        "--max-keys",
        type=int,
        default=DEFAULT_MAX_KEYS,
        help=f"keys one refresh may SCAN, all masters together (default {DEFAULT_MAX_KEYS})",
    )
    p.add_argument(
        "--no-names", action="store_true", help="do not read names from PostgreSQL at start"
    )


def _admin(sub: Subparsers) -> None:
    p = sub.add_parser("admin", help="management commands printing JSON")
    asub = p.add_subparsers(dest="admin_command", required=True)
    for add in (
        _create_user,
        _create_channel,
        _create_token,
        _update_token,
        _show_token,
        _show_user,
        _top_up,
        _set_option,
    ):
        add(asub)


def _admin_command(asub: Subparsers, name: str, **kw: Any) -> argparse.ArgumentParser:
    """An admin subcommand's parser, with the setting flags every one of them takes."""
    a: argparse.ArgumentParser = asub.add_parser(name, **kw)
    add_setting_flags(a, COMMON)
    return a


def _create_user(asub: Subparsers) -> None:
    a = _admin_command(
        asub, "create-user", help="create a user; prints its access token (shown this once)"
    )
    a.add_argument("--username", required=True, help="login name, unique")
    a.add_argument(
        "--role", choices=("user", "admin", "root"), default="user", help="default: user"
    )
    a.add_argument("--quota", type=int, default=0, help="starting balance (500000 = $1)")
    a.add_argument("--group", default="default", help="pricing/channel group (default: default)")
    a.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the login password (8 to 20 characters) from the first line of stdin "
        "(not a flag: command lines are visible to every local user)",
    )


def _create_channel(asub: Subparsers) -> None:
    a = _admin_command(asub, "create-channel", help="add an upstream channel")
    a.add_argument("--name", required=True, help="a label for operators")
    a.add_argument("--base-url", required=True, help="upstream root, e.g. https://api.openai.com")
    a.add_argument("--key", required=True, help="the upstream API key (never printed or logged)")
    a.add_argument("--models", required=True, help="comma list of models it serves")
    a.add_argument("--group", default="default", help="comma list of groups it serves")
    a.add_argument("--priority", type=int, default=0, help="higher is tried first (default 0)")
    a.add_argument(
        "--weight", type=int, default=1, help="share among channels of one priority (default 1)"
    )
    a.add_argument(
        "--type",
        type=int,
        default=1,
        dest="channel_type",
        help="New API channel type: 1 OpenAI-compatible (default), 14 Anthropic, 24 Gemini",
    )


def _create_token(asub: Subparsers) -> None:
    a = _admin_command(
        asub, "create-token", help="create a relay key for a user; prints it (shown this once)"
    )
    a.add_argument("--user-id", type=int, required=True, help="the owning user")
    a.add_argument("--name", required=True, help="a label for the key")
    q = a.add_mutually_exclusive_group()
    q.add_argument("--remain-quota", type=int, default=0, help="the key's own limit (default 0)")
    q.add_argument(
        "--unlimited", action="store_true", help="no key limit (the user's balance still applies)"
    )
    a.add_argument("--models", default=None, help="comma list of allowed models (default: any)")
    a.add_argument("--allow-ips", default=None, help="comma list of IPs/CIDRs (default: any)")
    a.add_argument("--expires", type=int, default=-1, help="unix time it expires; -1 = never")
    a.add_argument("--group", default="", help="use this group instead of the user's")
    a.add_argument("--daily-quota", type=int, default=0, help="spend per UTC day; 0 = no limit")
    a.add_argument("--monthly-quota", type=int, default=0, help="spend per UTC month; 0 = no limit")


def _update_token(asub: Subparsers) -> None:
    a = _admin_command(asub, "update-token", help="change a token (status, quota, models, ips)")
    a.add_argument("--id", type=int, required=True, help="the token")
    a.add_argument("--status", type=int, choices=(1, 2), default=None, help="1 enabled, 2 disabled")
    a.add_argument("--remain-quota", type=int, default=None, help="set the key's limit")
    a.add_argument("--add-quota", type=int, default=None, help="raise the key's limit by this")
    a.add_argument("--models", default=None, help="comma list; empty string lifts the limit")
    a.add_argument("--allow-ips", default=None, help="comma list; empty string lifts the limit")
    a.add_argument("--expires", type=int, default=None, help="unix time it expires; -1 = never")
    a.add_argument("--delete", action="store_true", help="delete the token instead")


def _show_token(asub: Subparsers) -> None:
    a = _admin_command(
        asub, "show-token", help="live quota figures of a token (Redis) next to PostgreSQL's"
    )
    a.add_argument("--id", type=int, required=True, help="the token")


def _show_user(asub: Subparsers) -> None:
    a = _admin_command(
        asub, "show-user", help="live quota figures of a user (Redis) next to PostgreSQL's"
    )
    a.add_argument("--id", type=int, required=True, help="the user")


def _top_up(asub: Subparsers) -> None:
    a = _admin_command(asub, "top-up", help="add quota to a user's balance")
    a.add_argument("--user-id", type=int, required=True, help="the user")
    a.add_argument("--quota", type=int, required=True, help="quota to add (500000 = $1)")
    a.add_argument(
        "--op-id", default=None, help="operation id: a re-run with the same id credits once"
    )


def _set_option(asub: Subparsers) -> None:
    a = _admin_command(
        asub, "set-option", help="set a New API option (ModelRatio, GroupRatio, ...)"
    )
    a.add_argument("--key", required=True, help="option name")
    a.add_argument("--value", required=True, help="its value (JSON for the ratio options)")
