"""Slice geometry: read it from a header, check that slices form one regular stack, sort them.

Slices are ordered by the position of their origin (ImagePositionPatient) along the slice normal
(row cosine x column cosine from ImageOrientationPatient), never by file name or InstanceNumber.
Slices that do not form one regular stack (mixed orientation, mixed matrix or pixel spacing,
duplicate positions, uneven slice spacing, gantry tilt) are rejected with a DicomError naming
the series and the file at fault. Works on header records alone: no pixel is read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petctiqa.dicom.header_scan import HeaderLike
from petctiqa.dicom.records import SeriesInfo, SliceGeometry, series_label
from petctiqa.errors import DicomError

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between two slices' direction cosines still called 'the same'."""
SPACING_RELATIVE_TOLERANCE = 1e-3
"""Largest relative difference between two slices' pixel spacings."""
DUPLICATE_POSITION_MM = 1e-3
"""Two slices closer than this along the normal are duplicates."""
GRID_TOLERANCE_MM = 0.02
GRID_RELATIVE_TOLERANCE = 0.1
"""Slice positions may sit max(0.02 mm, 10 % of the step) off a regular grid: multi-bed PET has
slightly uneven steps at bed boundaries (STS_001: 3.19-3.29 mm around 3.27 mm, 0.04 mm off)."""
OFF_AXIS_TOLERANCE_MM = 0.1
"""Slice origins may sit this far off the line along the normal (more means tilt or shear)."""


@dataclass(frozen=True)
class StackGeometry:
    """A regular stack of slices: the sort order and the voxel-to-patient affine."""

    order: tuple[int, ...]
    """Indices into the input slices, sorted by increasing position along the normal."""
    affine: np.ndarray
    """float64 (4, 4): (column i, row j, slice k, 1) -> patient mm (LPS)."""
    positions_mm: np.ndarray
    """Sorted slice positions along the normal (mm)."""
    slice_step_mm: float
    """Mean distance between neighbouring slices (mm); the nominal thickness for one slice."""

    @property
    def slice_normal(self) -> np.ndarray:
        axis = self.affine[:3, 2]
        return axis / np.linalg.norm(axis)


