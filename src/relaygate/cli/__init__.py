"""The ``relaygate`` command: parse, build the settings, run one subcommand.

One module per command (serve, worker, migrate, admin, dev); the parser in ``parser``. Every
setting comes from ``RELAYGATE_*`` env vars; flags override them. A bad setting or an
unreachable dependency at start-up ends the program with one clear line, not a traceback.
"""

from __future__ import annotations

import argparse
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
from relaygate.logfmt import setup_logging
from relaygate.serving import Fatal

__all__ = ["COMMANDS", "Fatal", "build_parser", "main", "settings_from_args", "setup_logging"]


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
        setup_logging(settings.log_level, settings.log_format)
        COMMANDS[args.command](settings, args)
    except (ConfigError, Fatal) as exc:
        print(f"relaygate: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
