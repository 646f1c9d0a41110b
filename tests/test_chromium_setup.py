"""The browser tests' Chromium: installed with apt-get on a fresh machine, a clear message else."""

from __future__ import annotations

import subprocess

import pytest

from tests import chromium as setup


@pytest.fixture
def no_usr_bin(monkeypatch):
    monkeypatch.setattr(setup, "CHROMIUM_PATHS", ("/nonexistent/chromium",))


def fake_which(installed: set[str]):
    return lambda name: f"/usr/bin/{name}" if name in installed else None


def test_missing_chromium_is_installed_with_apt_when_root(no_usr_bin):
    installed = {"apt-get"}
    calls = []

    def run(command):
        calls.append(list(command))
        if command[:2] == ["apt-get", "install"]:
            installed.add("chromium")
        return subprocess.CompletedProcess(command, 0, "", "")

    path = setup.ensure_chromium(fake_which(installed), euid=0, run=run, log=lambda m: None)
    assert path == "/usr/bin/chromium"
    assert calls == [
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium"],
    ]


def test_present_chromium_runs_nothing(no_usr_bin):
    def run(command):
        raise AssertionError(f"ran {command}")

    assert setup.ensure_chromium(fake_which({"chromium"}), euid=1000, run=run) == (
        "/usr/bin/chromium"
    )


def test_not_root_or_no_apt_or_apt_failure_says_what_to_run(no_usr_bin):
    with pytest.raises(setup.ChromiumUnavailable, match=r"not running as root.*sudo sh -c"):
        setup.ensure_chromium(fake_which({"apt-get"}), euid=1000)
    with pytest.raises(setup.ChromiumUnavailable, match="apt-get is not available"):
        setup.ensure_chromium(fake_which(set()), euid=0)

    def failing(command):
        return subprocess.CompletedProcess(command, 100, "", "E: Unable to locate package")

    with pytest.raises(setup.ChromiumUnavailable, match=r"exit 100.*\n.*Unable to locate"):
        setup.ensure_chromium(fake_which({"apt-get"}), euid=0, run=failing, log=lambda m: None)