def stack_geometry(
    label: str,
    slices: Sequence[SliceGeometry],
    single_slice_step_mm: float | None = None,
    names: Sequence[str] | None = None,
) -> StackGeometry:
    """Sort slices along their normal and check they form one regular stack.

    ``label`` names the series in error messages, ``names`` (optional, aligned with ``slices``)
    names the files. ``single_slice_step_mm`` is the slice step used when there is one slice
    (SliceThickness, default 1 mm). Raises DicomError naming the series and the problem.
    """
    # Long on purpose: the stack checks in the order they are made, each naming the file at fault.
    n = len(slices)
    if n == 0:
        raise DicomError(f"{label}: no slices")
    names = list(names) if names is not None else [s.sop_instance_uid for s in slices]

    matrices = {(s.rows, s.columns) for s in slices}
    if len(matrices) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(matrices))
        first = (slices[0].rows, slices[0].columns)
        odd = next(i for i, s in enumerate(slices) if (s.rows, s.columns) != first)
        raise DicomError(
            f"{label}: mixed image matrix (rows x columns {shown}) in one series "
            f"({names[0]}: {first[0]}x{first[1]}, {names[odd]}: "
            f"{slices[odd].rows}x{slices[odd].columns})"
        )

    orientations = np.array([s.image_orientation for s in slices], dtype=np.float64)
    if orientations.shape != (n, 6) or not np.all(np.isfinite(orientations)):
        raise DicomError(
            f"{label}: ImageOrientationPatient must hold 6 numbers ({_first_bad(names, orientations)})"
        )
    deviation = np.abs(orientations - orientations[0]).max(axis=1)
    if deviation.max() > ORIENTATION_TOLERANCE:
        worst = int(deviation.argmax())
        raise DicomError(
            f"{label}: mixed ImageOrientationPatient ({names[0]}: {_fmt(orientations[0])}, "
            f"{names[worst]}: {_fmt(orientations[worst])})"
        )
    row_dir, col_dir = orientations[0, :3], orientations[0, 3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(float(row_dir @ col_dir)) > 1e-3
    ):
        raise DicomError(
            f"{label}: ImageOrientationPatient {_fmt(orientations[0])} is not two orthogonal "
            "unit vectors"
        )
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)

    spacings = np.array([s.pixel_spacing for s in slices], dtype=np.float64)
    if not np.all(np.isfinite(spacings)) or np.any(spacings <= 0):
        bad = ~np.all(np.isfinite(spacings) & (spacings > 0), axis=1)
        k = int(bad.argmax())
        raise DicomError(
            f"{label}: PixelSpacing must be two positive numbers ({names[k]}: {_fmt(spacings[k])})"
        )
    spread = np.abs(spacings - spacings[0]).max() / spacings[0].min()
    if spread > SPACING_RELATIVE_TOLERANCE:
        raise DicomError(f"{label}: mixed PixelSpacing in one series ({_fmt(np.unique(spacings))})")

    origins = np.array([s.image_position for s in slices], dtype=np.float64)
    if origins.shape != (n, 3) or not np.all(np.isfinite(origins)):
        raise DicomError(
            f"{label}: ImagePositionPatient must hold 3 numbers ({_first_bad(names, origins)})"
        )
    along = origins @ normal
    order = np.argsort(along, kind="stable")
    positions = along[order]
    origins = origins[order]

    if n == 1:
        step = float(single_slice_step_mm) if single_slice_step_mm else 1.0
    else:
        steps = np.diff(positions)
        k = int(steps.argmin())
        if steps[k] < DUPLICATE_POSITION_MM:
            raise DicomError(
                f"{label}: duplicate slice position {positions[k]:.3f} mm along the normal "
                f"({names[order[k]]} and {names[order[k + 1]]})"
            )
        step = float((positions[-1] - positions[0]) / (n - 1))
        residual = np.abs(positions - (positions[0] + step * np.arange(n)))
        if residual.max() > max(GRID_TOLERANCE_MM, GRID_RELATIVE_TOLERANCE * step):
            worst = int(np.abs(steps - np.median(steps)).argmax())
            raise DicomError(
                f"{label}: non-uniform slice spacing (steps {steps.min():.3f}-{steps.max():.3f} mm; "
                f"slices sit up to {residual.max():.2f} mm off a regular {step:.3f} mm grid; "
                f"step {steps[worst]:.3f} mm between {positions[worst]:.2f} and "
                f"{positions[worst + 1]:.2f} mm ({names[order[worst]]} and "
                f"{names[order[worst + 1]]}): missing or extra slice?)"
            )
        offsets = origins - origins[0]
        off_axis = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
        if off_axis.max() > OFF_AXIS_TOLERANCE_MM:
            raise DicomError(
                f"{label}: slice origins drift {off_axis.max():.2f} mm off the slice normal "
                "(gantry tilt or sheared stack is not supported)"
            )

    row_spacing, column_spacing = spacings[0]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * column_spacing
    affine[:3, 1] = col_dir * row_spacing
    affine[:3, 2] = normal * step
    affine[:3, 3] = origins[0]
    return StackGeometry(
        order=tuple(int(i) for i in order),
        affine=affine,
        positions_mm=positions,
        slice_step_mm=step,
    )


def _first_bad(names: Sequence[str], rows: np.ndarray) -> str:
    """``<name>: [values]`` of the first row holding a non-finite number."""
    if rows.ndim != 2:  # ragged: not even the right count of numbers
        return names[0]
    k = int((~np.all(np.isfinite(rows), axis=1)).argmax())
    return f"{names[k]}: {_fmt(rows[k])}"


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.ravel(values)) + "]"


def slice_geometry_from_header(ds: HeaderLike, source: str) -> SliceGeometry:
    """Read one instance's geometry tags; DicomError naming ``source`` when one is missing."""
    try:
        position = tuple(float(v) for v in ds.ImagePositionPatient)
        orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        missing = [
            k
            for k in (
                "ImagePositionPatient",
                "ImageOrientationPatient",
                "PixelSpacing",
                "Rows",
                "Columns",
            )
            if ds.get(k) in (None, "")
        ]
        what = ", ".join(missing) if missing else str(exc)
        raise DicomError(f"{source}: missing or invalid geometry tag(s): {what}") from exc
    if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2:
        raise DicomError(
            f"{source}: ImagePositionPatient/ImageOrientationPatient/PixelSpacing must hold "
            "3/6/2 numbers"
        )
    return SliceGeometry(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        image_position=position,  # type: ignore[arg-type]
        image_orientation=orientation,  # type: ignore[arg-type]
        rows=rows,
        columns=columns,
        pixel_spacing=spacing,  # type: ignore[arg-type]
    )


def series_stack_geometry(series: SeriesInfo) -> StackGeometry:
    """Geometry of an indexed series from its header records alone (no file is read)."""
    if len(series.slice_geometry) != len(series.files):
        raise DicomError(f"{series_label(series)}: no header geometry indexed for its files")
    return stack_geometry(
        series_label(series),
        series.slice_geometry,
        single_slice_step_mm=series.slice_thickness,
        names=[Path(f).name for f in series.files],
    )
