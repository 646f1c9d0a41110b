"""``petctiqa score``: predict quality (0..4 MOS) for images and DICOM PET/CT archives."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from petctiqa_cli._common import echo_warnings, main_rank


@click.command("score")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(path_type=Path),
    help="A checkpoint written by `petctiqa train` (best.pt).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write scores to a .csv (archive scoring: journal, resume, study summaries) or a "
    ".json file (atomic).",
)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option(
    "--runtime",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "eager", "ort", "openvino"]),
    help="eager: PyTorch; ort / openvino: the network exported to ONNX (cached) and run by "
    "ONNX Runtime / OpenVINO in float32 (CPU, faster, scores within 1e-3 of eager); auto: "
    "openvino (else ort) on the CPU when enough inputs make the export pay, eager otherwise.",
)
@click.option(
    "--amp",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "bf16", "fp16", "off"]),
    help="Mixed precision of the eager model: auto = bf16 (fp16 where bf16 is unsupported) on "
    "CUDA, none on the CPU; off for float32 scores on CUDA.",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="channels_last memory format for the eager model [default: on CUDA only].",
)
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--jobs",
    default=None,
    type=click.IntRange(1),
    help="Worker processes decoding/rendering for .csv output (1: a thread of the scoring "
    "process) "
    "[default: 2; 1 on a CPU of 1-2 cores that the model's threads fill, where that measured "
    "faster].",
)
@click.option(
    "--threshold",
    default=2.0,
    show_default=True,
    type=float,
    help="Study summary rows give the fraction of slices scoring below this (0..4 MOS).",
)
@click.option(
    "--slice-stride",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="For DICOM PET/CT folders: score every N-th CT slice in the PET overlap.",
)
@click.option(
    "--protocol",
    default=None,
    help="Dataset protocol (shipped name or TOML) to render DICOM studies with "
    "[default: the one stored in the checkpoint, else pet-ct-iqa-ds]; warns when it renders "
    "differently from the checkpoint's.",
)
def score(
    images: tuple[Path, ...],
    checkpoint: Path,
    out_path: Path | None,
    device: str,
    runtime: str,
    amp: str,
    channels_last: bool | None,
    batch_size: int,
    jobs: int | None,
    threshold: float,
    slice_stride: int,
    protocol: str | None,
) -> None:
    """Score PNG/JPEG/TIFF images, image folders or DICOM PET/CT archives.

    \b
    Examples:
      petctiqa score image.png --checkpoint run/best.pt
      petctiqa score ARCHIVE/ --checkpoint run/best.pt --out scores.csv
      petctiqa score study_dicom/ --checkpoint run/best.pt --slice-stride 10 --out s.json
      petctiqa score ARCHIVE/ --checkpoint run/best.pt --device cpu --runtime openvino --out s.csv
      torchrun --nproc_per_node 2 -m petctiqa_cli.main score ARCHIVE/ --checkpoint run/best.pt --out scores.csv

    \b
    Scale: scores are predicted mean opinion scores on the 0..4 MOS scale (0 worst, 4 best),
    not clipped. A checkpoint trained on SIMULATED ratings is marked so on the terminal and in
    every output row (column simulated).

    \b
    .csv output (archive scoring): columns kind, source, key, score, s, w, worst_score,
    worst_source, fraction_below, scale, model, simulated, error. kind is image, slice
    (a rendered DICOM slice), study (summary after its slices: score = mean, worst_score and
    worst_source = its lowest slice, fraction_below = share of slices under --threshold) or
    error (unreadable input: error says why; the exit status is then 1). Rows are journaled in
    OUT.journal/ as they are scored: a rerun skips what is scored (images keyed by path and
    sha256, slices by CT series UID + slice) and the .csv is written once, atomically, at the
    end. Under torchrun each process scores a share and rank 0 writes the same file a single
    process would. .json / terminal: source, score, s, w, scale, simulated, error per input.
    """
    from petctiqa.iqa.score import Scorer, write_scores  # lazy: --help must not import pandas

    archive = out_path is not None and out_path.suffix.lower() == ".csv"
    with echo_warnings():
        if archive:
            precision = {"amp": amp, "channels_last": channels_last}
            code = _score_archive(
                images, checkpoint, out_path, device, runtime, batch_size, jobs, threshold,
                slice_stride, protocol, precision,
            )  # fmt: skip
            sys.exit(code)
        scorer = Scorer(checkpoint, device, amp=amp, channels_last=channels_last, protocol=protocol)
        _say_scale(scorer)
        model, name, why = scorer.runtime_model(runtime, len(images), batch_size)
        click.echo(f"runtime: {name} ({why})", err=True)
        records = scorer.score(
            list(images), batch_size=batch_size, slice_stride=slice_stride, progress=True,
            model=model,
        )  # fmt: skip
    if out_path is not None:
        write_scores(out_path, records, simulated=scorer.simulated, model_name=scorer.model_name)
        click.echo(f"{len(records)} scores written to {out_path}", err=True)
    mark = "\tSIMULATED" if scorer.simulated else ""
    for record in records:
        click.echo(f"{record.score:.4f}\t{record.source}{mark}")
    if any(r.error for r in records):
        for r in records:
            if r.error:
                click.echo(f"error: {r.error}", err=True)
        sys.exit(1)


def _say_scale(scorer) -> None:
    if not main_rank():
        return
    click.echo(
        f"model {scorer.model_name}, scores on the 0..4 MOS scale (0 worst, 4 best)", err=True
    )
    if scorer.simulated:
        click.echo(
            "warning: this checkpoint was trained on SIMULATED ratings: its scores imitate "
            "simulated raters, not a reader study",
            err=True,
        )


def _score_archive(
    images, checkpoint, out_path, device, runtime, batch_size, jobs, threshold, slice_stride,
    protocol, precision,
) -> int:  # fmt: skip
    # lazy: `petctiqa --help` imports this module; scoring pulls in torch
    import torch

    from petctiqa.iqa.score import Scorer
    from petctiqa.scoring.archive import (
        ArchiveOptions,
        default_jobs,
        score_archive,
        start_worker_imports,
    )
    from petctiqa.scoring.shard import broadcast_flag, close, threads_per_process, torchrun_shard
    from petctiqa.scoring.walk import walk_inputs

    shard = torchrun_shard()
    if shard.world > 1:
        torch.set_num_threads(threads_per_process())
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        device = f"cuda:{shard.local_rank}" if torch.cuda.is_available() else device
    if jobs is None:
        jobs = default_jobs("cuda" if device.startswith("cuda") else "cpu", torch.get_num_threads())
    start_worker_imports(jobs)  # while the model loads and the archive is walked
    scorer = Scorer(checkpoint, device, protocol=protocol, **precision)
    _say_scale(scorer)
    # The runtime's choice needs a count of inputs: units are a fair stand-in (a study holds
    # many slices, so this errs towards eager only for archives that are small anyway).
    units = walk_inputs(images, slice_stride)
    count = len(units) * scorer.preprocessing.crops_per_image // shard.world
    model, name, why = scorer.runtime_model(runtime, count, batch_size)
    if shard.rank == 0:
        click.echo(f"runtime: {name} ({why})", err=True)
    options = ArchiveOptions(batch_size, slice_stride, threshold, jobs, shard.rank, shard.world)
    try:
        result = score_archive(scorer, images, out_path, model, options, shard.barrier, units)
        code = 0
        if result is not None:
            sim = " (SIMULATED ratings)" if scorer.simulated else ""
            click.echo(
                f"{result.rows} rows ({result.units} inputs, {result.skipped_units} already "
                f"scored) written to {out_path}; scale 0..4 MOS{sim}",
                err=True,
            )
            if result.errors:
                click.echo(f"error: {result.errors} inputs could not be scored (rows with "
                           f"kind 'error' in {out_path})", err=True)  # fmt: skip
                code = 1
        return broadcast_flag(shard, code)
    finally:
        close(shard)
