"""``relaygate dev`` and ``relaygate mock-upstream``: the only commands that reach into the
dev tooling (relaygate.dev), and only when run, so production commands never load it."""

from __future__ import annotations

import argparse

from relaygate.config import Settings


def cmd_dev(settings: Settings, args: argparse.Namespace) -> None:
    from relaygate.dev.mode import run_dev

    run_dev(settings, mock_port=args.mock_port, serve=not args.no_serve)


def cmd_mock(settings: Settings, args: argparse.Namespace) -> None:
    from relaygate.dev.mock import MockConfig, run

    run(
        args.host,
        args.port,
        MockConfig(
            prompt_tokens=args.prompt_tokens,
            completion_tokens=args.completion_tokens,
            stream_chunks=args.stream_chunks,
            chunk_delay=args.chunk_delay,
        ),
    )
