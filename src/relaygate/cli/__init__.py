"""The ``relaygate`` command: parse, build the settings, run one subcommand.

One module per command (serve, worker, migrate, admin, dev); the parser in ``parser``. Every
setting comes from ``RELAYGATE_*`` env vars; flags override them. A bad setting or an
unreachable dependency at start-up ends the program with one clear line, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from relaygate.cli.admin import cmd_admin
from relaygate.cli.dev import cmd_dev, cmd_mock
from relaygate.cli.migrate import cmd_migrate
from relaygate.cli.parser import build_parser
from relaygate.cli.serve import cmd_serve
from relaygate.cli.top import cmd_top
from relaygate.cli.worker import cmd_worker
from relaygate.config import FIELDS, ConfigError, Settings, from_env
from relaygate.redact import RedactingFormatter
from relaygate.serving import Fatal

__all__ = ["COMMANDS", "Fatal", "build_parser", "main", "settings_from_args", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def setup_logging(level: str) -> None:
    """Every record of every logger goes through one handler whose formatter redacts
    credentials (docs/security.md)."""
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    if getattr(args, "with_worker", None):
        overrides["with_worker"] = True
    return from_env(overrides=overrides)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], None]] = {
    "serve": cmd_serve,
    "worker": cmd_worker,
    "migrate": cmd_migrate,
    "dev": cmd_dev,
    "mock-upstream": cmd_mock,
    "admin": cmd_admin,
    "top": cmd_top,
}


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        setup_logging(settings.log_level)
        COMMANDS[args.command](settings, args)
    except (ConfigError, Fatal) as exc:
        print(f"relaygate: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
