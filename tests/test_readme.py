"""The README's commands run as written: the two first-run commands, every example's prefix,
every example's subcommand and options, and the folders they write are ignored by git."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from petctiqa_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
INSTALL = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/petctiqa build-dataset"
)
TEST = ".venv/bin/python -m pytest -q"


def bash_blocks(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def example_commands(text: str) -> list[list[str]]:
    """argv after ``petctiqa`` of every example line (fenced bash blocks and inline code)."""
    commands = []
    for block in bash_blocks(text):
        activated = block[0].strip() == "source .venv/bin/activate"
        for line in block:
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0].endswith("petctiqa"):
                    assert words[0] == ".venv/bin/petctiqa" or (
                        activated and words[0] == "petctiqa"
                    ), f"README example not runnable as written: {line!r}"
                    commands.append(words[1:])
    for span in re.findall(r"(?<!`)`([^`|]+)`(?!`)", text):
        words = shlex.split(" ".join(span.split()))
        if len(words) > 2 and words[0] == ".venv/bin/petctiqa":
            commands.append(words[1:])
    return commands


def test_the_two_first_run_commands_and_ci_run_the_same_test_command():
    blocks = bash_blocks(README)
    assert blocks[0] == [INSTALL] and blocks[1] == [TEST]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == TEST
    assert '.venv/bin/python -m pytest -q -m "not slow"' in README  # the quick subset


def test_inline_examples_outside_the_command_table_are_runnable_as_written():
    for line in README.splitlines():
        if line.startswith("|"):
            continue  # the command table, introduced as `.venv/bin/petctiqa COMMAND`
        for span in re.findall(r"`(petctiqa [^`]*)`", line):
            pytest.fail(f"README inline example without .venv/bin/: {span!r}")


def test_every_example_names_a_real_subcommand_and_real_options():
    commands = example_commands(README)
    assert len(commands) >= 10
    runner = CliRunner()
    for argv in commands:
        # --help is eager: it answers once every option before it has parsed, and an unknown
        # subcommand or option fails first
        result = runner.invoke(cli, [*argv, "--help"])
        assert result.exit_code == 0, (argv, result.output)


def test_the_folders_the_examples_write_are_ignored_by_git():
    outputs = {"petctiqa-dataset"}
    for argv in example_commands(README):
        for flag in ("--out", "--dataset", "--data"):
            if flag in argv:
                outputs.add(argv[argv.index(flag) + 1].rstrip("/"))
    outputs = {o for o in outputs if "/" not in o and not o.startswith("..")}
    assert {"ds", "run", "lung-pet-ct-dx", "petctiqa-dataset"} <= outputs
    in_git = shutil.which("git") is not None and (ROOT / ".git").exists()
    ignore_lines = set((ROOT / ".gitignore").read_text().splitlines())
    for name in sorted(outputs):
        if in_git:  # git's own answer
            done = subprocess.run(["git", "check-ignore", "-q", f"{name}/x"], cwd=ROOT, check=False)
            assert done.returncode == 0, f"{name}/ is not ignored by git"
        else:  # a copy without git (e.g. an unpacked archive): the rule must be there verbatim
            assert f"/{name}/" in ignore_lines, f"/{name}/ missing from .gitignore"
