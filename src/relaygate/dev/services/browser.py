"""Headless Chromium and its WebDriver for the console's browser tests (Debian packages).

Found on PATH (``chromium`` + ``chromedriver``, or the names other distributions use), else
installed with apt-get like Redis and PostgreSQL are; ``RELAYGATE_TEST_CHROMIUM`` and
``RELAYGATE_TEST_CHROMEDRIVER`` name other binaries. The tests skip the browser suite with
the reason when neither works, rather than failing every other test.
"""

from __future__ import annotations

import os
import pathlib

from relaygate.dev.services.apt import find_binary, install
from relaygate.dev.services.common import DevStackError, Log

PACKAGES = ("chromium", "chromium-driver")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
LIB_DIRS = (pathlib.Path("/usr/lib/chromium"),)


def _first(names: tuple[str, ...]) -> pathlib.Path | None:
    for name in names:
        hit = find_binary(name, LIB_DIRS)
        if hit is not None:
            return hit
    return None


def find_browser() -> tuple[pathlib.Path, pathlib.Path] | None:
    """(browser, driver) from the environment or PATH, or None."""
    env_browser = os.environ.get("RELAYGATE_TEST_CHROMIUM")
    env_driver = os.environ.get("RELAYGATE_TEST_CHROMEDRIVER")
    browser = pathlib.Path(env_browser) if env_browser else _first(BROWSERS)
    driver = pathlib.Path(env_driver) if env_driver else _first(DRIVERS)
    if browser is None or driver is None:
        return None
    return browser, driver


def ensure_browser(log: Log) -> tuple[pathlib.Path, pathlib.Path]:
    """The binaries, installing Debian's ``chromium`` and ``chromium-driver`` if missing."""
    found = find_browser()
    if found is None:
        install("browser tests", PACKAGES, "set RELAYGATE_TEST_CHROMIUM/_CHROMEDRIVER", log)
        found = find_browser()
    if found is None:
        raise DevStackError("browser tests: chromium or chromedriver still missing after apt-get")
    return found
