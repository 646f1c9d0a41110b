"""Shared test fixtures. Real data lives in ../shared/data beside the project root (read-only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; the suite requires it (CI always has it beside the clone)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"real test data not found at {SHARED_DATA} (expected ../shared beside the repo)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's Chromium for the browser tests, installed with apt-get on first use when
    missing and the suite runs as root (a fresh machine); otherwise a failure saying what to run."""
    from tests.chromium import ChromiumUnavailable, ensure_chromium

    try:
        return ensure_chromium()
    except ChromiumUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def phantom_cache(tmp_path_factory) -> Iterator[Path]:
    """Builds without --src keep the phantom in a per-session cache, never in the user's
    ~/.cache (tests that check the cache itself pass --phantom-cache)."""
    import os

    path = tmp_path_factory.mktemp("phantom-cache")
    old = os.environ.get("PETCTIQA_PHANTOM_CACHE")
    os.environ["PETCTIQA_PHANTOM_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PETCTIQA_PHANTOM_CACHE", None)
    else:
        os.environ["PETCTIQA_PHANTOM_CACHE"] = old
