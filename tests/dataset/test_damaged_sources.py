"""Damaged series: each patient or series left out gets one line naming the patient, series,
file and reason, and the build says which patient it used instead of which (#18.8)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from petctiqa.dataset.select import order_candidates
from petctiqa_cli.main import cli

PATIENTS = ["PHANTOM-0001", "PHANTOM-0002", "PHANTOM-0003"]
VICTIM = "PHANTOM-0002"


def _folder(src: Path, modality: str, patient: str = VICTIM) -> Path:
    pattern = "*/*CT*" if modality == "CT" else "*/*PET*"
    return sorted((src / "Lung-PET-CT-Dx-Phantom" / patient).glob(pattern))[0]


def _edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN or 0 in a DS value is what the test wants
        change(ds)
        ds.save_as(path)


def _victim(src: Path) -> Path:
    return sorted(_folder(src, "CT").iterdir())[10]


def _neighbour(src: Path) -> Path:
    return sorted(_folder(src, "CT").iterdir())[11]


def damage(variant: str, src: Path) -> list[str]:
    """Damage patient VICTIM's series in ``src``; returns texts its left-out line must hold."""
    victim = _victim(src)
    if variant == "empty":
        victim.write_bytes(b"")
        return [f"{victim}: empty file (0 bytes)", "non-uniform slice spacing"]
    if variant == "no-position":
        _edit(victim, lambda ds: delattr(ds, "ImagePositionPatient"))
        return [f"{victim}: CT image without ImagePositionPatient", "non-uniform slice spacing"]
    if variant == "duplicate-position":
        position = pydicom.dcmread(_neighbour(src)).ImagePositionPatient
        _edit(victim, lambda ds: setattr(ds, "ImagePositionPatient", position))
        return ["duplicate slice position", victim.name, _neighbour(src).name]
    if variant == "missing-slice":
        victim.unlink()
        return ["non-uniform slice spacing", "missing or extra slice?", ".dcm and 1-"]
    if variant == "rows-columns":
        _edit(victim, lambda ds: setattr(ds, "Rows", 32))
        return ["mixed image matrix", f"{victim.name}: 32x64"]
    if variant == "orientation":
        _edit(victim, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0, 1]))
        return ["mixed ImageOrientationPatient", victim.name]
    if variant == "zero-spacing":
        _edit(victim, lambda ds: setattr(ds, "PixelSpacing", ["0", "0"]))
        return ["PixelSpacing must be two positive numbers", f"{victim.name}: [0, 0]"]
    if variant == "nan-position":
        _edit(victim, lambda ds: setattr(ds, "ImagePositionPatient", ["NaN", "0", "0"]))
        return ["ImagePositionPatient must hold 3 numbers", f"{victim.name}: [nan"]
    if variant == "pet-as-nm":
        for path in _folder(src, "PET").iterdir():
            _edit(path, lambda ds: setattr(ds, "Modality", "NM"))
        return ["NM series 'PET AC'", "Modality NM, not PT", "no PET series"]
    raise AssertionError(variant)


VARIANTS = [
    "empty", "no-position", "duplicate-position", "missing-slice", "rows-columns",
    "orientation", "zero-spacing", "nan-position", "pet-as-nm",
]  # fmt: skip


def _seed_with_first(patient: str) -> int:
    return next(s for s in range(100) if order_candidates(PATIENTS, s)[0] == patient)


def _build(src: Path, out: Path, protocol: Path, patients: int, seed: int = 0):
    return CliRunner().invoke(
        cli,
        [
            "build-dataset", "--quiet", "--src", str(src), "--out", str(out), "--protocol",
            str(protocol), "--patients", str(patients), "--slices", "1", "--jobs", "1",
            "--seed", str(seed),
        ],
    )  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_damaged_series_is_named_and_the_substitute_reported(
    variant, small_phantom, small_protocol, tmp_path
):
    src = tmp_path / "src"
    shutil.copytree(small_phantom, src)
    must_hold = damage(variant, src)
    seed = _seed_with_first(VICTIM)  # the seeded order wants the damaged patient first
    result = _build(src, tmp_path / "ds", small_protocol, patients=1, seed=seed)
    assert result.exit_code == 0, result.output
    lines = [x for x in result.stderr.splitlines() if f"patient {VICTIM}:" in x]
    assert len(lines) == 1, result.stderr  # one line for the patient left out ...
    (line,) = lines
    for text in must_hold:  # ... naming the series, the file and the reason
        assert text in line, line
    assert "series '" in line and "the patient is left out" in line
    substitute = order_candidates(PATIENTS, seed)[1]
    (summary,) = [x for x in result.stdout.splitlines() if "used instead of" in x]
    assert summary.startswith(f"patient {substitute} used instead of {VICTIM} (patient {VICTIM}: ")
    for text in must_hold:
        assert text in summary

    # asking for every patient: one clear error that names the damage
    result = _build(src, tmp_path / "ds-all", small_protocol, patients=3)
    assert result.exit_code == 2
    (error,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert error.startswith(f"error: {src}: 2 patients have a PET/CT pair, 3 requested; left out")
    assert error.endswith("(use --patients 2)")
    assert all(text in error for text in must_hold), error


def _copy_pet_series(src: Path) -> Path:
    """A second PET series of VICTIM (new series and instance UIDs; sorts after the first)."""
    first = _folder(src, "PET")
    copy = first.with_name(first.name + "-copy")
    shutil.copytree(first, copy)
    series_uid = str(pydicom.dcmread(next(first.iterdir())).SeriesInstanceUID) + ".9"
    for path in copy.iterdir():

        def renumber(ds: pydicom.Dataset) -> None:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()

        _edit(path, renumber)
    return copy


def test_pet_without_weight_falls_back_to_another_pair_of_the_same_patient(
    small_phantom, small_protocol, tmp_path
):
    src = tmp_path / "src"
    shutil.copytree(small_phantom, src)
    copy = _copy_pet_series(src)
    for path in _folder(src, "PET").iterdir():  # the first-ranked PET loses its weight
        _edit(path, lambda ds: delattr(ds, "PatientWeight"))
    seed = _seed_with_first(VICTIM)
    result = _build(src, tmp_path / "ds", small_protocol, patients=1, seed=seed)
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.stderr.splitlines() if f"patient {VICTIM}:" in x]
    assert "missing PatientWeight (kg): cannot compute body-weight SUV" in line
    assert f"using the PET/CT pair of the PT series 'PET AC' in {copy} instead" in line
    assert "used instead of" not in result.stdout
    manifest = (tmp_path / "ds" / "manifest.csv").read_text()
    assert f",{VICTIM}," in manifest
    assert str(pydicom.dcmread(next(copy.iterdir())).SeriesInstanceUID) in manifest


def test_pet_without_dose_and_no_other_pair_is_replaced_and_named(
    small_phantom, small_protocol, tmp_path
):
    src = tmp_path / "src"
    shutil.copytree(small_phantom, src)
    for path in _folder(src, "PET").iterdir():
        _edit(path, lambda ds: delattr(ds, "RadiopharmaceuticalInformationSequence"))
    seed = _seed_with_first(VICTIM)
    result = _build(src, tmp_path / "ds", small_protocol, patients=1, seed=seed)
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.stderr.splitlines() if f"patient {VICTIM}:" in x]
    assert line.startswith(f"skipping patient {VICTIM}: PT series 'PET AC' in ")
    assert "missing RadiopharmaceuticalInformationSequence" in line
    substitute = order_candidates(PATIENTS, seed)[1]
    assert f"patient {substitute} used instead of {VICTIM} (patient {VICTIM}: PT" in result.stdout
