"""End-to-end tests of `petctiqa build-dataset` on the small phantom and on real PET/CT data."""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image

from petctiqa.dataset.build import BuildOptions, build_dataset
from petctiqa.dataset.manifest import MANIFEST_COLUMNS, read_manifest
from petctiqa.protocol import load_dataset_protocol
from petctiqa_cli.main import cli

SHIPPED_TEXT = (resources.files("petctiqa_protocols") / "pet-ct-iqa-ds.toml").read_text()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every dataset file (not the phantom source, not the build state)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith((".build-state", "phantom-dicom", "dataset.json")):
            out[rel] = _sha(path)
    return out


def _run(*args: str):
    return CliRunner().invoke(cli, ["build-dataset", "--quiet", *args])


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, small_phantom, small_protocol) -> Path:
    """2 patients x 2 slices x 27 built with --jobs 1."""
    out = tmp_path_factory.mktemp("ds") / "jobs1"
    result = _run(
        "--src", str(small_phantom), "--out", str(out), "--protocol", str(small_protocol),
        "--patients", "2", "--slices", "2", "--jobs", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "dataset complete: 108 images" in result.stdout
    return out


def _small_options(out: Path, protocol: Path, phantom: Path, jobs: int) -> BuildOptions:
    """The settings of ``small_dataset`` (2 patients x 2 slices), for builds compared with it."""
    return BuildOptions(
        out_dir=out,
        protocol=load_dataset_protocol(protocol),
        src=phantom,
        jobs=jobs,
        patients=2,
        slices=2,
    )


def test_small_build_writes_everything_the_manifest_promises(small_dataset, small_phantom):
    records = read_manifest(small_dataset / "manifest.csv")
    assert len(records) == 2 * 2 * 27
    assert len({r.image_id for r in records}) == 108
    patients = sorted({r.patient_id for r in records})
    assert len(patients) == 2 and all(p.startswith("PHANTOM-") for p in patients)
    header = (small_dataset / "manifest.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == MANIFEST_COLUMNS
    for record in records:
        path = small_dataset / record.image
        assert record.image == f"images/{record.image_id}.jpg"
        assert (
            record.image_id
            == f"{record.slice_id}_p{record.poisson_level}g{record.gaussian_level}j{record.jpeg_level}"
        )
        assert _sha(path) == record.sha256
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
        assert (small_dataset / record.reference).is_file()
    levels = {(r.poisson_level, r.gaussian_level, r.jpeg_level) for r in records}
    assert len(levels) == 27
    by_level = {(r.poisson_level, r.gaussian_level, r.jpeg_level): r for r in records}
    assert by_level[(1, 2, 2)].poisson_value == 0.005
    assert by_level[(1, 2, 2)].gaussian_sigma == 10.0
    assert by_level[(1, 2, 2)].jpeg_quality == 40
    assert len(list((small_dataset / "references").glob("*.png"))) == 4
    assert len(list((small_dataset / "sheets").glob("*.png"))) == 4
    sheet = Image.open(small_dataset / "sheets" / f"{records[0].slice_id}.png")
    assert sheet.size == (1192, 470)  # 9 x 128 px tiles + gaps; 3 rows + labels + title
    meta = json.loads((small_dataset / "dataset.json").read_text())
    assert meta["counts"]["images"] == 108 and meta["counts"]["slices"] == 4
    assert meta["seed"] == 0 and meta["protocol"] == "pet-ct-iqa-ds"


def test_every_image_traces_back_to_its_ct_slice(small_dataset, small_phantom):
    records = read_manifest(small_dataset / "manifest.csv")
    headers = {}
    for path in small_phantom.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        headers[ds.SOPInstanceUID] = ds
    for record in records:
        ds = headers[record.ct_sop_uid]
        assert ds.Modality == "CT"
        assert ds.PatientID == record.patient_id
        assert ds.StudyInstanceUID == record.study_uid
        assert ds.SeriesInstanceUID == record.ct_series_uid
        assert ds.FrameOfReferenceUID == record.frame_of_reference_uid
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(
            record.slice_position_mm, abs=1e-3
        )
        pet_modalities = {
            h.Modality for h in headers.values() if h.SeriesInstanceUID == record.pet_series_uid
        }
        assert pet_modalities == {"PT"}
    for patient in {r.patient_id for r in records}:
        positions = sorted({r.slice_position_mm for r in records if r.patient_id == patient})
        assert len(positions) == 2 and positions[1] - positions[0] > 10.0  # distinct levels


def test_reference_render_is_the_undistorted_q100_cell(small_dataset):
    records = read_manifest(small_dataset / "manifest.csv")
    ref_cell = next(
        r for r in records if (r.poisson_level, r.gaussian_level, r.jpeg_level) == (0, 0, 0)
    )
    reference = np.asarray(Image.open(small_dataset / ref_cell.reference).convert("RGB")).astype(
        int
    )
    decoded = np.asarray(Image.open(small_dataset / ref_cell.image).convert("RGB")).astype(int)
    assert reference.shape == decoded.shape == (128, 128, 3)
    assert reference.max() == 255
    assert np.abs(reference - decoded).mean() < 2.0  # q100 JPEG of the same pixels


def test_split_is_patient_level(small_dataset):
    split = pd.read_csv(small_dataset / "split.csv")
    assert list(split.columns) == ["patient_id", "split"]
    assert split.patient_id.is_unique
    assert sorted(split.split) == ["test", "train"]
    manifest = pd.read_csv(small_dataset / "manifest.csv")
    assert set(split.patient_id) == set(manifest.patient_id)


@pytest.mark.slow
def test_jobs_do_not_change_a_single_byte(small_dataset, small_phantom, small_protocol, tmp_path):
    out = tmp_path / "jobs2"
    result = _run(
        "--src", str(small_phantom), "--out", str(out), "--protocol", str(small_protocol),
        "--patients", "2", "--slices", "2", "--jobs", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    first, second = _tree_hashes(small_dataset), _tree_hashes(out)
    assert len(first) == 108 + 4 + 4 + 4 + 2  # images, references, sheets, crops sheets, csvs
    assert first == second


@pytest.mark.slow
@pytest.mark.parametrize("pool_start_delay", [0.0, 3.0])
def test_patients_prepared_while_the_pool_starts_give_the_same_bytes(
    small_dataset, small_phantom, small_protocol, tmp_path, monkeypatch, pool_start_delay
):
    """With a slow pool start the main process prepares the patients itself (a delay of 3 s:
    all of them here), without one the workers do: the same files either way."""
    import time

    import petctiqa.dataset.build as build

    real_start = build.start_workers
    inline: list[str] = []
    real_prepare = build.prepare_patient

    def slow_start(executor, jobs):
        time.sleep(pool_start_delay)
        real_start(executor, jobs)

    def recording_prepare(task):
        inline.append(task.pair.patient_id)
        return real_prepare(task)

    monkeypatch.setattr(build, "start_workers", slow_start)
    if pool_start_delay:  # every patient is prepared here (a local function cannot be pickled)
        monkeypatch.setattr(build, "prepare_patient", recording_prepare)
    out = tmp_path / "inline"
    summary = build.build_dataset(_small_options(out, small_protocol, small_phantom, jobs=2))
    assert summary.images == 108
    assert _tree_hashes(out) == _tree_hashes(small_dataset)
    if pool_start_delay:
        assert sorted(inline) == sorted(summary.patients)


@pytest.mark.slow
def test_resume_redoes_only_missing_or_damaged_files(
    small_dataset, small_protocol, small_phantom, tmp_path
):
    out = tmp_path / "resumed"
    shutil.copytree(small_dataset, out)
    original = _tree_hashes(small_dataset)
    images = sorted((out / "images").glob("*.jpg"))
    for path in images[:3]:
        path.unlink()
    images[10].write_bytes(b"not a jpeg")
    images[40].write_bytes(images[40].read_bytes()[:-100])
    sheets = sorted((out / "sheets").glob("*.png"))
    sheets[1].unlink()
    references = sorted((out / "references").glob("*.png"))
    references[3].write_bytes(b"damaged")
    (out / "manifest.csv").unlink()
    state = sorted((out / ".build-state" / "slices").glob("*.json"))
    state[2].unlink()  # a slice interrupted before its state was recorded
    options = _small_options(out, small_protocol, small_phantom, jobs=1)
    summary = build_dataset(options)
    # only the 5 damaged images are rewritten: the slice without state is recomputed and its
    # intact files left alone; the re-rendered reference has the same bytes
    assert summary.images_written == 5
    assert _tree_hashes(out) == original
    again = build_dataset(options)
    assert again.images_written == 0 and again.images_verified == 108


def test_changed_settings_are_refused_and_output_kept(small_dataset, small_phantom, small_protocol):
    before = _tree_hashes(small_dataset)
    result = _run(
        "--src", str(small_phantom), "--out", str(small_dataset), "--protocol", str(small_protocol),
        "--patients", "2", "--slices", "2", "--seed", "1",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "different settings (seed: 0 before, 1 now)" in result.stderr
    assert _tree_hashes(small_dataset) == before


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "no-pet",
        "corrupt",
        "corrupt-extra",
        "damaged-header",
        "bad-protocol",
        "rating-scale-protocol",
        "too-many",
    ],
)
def test_bad_input_is_one_clear_error_and_keeps_output(case, small_dataset, shared_data, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(small_dataset, out)
    before = _tree_hashes(out)
    src = tmp_path / "src"
    args = ["--patients", "2", "--slices", "2"]
    if case == "empty":
        src.mkdir()
        expected = f"{src}: no DICOM image series found"
    elif case == "no-pet":
        shutil.copytree(shared_data / "dicom" / "CRLM-CT-1004", src)
        expected = f"{src}: no PET series (Modality PT) found; series present: CT"
    elif case == "corrupt":
        for name in ("CT_crop", "PET_crop"):
            shutil.copytree(shared_data / "dicom" / "STS_001" / name, src / name)
        victim = sorted((src / "CT_crop").iterdir())[9]
        victim.chmod(0o644)
        victim.write_bytes(victim.read_bytes()[:40000])  # header intact, pixel data cut
        args = ["--patients", "1", "--slices", "2"]
        expected = f"{victim}: truncated file (40000 bytes, pixel data alone needs 79992)"
    elif case == "corrupt-extra":
        for name in ("CT_crop", "PET_crop"):
            shutil.copytree(shared_data / "dicom" / "STS_001" / name, src / name)
        victim = src / "CT_crop" / "zz-extra.dcm"  # the series itself stays complete
        victim.write_bytes((src / "CT_crop" / "000001.dcm").read_bytes()[:20000])
        args = ["--patients", "1", "--slices", "2"]
        expected = f"{victim}: truncated file (20000 bytes, pixel data alone needs 79992) (beside"
    elif case == "damaged-header":
        for name in ("CT_crop", "PET_crop"):
            shutil.copytree(shared_data / "dicom" / "STS_001" / name, src / name)
        victim = sorted((src / "CT_crop").iterdir())[9]
        _cut_header(victim)  # skipped as "missing SeriesInstanceUID": CT_crop misses a slice
        args = ["--patients", "1", "--slices", "2"]
        expected = (
            f"{victim}: missing SeriesInstanceUID; without it the CT series "
            f"'IBSI_1_STS_001_CT_image' in {src / 'CT_crop'} fails its geometry check: "
            "non-uniform slice spacing (steps 3.270-6.540 mm;"
        )
    elif case == "rating-scale-protocol":
        shutil.copytree(shared_data / "dicom" / "STS_001" / "CT_crop", src / "CT_crop")
        args += ["--protocol", "likert-0-4"]
        expected = (
            "likert-0-4 is a rating-scale protocol, not a dataset protocol (dataset protocols: "
            "pet-ct-iqa-ds, pet-ct-iqa-ds-continuous, pet-ct-iqa-ds-shot, pet-ct-lowdose)"
        )
    elif case == "bad-protocol":
        shutil.copytree(shared_data / "dicom" / "STS_001" / "CT_crop", src / "CT_crop")
        bad = tmp_path / "bad.toml"
        bad.write_text(
            SHIPPED_TEXT.replace("sigmas = [0.0, 5.0, 10.0]", "sigmas = [0.0, 5.0, -1.0]")
        )
        args += ["--protocol", str(bad)]
        expected = f"{bad}: field 'distortions.gaussian.sigmas' must be >= 0.0, got -1.0"
    else:
        shutil.copytree(shared_data / "dicom" / "STS_002", src)
        args = ["--patients", "3"]
        expected = f"{src}: 1 patients have a PET/CT pair, 3 requested (use --patients 1)"
    result = _run("--src", str(src), "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert error_lines[0].startswith(f"error: {expected}"), error_lines[0]
    assert _tree_hashes(out) == before


def test_real_sts_001_pair_with_cropped_ct(shared_data, tmp_path):
    """STS_001: the CT is cropped to 202x198 around the tumour, far smaller than the PET field."""
    out = tmp_path / "sts"
    result = _run(
        "--src", str(shared_data / "dicom" / "STS_001"), "--out", str(out),
        "--patients", "1", "--slices", "2", "--jobs", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = read_manifest(out / "manifest.csv")
    assert len(records) == 54
    wholebody = next((shared_data / "dicom" / "STS_001" / "PET_wholebody").iterdir())
    ct = next((shared_data / "dicom" / "STS_001" / "CT_crop").iterdir())
    pet_header = pydicom.dcmread(wholebody, stop_before_pixels=True)
    ct_header = pydicom.dcmread(ct, stop_before_pixels=True)
    # of the two PET series (whole body, crop) the one with the widest field is used
    assert {r.pet_series_uid for r in records} == {pet_header.SeriesInstanceUID}
    assert {r.ct_series_uid for r in records} == {ct_header.SeriesInstanceUID}
    assert sorted({r.slice_position_mm for r in records}) == [-861.7, -711.28]
    reference = np.asarray(Image.open(out / records[0].reference))
    assert reference.shape == (512, 512, 3) and reference.max() == 255
    for record in records:
        assert _sha(out / record.image) == record.sha256


def test_png_format_holds_the_same_pixels_as_the_jpeg_files(
    small_dataset, small_phantom, small_protocol, tmp_path
):
    jpeg_records = read_manifest(small_dataset / "manifest.csv")
    patient = jpeg_records[-1].patient_id
    listing = tmp_path / "patients.txt"
    listing.write_text(f"# one patient of the jpeg build\n{patient}\n")
    out = tmp_path / "png"
    result = _run(
        "--src", str(small_phantom), "--out", str(out), "--protocol", str(small_protocol),
        "--slices", "2", "--format", "png", "--patient-list", str(listing), "--jobs", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    png_records = read_manifest(out / "manifest.csv")
    assert len(png_records) == 54 and {r.patient_id for r in png_records} == {patient}
    jpeg_by_id = {r.image_id: r for r in jpeg_records}
    for record in png_records:
        assert record.image.endswith(".png")
        twin = jpeg_by_id[record.image_id]
        assert record.slice_position_mm == twin.slice_position_mm
        png_pixels = np.asarray(Image.open(out / record.image).convert("RGB"))
        jpeg_pixels = np.asarray(Image.open(small_dataset / twin.image).convert("RGB"))
        np.testing.assert_array_equal(png_pixels, jpeg_pixels)


def test_patients_without_enough_usable_slices_are_reported(
    small_phantom, small_protocol, tmp_path
):
    result = _run(
        "--src", str(small_phantom), "--out", str(tmp_path / "ds"), "--protocol",
        str(small_protocol), "--patients", "1", "--slices", "200", "--jobs", "1",
    )  # fmt: skip
    assert result.exit_code == 2
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(
        f"error: {small_phantom}: only 0 of 1 requested patients have 200 usable"
    )
    assert line.count("patient PHANTOM-") == 3  # every candidate was tried, each reason given
    assert "200 needed" in line
    assert "skipping patient PHANTOM-" in result.stderr


@pytest.mark.slow
def test_phantom_is_generated_once_and_reused(tmp_path):
    out = tmp_path / "ds"
    cache = ["--phantom-cache", str(tmp_path / "cache")]
    first = _run("--out", str(out), "--patients", "1", "--slices", "1", "--jobs", "1", *cache)
    assert first.exit_code == 0, first.output
    assert "generating the built-in synthetic PET/CT phantom (1 patients, seed 0)" in first.stderr
    before = _tree_hashes(out)
    phantom_files = sorted((tmp_path / "cache" / "phantom-1p-seed0").rglob("*.dcm"))
    stamp = phantom_files[0].stat().st_mtime_ns
    second = _run("--out", str(out), "--patients", "1", "--slices", "1", "--jobs", "1", *cache)
    assert second.exit_code == 0, second.output
    assert (
        "using the built-in synthetic PET/CT phantom (1 patients, seed 0) already in"
        in second.stderr
    )
    assert "[0 written, 27 verified" in second.stdout
    assert phantom_files[0].stat().st_mtime_ns == stamp
    assert _tree_hashes(out) == before


# ----------------------------------------------------------------------------- audit follow-ups


def _cut_header(path: Path) -> int:
    """Cut a DICOM file just before its SeriesInstanceUID value (a damaged header: the index
    then skips it as "missing SeriesInstanceUID"); returns the new size."""
    data = path.read_bytes()
    uid = pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
    size = data.index(str(uid).encode()) - 10
    path.chmod(0o644)
    path.write_bytes(data[:size])
    return size


def test_rerun_on_another_source_path_is_refused_and_output_kept(
    small_dataset, small_phantom, small_protocol, tmp_path
):
    before = _tree_hashes(small_dataset)
    build_json = json.loads((small_dataset / ".build-state" / "build.json").read_text())
    assert build_json["source"] == str(small_phantom.resolve())
    assert sorted(build_json["source_series"]) == ["PHANTOM-0001", "PHANTOM-0002", "PHANTOM-0003"]
    other = tmp_path / "copy-of-the-phantom"
    shutil.copytree(small_phantom, other)
    result = _run(
        "--src", str(other), "--out", str(small_dataset), "--protocol", str(small_protocol),
        "--patients", "2", "--slices", "2",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line == (
        f"error: {small_dataset}: holds a dataset built with different settings (source: "
        f"'{small_phantom.resolve()}' before, '{other.resolve()}' now); use another --out"
    )
    assert _tree_hashes(small_dataset) == before


def test_rerun_on_changed_source_content_is_refused_and_output_kept(
    small_phantom, small_protocol, tmp_path
):
    """Same --src path, other patients in it: refused before anything is written."""
    collection = "Lung-PET-CT-Dx-Phantom"
    src = tmp_path / "src"
    for pid in ("PHANTOM-0001", "PHANTOM-0002"):
        shutil.copytree(small_phantom / collection / pid, src / collection / pid)
    out = tmp_path / "ds"
    args = ["--src", str(src), "--out", str(out), "--protocol", str(small_protocol)]
    args += ["--patients", "2", "--slices", "1", "--jobs", "1"]
    first = _run(*args)
    assert first.exit_code == 0, first.output
    before = _tree_hashes(out)
    assert len(before) == 2 * 27 + 2 + 2 + 2 + 2  # images, references, sheets, crops, csv
    shutil.rmtree(src / collection / "PHANTOM-0002")
    shutil.copytree(small_phantom / collection / "PHANTOM-0003", src / collection / "PHANTOM-0003")
    second = _run(*args)
    assert second.exit_code == 2, second.output
    (line,) = [x for x in second.stderr.splitlines() if x.startswith("error:")]
    assert line == (
        f"error: {out}: holds a dataset built from other DICOM series (patient PHANTOM-0002: in "
        "the source it was built from, without a PET/CT pair in this one); use another --out"
    )
    assert _tree_hashes(out) == before


def test_resume_removes_temporaries_left_by_a_killed_build(
    small_dataset, small_phantom, small_protocol, tmp_path
):
    out = tmp_path / "killed"
    shutil.copytree(small_dataset, out)
    image = sorted((out / "images").glob("*.jpg"))[7]
    half = image.read_bytes()[:1000]
    image.unlink()  # killed while writing this image: only its temporary file is there
    stale = [
        out / "images" / f".{image.name}.k3j_x9q2.tmp",
        out / "references" / ".PHANTOM-0001_s1.png.abcdefgh.tmp",
        out / "sheets" / ".PHANTOM-0001_s2.png.0a1b2c3d.tmp",
        out / ".manifest.csv.zz09yy87.tmp",
    ]
    for path in stale:
        path.write_bytes(half)
    result = _run(
        "--src", str(small_phantom), "--out", str(out), "--protocol", str(small_protocol),
        "--patients", "2", "--slices", "2", "--jobs", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"removed 4 temporary files left by an interrupted build in {out}" in result.stderr
    assert "[1 written, 107 verified" in result.stdout
    assert not any(path.exists() for path in stale)
    assert _tree_hashes(out) == _tree_hashes(small_dataset)


def test_only_the_atomic_writers_temporaries_are_removed(tmp_path):
    from petctiqa.atomic import atomic_writer
    from petctiqa.dataset.build import remove_stale_temporaries

    out = tmp_path / "ds"
    (out / "images").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt), atomic_writer(out / "images" / "a_s1_p0g0j0.jpg") as fh:
        fh.write(b"x")
        real_tmp = next((out / "images").glob(".a_s1_p0g0j0.jpg.*.tmp"))  # the writer's own name
        raise KeyboardInterrupt
    real_tmp.write_bytes(b"as if the process had been killed")
    kept = [
        out / "images" / "notes.tmp",
        out / "images" / ".a.jpg.tmp",  # no random part
        out / "images" / ".a.jpg.ABCDEFGH.tmp",  # not the writer's alphabet
        out / ".my-notes.txt.abcdefgh.tmp",  # top level: only manifest/split/dataset.json
    ]
    for path in kept:
        path.write_bytes(b"user file")
    (out / "sheets" / ".x.png.abcdefgh.tmp").mkdir(parents=True)  # a folder, not a file
    assert remove_stale_temporaries(out) == 1
    assert not real_tmp.exists()
    assert all(path.exists() for path in kept)
    assert (out / "sheets" / ".x.png.abcdefgh.tmp").is_dir()


def test_skipped_files_are_counted_per_reason_and_nbia_metadata_is_expected(shared_data, tmp_path):
    from petctiqa.dataset.candidates import scan_source

    src = tmp_path / "download"
    shutil.copytree(shared_data / "dicom" / "STS_002", src / "STS_002")
    (src / "metadata.csv").write_text("Series UID,Collection,3rd Party Analysis\n")
    logs: list[str] = []
    scan = scan_source(src, False, logs.append)
    assert len(scan.pairs) == 1 and not scan.damaged and not scan.broken
    assert logs == []  # only the NBIA metadata.csv was skipped: nothing to warn about

    (src / "README.txt").write_text("notes")
    (src / "STS_002" / "notes.txt").write_text("notes")
    cut = next((src / "STS_002" / "CT_crop").iterdir()).read_bytes()[:3000]
    (src / "junk").mkdir()
    (src / "junk" / "cut.dcm").write_bytes(cut)
    logs.clear()
    scan_source(src, False, logs.append)
    assert logs == [
        f"skipped 3 files in {src}: 2 not a DICOM file (e.g. README.txt), "
        "1 truncated file (3000 bytes, pixel data alone needs 46046) (e.g. junk/cut.dcm)"
    ]


def test_damaged_header_that_breaks_a_series_is_named(small_phantom, tmp_path):
    """A file whose header lost its UIDs is skipped; when its series then fails the geometry
    check, the error (or, for a patient the build does not need, a warning) names the file."""
    from petctiqa.dataset.candidates import choose_candidates, scan_source
    from petctiqa.dataset.select import order_candidates
    from petctiqa.errors import DicomError

    src = tmp_path / "src"
    shutil.copytree(small_phantom, src)
    ct_folder = next((src / "Lung-PET-CT-Dx-Phantom" / "PHANTOM-0002").glob("*/*CT*"))
    victim = sorted(ct_folder.iterdir())[10]
    size = _cut_header(victim)
    logs: list[str] = []
    scan = scan_source(src, False, logs.append)
    assert logs == [
        f"skipped 1 file in {src}: 1 missing SeriesInstanceUID (e.g. "
        f"{victim.relative_to(src).as_posix()})"
    ]
    assert sorted(p.patient_id for p in scan.pairs) == ["PHANTOM-0001", "PHANTOM-0003"]
    (broken,) = scan.broken
    assert broken.series.patient_id == "PHANTOM-0002" and broken.series.modality == "CT"
    message = broken.describe()
    assert message.startswith(f"{victim}: missing SeriesInstanceUID; without it the CT series '"), (
        message
    )
    assert f"in {ct_folder} fails its geometry check: non-uniform slice spacing" in message
    assert size < 2000

    def order(n: int, seed: int = 0, patient_list=None) -> list[str]:
        logs.clear()
        return choose_candidates(src, scan, seed, patient_list, n, logs.append).order

    # too few patients: the error names the damaged file first
    with pytest.raises(DicomError) as error:
        order(3)
    assert str(error.value) == (f"{message}; {src}: 2 patients have a PET/CT pair, 3 requested")
    # a listed patient that lost its pair
    with pytest.raises(DicomError, match="patient PHANTOM-0002 has no other usable PET/CT pair"):
        order(1, patient_list=("PHANTOM-0001", "PHANTOM-0002"))
    # seeded choice: an error when the intact source would give that patient a place in the
    # first N, else a warning and the build goes on without it
    everyone = ["PHANTOM-0001", "PHANTOM-0002", "PHANTOM-0003"]
    seeds = {order_candidates(everyone, seed)[0] == "PHANTOM-0002": seed for seed in range(20)}
    with pytest.raises(DicomError, match=f"^{victim}: missing SeriesInstanceUID; without it"):
        order(1, seed=seeds[True])
    assert order(1, seed=seeds[False])[0] != "PHANTOM-0002"
    assert logs == [f"warning: {message}; patient PHANTOM-0002 is left out"]


def test_source_series_check_names_the_first_difference(tmp_path):
    from petctiqa.dataset.resume import check_source_series
    from petctiqa.errors import DatasetError

    pair = {"study_uid": "1.1", "ct_series_uid": "1.2", "pet_series_uid": "1.3"}
    state = tmp_path / ".build-state"
    state.mkdir()
    (state / "build.json").write_text(json.dumps({"seed": 0, "source_series": {"P1": pair}}))
    check_source_series(tmp_path, {"P1": dict(pair)})  # same series: accepted
    with pytest.raises(DatasetError) as error:
        check_source_series(tmp_path, {"P1": {**pair, "pet_series_uid": "1.4"}})
    assert str(error.value) == (
        f"{tmp_path}: holds a dataset built from other DICOM series (patient P1: pet_series_uid "
        "'1.3' before, '1.4' now)"
    )
    with pytest.raises(DatasetError, match=r"\(patient P0: has a PET/CT pair in this source, not"):
        check_source_series(tmp_path, {"P0": pair, "P1": pair})
    (state / "build.json").write_text(json.dumps({"seed": 0}))  # built before it was recorded
    check_source_series(tmp_path, {"P9": pair})


def test_background_flush_overlaps_and_always_flushes_at_the_end(monkeypatch):
    import threading

    from petctiqa.dataset.build import BackgroundFlush

    calls: list[str] = []
    release = threading.Event()

    def fake_sync() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            release.wait(5)  # the first flush is still running while more images arrive

    monkeypatch.setattr("os.sync", fake_sync)
    flush = BackgroundFlush(total_images=100)  # a flush per 25 written images
    flush.images_done(24)
    assert calls == []
    flush.images_done(27)  # 51 pending: one flush starts
    flush.images_done(27)  # that one still runs: no second thread
    release.set()
    flush.finish()  # waits for it, then flushes the rest in this thread
    assert calls == ["petctiqa-flush", threading.current_thread().name]

    calls.clear()
    BackgroundFlush(total_images=100).finish()  # nothing written in between: still flushes once
    assert calls == [threading.current_thread().name]


KILLED_BUILD = """
import os, signal, time
from multiprocessing import forkserver
from petctiqa.dataset import build
pool = build._executor(2)
build.start_workers(pool, 2)
busy = [pool.submit(time.sleep, 120) for _ in range(2)]
time.sleep(0.5)
print(*pool._processes, forkserver._forkserver._forkserver_pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_and_fork_server_end_when_the_main_process_is_killed():
    """A SIGKILLed build leaves no worker waiting forever: each worker watches the main
    process (its parent is the fork server, and the pool's pipes never report EOF)."""
    import signal
    import subprocess
    import sys
    import time

    done = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 3  # two workers, busy for two more minutes, and the fork server
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)]
