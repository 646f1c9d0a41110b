"""``petctiqa models``: list the registered IQA models."""

from __future__ import annotations

import click


@click.command("models")
def models() -> None:
    """List every registered model: input contract, parameters, score range, GPU need.

    \b
    Examples:
      petctiqa models
      petctiqa train --data ds/ --out run/ --model petct-cnn
    """
    from petctiqa.models import model_card, model_names  # lazy: --help must not import torch

    for name in model_names():
        card = model_card(name)
        low, high = card.score_range
        gpu = "needs a GPU to train in reasonable time" if card.needs_gpu else "trains on a CPU"
        click.echo(f"{card.name}  ({card.architecture})")
        click.echo(f"  {card.summary}")
        click.echo(f"  input: {card.input_contract}")
        click.echo(f"  parameters: {card.parameters:,}; scores {low:g}..{high:g} MOS; {gpu}")
