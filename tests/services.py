"""Make sure Redis and PostgreSQL are reachable for the test suite, then run a command.

``python -m tests.services -- pytest -q``: reuses the servers named by
RELAYGATE_TEST_REDIS_URL / RELAYGATE_TEST_PG_URL (default: this machine's 127.0.0.1:6379 and
127.0.0.1:5432), or starts project-local ones under .relaygate/ (installing them with apt-get
when missing), exports the URLs actually in use, finds (or apt-get installs) headless Chromium
and chromedriver for tests/browser, and execs the command. Tests create and drop
their own database and use their own Redis key prefix, so nobody's data is touched.
"""

from __future__ import annotations

import os
import pathlib
import sys

from relaygate.dev.services import DevStackError, ensure_postgres, ensure_redis
from relaygate.dev.services.browser import ensure_browser

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: list[str]) -> None:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    data_dir = pathlib.Path(os.environ.get("RELAYGATE_DATA_DIR", ".relaygate")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    redis_url = ensure_redis(os.environ.get("RELAYGATE_TEST_REDIS_URL", DEFAULT_REDIS), data_dir)
    pg_url = ensure_postgres(os.environ.get("RELAYGATE_TEST_PG_URL", DEFAULT_PG), data_dir)
    os.environ["RELAYGATE_TEST_REDIS_URL"] = redis_url
    os.environ["RELAYGATE_TEST_PG_URL"] = pg_url
    try:  # the console's browser tests (tests/browser) skip with this reason otherwise
        browser, driver = ensure_browser(print)
        os.environ["RELAYGATE_TEST_CHROMIUM"] = str(browser)
        os.environ["RELAYGATE_TEST_CHROMEDRIVER"] = str(driver)
    except DevStackError as exc:
        os.environ["RELAYGATE_TEST_NO_BROWSER"] = str(exc)
    if argv:
        os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
