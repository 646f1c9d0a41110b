"""``petctiqa evaluate``: checkpoint and baseline metrics with bootstrap CIs (paper Table 1)."""

from __future__ import annotations

from pathlib import Path

import click

from petctiqa.errors import ModelError
from petctiqa_cli._common import echo_warnings


@click.command("evaluate")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="A checkpoint from `petctiqa train`; omit to evaluate baselines only.",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True, path_type=Path),
    help="Any layout `petctiqa train --data` accepts: the checkpoint's test patients are "
    "evaluated (with --test-data: the training side for the baselines).",
)
@click.option(
    "--test-data",
    "test_path",
    type=click.Path(exists=True, path_type=Path),
    help="Score EVERY image of this source as test data (any layout); the baselines are fitted "
    "on --data or on the training images the checkpoint records.",
)
@click.option(
    "--baselines",
    is_flag=True,
    help="Also run level table, BRISQUE, NIQE, PSNR and SSIM on the same test images.",
)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option("--bootstrap", "n_boot", default=1000, show_default=True, type=click.IntRange(10))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the metric table as CSV (atomic).",
)
@click.option(
    "--level-table-lopo",
    is_flag=True,
    help="Print the leave-one-patient-out level-table baseline over all patients.",
)
def evaluate(
    checkpoint: Path | None,
    data_path: Path | None,
    test_path: Path | None,
    baselines: bool,
    device: str,
    n_boot: int,
    seed: int,
    out_path: Path | None,
    level_table_lopo: bool,
) -> None:
    """Evaluate on the test patients (SROCC, PLCC, logistic PLCC, KRCC, RMSE, 95% CIs).

    \b
    Examples:
      petctiqa evaluate --checkpoint run/best.pt --data ds/ --baselines
      petctiqa evaluate --data ../shared/data/pet-ct-iqa-ds-dev --level-table-lopo
      petctiqa evaluate --checkpoint run/best.pt --data ds/ --out table1.csv
      petctiqa evaluate --checkpoint run/last.pt --test-data ../shared/data/pet-ct-iqa-ds-dev --baselines

    With --test-data the model's figure equals the last epoch's figure that `train
    --test-data` printed for the same checkpoint (last.pt).
    """
    # lazy: `petctiqa --help` imports this module; evaluation pulls in pandas and SciPy
    from petctiqa.iqa import evaluation as ev
    from petctiqa.iqa.data import load_iqa_dataset

    if data_path is None and test_path is None:
        raise click.UsageError("give --data and/or --test-data")
    with echo_warnings():
        dataset = load_iqa_dataset(data_path) if data_path is not None else None
        test_dataset = load_iqa_dataset(test_path) if test_path is not None else None
    if any(d is not None and d.simulated for d in (dataset, test_dataset)):
        click.echo(
            "warning: the ratings are SIMULATED (collect-ratings simulate): these metrics say "
            "nothing about real readers",
            err=True,
        )
    if level_table_lopo:
        if dataset is None:
            raise click.UsageError("--level-table-lopo needs --data")
        rows = ev.level_table_lopo(dataset)
        for patient, s, p in rows:
            click.echo(f"level table, test patient {patient}: SROCC {s:.4f} PLCC {p:.4f}")
        click.echo(
            f"mean: SROCC {sum(r[1] for r in rows) / len(rows):.4f} "
            f"PLCC {sum(r[2] for r in rows) / len(rows):.4f}"
        )
        if checkpoint is None and not baselines:
            return
    if checkpoint is None and not baselines:
        raise ModelError("evaluate: give --checkpoint and/or --baselines")
    with echo_warnings():
        result = ev.evaluate(
            checkpoint,
            dataset,
            baselines=baselines,
            device=device,
            n_boot=n_boot,
            seed=seed,
            progress=True,
            test_dataset=test_dataset,
        )
    click.echo(ev.format_table(result))
    if out_path is not None:
        ev.write_table_csv(out_path, result)
