"""The build's two worker tasks: prepare a patient, distort a slice.

1. :func:`prepare_patient`: load the CT (HU) and PET (SUV) volumes once, choose the K slices,
   render each slice's undistorted reference once and write it as a lossless PNG
   (``references/<slice_id>.png``); a protocol with PET/CT-domain axes also gets one render
   per distinct combination of their values (``renders/<slice_id>_<key>.png``, see
   :func:`petctiqa.distortions.pipeline.render_volume_cells`);
2. :func:`distort_slice`: read the reference (and renders), make the slice's distorted images
   (27 for the classic grid; the generator of image ``<slice_id>_<code>`` is
   ``rng_for(seed, image_id)``), write them and the slice's contact sheets.

Both skip what an earlier run wrote and recorded (verified by sha256) and record what they
wrote under ``.build-state/``. Tasks and results are small picklable records.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from petctiqa.atomic import atomic_write_bytes
from petctiqa.dataset.layout import (
    file_sha256,
    image_rel_path,
    out_file,
    patient_state_path,
    reference_rel_path,
    render_rel_path,
    sha256_hex,
    slice_id_for,
    slice_state_path,
    write_json,
)
from petctiqa.dataset.records import PreparedPatient, SliceOutcome, SlicePlan, plan_state
from petctiqa.dataset.select import NoUsableSlices, body_fractions, choose_slices
from petctiqa.dataset.sheets import (
    GridTile,
    SheetTile,
    read_sheets_digest,
    sheets_digest,
    slice_sheet_paths,
    slice_sheets_png,
)
from petctiqa.dicom.suv import load_pet_suv
from petctiqa.dicom.volume import load_volume
from petctiqa.distort import decode_image, slice_specs
from petctiqa.distortions.design import has_volume_axes
from petctiqa.distortions.pipeline import render_volume_cells
from petctiqa.distortions.registry import get_distortion
from petctiqa.distortions.slices import pet_acquisition
from petctiqa.errors import DatasetError
from petctiqa.png import encode_png_rgb
from petctiqa.protocol import DistortionSettings, RenderSettings
from petctiqa.render import render_slice
from petctiqa.seeding import rng_for

if TYPE_CHECKING:
    from petctiqa.dicom.pairing import PetCtPair
    from petctiqa.distort import DistortionSpec
    from petctiqa.distortions.design import ImageCell

WRITER_THREADS = 2
"""Threads per worker that write finished files while the worker computes the next image."""


@dataclass(frozen=True)
class PatientTask:
    pair: PetCtPair
    out_dir: Path
    slices: int
    margin_fraction: float
    min_body_fraction: float
    render: RenderSettings
    distortions: DistortionSettings | None = None
    """The protocol's grid; only its PET/CT-domain axes matter here."""
    seed: int = 0


def prepare_patient(task: PatientTask) -> PreparedPatient:
    """Load one patient's volumes, choose K slices and write their reference renders (and the
    renders after the protocol's PET/CT-domain axes)."""
    pair = task.pair
    ct = load_volume(pair.ct)
    pet = load_pet_suv(pair.pet)
    try:
        chosen = choose_slices(
            ct.slice_positions_mm,
            body_fractions(ct.array),
            pair.overlap_mm,
            task.slices,
            task.margin_fraction,
            task.min_body_fraction,
        )
    except NoUsableSlices as exc:
        raise NoUsableSlices(f"patient {pair.patient_id}: {exc}") from None
    positions = ct.slice_positions_mm
    volume_axes = _has_volume_axes(task.distortions)
    acquisition = _acquisition(pair, task.distortions) if volume_axes else None
    plans = []
    for number, ct_index in enumerate(chosen, start=1):
        slice_id = slice_id_for(pair.patient_id, number)
        png = encode_png_rgb(render_slice(ct, pet, ct_index, task.render), "sub")
        reference = reference_rel_path(slice_id)
        target = out_file(task.out_dir, reference)
        if file_sha256(target) != sha256_hex(png):
            atomic_write_bytes(target, png, durable=False)  # see distort_slice
        renders = ()
        if volume_axes:
            renders = _write_volume_renders(task, pet, ct, int(ct_index), slice_id, acquisition)
        plans.append(
            SlicePlan(
                slice_id=slice_id,
                slice_number=number,
                ct_index=int(ct_index),
                position_mm=round(float(positions[ct_index]), 3),
                ct_sop_uid=ct.sop_instance_uids[ct_index],
                reference=reference,
                reference_sha256=sha256_hex(png),
                renders=renders,
            )
        )
    plan = PreparedPatient(
        patient_id=pair.patient_id,
        study_uid=pair.study_uid,
        ct_series_uid=pair.ct.series_uid,
        pet_series_uid=pair.pet.series_uid,
        frame_of_reference_uid=pair.frame_of_reference_uid,
        slices=tuple(plans),
    )
    write_json(patient_state_path(task.out_dir, pair.patient_id), plan_state(plan), durable=False)
    return plan


def _has_volume_axes(distortions: DistortionSettings | None) -> bool:
    return (
        distortions is not None
        and distortions.axes is not None
        and has_volume_axes(distortions.axes)
    )


def _acquisition(pair: PetCtPair, distortions: DistortionSettings):
    """The PET's acquisition facts, read only when a PET-activity axis needs them."""
    domains = {get_distortion(a.distortion).domain for a in distortions.axes or ()}
    return pet_acquisition(pair.pet) if "pet_activity" in domains else None


