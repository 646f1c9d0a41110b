"""Names from DICOM text and paths from dataset files never leave the output folder (#18.1)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest

from petctiqa.dataset.build import BuildOptions, build_dataset
from petctiqa.dataset.manifest import MANIFEST_COLUMNS, read_manifest
from petctiqa.errors import DatasetError, PetctiqaError
from petctiqa.protocol import load_dataset_protocol
from petctiqa.safe_paths import safe_component


def set_patient_id(src: Path, old: str, new: str) -> int:
    """Rewrite PatientID ``old`` as ``new`` in every DICOM file under ``src``; returns how many."""
    changed = 0
    for path in sorted(src.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.PatientID == old:
            ds.PatientID = new
            ds.save_as(path)
            changed += 1
    return changed


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_hostile_patient_id_writes_nothing_outside_the_output_folder(
    small_phantom, small_protocol, tmp_path
):
    src = tmp_path / "src"
    shutil.copytree(small_phantom, src)
    escape = tmp_path / "escape"
    escape.mkdir()
    hostile = "../" * 16 + str(escape).lstrip("/") + "/x"
    assert set_patient_id(src, "PHANTOM-0001", hostile) > 0
    out = tmp_path / "work" / "out"
    before = _all_files(tmp_path) - _all_files(src)
    summary = build_dataset(
        BuildOptions(
            out_dir=out,
            protocol=load_dataset_protocol(small_protocol),
            src=src,
            jobs=1,
            patients=3,
            slices=1,
        )  # fmt: skip
    )
    assert summary.images == 81
    assert list(escape.iterdir()) == []
    new_files = _all_files(tmp_path) - _all_files(src) - before
    assert new_files and all(out in p.parents for p in new_files)
    records = read_manifest(out / "manifest.csv")
    hostile_rows = [r for r in records if r.patient_id == hostile]  # the real ID is kept
    assert len(hostile_rows) == 27
    stem = safe_component(hostile)
    assert stem != hostile and "/" not in stem
    assert {r.slice_id for r in hostile_rows} == {f"{stem}_s1"}
    assert all(r.image.startswith(f"images/{stem}_s1_") for r in hostile_rows)
    assert (out / hostile_rows[0].image).is_file()
    assert (out / ".build-state" / "patients" / f"{stem}.json").is_file()
    # the phantom's own IDs are kept as they are
    assert {r.slice_id for r in records if r.patient_id == "PHANTOM-0002"} == {"PHANTOM-0002_s1"}


def test_output_folder_symlinked_elsewhere_is_refused(small_phantom, small_protocol, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "references")
    with pytest.raises(PetctiqaError, match="outside"):
        build_dataset(
            BuildOptions(
                out_dir=out,
                protocol=load_dataset_protocol(small_protocol),
                src=small_phantom,
                jobs=1,
                patients=1,
                slices=1,
            )  # fmt: skip
        )
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    "cell", ["../../etc/passwd", "/etc/passwd", "images/../../x.png", "images\\x.png", ""]
)
@pytest.mark.parametrize("column", ["image", "reference"])
def test_manifest_path_cells_that_leave_the_dataset_are_refused(cell, column, tmp_path):
    row = {name: "0" for name in MANIFEST_COLUMNS}
    row.update(image="images/a.jpg", reference="references/a.png", poisson_form="impulse")
    row[column] = cell
    path = tmp_path / "manifest.csv"
    path.write_text(",".join(MANIFEST_COLUMNS) + "\n" + ",".join(row.values()) + "\n")
    with pytest.raises(DatasetError, match=rf"{path}: line 2: column '{column}': .* is not a rel"):
        read_manifest(path)
    row[column] = "images/a.jpg" if column == "image" else "references/a.png"
    path.write_text(",".join(MANIFEST_COLUMNS) + "\n" + ",".join(row.values()) + "\n")
    assert read_manifest(path)[0].image == "images/a.jpg"
