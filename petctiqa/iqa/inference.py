"""The one inference path shared by training's evaluation, ``score`` and ``evaluate``.

Each image becomes ``k`` network inputs (1 for ``resize`` preprocessing, the crop grid for
``crops``); inputs of consecutive images are packed into batches of ``batch_size`` and the
model's outputs are averaged per image. Outputs are on the model's normalised scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from petctiqa.iqa.preprocess import Preprocessing, grid_crops, load_input

PARTS = ("score", "s", "w")


def forward_batch(model, batch: np.ndarray, device, amp_dtype=None, channels_last=False):
    """``model.forward_parts`` on a (B, 3, S, S) float32 array: {part: float64 (B,)}."""
    # lazy: the ONNX Runtime scorer (scoring/archive.py) imports this module, not torch
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ),
    ):
        parts = model.forward_parts(x)
    return {k: parts[k].float().cpu().numpy().astype(np.float64) for k in PARTS}


def predict_stacks(
    model,
    stacks: Iterable[np.ndarray],
    device,
    batch_size: int = 32,
    amp_dtype=None,
    channels_last: bool = False,
) -> Iterator[dict[str, float]]:
    """Per-image mean outputs for a stream of (k, 3, S, S) input stacks, in order.

    Images are yielded as soon as all their inputs have run, so a caller can stream results.
    """
    model.eval()
    pending: list[np.ndarray] = []
    owners: list[int] = []
    sums: dict[int, dict[str, float]] = {}
    counts: dict[int, int] = {}
    next_out = 0

    def run() -> None:
        out = forward_batch(model, np.stack(pending), device, amp_dtype, channels_last)
        for j, owner in enumerate(owners):
            acc = sums.setdefault(owner, dict.fromkeys(PARTS, 0.0))
            for key in PARTS:
                acc[key] += out[key][j]
        pending.clear()
        owners.clear()

    def finished(upto: int) -> Iterator[dict[str, float]]:
        nonlocal next_out
        while next_out < upto:
            acc = sums.pop(next_out)
            n = counts.pop(next_out)
            yield {key: value / n for key, value in acc.items()}
            next_out += 1

    index = -1
    for index, stack in enumerate(stacks):
        counts[index] = len(stack)
        for item in stack:
            if pending and item.shape != pending[0].shape:
                run()  # whole images of different sizes cannot share a batch
            pending.append(item)
            owners.append(index)
            if len(pending) >= batch_size:
                run()
        # Images before the first still-pending input have all their outputs.
        yield from finished(owners[0] if pending else index + 1)
    if pending:
        run()
    yield from finished(index + 1)


def predict_files(
    model,
    images: Sequence[Path],
    prep: Preprocessing,
    device,
    batch_size: int = 32,
    amp_dtype=None,
    channels_last: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Model outputs (normalised scale, float64) for image files."""
    stacks = (grid_crops(load_input(p, preprocessing=prep), prep) for p in images)
    results = predict_stacks(model, stacks, device, batch_size, amp_dtype, channels_last)
    bar = tqdm(results, total=len(images), desc="predict", unit="image", disable=not progress)
    return np.array([r["score"] for r in bar], dtype=np.float64)
