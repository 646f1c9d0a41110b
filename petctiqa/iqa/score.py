"""Score images with a trained checkpoint of any registered model (batched; 0..4 MOS scale).

Inputs: image files (PNG, JPEG, TIFF, BMP), folders of images (searched recursively, sorted),
and folders holding a DICOM PET/CT study: these are rendered first
(``petctiqa.render.render_slice`` on every ``slice_stride``-th CT slice inside the PET/CT overlap)
and each rendered slice is scored. Scores are the model output mapped back through the
checkpoint's label scale; they are not clipped, so a value may stray slightly outside 0..4.

Images are turned into network inputs with the checkpoint's stored preprocessing (resize size,
interpolation, mean/std, or native crops averaged over the crop grid) through the inference path
training evaluates with (:mod:`petctiqa.iqa.inference`). An input that cannot be read or
rendered does not stop the run: it gets a record with an ``error`` and no score. DICOM slices are rendered with the render settings stored in the
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
from tqdm import tqdm

from petctiqa.atomic import atomic_write_text
from petctiqa.dicom.index import index_dicom_tree
from petctiqa.dicom.pairing import find_pet_ct_pairs
from petctiqa.dicom.suv import load_pet_suv
from petctiqa.dicom.volume import load_volume
from petctiqa.errors import DatasetError, PetctiqaError, PetctiqaWarning
from petctiqa.iqa.data import IMAGE_SUFFIXES
from petctiqa.iqa.inference import forward_batch, predict_stacks
from petctiqa.iqa.preprocess import grid_crops, load_input, rgb_to_array
from petctiqa.protocol import RenderSettings, load_dataset_protocol
from petctiqa.render import render_slice


class RenderProtocolWarning(PetctiqaWarning):
    """DICOM slices are rendered differently from the checkpoint's training images."""


@dataclass(frozen=True)
class ScoreRecord:
    source: str
    """Image path, or ``<folder>#<patient>/<ct series>/slice<k>`` for a rendered DICOM slice."""
    score: float
    """Predicted quality on the 0..4 MOS scale (NaN when ``error`` is set)."""
    s: float
    """Score-branch output S (normalised scale)."""
    w: float
    """Weight-branch output W in (0, 1) (1 when the model has no weighting)."""
    error: str = ""
    """Why this input could not be scored ("" when it was)."""


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
    pairs = find_pet_ct_pairs(index_dicom_tree(folder))
    if not pairs:
        raise DatasetError(f"{folder}: no images and no PET/CT pair found")
    if settings is None:
        settings = load_dataset_protocol().render
    for pair in pairs:
        for k, rgb in render_pair_slices(pair, slice_stride, settings):
            label = f"{folder}#{pair.patient_id}/{pair.ct.series_uid}/slice{k}"
            yield RenderedInput(label, rgb)


def render_pair_slices(pair, slice_stride: int, settings) -> Iterator[tuple[int, np.ndarray]]:
    """(CT slice index, fused RGB) of every ``slice_stride``-th CT slice inside the PET/CT
    overlap of one pair, rendered with ``settings``."""
    ct = load_volume(pair.ct)
    pet = load_pet_suv(pair.pet)
    positions = ct.slice_positions_mm
    low, high = pair.overlap_mm
    inside = np.flatnonzero((positions >= low - 1e-3) & (positions <= high + 1e-3))
    for k in inside[::slice_stride]:
        yield int(k), render_slice(ct, pet, int(k), settings)


