"""Debian's Chromium for the browser tests: found, or installed with apt-get when we may.

The README's test command must pass on a fresh machine (Python and apt only), so the first
browser test of a session installs the ``chromium`` package itself when it is missing and the
suite runs as root with apt-get available (``.ci/run`` may have installed it already). Anywhere
else the test fails with the one command that fixes it, never a bare traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

CHROMIUM_PATHS = ("/usr/bin/chromium",)
APT_TIMEOUT_S = 900
"""A fresh container downloads about 115 packages; slow mirrors need minutes."""

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


class ChromiumUnavailable(RuntimeError):
    """Chromium is missing and could not be installed; the message says what to run."""


def find_chromium(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The Debian Chromium executable, or None."""
    for path in CHROMIUM_PATHS:
        if Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return which("chromium")


def _apt(args: Sequence[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        list(args), env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
    )


def ensure_chromium(
    which: Callable[[str], str | None] = shutil.which,
    euid: int | None = None,
    run: Runner = _apt,
    log: Callable[[str], None] = print,
) -> str:
    """Path of Debian's Chromium, running ``apt-get update`` + ``apt-get install -y chromium``
    first when it is missing and we are root; raises :class:`ChromiumUnavailable` otherwise."""
    found = find_chromium(which)
    if found:
        return found
    fix = "apt-get update && apt-get install -y chromium"
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise ChromiumUnavailable(
            "Debian's chromium is required for the browser tests and the suite is not running "
            f"as root, so it cannot install it: run `sudo sh -c '{fix}'` once"
        )
    if which("apt-get") is None:
        raise ChromiumUnavailable(
            "Debian's chromium is required for the browser tests and apt-get is not available "
            "here: install a Chromium at /usr/bin/chromium"
        )
    log(f"browser tests: Debian chromium missing, running `{fix}` (about a minute)")
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium"],
    ):
        try:
            done = run(command)
        except subprocess.TimeoutExpired:
            raise ChromiumUnavailable(
                f"`{' '.join(command)}` did not finish in {APT_TIMEOUT_S} s; run `{fix}` by hand"
            ) from None
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise ChromiumUnavailable(
                f"`{' '.join(command)}` failed (exit {done.returncode}); run `{fix}` by hand:\n"
                f"{tail}"
            )
    found = find_chromium(which)
    if not found:
        raise ChromiumUnavailable(f"`{fix}` succeeded but no chromium executable was found")
    return found
