"""``relaygate top``: the live quota view (docs/operators.md "relaygate top").

Why curses: the view is one table redrawn in place, which the standard library's curses
does in a few dozen lines, in any terminal (and under tmux, where the tests drive it); a
rendering library would add a dependency for nothing the table needs. The refresh loop
reads Redis only (``relaygate.top``); PostgreSQL is asked once, at start-up, for the names
of tokens and users (``--no-names`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import curses
import sys
import time
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relaygate.config import Settings
from relaygate.keys import KeyScheme
from relaygate.serving import Fatal
from relaygate.top import (
    SORT_KEYS,
    Ledger,
    Rates,
    Sample,
    masters,
    name_rows,
    ordered,
    summary,
    take_sample,
)

Names = tuple[dict[int, str], dict[int, str]]


def cmd_top(settings: Settings, args: argparse.Namespace) -> None:
    if args.interval <= 0:
        raise Fatal("--interval must be a positive number of seconds")
    if args.sort not in SORT_KEYS:
        raise Fatal(f"--sort must be one of {', '.join(SORT_KEYS)}")
    if args.once:
        print(asyncio.run(_once(settings, args)).decode())
        return
    if not sys.stdout.isatty():
        raise Fatal("relaygate top needs a terminal (use --once --json for scripts)")
    curses.wrapper(lambda screen: asyncio.run(_live(screen, settings, args)))


async def load_names(settings: Settings) -> Names:
    """Token and user names, once; a PostgreSQL that cannot be reached leaves them blank."""
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"relaygate top: no names ({exc})", file=sys.stderr)
        return {}, {}
    try:
        toks = await conn.fetch("SELECT id, name FROM tokens")
        users = await conn.fetch("SELECT id, username FROM users")
    finally:
        await conn.close()
    return {r["id"]: r["name"] for r in toks}, {r["id"]: r["username"] for r in users}


class Source:
    """The Redis side: the masters to scan, and the samples taken so far."""

    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        self.keys = KeyScheme(settings.key_prefix, settings.shards)
        self.redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.max_keys = int(args.max_keys)
        self.nodes: list[Redis] = []
        self.rates = Rates()

    async def sample(self) -> Sample:
        try:
            if not self.nodes:
                self.nodes = await masters(self.redis)
            s = await take_sample(self.nodes, self.keys, self.max_keys)
        except RedisError as exc:
            raise Fatal(f"cannot read Redis at {self.redis_url_safe()}: {exc}") from None
        self.rates.add(s)
        return s

    def redis_url_safe(self) -> str:
        kw = self.redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    async def close(self) -> None:
        for node in self.nodes:
            if node is not self.redis:
                await node.aclose()
        await self.redis.aclose()


def view(sample: Sample, rates: Rates, args: argparse.Namespace, names: Names) -> dict[str, Any]:
    name_rows(sample, *names)
    return {
        "at": sample.at,
        "sort": args.sort,
        "filter": args.filter,
        "summary": summary(sample, rates),
        "tokens": [r.as_json() for r in ordered(sample.tokens.values(), args.sort, args.filter)],
        "users": [r.as_json() for r in ordered(sample.users.values(), args.sort, args.filter)],
    }


async def _once(settings: Settings, args: argparse.Namespace) -> bytes:
    """Two samples ``--interval`` apart (the rates need two), printed as JSON or text."""
    names: Names = ({}, {}) if args.no_names else await load_names(settings)
    src = Source(settings, args)
    try:
        await src.sample()
        await asyncio.sleep(args.interval)
        sample = await src.sample()
    finally:
        await src.close()
    out = view(sample, src.rates, args, names)
    if args.json:
        return orjson.dumps(out, option=orjson.OPT_INDENT_2)
    return "\n".join(render_lines(out, args, 200, 10**6)).encode()


HELP = "q quit  s sort  / filter  u tokens/users  ? help"
COLUMNS = (
    ("ID", 7, "id"),
    ("USER", 6, "user"),
    ("NAME", 14, "name"),
    ("Q/MIN", 11, "rate"),
    ("REQ/S", 7, "rps"),
    ("LIMIT", 13, "limit"),
    ("USED", 13, "used"),
    ("REMAINING", 13, "remaining"),
    ("TODAY", 12, "today"),
    ("MONTH", 12, "month"),
    ("INFL", 5, "inflight"),
)


def _cell(row: dict[str, Any], attr: str, width: int) -> str:
    value = row[attr]
    if attr == "remaining" and value is None:
        text = "unlimited"
    elif isinstance(value, float):
        text = f"{value:.1f}"
    else:
        text = str(value)
    return text[:width].rjust(width) if attr != "name" else text[:width].ljust(width)


def render_lines(
    out: dict[str, Any], args: argparse.Namespace, width: int, height: int
) -> list[str]:
    s = out["summary"]
    kind = getattr(args, "show", "tokens")
    refusals = "  ".join(
        f"{name} {v['total']} ({v['per_min']:.1f}/min)" for name, v in s["refusals"].items()
    )
    lines = [
        f"relaygate top - {time.strftime('%H:%M:%S', time.localtime(out['at']))}  "
        f"tokens {s['tokens']}  users {s['users']}  quota/min {s['quota_per_min']:.1f}  "
        f"req/s {s['requests_per_second']:.1f}  in-flight {s['inflight']}"
        + ("  (scan truncated)" if s["truncated"] else ""),
        f"refusals: {refusals or 'none'}",
        f"{kind} by {out['sort']}"
        + (f"  filter: {out['filter']}" if out["filter"] else "")
        + f"   [{HELP}]",
        " ".join(name.rjust(w) if attr != "name" else name.ljust(w) for name, w, attr in COLUMNS),
    ]
    for row in out[kind][: max(0, height - len(lines))]:
        lines.append(" ".join(_cell(row, attr, w) for _, w, attr in COLUMNS))
    return [line[:width] for line in lines]


async def _live(screen: Any, settings: Settings, args: argparse.Namespace) -> None:
    curses.curs_set(0)
    screen.nodelay(True)
    names: Names = ({}, {}) if args.no_names else await load_names(settings)
    args.show = "tokens"
    src = Source(settings, args)
    try:
        while True:
            sample = await src.sample()
            _draw(screen, view(sample, src.rates, args, names), args)
            deadline = time.monotonic() + args.interval
            while time.monotonic() < deadline:
                if _key(screen, args):
                    return
                await asyncio.sleep(0.05)
    finally:
        await src.close()


def _draw(screen: Any, out: dict[str, Any], args: argparse.Namespace) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    for y, line in enumerate(render_lines(out, args, width - 1, height)):
        screen.addstr(y, 0, line, curses.A_REVERSE if y == 3 else curses.A_NORMAL)
    screen.refresh()


def _key(screen: Any, args: argparse.Namespace) -> bool:
    """Handle one key press; True to quit."""
    ch = screen.getch()
    if ch == -1:
        return False
    if ch in (ord("q"), 27):
        return True
    if ch == ord("s"):
        args.sort = SORT_KEYS[(SORT_KEYS.index(args.sort) + 1) % len(SORT_KEYS)]
    elif ch == ord("u"):
        args.show = "users" if args.show == "tokens" else "tokens"
    elif ch == ord("/"):
        args.filter = _prompt(screen, "filter (user:N, token:N, id or name): ")
    return False


def _prompt(screen: Any, label: str) -> str:
    height, _ = screen.getmaxyx()
    screen.nodelay(False)
    curses.echo()
    curses.curs_set(1)
    screen.addstr(height - 1, 0, label)
    screen.clrtoeol()
    raw = screen.getstr(height - 1, len(label), 60)
    curses.noecho()
    curses.curs_set(0)
    screen.nodelay(True)
    return raw.decode(errors="replace").strip() if isinstance(raw, bytes) else str(raw)


__all__ = ["Ledger", "cmd_top", "render_lines"]
