"""The build's records: what to build, what each task decided and wrote, and the summary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from petctiqa.dataset.candidates import Substitution
from petctiqa.protocol import DatasetProtocol


@dataclass(frozen=True)
class BuildOptions:
    """What to build and where. ``None`` means "take it from the protocol"."""

    out_dir: Path
    protocol: DatasetProtocol
    src: Path | None = None
    """DICOM tree; ``None`` uses the built-in phantom, generated once into ``phantom_cache``."""
    phantom_cache: Path | None = None
    """Folder of the phantom cache (outside the dataset); ``None``: ``$PETCTIQA_PHANTOM_CACHE``,
    ``$XDG_CACHE_HOME/petctiqa`` or ``~/.cache/petctiqa`` (see :mod:`.phantom_cache`)."""
    seed: int = 0
    jobs: int | None = None
    """Worker processes; ``None`` = all available cores; 1 runs everything in this process."""
    patients: int | None = None
    slices: int | None = None
    image_format: str | None = None
    patient_list: tuple[str, ...] | None = None
    """Explicit patient IDs, tried in this order (instead of the seeded order)."""
    progress: bool = False


@dataclass(frozen=True)
class SlicePlan:
    """One chosen CT slice and its reference render."""

    slice_id: str
    slice_number: int
    ct_index: int
    position_mm: float
    ct_sop_uid: str
    reference: str
    """Relative path of the reference PNG."""
    reference_sha256: str
    renders: tuple[tuple[str, str, str], ...] = ()
    """(volume key, relative path, sha256) of each render after the protocol's PET/CT-domain
    axes (none for a protocol without them; then not recorded, see :func:`plan_state`)."""


def plan_state(plan: PreparedPatient) -> dict:
    """The patient's record as JSON (a slice without renders is recorded as before they
    existed, so classic builds' state files keep their bytes)."""
    state = dataclasses.asdict(plan)
    for item in state["slices"]:
        if not item["renders"]:
            del item["renders"]
        else:
            item["renders"] = [list(r) for r in item["renders"]]
    return state


def plan_from_state(state: dict) -> PreparedPatient:
    """:func:`plan_state` read back; raises KeyError/TypeError/ValueError when malformed."""
    slices = []
    for item in state["slices"]:
        renders = tuple((str(k), str(rel), str(sha)) for k, rel, sha in item.get("renders", ()))
        slices.append(SlicePlan(**{**item, "renders": renders}))
    return PreparedPatient(**{**state, "slices": tuple(slices)})


@dataclass(frozen=True)
class PreparedPatient:
    """A patient ready for its slice tasks: its PET/CT pair (by UIDs) and its K chosen slices,
    whose references are written (what :func:`~petctiqa.dataset.tasks.prepare_patient`
    returns and records in ``.build-state/patients/``)."""

    patient_id: str
    study_uid: str
    ct_series_uid: str
    pet_series_uid: str
    frame_of_reference_uid: str
    slices: tuple[SlicePlan, ...]

    def provenance(self, item: SlicePlan) -> dict[str, object]:
        """The manifest fields every image of slice ``item`` shares (its DICOM origin and
        reference), for both manifest record types."""
        return {
            "patient_id": self.patient_id,
            "slice_id": item.slice_id,
            "slice_number": item.slice_number,
            "slice_position_mm": item.position_mm,
            "study_uid": self.study_uid,
            "ct_series_uid": self.ct_series_uid,
            "pet_series_uid": self.pet_series_uid,
            "ct_sop_uid": item.ct_sop_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "reference": item.reference,
        }


@dataclass(frozen=True)
class SliceOutcome:
    slice_id: str
    image_sha256: tuple[tuple[str, str], ...]
    """(image_id, sha256) for the 27 images in grid order."""
    written: int
    """Images (re)written by this task; the others were verified by hash."""


@dataclass(frozen=True)
class BuildSummary:
    out_dir: Path
    source: Path
    used_phantom: bool
    patients: tuple[str, ...]
    slices: int
    images: int
    images_written: int
    images_verified: int
    seconds: float
    """Wall time of the whole call (phantom generation included when it happened)."""
    phantom_seconds: float = 0.0
    index_seconds: float = 0.0
    """Wall time of indexing the DICOM tree and pairing (the workers start meanwhile)."""
    patient_task_seconds: float = 0.0
    """Summed worker time of the patient tasks (load volumes, choose slices, render)."""
    slice_task_seconds: float = 0.0
    """Summed worker time of the slice tasks (27 distortions, writes, contact sheet)."""
    substitutions: tuple[Substitution, ...] = ()
    """Patients taken because one earlier in the order could not be used, and why."""
