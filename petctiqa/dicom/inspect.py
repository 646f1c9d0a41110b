"""What a DICOM tree holds, as data, text and JSON (``petctiqa inspect``).

The report is built from the header index; only PET pixels are read (for SUVmax). Problems in
one series (bad geometry, SUV tags missing) are reported on that series and do not stop the
report; a folder without any image series is an error.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from petctiqa.dicom.geometry import series_stack_geometry
from petctiqa.dicom.index import index_dicom_tree, skipped_by_reason
from petctiqa.dicom.pairing import PetCtPair, find_pet_ct_pairs, unpaired_pet_series
from petctiqa.dicom.records import DicomIndex, SeriesInfo
from petctiqa.dicom.suv import SuvParameters, load_pet_suv_with_parameters
from petctiqa.errors import DicomError

SKIPPED_EXAMPLES = 3
"""How many example paths the text report lists per skip reason."""


@dataclass(frozen=True)
class SeriesReport:
    """One series as listed by inspect."""

    series: SeriesInfo
    folder: str
    """Folder holding the series' files, relative to the inspected root."""
    slice_step_mm: float | None
    """Mean distance between slices along the normal; None when the geometry is inconsistent."""
    z_range_mm: tuple[float, float] | None
    problem: str | None
    """Why the series cannot be loaded (inconsistent geometry), or None."""


@dataclass(frozen=True)
class PetSuvReport:
    """SUV conversion of one PET series, or the reason it failed."""

    series: SeriesInfo
    parameters: SuvParameters | None
    suv_max: float | None
    problem: str | None


@dataclass(frozen=True)
class InspectReport:
    root: Path
    files_seen: int
    series: tuple[SeriesReport, ...]
    pairs: tuple[PetCtPair, ...]
    unpaired_pet: tuple[tuple[SeriesInfo, str], ...]
    pet_suv: tuple[PetSuvReport, ...]
    index: DicomIndex

    @property
    def patients(self) -> list[str]:
        return sorted({r.series.patient_id for r in self.series})

    def studies(self) -> list[tuple[str, str, str, str]]:
        """(patient_id, study_uid, study_date, study_description) for each study."""
        found = {
            (r.series.patient_id, r.series.study_uid): (
                r.series.study_date,
                r.series.study_description,
            )
            for r in self.series
        }
        return [(p, s, *found[(p, s)]) for p, s in sorted(found)]


def _relative_folder(series: SeriesInfo, root: Path) -> str:
    folders = sorted({str(Path(f).parent) for f in series.files})
    common = folders[0] if len(folders) == 1 else os.path.commonpath(folders)
    try:
        relative = os.path.relpath(common, root)
    except ValueError:
        relative = common
    return relative


def _series_report(series: SeriesInfo, root: Path) -> SeriesReport:
    try:
        geometry = series_stack_geometry(series)
    except DicomError as exc:
        return SeriesReport(series, _relative_folder(series, root), None, None, str(exc))
    positions = geometry.positions_mm
    return SeriesReport(
        series=series,
        folder=_relative_folder(series, root),
        slice_step_mm=geometry.slice_step_mm,
        z_range_mm=(float(positions[0]), float(positions[-1])),
        problem=None,
    )


def _pet_suv_report(series: SeriesInfo) -> PetSuvReport:
    try:
        volume, parameters = load_pet_suv_with_parameters(series)
    except DicomError as exc:
        return PetSuvReport(series, None, None, str(exc))
    return PetSuvReport(series, parameters, float(np.max(volume.array)), None)


def build_inspect_report(root: Path, progress: bool = False) -> InspectReport:
    """Index ``root``, pair PET with CT and convert each PET series to SUV.

    Raises DicomError when ``root`` is missing or holds no DICOM image series.
    """
    root = Path(root)
    index = index_dicom_tree(root, progress=progress)
    files_seen = sum(s.n_slices for s in index.series) + len(index.skipped)
    if not index.series:
        if files_seen == 0:
            raise DicomError(f"{root}: folder is empty (no files to inspect)")
        reasons = Counter(s.reason for s in index.skipped).most_common(2)
        shown = ", ".join(f"{n} {reason}" for reason, n in reasons)
        raise DicomError(f"{root}: no DICOM image series among {files_seen} files ({shown})")
    series_reports = tuple(_series_report(s, root) for s in index.series)
    pets = [s for s in index.series if s.modality == "PT"]
    iterator = pets
    if progress and pets:
        iterator = tqdm(pets, desc="PET SUV", unit="series", leave=False)
    pet_reports = tuple(_pet_suv_report(s) for s in iterator)
    return InspectReport(
        root=root,
        files_seen=files_seen,
        series=series_reports,
        pairs=tuple(find_pet_ct_pairs(index)),
        unpaired_pet=tuple(unpaired_pet_series(index)),
        pet_suv=pet_reports,
        index=index,
    )


# ----------------------------------------------------------------------------- formatting


def _short_uid(uid: str) -> str:
    return "…" + uid[-5:] if len(uid) > 6 else uid


def _series_name(series: SeriesInfo) -> str:
    number = "" if series.series_number is None else f"#{series.series_number} "
    return f"{number}{series.series_description or '(no description)'}"


def _spacing_text(report: SeriesReport) -> str:
    rows, cols = report.series.pixel_spacing
    step = "?" if report.slice_step_mm is None else f"{report.slice_step_mm:.3g}"
    return f"{rows:.3g} x {cols:.3g} x {step}"


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return ["  " + line(header), "  " + line(["-" * w for w in widths])] + [
        "  " + line(row) for row in rows
    ]


def format_inspect_text(report: InspectReport) -> str:
    """The report as aligned plain-text tables (what ``petctiqa inspect`` prints)."""
    # Long on purpose: the report's sections in the order they print (one layout, one place).
    out: list[str] = []
    studies = report.studies()
    out.append(f"DICOM tree {report.root}")
    out.append(
        f"  {len(report.patients)} patient(s), {len(studies)} study(ies), "
        f"{len(report.series)} image series, {len(report.pairs)} PET/CT pair(s); "
        f"{report.files_seen} files, {len(report.index.skipped)} skipped"
    )
    out.append("")
    out.append("Studies")
    out += _table(
        ["patient", "study date", "study description", "study UID"],
        [[p, _date_text(d), desc or "-", uid] for p, uid, d, desc in studies],
    )
    out.append("")
    out.append("Series")
    rows = []
    for r in report.series:
        s = r.series
        rows.append(
            [
                s.patient_id,
                _short_uid(s.study_uid),
                s.modality,
                str(s.n_slices),
                f"{s.rows}x{s.columns}",
                _spacing_text(r),
                "?" if r.z_range_mm is None else f"{r.z_range_mm[0]:.1f} .. {r.z_range_mm[1]:.1f}",
                s.units or "-",
                _series_name(s),
                r.folder,
            ]
        )
    out += _table(
        [
            "patient",
            "study",
            "mod",
            "slices",
            "matrix",
            "spacing mm",
            "z range mm",
            "units",
            "series",
            "folder",
        ],
        rows,
        right={3},
    )
    problems = [r for r in report.series if r.problem]
    if problems:
        out.append("")
        out.append("Series that cannot be loaded")
        out += [f"  - {r.problem}" for r in problems]
    out.append("")
    out.append("PET/CT pairs (same study and frame of reference)")
    if report.pairs:
        out += _table(
            ["patient", "PET series", "CT series", "PET slices", "CT slices", "overlap z mm"],
            [
                [
                    p.patient_id,
                    _series_name(p.pet),
                    _series_name(p.ct),
                    str(p.pet.n_slices),
                    str(p.ct.n_slices),
                    f"{p.overlap_mm[0]:.1f} .. {p.overlap_mm[1]:.1f} ({p.overlap_length_mm:.1f})",
                ]
                for p in report.pairs
            ],
            right={3, 4},
        )
    else:
        out.append("  none")
    for pet, reason in report.unpaired_pet:
        out.append(f"  unpaired PET {pet.patient_id} {_series_name(pet)}: {reason}")
    out.append("")
    out.append("PET SUV (body weight)")
    if report.pet_suv:
        rows = []
        for r in report.pet_suv:
            p = r.parameters
            if p is None:
                rows.append(
                    [r.series.patient_id, _series_name(r.series), r.series.units or "-"]
                    + ["-"] * 6
                    + [f"error: {_strip_label(r.problem)}"]
                )
                continue
            rows.append(
                [
                    r.series.patient_id,
                    _series_name(r.series),
                    p.units,
                    p.decay_correction or "-",
                    _num(p.weight_kg, "{:.1f}"),
                    _num(
                        None if p.injected_dose_bq is None else p.injected_dose_bq / 1e6, "{:.1f}"
                    ),
                    _num(p.uptake_time_s, "{:.0f}"),
                    f"{p.factor:.6g}",
                    f"{r.suv_max:.3f}",
                    "ok",
                ]
            )
        out += _table(
            [
                "patient",
                "series",
                "units",
                "decay",
                "weight kg",
                "dose MBq",
                "dt s",
                "SUV factor",
                "SUVmax",
                "status",
            ],
            rows,
            right={4, 5, 6, 7, 8},
        )
    else:
        out.append("  no PET series")
    out.append("")
    skipped = report.index.skipped
    out.append(f"Skipped files ({len(skipped)})")
    if skipped:
        for reason, paths in skipped_by_reason(skipped):
            examples = ", ".join(_rel(p, report.root) for p in paths[:SKIPPED_EXAMPLES])
            more = (
                f", +{len(paths) - SKIPPED_EXAMPLES} more" if len(paths) > SKIPPED_EXAMPLES else ""
            )
            out.append(f"  {len(paths):>5}  {reason}: {examples}{more}")
    else:
        out.append("  none")
    return "\n".join(out) + "\n"


