from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaygate.config import Settings

from .procs import Stack


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(settings, tmp_path)
    try:
        yield s
    finally:
        s.close()