def stored_render_settings(payload: dict[str, Any]):
    """(protocol name, RenderSettings) stored in a checkpoint, or (None, None)."""
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
        channels_last: bool | None = False,
        protocol: str | Path | None = None,
    ) -> None:
        """``amp``: auto (bf16/fp16 autocast on CUDA, none on the CPU), bf16, fp16 or off;
        ``channels_last``: None = on CUDA only."""
        # lazy: torch; archive decoding workers import this module (scoring/work.py) without it
        from petctiqa.iqa.checkpoint import load_model
        from petctiqa.iqa.device import autocast_dtype, resolve_device

        self.device = resolve_device(device)
        self.checkpoint_path = Path(checkpoint)
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
                        "render without a protocol to use the checkpoint's settings"
                    )
        elif stored is not None:
            self.render_name, self.render_settings = stored_name, stored
        else:
            default = load_dataset_protocol()
            self.render_name, self.render_settings = default.name, default.render
        self.amp_dtype = autocast_dtype(self.device, amp)
        if channels_last is None:
            channels_last = self.device.type == "cuda"
        self.channels_last = channels_last
        if channels_last:
            import torch  # lazy: as in __init__

            self.model.to(memory_format=torch.channels_last)

    @property
    def simulated(self) -> bool:
        """True when the checkpoint was trained on simulated ratings."""
        return bool(self.payload.get("simulated"))

    @property
    def model_name(self) -> str:
        return str(self.payload.get("model_name", "msiqa"))

    def runtime_model(self, runtime: str, inputs: int, batch_size: int, cache_dir=None):
        """(object for ``predict_stacks``, runtime name, why) for ``runtime`` in
        :data:`petctiqa.scoring.runtime.RUNTIMES`; ``inputs`` (network inputs to run) lets
        ``auto`` judge whether an ONNX export pays (:func:`choose_runtime`)."""
        # lazy: torch; archive decoding workers import this module (scoring/work.py) without it
        from petctiqa.scoring.runtime import (
            ONNX_RUNTIMES,
            OnnxModel,
            choose_runtime,
            default_cache_dir,
            prepare_runtime,
            runtime_available,
        )

        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        probe = OnnxModel(self.model, self.checkpoint_path, batch_size, cache, 1)
        cached = (
            self.device.type == "cpu"
            and any(runtime_available(name) for name in ONNX_RUNTIMES)
            and any(probe.cache_path(shape).is_file() for shape in self.input_shapes())
        )
        name, why = choose_runtime(runtime, self.device.type, inputs, cached)
        model = prepare_runtime(self.model, name, self.checkpoint_path, batch_size, cache)
        return model, name, why

    def input_shapes(self) -> list[tuple[int, int, int]]:
        """The network-input shape every input has (none known for whole-image ``grid=0``)."""
        prep = self.preprocessing
        if prep.mode == "resize" or prep.grid:
            return [(3, prep.size, prep.size)]
        return []

    def score_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score on 0..4, S, W) for a (B, 3, S, S) float32 network-input batch (one input
        per image: no crop averaging)."""
        parts = forward_batch(self.model, batch, self.device, self.amp_dtype, self.channels_last)
        return self.label_scale.denormalise(parts["score"]), parts["s"], parts["w"]

    def _stacks(self, items: list[Path], slice_stride: int, failures: dict[int, tuple[str, str]]):
        """(label, (k, 3, S, S) inputs) per scorable input; unreadable ones go to ``failures``
        (keyed by their position in the output) instead of stopping the run."""
        position = 0
        for item in items:
            try:
                if item.is_dir():
                    for rendered in render_dicom_study(item, slice_stride, self.render_settings):
                        array = rgb_to_array(rendered.rgb, preprocessing=self.preprocessing)
                        yield position, rendered.label, grid_crops(array, self.preprocessing)
                        position += 1
                else:
                    array = load_input(item, preprocessing=self.preprocessing)
                    yield position, str(item), grid_crops(array, self.preprocessing)
                    position += 1
            except (PetctiqaError, OSError, ValueError) as exc:
                failures[position] = (str(item), str(exc))
                position += 1

    def score(
        self,
        inputs: Sequence[Path],
        batch_size: int = 16,
        slice_stride: int = 1,
        progress: bool = False,
        model=None,
    ) -> list[ScoreRecord]:
        """Score files, image folders and DICOM study folders (see the module docstring).

        Inputs that fail get a record with ``error`` set, in their place in the order.
        ``model``: what runs the network (default the torch model; see :meth:`runtime_model`)."""
        items = expand_inputs(inputs)
        if self.render_mismatch and any(item.is_dir() for item in items):
            warnings.warn(
                RenderProtocolWarning(self.render_mismatch, setting="protocol"), stacklevel=2
            )
        failures: dict[int, tuple[str, str]] = {}
        scored: list[tuple[int, str]] = []

        def stacks():
            for position, label, stack in self._stacks(items, slice_stride, failures):
                scored.append((position, label))
                yield stack

        bar = tqdm(desc="score", unit="image", disable=not progress)
        results: list[tuple[int, ScoreRecord]] = []
        outputs = predict_stacks(
            model or self.model,
            stacks(),
            self.device,
            batch_size,
            self.amp_dtype,
            self.channels_last,
        )
        for index, out in enumerate(outputs):
            # ``scored`` grows as ``outputs`` pulls inputs, so index it after each result.
            position, label = scored[index]
            score = float(self.label_scale.denormalise(out["score"]))
            results.append((position, ScoreRecord(label, score, out["s"], out["w"])))
            bar.update()
        bar.close()
        nan = float("nan")
        results += [
            (position, ScoreRecord(source, nan, nan, nan, error))
            for position, (source, error) in failures.items()
        ]
        return [record for _, record in sorted(results, key=lambda pair: pair[0])]


def write_scores(
    path: Path, records: Sequence[ScoreRecord], simulated: bool = False, model_name: str = ""
) -> None:
    """Write scores as CSV (``.csv``) or JSON (``.json``), atomically (a failed run never
    leaves a partial file under ``path``). Scores are on the 0..4 MOS scale; ``simulated``
    marks scores of a checkpoint trained on simulated ratings in every row."""
    path = Path(path)
    sim = "true" if simulated else "false"
    if path.suffix.lower() == ".json":
        rows = [{**asdict(r), "scale": "0..4 MOS", "simulated": simulated} for r in records]
        for row in rows:
            for key in ("score", "s", "w"):
                if row[key] != row[key]:  # NaN is not valid JSON
                    row[key] = None
        atomic_write_text(path, json.dumps(rows, indent=2) + "\n")
        return
    if path.suffix.lower() != ".csv":
        raise DatasetError(f"{path}: the output must end in .csv or .json")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "score", "s", "w", "scale", "model", "simulated", "error"])
    for r in records:
        values = [f"{v:.6f}" if v == v else "" for v in (r.score, r.s, r.w)]
        writer.writerow([r.source, *values, "0..4", model_name, sim, r.error])
    atomic_write_text(path, buffer.getvalue())