def _strip_label(problem: str | None) -> str:
    return problem or ""


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _date_text(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or "-"


def _rel(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return str(path)


def _series_json(series: SeriesInfo) -> dict[str, Any]:
    return {
        "series_uid": series.series_uid,
        "series_number": series.series_number,
        "series_description": series.series_description,
        "modality": series.modality,
    }


def inspect_report_to_json(report: InspectReport) -> dict[str, Any]:
    """The report as JSON-ready data (what ``petctiqa inspect --json`` prints)."""
    suv_by_uid = {r.series.series_uid: r for r in report.pet_suv}
    series_out = []
    for r in report.series:
        s = r.series
        entry: dict[str, Any] = {
            "patient_id": s.patient_id,
            "study_uid": s.study_uid,
            "frame_of_reference_uid": s.frame_of_reference_uid,
            **_series_json(s),
            "study_description": s.study_description,
            "study_date": s.study_date,
            "slices": s.n_slices,
            "rows": s.rows,
            "columns": s.columns,
            "pixel_spacing_mm": list(s.pixel_spacing),
            "slice_step_mm": r.slice_step_mm,
            "slice_thickness_mm": s.slice_thickness,
            "z_range_mm": None if r.z_range_mm is None else list(r.z_range_mm),
            "units": s.units,
            "folder": r.folder,
            "problem": r.problem,
        }
        if s.modality == "PT":
            suv = suv_by_uid.get(s.series_uid)
            entry["suv"] = None if suv is None else _suv_json(suv)
        series_out.append(entry)
    skipped_counts = Counter(item.reason for item in report.index.skipped)
    return {
        "root": str(report.root),
        "files_seen": report.files_seen,
        "patients": report.patients,
        "studies": [
            {"patient_id": p, "study_uid": uid, "study_date": d, "study_description": desc}
            for p, uid, d, desc in report.studies()
        ],
        "series": series_out,
        "pairs": [
            {
                "patient_id": p.patient_id,
                "study_uid": p.study_uid,
                "frame_of_reference_uid": p.frame_of_reference_uid,
                "pet_series_uid": p.pet.series_uid,
                "ct_series_uid": p.ct.series_uid,
                "overlap_mm": list(p.overlap_mm),
            }
            for p in report.pairs
        ],
        "unpaired_pet": [
            {"series_uid": pet.series_uid, "patient_id": pet.patient_id, "reason": reason}
            for pet, reason in report.unpaired_pet
        ],
        "skipped": {
            "count": len(report.index.skipped),
            "by_reason": dict(sorted(skipped_counts.items())),
            "files": [
                {"path": _rel(item.path, report.root), "reason": item.reason}
                for item in report.index.skipped
            ],
        },
    }


def _suv_json(r: PetSuvReport) -> dict[str, Any]:
    p = r.parameters
    if p is None:
        return {"error": r.problem}
    return {
        "units": p.units,
        "factor": p.factor,
        "suv_max": r.suv_max,
        "decay_correction": p.decay_correction,
        "weight_kg": p.weight_kg,
        "injected_dose_bq": p.injected_dose_bq,
        "half_life_s": p.half_life_s,
        "injection_time": None if p.injection_time is None else p.injection_time.isoformat(),
        "scan_time": None if p.scan_time is None else p.scan_time.isoformat(),
        "uptake_time_s": p.uptake_time_s,
        "decay_factor": p.decay_factor,
    }
