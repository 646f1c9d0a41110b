"""Score images with a trained MS-IQA checkpoint (batched; 0..4 MOS scale).

Inputs: image files (PNG, JPEG, TIFF, BMP), folders of images (searched recursively, sorted),
and folders holding a DICOM PET/CT study: these are rendered first
(``petctiqa.render.render_slice`` on every ``slice_stride``-th CT slice inside the PET/CT overlap)
and each rendered slice is scored. Scores are the model output mapped back through the
checkpoint's label scale; they are not clipped, so a value may stray slightly outside 0..4.

Images are turned into network inputs with the checkpoint's stored preprocessing (resize size,
interpolation, mean/std). DICOM slices are rendered with the render settings stored in the
checkpoint (the build-dataset protocol its training images were made with) unless a protocol is
given; when the given protocol renders differently from the stored one, a
:class:`RenderProtocolWarning` says so before the first DICOM study is scored. Checkpoints without
a stored protocol render with the default dataset protocol.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError
from petctiqa.msiqa.data import IMAGE_SUFFIXES, load_input, rgb_to_array


class RenderProtocolWarning(UserWarning):
    """DICOM slices are rendered differently from the checkpoint's training images."""


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


def render_dicom_study(
    folder: Path, slice_stride: int = 1, settings=None
) -> Iterator[RenderedInput]:
    """Render every ``slice_stride``-th CT slice inside each PET/CT pair's overlap, with
    ``settings`` (:class:`petctiqa.protocol.RenderSettings`; default: the dataset protocol's)."""
    from petctiqa.dicom.index import index_dicom_tree
    from petctiqa.dicom.pairing import find_pet_ct_pairs
    from petctiqa.dicom.suv import load_pet_suv
    from petctiqa.dicom.volume import load_volume
    from petctiqa.protocol import load_dataset_protocol
    from petctiqa.render import render_slice

    pairs = find_pet_ct_pairs(index_dicom_tree(folder))
    if not pairs:
        raise DatasetError(f"{folder}: no images and no PET/CT pair found")
    if settings is None:
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


def stored_render_settings(payload: dict[str, Any]):
    """(protocol name, RenderSettings) stored in a checkpoint, or (None, None)."""
    from petctiqa.protocol import RenderSettings

    stored = payload.get("render_protocol")
    if not isinstance(stored, dict) or not isinstance(stored.get("render"), dict):
        return None, None
    known = {f.name for f in dataclasses.fields(RenderSettings)}
    render = {k: v for k, v in stored["render"].items() if k in known}
    unknown = sorted(set(stored["render"]) - known)
    if unknown:
        warnings.warn(
            f"checkpoint render protocol {stored.get('name')!r}: render settings "
            f"{', '.join(unknown)} are unknown to this petctiqa and are ignored",
            RenderProtocolWarning,
            stacklevel=3,
        )
    return str(stored.get("name") or "?"), RenderSettings(**render)


def render_differences(stored, chosen) -> list[str]:
    """``"field: checkpoint X, now Y"`` for each RenderSettings field that differs."""
    return [
        f"{f.name}: checkpoint {getattr(stored, f.name)!r}, now {getattr(chosen, f.name)!r}"
        for f in dataclasses.fields(stored)
        if getattr(stored, f.name) != getattr(chosen, f.name)
    ]


class Scorer:
    """A loaded checkpoint ready to score batches on one device.

    ``protocol`` (a shipped dataset-protocol name or a TOML path) renders DICOM studies; by
    default the render settings stored in the checkpoint are used (else the default protocol).
    """

    def __init__(
        self,
        checkpoint: Path,
        device: str = "auto",
        amp: str = "off",
        channels_last: bool = False,
        protocol: str | Path | None = None,
    ) -> None:
        from petctiqa.msiqa.checkpoint import load_model
        from petctiqa.msiqa.train import autocast_dtype, resolve_device
        from petctiqa.protocol import load_dataset_protocol

        self.device = resolve_device(device)
        loaded = load_model(Path(checkpoint), str(self.device))
        self.model = loaded.model
        self.label_scale = loaded.label_scale
        self.payload = loaded.payload
        self.preprocessing = loaded.preprocessing
        self.size = self.preprocessing.size
        stored_name, stored = stored_render_settings(self.payload)
        self.render_mismatch: str | None = None
        if protocol is not None:
            chosen = load_dataset_protocol(protocol)
            self.render_name, self.render_settings = chosen.name, chosen.render
            if stored is not None:
                differences = render_differences(stored, chosen.render)
                if differences:
                    self.render_mismatch = (
                        f"DICOM studies are rendered with protocol {chosen.name!r}, but the "
                        f"checkpoint was trained on images rendered with {stored_name!r} "
                        f"({'; '.join(differences)}): scores of these renders may be off; "
                        "omit --protocol to render with the checkpoint's settings"
                    )
        elif stored is not None:
            self.render_name, self.render_settings = stored_name, stored
        else:
            default = load_dataset_protocol()
            self.render_name, self.render_settings = default.name, default.render
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
        if self.render_mismatch and any(item.is_dir() for item in items):
            warnings.warn(self.render_mismatch, RenderProtocolWarning, stacklevel=2)
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
                    (r.label, rgb_to_array(r.rgb, preprocessing=self.preprocessing))
                    for r in render_dicom_study(item, slice_stride, self.render_settings)
                )
            else:
                sources = iter([(str(item), load_input(item, preprocessing=self.preprocessing))])
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
