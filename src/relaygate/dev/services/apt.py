"""Finding service binaries, and installing missing ones with apt-get."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
from collections.abc import Iterable, Sequence

from relaygate.dev.services.common import DevStackError, Log, last_line, run_command


def find_binary(name: str, extra_dirs: Iterable[pathlib.Path] = ()) -> pathlib.Path | None:
    """``name`` on PATH, else in one of ``extra_dirs`` (first hit wins)."""
    hit = shutil.which(name)
    if hit:
        return pathlib.Path(hit)
    for directory in extra_dirs:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def install_commands(
    packages: Sequence[str], *, euid: int, sudo: str | None
) -> list[list[str]] | None:
    """The apt-get commands that install ``packages``, or None when we lack the rights.

    ``env DEBIAN_FRONTEND=...`` rather than an environment variable so it survives ``sudo``.
    """
    if euid == 0:
        prefix: list[str] = []
    elif sudo:
        prefix = [sudo]
    else:
        return None
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    return [
        [*prefix, *env, "apt-get", "update"],
        [*prefix, *env, "apt-get", "install", "-y", "--no-install-recommends", *packages],
    ]


def install(what: str, packages: Sequence[str], hint: str, log: Log) -> None:
    """Install Debian packages or fail with one line naming the manual alternative."""
    cmds = install_commands(packages, euid=os.geteuid(), sudo=shutil.which("sudo"))
    if shutil.which("apt-get") is None or cmds is None:
        why = "no apt-get" if shutil.which("apt-get") is None else "not root and no sudo"
        raise DevStackError(
            f"{what}: {', '.join(packages)} is not installed and cannot be installed "
            f"automatically ({why}); install it yourself or {hint}"
        )
    log(f"{what}: installing {' '.join(packages)} with apt-get (one-time)")
    for cmd in cmds:
        code, out = run_command(cmd, timeout=1800)
        if code != 0:
            raise DevStackError(
                f"{what}: `{shlex.join(cmd)}` failed ({last_line(out)}); "
                f"install {' '.join(packages)} yourself or {hint}"
            )
