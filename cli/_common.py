"""What every command shares: one way to print library warnings, and the rank-0 test."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

import click

from petctiqa.terminal import printable


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
            click.echo(f"warning: {printable(str(message), keep_newlines=True)}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield
