"""Score images with a trained MS-IQA checkpoint (batched; 0..4 MOS scale).

Inputs: image files (PNG, JPEG, TIFF, BMP), folders of images (searched recursively, sorted),
and folders holding a DICOM PET/CT study: these are rendered with the dataset protocol first
(``petctiqa.render.render_slice`` on every ``slice_stride``-th CT slice inside the PET/CT overlap)
and each rendered slice is scored. Scores are the model output mapped back through the
checkpoint's label scale; they are not clipped, so a value may stray slightly outside 0..4.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError
from petctiqa.msiqa.data import IMAGE_SUFFIXES, load_input, rgb_to_array


@dataclass(frozen=True)
class ScoreRecord:
    source: str
    """Image path, or ``<folder>#<patient>/<ct series>/slice<k>`` for a rendered DICOM slice."""
    score: float
    """Predicted quality on the 0..4 MOS scale."""
    s: float
    """Score-branch output S (normalised scale)."""
    w: float
    """Weight-branch output W in (0, 1) (1 when the model has no weighting)."""


@dataclass(frozen=True)
class ImageInput:
    path: Path


@dataclass(frozen=True)
class RenderedInput:
    label: str
    rgb: np.ndarray


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Image files in the order given; folders contribute their images (recursive, sorted),
    or themselves when they hold no images (treated as DICOM studies)."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            out.extend(images or [item])
        elif item.is_file():
            out.append(item)
        else:
            raise DatasetError(f"{item}: no such file or folder")
    return out


def render_dicom_study(folder: Path, slice_stride: int = 1) -> Iterator[RenderedInput]:
    """Render every ``slice_stride``-th CT slice inside each PET/CT pair's overlap."""
    from petctiqa.dicom.index import index_dicom_tree
    from petctiqa.dicom.pairing import find_pet_ct_pairs
    from petctiqa.dicom.suv import load_pet_suv
    from petctiqa.dicom.volume import load_volume
    from petctiqa.protocol import load_dataset_protocol
    from petctiqa.render import render_slice

    pairs = find_pet_ct_pairs(index_dicom_tree(folder))
    if not pairs:
        raise DatasetError(f"{folder}: no images and no PET/CT pair found")
    settings = load_dataset_protocol().render
    for pair in pairs:
        ct = load_volume(pair.ct)
        pet = load_pet_suv(pair.pet)
        positions = ct.slice_positions_mm
        low, high = pair.overlap_mm
        inside = np.flatnonzero((positions >= low - 1e-3) & (positions <= high + 1e-3))
        for k in inside[::slice_stride]:
            rgb = render_slice(ct, pet, int(k), settings)
            label = f"{folder}#{pair.patient_id}/{pair.ct.series_uid}/slice{int(k)}"
            yield RenderedInput(label, rgb)


class Scorer:
    """A loaded checkpoint ready to score batches on one device."""

    def __init__(
        self, checkpoint: Path, device: str = "auto", amp: str = "off", channels_last: bool = False
    ) -> None:
        from petctiqa.msiqa.checkpoint import load_model
        from petctiqa.msiqa.train import autocast_dtype, resolve_device

        self.device = resolve_device(device)
        loaded = load_model(Path(checkpoint), str(self.device))
        self.model = loaded.model
        self.label_scale = loaded.label_scale
        self.payload = loaded.payload
        self.size = self.model.config.image_size
        self.amp_dtype = autocast_dtype(self.device, amp)
        self.channels_last = channels_last
        if channels_last:
            import torch

            self.model.to(memory_format=torch.channels_last)

    def score_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score on 0..4, S, W) for a (B, 3, S, S) float32 network-input batch."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type,
                dtype=self.amp_dtype or torch.float32,
                enabled=self.amp_dtype is not None,
            ),
        ):
            parts = self.model.forward_parts(x)
        score = parts["score"].float().cpu().numpy().astype(np.float64)
        return (
            self.label_scale.denormalise(score),
            parts["s"].float().cpu().numpy().astype(np.float64),
            parts["w"].float().cpu().numpy().astype(np.float64),
        )

    def score(
        self,
        inputs: Sequence[Path],
        batch_size: int = 16,
        slice_stride: int = 1,
        progress: bool = False,
    ) -> list[ScoreRecord]:
        """Score files, image folders and DICOM study folders (see the module docstring)."""
        from tqdm import tqdm

        items = expand_inputs(inputs)
        records: list[ScoreRecord] = []
        labels: list[str] = []
        arrays: list[np.ndarray] = []

        def flush() -> None:
            if arrays:
                score, s, w = self.score_arrays(np.stack(arrays))
                records.extend(
                    ScoreRecord(lbl, float(a), float(b), float(c))
                    for lbl, a, b, c in zip(labels, score, s, w, strict=True)
                )
                labels.clear()
                arrays.clear()

        for item in tqdm(items, desc="score", unit="input", disable=not progress):
            if item.is_dir():
                sources = (
                    (r.label, rgb_to_array(r.rgb, self.size))
                    for r in render_dicom_study(item, slice_stride)
                )
            else:
                sources = iter([(str(item), load_input(item, self.size))])
            for label, array in sources:
                labels.append(label)
                arrays.append(array)
                if len(arrays) >= batch_size:
                    flush()
        flush()
        return records


def write_scores(path: Path, records: Sequence[ScoreRecord]) -> None:
    """Write scores as CSV (``.csv``) or JSON (``.json``), atomically."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps([asdict(r) for r in records], indent=2) + "\n")
        return
    if path.suffix.lower() != ".csv":
        raise DatasetError(f"{path}: --out must end in .csv or .json")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "score", "s", "w"])
    for r in records:
        writer.writerow([r.source, f"{r.score:.6f}", f"{r.s:.6f}", f"{r.w:.6f}"])
    atomic_write_text(path, buffer.getvalue())
