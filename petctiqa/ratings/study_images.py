"""The images of a reader study, read from a ``build-dataset`` folder (manifest.csv + split.csv).

Only the columns the reader study needs are read; everything else in the manifest is carried
through by the exporter, which re-reads the manifest with pandas.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from petctiqa.errors import DatasetError

MANIFEST_COLUMNS = (
    "image",
    "image_id",
    "patient_id",
    "slice_id",
    "reference",
    "poisson_level",
    "gaussian_level",
    "jpeg_level",
)


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
    poisson_level: int
    gaussian_level: int
    jpeg_level: int
    split: str
    """``train``/``test`` from split.csv ('' when the dataset has no split.csv)."""

    @property
    def cell(self) -> tuple[int, int, int]:
        """Distortion cell (poisson, gaussian, jpeg) levels."""
        return (self.poisson_level, self.gaussian_level, self.jpeg_level)


def safe_relative_path(value: str, where: str) -> str:
    """Return ``value`` as a normalised relative POSIX path inside the dataset, or raise."""
    text = value.replace("\\", "/")
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        raise DatasetError(f"{where}: path {value!r} must be relative and inside the dataset")
    return str(path)


def read_split(dataset: Path) -> dict[str, str]:
    """patient_id -> split from ``split.csv`` ({} when the file does not exist)."""
    path = dataset / "split.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"patient_id", "split"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: needs columns patient_id, split")
        return {row["patient_id"]: row["split"] for row in reader}


def read_study_images(dataset: Path) -> tuple[StudyImage, ...]:
    """Read ``dataset/manifest.csv`` (and ``split.csv``) into :class:`StudyImage` records."""
    dataset = Path(dataset)
    path = dataset / "manifest.csv"
    if not path.is_file():
        raise DatasetError(f"{path}: manifest not found (is {dataset} a build-dataset folder?)")
    split = read_split(dataset)
    images: list[StudyImage] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            image = safe_relative_path(row["image"], where)
            if image in seen:
                raise DatasetError(f"{where}: image {image!r} listed twice")
            seen.add(image)
            try:
                levels = [int(row[k]) for k in ("poisson_level", "gaussian_level", "jpeg_level")]
            except ValueError:
                raise DatasetError(f"{where}: distortion levels must be integers") from None
            images.append(
                StudyImage(
                    image=image,
                    image_id=row["image_id"],
                    patient_id=row["patient_id"],
                    slice_id=row["slice_id"],
                    reference=safe_relative_path(row["reference"], where),
                    poisson_level=levels[0],
                    gaussian_level=levels[1],
                    jpeg_level=levels[2],
                    split=split.get(row["patient_id"], ""),
                )
            )
    if not images:
        raise DatasetError(f"{path}: manifest lists no images")
    return tuple(images)
