"""What every command shares: one way to print library warnings, the wording of library
settings as flags, and the rank-0 test."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

import click

from petctiqa.terminal import printable

FLAGS: dict[str, str] = {"model_name": "--model"}
"""Library settings whose flag is not ``--`` + the name with ``-`` for ``_``."""


def flag(setting: str) -> str:
    """The command-line option that sets the library setting ``setting``:
    ``allow_simulated`` -> ``--allow-simulated``."""
    return FLAGS.get(setting) or "--" + setting.replace("_", "-")


def in_cli_words(problem: object) -> str:
    """A library error or warning as one printable text; when it carries the library setting
    at fault (``setting``), the text ends by naming that setting's option."""
    text = printable(str(problem), keep_newlines=True)
    setting = getattr(problem, "setting", None)
    return f"{text} (option {flag(setting)})" if setting else text


def main_rank() -> bool:
    """Rank 0 of a torchrun job, or not distributed (before or after the process group)."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist  # lazy: only once torchrun's job has loaded it

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def echo_warnings() -> Iterator[None]:
    """Show Python warnings as one ``warning: ...`` line on stderr (rank 0 only under DDP)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if main_rank():
            click.echo(f"warning: {in_cli_words(message)}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield
