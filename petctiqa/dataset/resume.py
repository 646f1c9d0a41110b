"""Resuming a build: what an earlier run recorded, and whether this run may build on it.

An output folder remembers the settings that determine its bytes and the PET/CT pair of every
patient it may take (``.build-state/build.json``); a run with other settings or other source
series is refused (:class:`OutputInUse`). A patient's or a slice's record is reused only when
it is for the same pair or reference and what it names still verifies by sha256.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from petctiqa.dataset.layout import (
    STATE_DIR,
    file_sha256,
    out_file,
    patient_state_path,
    read_json,
    reference_rel_path,
    render_rel_path,
    slice_id_for,
    slice_state_path,
)
from petctiqa.dataset.records import BuildOptions, PreparedPatient, SlicePlan, plan_from_state
from petctiqa.dataset.tasks import SliceTask
from petctiqa.errors import DatasetError
from petctiqa.protocol import protocol_record

if TYPE_CHECKING:
    from petctiqa.dicom.pairing import PetCtPair

SOURCE_SERIES_KEY = "source_series"
"""Key of ``.build-state/build.json`` that records each candidate patient's PET/CT pair."""


class OutputInUse(DatasetError):
    """The output folder holds a dataset built with other settings or from other series."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def reusable_patient(out_dir: Path, pair: PetCtPair, k: int) -> PreparedPatient | None:
    """The plan recorded by an earlier run, if it is for this pair and its references verify."""
    state = read_json(patient_state_path(out_dir, pair.patient_id))
    if state is None:
        return None
    try:
        plan = plan_from_state(state)
    except (KeyError, TypeError, ValueError):
        return None
    same_pair = (plan.study_uid, plan.ct_series_uid, plan.pet_series_uid) == (
        pair.study_uid,
        pair.ct.series_uid,
        pair.pet.series_uid,
    )
    if not same_pair or len(plan.slices) != k or plan.patient_id != pair.patient_id:
        return None
    for number, item in enumerate(plan.slices, start=1):
        # the names come from a file: accept only those this build would give
        slice_id = slice_id_for(pair.patient_id, number)
        wanted = (slice_id, number, reference_rel_path(slice_id))
        if (item.slice_id, item.slice_number, item.reference) != wanted:
            return None
        if file_sha256(out_file(out_dir, item.reference)) != item.reference_sha256:
            return None
        for key, rel, sha in item.renders:
            if rel != render_rel_path(slice_id, key) or file_sha256(out_file(out_dir, rel)) != sha:
                return None
    return plan


def slice_task(
    plan: SlicePlan, out_dir: Path, specs: tuple, seed: int, image_format: str, subsampling: str
) -> SliceTask:
    state = read_json(slice_state_path(out_dir, plan.slice_id)) or {}
    expected = None
    sheet = None
    if state.get("reference_sha256") == plan.reference_sha256 and isinstance(
        state.get("images"), dict
    ):
        expected = tuple(sorted((str(k), str(v)) for k, v in state["images"].items()))
        sheet = state.get("sheet_sha256")
    return SliceTask(plan, out_dir, specs, seed, image_format, subsampling, expected, sheet)


def build_settings(options: BuildOptions, n_patients: int, k: int, image_format: str) -> dict:
    """Everything that determines the dataset's bytes (checked against an earlier run)."""
    return {
        "protocol": protocol_record(options.protocol),
        "seed": options.seed,
        "patients": n_patients,
        "slices_per_patient": k,
        "image_format": image_format,
        "patient_list": list(options.patient_list) if options.patient_list else None,
        "source": "phantom" if options.src is None else str(Path(options.src).resolve()),
    }


def source_series(best: dict[str, PetCtPair]) -> dict[str, dict[str, str]]:
    """The PET/CT pair (UIDs) of every patient the build may take, by patient ID. With the
    settings, it fixes which patients and series the dataset is made of."""
    return {
        pid: {
            "study_uid": best[pid].study_uid,
            "ct_series_uid": best[pid].ct.series_uid,
            "pet_series_uid": best[pid].pet.series_uid,
        }
        for pid in sorted(best)
    }


def check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to mix a new build into an output folder built with different settings."""
    previous = read_json(out_dir / STATE_DIR / "build.json")
    if previous is None:
        return
    previous.pop(SOURCE_SERIES_KEY, None)
    old, new = (
        _flatten(json.loads(json.dumps(previous))),
        _flatten(json.loads(json.dumps(settings))),
    )
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise OutputInUse(
                f"{out_dir}: holds a dataset built with different settings ({key}: "
                f"{old.get(key)!r} before, {new.get(key)!r} now)"
            )


def check_source_series(out_dir: Path, series: dict[str, dict[str, str]]) -> None:
    """Refuse to rebuild an output folder from a source whose patients or PET/CT series differ
    from those it was built from (the same path with other files in it, for example): the new
    manifest would not describe the images already there."""
    previous = read_json(out_dir / STATE_DIR / "build.json")
    recorded = None if previous is None else previous.get(SOURCE_SERIES_KEY)
    if not isinstance(recorded, dict):
        return
    for pid in sorted(set(recorded) | set(series)):
        before, now = recorded.get(pid), series.get(pid)
        if before == now:
            continue
        if before is None:
            change = "has a PET/CT pair in this source, not in the one it was built from"
        elif now is None:
            change = "in the source it was built from, without a PET/CT pair in this one"
        else:
            key = next(
                (k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)), "?"
            )
            change = f"{key} {before.get(key)!r} before, {now.get(key)!r} now"
        raise OutputInUse(
            f"{out_dir}: holds a dataset built from other DICOM series (patient {pid}: {change})"
        )
