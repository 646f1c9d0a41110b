"""The ``petctiqa`` command group.

Commands are loaded lazily (``petctiqa --help`` and ``petctiqa inspect`` never import torch).
Every command module in this package only turns options into library calls and prints results.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from petctiqa import __version__
from petctiqa.errors import PetctiqaError
from petctiqa_cli._common import in_cli_words

# command name -> "module:attribute" inside petctiqa_cli
COMMANDS: dict[str, str] = {
    "build-dataset": "petctiqa_cli.build_dataset:build_dataset",
    "inspect": "petctiqa_cli.inspect_dicom:inspect_dicom",
    "phantom": "petctiqa_cli.phantom:phantom",
    "collect-ratings": "petctiqa_cli.collect_ratings:collect_ratings",
    "models": "petctiqa_cli.models:models",
    "pretrain": "petctiqa_cli.pretrain:pretrain",
    "train": "petctiqa_cli.train:train",
    "score": "petctiqa_cli.score:score",
    "evaluate": "petctiqa_cli.evaluate:evaluate",
    "fetch": "petctiqa_cli.fetch:fetch",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (or listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        # tests/test_cli.py checks that every entry resolves, so nothing is hidden in a release.
        return sorted(
            name
            for name, target in COMMANDS.items()
            if importlib.util.find_spec(target.split(":")[0]) is not None
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PetctiqaError as exc:
            click.echo(f"error: {in_cli_words(exc)}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="petctiqa")
def cli() -> None:
    """petctiqa: PET/CT image-quality assessment.

    \b
    Typical workflow:
      petctiqa inspect lung-pet-ct-dx/             # what a DICOM download holds
      petctiqa build-dataset --src lung-pet-ct-dx/ --out ds/
      petctiqa collect-ratings serve --dataset ds/ --raters r1,r2,r3,r4,r5
      petctiqa collect-ratings export --dataset ds/ --out ds/
      petctiqa train --data ds/ --out run/ --preset cpu   # or --preset paper on a GPU
      petctiqa score image.png --checkpoint run/best.pt

    Without --src, build-dataset runs on the built-in synthetic PET/CT phantom.
    """


def main() -> None:
    cli(prog_name="petctiqa")


if __name__ == "__main__":
    main()
