"""The images of a reader study, read from a ``build-dataset`` folder (manifest.csv + split.csv)
through :mod:`petctiqa.dataset.folder`.

Only the columns the reader study needs are read; the exporter carries the manifest's other
columns through to ``mos.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from petctiqa.dataset.folder import DatasetFolder, read_manifest_rows, read_split
from petctiqa.errors import DatasetError

STUDY_COLUMNS = (
    "image",
    "image_id",
    "patient_id",
    "slice_id",
    "reference",
    "poisson_level",
    "gaussian_level",
    "jpeg_level",
)
"""The manifest columns a reader study reads (the others are carried through by the exporter)."""


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


def read_study_images(dataset: Path) -> tuple[StudyImage, ...]:
    """Read ``dataset/manifest.csv`` (and ``split.csv`` when there is one) into
    :class:`StudyImage` records, through :mod:`petctiqa.dataset.folder`."""
    dataset = Path(dataset)
    split = read_split(dataset, required=False)
    images: list[StudyImage] = []
    seen: set[str] = set()
    for where, row in read_manifest_rows(dataset, STUDY_COLUMNS):
        image = row["image"]
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
                reference=row["reference"],
                poisson_level=levels[0],
                gaussian_level=levels[1],
                jpeg_level=levels[2],
                split=split.get(row["patient_id"], ""),
            )
        )
    if not images:
        raise DatasetError(f"{DatasetFolder(dataset).manifest}: manifest lists no images")
    return tuple(images)
