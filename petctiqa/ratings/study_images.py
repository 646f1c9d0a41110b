"""The images of a reader study, read from a ``build-dataset`` folder (manifest.csv + split.csv)
through :mod:`petctiqa.dataset.folder`.

A study image carries its protocol's axes as the manifest records them
(:func:`petctiqa.dataset.manifest.axis_columns`): the level of every grid axis and the exact
parameter value of every axis, by column name. The classic grid's are ``poisson_level``,
``gaussian_level``, ``jpeg_level`` and ``poisson_value``, ``gaussian_sigma``, ``jpeg_quality``;
``pet-ct-lowdose`` has e.g. ``pet_count_reduction_level``; a continuous design has values only.
The exporter carries the manifest's other columns through to ``mos.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from petctiqa.dataset.folder import (
    DatasetFolder,
    read_manifest_header,
    read_manifest_rows,
    read_split,
)
from petctiqa.dataset.manifest import AxisColumns, AxisValue, axis_columns, axis_values
from petctiqa.errors import DatasetError

STUDY_COLUMNS = ("image", "image_id", "patient_id", "slice_id", "reference")
"""The manifest columns every reader study reads, before its axes' level and value columns."""


@dataclass(frozen=True)
class StudyImage:
    """One distorted image of the dataset (one manifest row, the fields a reader study uses)."""

    image: str
    """Path relative to the dataset folder, POSIX separators (e.g. ``images/P_s1_p0g0j0.jpg``)."""
    image_id: str
    patient_id: str
    slice_id: str
    reference: str
    """Relative path of the undistorted reference render of the slice."""
    split: str
    """``train``/``test`` from split.csv ('' when the dataset has no split.csv)."""
    axes: tuple[AxisValue, ...] = ()
    """Every axis in protocol order: its value column and value, and for a grid axis its level
    column and level (level 0 is each axis's first level: no distortion in the shipped
    protocols)."""

    @property
    def levels(self) -> tuple[tuple[str, int], ...]:
        """(level column, level) of every grid axis, in protocol order."""
        return tuple(
            (a.level_column, a.level)
            for a in self.axes
            if a.level_column is not None and a.level is not None
        )

    @property
    def parameters(self) -> dict[str, float]:
        """Value column -> the exact value the image was made with, for every axis."""
        return {a.column: a.value for a in self.axes}

    @property
    def cell(self) -> tuple[int, ...]:
        """The grid cell: the levels in protocol order (classic: poisson, gaussian, jpeg)."""
        return tuple(level for _, level in self.levels)

    def level(self, column: str) -> int:
        """The level in ``column`` (e.g. ``jpeg_level``); :class:`DatasetError` if none."""
        for name, level in self.levels:
            if name == column:
                return level
        raise DatasetError(f"{self.image}: the manifest gives no column '{column}'")

    @property
    def poisson_level(self) -> int:
        return self.level("poisson_level")

    @property
    def gaussian_level(self) -> int:
        return self.level("gaussian_level")

    @property
    def jpeg_level(self) -> int:
        return self.level("jpeg_level")


def study_axes(dataset: Path) -> tuple[AxisColumns, ...]:
    """The axes' columns of ``dataset``'s manifest, in protocol order."""
    path = DatasetFolder(dataset).manifest
    axes = axis_columns(read_manifest_header(dataset), str(path))
    if not axes:
        raise DatasetError(
            f"{path}: no distortion columns (neither the classic poisson_level, gaussian_level, "
            "jpeg_level nor axis columns between reference and seed)"
        )
    return axes


def read_study_images(dataset: Path) -> tuple[StudyImage, ...]:
    """Read ``dataset/manifest.csv`` (and ``split.csv`` when there is one) into
    :class:`StudyImage` records, through :mod:`petctiqa.dataset.folder`."""
    dataset = Path(dataset)
    split = read_split(dataset, required=False)
    axes = study_axes(dataset)
    axis_names = [name for a in axes for name in (a.level, a.value) if name is not None]
    images: list[StudyImage] = []
    seen: set[str] = set()
    for where, row in read_manifest_rows(dataset, (*STUDY_COLUMNS, *axis_names)):
        image = row["image"]
        if image in seen:
            raise DatasetError(f"{where}: image {image!r} listed twice")
        seen.add(image)
        images.append(
            StudyImage(
                image=image,
                image_id=row["image_id"],
                patient_id=row["patient_id"],
                slice_id=row["slice_id"],
                reference=row["reference"],
                split=split.get(row["patient_id"], ""),
                axes=axis_values(row, axes, where),
            )
        )
    if not images:
        raise DatasetError(f"{DatasetFolder(dataset).manifest}: manifest lists no images")
    return tuple(images)


def distortion_strength(images: Sequence[StudyImage]) -> dict[str, tuple[float, ...]]:
    """Image path -> a key that orders the images from least to most distorted: the sum of the
    grid levels (level 0 first on every axis) plus, for each drawn axis (no levels), the
    value's distance from the plug-in's neutral value as a fraction of the largest such
    distance among ``images``; then the levels themselves (classic: ``(sum(cell), cell)``)."""
    drawn = sorted({a.column for im in images for a in im.axes if a.level is None})
    neutral = _neutral_values(drawn) if drawn else {}
    reach = {
        c: max((abs(im.parameters[c] - v) for im in images), default=0.0)
        for c, v in neutral.items()
    }
    keys = {}
    for im in images:
        values = im.parameters
        part = sum(abs(values[c] - v) / reach[c] for c, v in neutral.items() if reach[c] > 0)
        keys[im.image] = (sum(im.cell) + part, *im.cell)
    return keys


def _neutral_values(columns: Sequence[str]) -> dict[str, float]:
    """Value column (``<stem>_<parameter>``, the stem being a plug-in's name or
    ``<name>_<code>``) -> that plug-in's neutral value; unregistered plug-ins are left out."""
    # lazy: the registry imports every plug-in (numpy, the projectors' modules); only designs
    # with drawn values need it, so a grid study's web app does not load it
    from petctiqa.distortions import list_distortions

    out = {}
    for column in columns:
        for plugin in list_distortions():
            stem = column.removesuffix(f"_{plugin.parameter.name}")
            if stem != column and stem in (plugin.name, *_coded(plugin.name, stem)):
                out[column] = plugin.parameter.neutral
                break
    return out


def _coded(name: str, stem: str) -> tuple[str, ...]:
    """``stem`` when it is ``<name>_<one-letter code>`` (two axes of one plug-in)."""
    return (stem,) if stem.startswith(f"{name}_") and len(stem) == len(name) + 2 else ()