def _write_volume_renders(
    task: PatientTask, pet, ct, ct_index: int, slice_id: str, acquisition
) -> tuple[tuple[str, str, str], ...]:
    """Render and write every distinct PET/CT-domain combination of one slice's images."""
    cells = slice_specs(task.distortions, task.seed, slice_id)
    images = render_volume_cells(
        pet, ct, ct_index, task.render, cells, task.seed, slice_id, acquisition
    )
    renders = []
    for key in sorted(images):
        png = encode_png_rgb(images[key], "sub")
        rel = render_rel_path(slice_id, key)
        target = out_file(task.out_dir, rel)
        if file_sha256(target) != sha256_hex(png):
            atomic_write_bytes(target, png, durable=False)  # see distort_slice
        renders.append((key, rel, sha256_hex(png)))
    return tuple(renders)


@dataclass(frozen=True)
class SliceTask:
    plan: SlicePlan
    out_dir: Path
    specs: tuple[DistortionSpec, ...] | tuple[ImageCell, ...]
    seed: int
    image_format: str
    subsampling: str
    expected: tuple[tuple[str, str], ...] | None
    """(image_id, sha256) recorded by an earlier run for this reference, if any."""
    sheet_sha256: str | None


def distort_slice(task: SliceTask) -> SliceOutcome:
    """Write the distorted images of one slice and its contact sheet (skipping verified ones)."""
    plan = task.plan
    inputs = _RenderInputs(task)
    reference = inputs.pixels("")
    expected = dict(task.expected or ())
    hashes: list[tuple[str, str]] = []
    tiles: list[SheetTile] = []
    written = 0
    # Files are written (temporary file, rename) by a few threads while this one goes on
    # computing; all writes finish before the state file. Images, sheets, references and the
    # state files skip the per-file fsync: a resumed build trusts a file only after checking
    # its sha256 against a state file (and recomputes what does not match, or a lost state
    # file's slice), and the finished build flushes the file system before the manifest.
    with ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="petctiqa-write") as writer:
        writes: list[Future] = []
        for spec in task.specs:
            image_id = f"{plan.slice_id}_{spec.code}"
            path = out_file(task.out_dir, image_rel_path(image_id, task.image_format))
            on_disk = path.read_bytes() if path.is_file() else None
            verified = on_disk is not None and sha256_hex(on_disk) == expected.get(image_id)
            data = on_disk if verified else None
            if data is None:
                # no record of this image (e.g. interrupted before the slice state was written)
                # or it is missing/damaged: recompute it, rewrite only when the bytes differ
                data = spec.encode(
                    inputs.pixels(spec.volume_key),
                    rng_for(task.seed, image_id),
                    task.image_format,
                    task.subsampling,
                )
                if data != on_disk:
                    writes.append(writer.submit(atomic_write_bytes, path, data, durable=False))
                    written += 1
            hashes.append((image_id, sha256_hex(data)))
            tiles.append(_tile(spec, data))
        # the contact sheet and the 1:1 crops sheet, verified together by one digest
        sheet_paths = slice_sheet_paths(task.out_dir / "sheets", plan.slice_id)
        sheet_sha = task.sheet_sha256
        if written or sheet_sha is None or read_sheets_digest(sheet_paths) != sheet_sha:
            title = f"{plan.slice_id}   slice {plan.slice_number}   {plan.position_mm:.1f} mm"
            size = (reference.shape[1], reference.shape[0])
            sheets = slice_sheets_png(title, tiles, size)
            for sheet_path, sheet in zip(sheet_paths, sheets, strict=True):
                writes.append(writer.submit(atomic_write_bytes, sheet_path, sheet, durable=False))
            sheet_sha = sheets_digest(sheets)
        for write in writes:
            write.result()  # re-raises a failed write
    write_json(
        slice_state_path(task.out_dir, plan.slice_id),
        {
            "reference_sha256": plan.reference_sha256,
            "images": dict(hashes),
            "sheet_sha256": sheet_sha,
        },
        durable=False,
    )
    return SliceOutcome(plan.slice_id, tuple(hashes), written)


class _RenderInputs:
    """A slice's reference render ("") and PET/CT-domain renders, each read, checked against
    its recorded sha256 and decoded once, when first needed."""

    def __init__(self, task: SliceTask) -> None:
        plan = task.plan
        self._out_dir = task.out_dir
        self._files = {"": (plan.reference, plan.reference_sha256)}
        self._files.update({key: (rel, sha) for key, rel, sha in plan.renders})
        self._decoded: dict = {}

    def pixels(self, key: str):
        if key not in self._decoded:
            if key not in self._files:
                raise DatasetError(f"{self._out_dir}: no render {key!r} recorded for this slice")
            rel, sha = self._files[key]
            data = out_file(self._out_dir, rel).read_bytes()
            if sha256_hex(data) != sha:
                what = "reference render" if key == "" else "render"
                raise DatasetError(f"{self._out_dir / rel}: {what} changed during build")
            self._decoded[key] = decode_image(data)
        return self._decoded[key]


def _tile(spec, data: bytes) -> SheetTile | GridTile:
    """The contact-sheet tile of one image (the classic grid's tiles as they always were)."""
    if hasattr(spec, "poisson_level"):
        return SheetTile(
            spec.poisson_level, spec.gaussian_level, spec.jpeg_level, spec.jpeg_quality, data
        )
    return GridTile(spec.sheet_cell, spec.label, data)
