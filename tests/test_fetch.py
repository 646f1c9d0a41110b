"""`petctiqa fetch` against a fake TCIA server on 127.0.0.1 serving phantom DICOM series."""

from __future__ import annotations

import csv
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from petctiqa.errors import FetchError
from petctiqa.fetch import (
    METADATA_COLUMNS,
    PARTIAL_DIR_NAME,
    RECORDS_FILE_NAME,
    execute_fetch,
    format_study_date,
    pick_pet_series,
    plan_fetch,
    rank_ct_candidates,
    read_patient_list,
    sanitize_name,
    series_folder_name,
    study_folder_name,
)
from petctiqa.phantom import write_phantom_study
from petctiqa.tcia_client import RemoteSeries, RetryPolicy, TciaClient, resolve_base_url
from petctiqa_cli.main import cli
from tests.tcia_server import FakeTcia

COLLECTION = "Lung-PET-CT-Dx"
FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.0, max_delay_s=0.0)


# -- fixtures: phantom studies, retagged copies, the fake server --------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _retag_series(
    files: list[Path],
    out_dir: Path,
    *,
    patient_id: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    description: str,
) -> list[Path]:
    """Copy a series with a new SeriesInstanceUID and SOPInstanceUIDs (optionally another
    patient, study and frame of reference)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=[str(out_dir), description])
    written = []
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = description
        if patient_id is not None:
            ds.PatientID = patient_id
        if study_uid is not None:
            ds.StudyInstanceUID = study_uid
        if frame_of_reference_uid is not None:
            ds.FrameOfReferenceUID = frame_of_reference_uid
        target = out_dir / f"{k:03d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    return written


@dataclass(frozen=True)
class Archive:
    """The studies behind the fake server, and the UIDs the tests look for."""

    studies: tuple  # PhantomStudy per phantom patient, in patient order
    ct_only_patient: str
    distractor_ct_uid: str
    """A CT in PHANTOM-0001's study with another frame of reference, ranked first."""
    topogram_uid: str
    """A 2-image CT in PHANTOM-0002's study (never a candidate)."""
    wrong_frame_patient: str
    """PHANTOM-0003: its only CT has another frame of reference (never pairs)."""
    extra: dict
    """Files of the retagged series: ct_only, distractor, topogram, wrong_frame."""


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Archive:

    root = tmp_path_factory.mktemp("archive")
    studies = tuple(
        write_phantom_study(root / "src", index, seed=0, ct_matrix=64, pet_matrix=32)
        for index in (1, 2, 3, 4)
    )
    first, second, third = studies[0], studies[1], studies[2]
    ct_only = _retag_series(
        list(first.ct_files),
        root / "ctonly",
        patient_id="CTONLY-0001",
        study_uid=generate_uid(entropy_srcs=["ctonly-study"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=["ctonly-for"]),
        description="Chest",
    )
    distractor = _retag_series(
        list(first.ct_files),
        root / "distractor",
        frame_of_reference_uid=generate_uid(entropy_srcs=["distractor-for"]),
        description="CT WB AC 5.0",
    )
    topogram = _retag_series(list(second.ct_files)[:2], root / "topo", description="Topogram")
    wrong_frame = _retag_series(
        list(third.ct_files),
        root / "wrong-frame",
        frame_of_reference_uid=generate_uid(entropy_srcs=["wrong-frame-for"]),
        description="CT WB 5.0",
    )
    return Archive(
        studies=studies,
        ct_only_patient="CTONLY-0001",
        distractor_ct_uid=str(pydicom.dcmread(distractor[0]).SeriesInstanceUID),
        topogram_uid=str(pydicom.dcmread(topogram[0]).SeriesInstanceUID),
        wrong_frame_patient=third.patient_id,
        extra={
            "ct_only": ct_only,
            "distractor": distractor,
            "topogram": topogram,
            "wrong_frame": wrong_frame,
        },
    )


@pytest.fixture
def server(archive):
    info, extra = archive, archive.extra
    fake = FakeTcia(collection=COLLECTION)
    first, second, third, fourth = info.studies
    fake.add_series(extra["ct_only"], description="Chest", series_number=2)
    fake.add_series(list(first.pet_files), description="PET WB", series_number=4)
    fake.add_series(list(first.ct_files), description="Thorax 1.0 B70f", series_number=3)
    fake.add_series(extra["distractor"], description="CT WB AC 5.0", series_number=2)
    fake.add_series(list(second.pet_files), description="PET WB", series_number=4)
    fake.add_series(list(second.ct_files), description="CT WB 5.0 B30f", series_number=2)
    fake.add_series(extra["topogram"], description="Topogram 0.6 T20s", series_number=1)
    fake.add_series(list(third.pet_files), description="PET WB", series_number=4)
    fake.add_series(extra["wrong_frame"], description="CT WB 5.0 B30f", series_number=2)
    fake.add_series(list(fourth.pet_files), description="PET WB", series_number=4)
    fake.add_series(list(fourth.ct_files), description="CT WB 5.0 B30f", series_number=2)
    fake.start()
    yield fake
    fake.stop()


def _client(fake: FakeTcia) -> TciaClient:
    return TciaClient(fake.base_url, retry=FAST_RETRY, timeout_s=(5.0, 10.0))


def _fetch(fake: FakeTcia, out: Path, n: int = 2, **kwargs):
    with _client(fake) as client:
        plan = plan_fetch(client, COLLECTION, out, n_patients=n, workers=3, **kwargs)
        return execute_fetch(client, plan, workers=3)


def _no_partial_left(out: Path) -> None:
    assert not (out / PARTIAL_DIR_NAME).exists()
    leftovers = [
        p
        for p in out.rglob("*")
        if p.suffix in (".zip", ".tmp", ".part")
        or (".petctiqa" in p.name and p.name != RECORDS_FILE_NAME)  # the record is output
    ]
    assert leftovers == []


def _hashes(paths) -> set[str]:
    return {_sha256(Path(p)) for p in paths}


def _read_metadata(out: Path) -> list[dict[str, str]]:
    with open(out / "metadata.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == METADATA_COLUMNS
        return list(reader)


# -- pure functions ---------------------------------------------------------------------------


def _remote(uid: str, modality: str, description: str, count: int, number: int) -> RemoteSeries:
    return RemoteSeries(
        collection=COLLECTION,
        patient_id="Lung_Dx-A0001",
        study_uid="1.2.3.407990",
        series_uid=uid,
        modality=modality,
        series_description=description,
        series_number=float(number),
        study_description="Chest",
        study_date="2007-04-04 00:00:00.0",
        image_count=count,
        file_size=None,
        manufacturer="SIEMENS",
        third_party_analysis="NO",
        collection_uri="",
    )


def test_folder_names_follow_the_retriever_layout():
    series = _remote("1.2.840.5.40805", "CT", "5mm", 120, 2)
    assert study_folder_name(series) == "04-04-2007-NA-Chest-07990"
    assert series_folder_name(series) == "2.000000-5mm-40805"
    assert format_study_date("20070404") == "04-04-2007"
    assert format_study_date("") == "NA"
    assert sanitize_name("PET^WB (AC)  3D/x") == "PETWB AC  3Dx"
    assert sanitize_name(" ^() ") == "NA"


def test_pet_and_ct_choice_prefers_ac_series_and_skips_localizers():
    pet_ac = _remote("1.1", "PT", "PET WB", 300, 4)
    pet_nac = _remote("1.2", "PT", "PET WB NAC", 300, 5)
    topogram = _remote("1.3", "CT", "Topogram 0.6 T20s", 2, 1)
    thin = _remote("1.4", "CT", "Thorax 1.0 B70f", 290, 3)
    ctac = _remote("1.5", "CT", "CT WB 5.0 B30f", 180, 2)
    plain = _remote("1.6", "CT", "Chest 3mm", 310, 6)
    dose = _remote("1.7", "CT", "Dose Report", 5, 99)
    study = [pet_nac, topogram, thin, pet_ac, ctac, plain, dose]
    assert pick_pet_series(study) == pet_ac
    assert pick_pet_series([topogram, thin]) is None
    # AC hint first; then the instance count nearest the PET's (310 vs 290 around 300: |log| ties
    # broken by the smaller mismatch, log(310/300)=0.0328 < log(300/290)=0.0339)
    assert [s.series_uid for s in rank_ct_candidates(pet_ac, study)] == ["1.5", "1.6", "1.4"]


def test_retry_policy_is_exponential_and_bounded():
    policy = RetryPolicy(attempts=6, base_delay_s=1.0, max_delay_s=10.0)
    assert [policy.delay_s(k) for k in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_base_url_option_env_and_default(monkeypatch):
    monkeypatch.delenv("PETCTIQA_TCIA_URL", raising=False)
    assert resolve_base_url() == "https://nbia.cancerimagingarchive.net/nbia-api/services/v4/"
    monkeypatch.setenv("PETCTIQA_TCIA_URL", "http://mirror.example/v4")
    assert resolve_base_url() == "http://mirror.example/v4/"
    assert resolve_base_url("http://other/api/") == "http://other/api/"
    with pytest.raises(FetchError, match="must start with http"):
        resolve_base_url("ftp://x")


def test_patient_list_file(tmp_path):
    path = tmp_path / "patients.txt"
    path.write_text("# wanted\nLung_Dx-A0002\n\nLung_Dx-A0001, adeno\n")
    assert read_patient_list(path) == ["Lung_Dx-A0002", "Lung_Dx-A0001"]
    # one reader for fetch and build-dataset (petctiqa.patient_list): a repeat is an error
    path.write_text("Lung_Dx-A0002\nLung_Dx-A0001\nLung_Dx-A0002  # again\n")
    with pytest.raises(FetchError, match="'Lung_Dx-A0002' listed twice \\(lines 1 and 3\\)"):
        read_patient_list(path)
    path.write_text("# none\n")
    with pytest.raises(FetchError, match="names no patient"):
        read_patient_list(path)


# -- end to end against the fake server ---------------------------------------------------------


def test_fetch_downloads_verified_pairs_in_retriever_layout(server, archive, tmp_path):
    info = archive
    first, second = info.studies[0], info.studies[1]
    out = tmp_path / "lung"
    report = _fetch(server, out, n=2)

    assert report.patient_ids == (first.patient_id, second.patient_id)
    # the distractor (AC-looking description, other frame of reference) was tried first, rejected
    # on its headers and removed; the topogram was never requested
    assert [uid for uid, _ in report.rejected_ct] == [info.distractor_ct_uid]
    assert "FrameOfReferenceUID" in report.rejected_ct[0][1]
    assert info.topogram_uid not in server.image_requests()
    assert sorted(server.image_requests()) == sorted(
        [
            info.distractor_ct_uid,
            first.pet_series_uid,
            first.ct_series_uid,
            second.pet_series_uid,
            second.ct_series_uid,
        ]
    )
    assert report.downloaded_series == 4 and report.reused_series == 0

    pair = report.pairs[0]
    assert pair.ct.remote.series_uid == first.ct_series_uid
    assert _hashes(pair.ct.files) == _hashes(first.ct_files)
    assert _hashes(pair.pet.files) == _hashes(first.pet_files)
    assert _hashes(report.pairs[1].ct.files) == _hashes(second.ct_files)
    date = format_study_date(pydicom.dcmread(first.ct_files[0]).StudyDate)
    assert pair.ct.directory.relative_to(out).parts[:2] == (COLLECTION, first.patient_id)
    assert pair.ct.directory.parent.name.startswith(f"{date}-NA-")
    assert pair.ct.directory.name == f"3.000000-Thorax 1.0 B70f-{first.ct_series_uid[-5:]}"
    assert sorted(p.name for p in pair.ct.files)[0] == "1-01.dcm"
    assert not any(info.distractor_ct_uid[-5:] in p.name for p in out.rglob("*"))
    _no_partial_left(out)

    rows = _read_metadata(out)
    assert len(rows) == 4
    assert rows == sorted(rows, key=lambda r: (r["Subject ID"], r["File Location"]))
    by_uid = {r["Series UID"]: r for r in rows}
    assert set(by_uid) == {
        first.pet_series_uid,
        first.ct_series_uid,
        second.pet_series_uid,
        second.ct_series_uid,
    }
    pet_row = by_uid[first.pet_series_uid]
    assert pet_row["Modality"] == "PT"
    assert pet_row["SOP Class UID"] == "1.2.840.10008.5.1.4.1.1.128"
    assert pet_row["SOP Class Name"] == "Positron Emission Tomography Image Storage"
    assert pet_row["Number of Images"] == str(len(first.pet_files))
    assert pet_row["Subject ID"] == first.patient_id
    assert pet_row["Collection"] == COLLECTION
    assert pet_row["Study Date"] == date
    assert pet_row["Data Description URI"] == server.collection_uri
    total = sum(Path(p).stat().st_size for p in first.pet_files)
    assert pet_row["File Size"] == f"{total / 1e6:.2f} MB"
    ct_row = by_uid[first.ct_series_uid]
    assert ct_row["SOP Class UID"] == "1.2.840.10008.5.1.4.1.1.2"
    location = out / ct_row["File Location"].removeprefix("./")
    assert location == pair.ct.directory and len(list(location.glob("*.dcm"))) == len(
        first.ct_files
    )


def test_second_run_downloads_nothing_and_a_damaged_series_is_refetched(server, archive, tmp_path):
    info = archive
    second = info.studies[1]
    out = tmp_path / "lung"
    first_report = _fetch(server, out, n=2)
    server.requests.clear()

    stale = out / PARTIAL_DIR_NAME / "1.2.3.interrupted.zip"  # left by a killed run
    stale.parent.mkdir()
    stale.write_bytes(b"PK\x03\x04 partial")
    again = _fetch(server, out, n=2)
    assert server.image_requests() == []
    assert not stale.parent.exists()
    assert again.downloaded_series == 0 and again.reused_series == 4
    assert again.patient_ids == first_report.patient_ids

    damaged = sorted(again.pairs[1].ct.files)[3]
    damaged.unlink()
    server.requests.clear()
    repaired = _fetch(server, out, n=2)
    assert server.image_requests() == [second.ct_series_uid]
    assert damaged.is_file() and repaired.downloaded_series == 1
    assert _hashes(repaired.pairs[1].ct.files) == _hashes(second.ct_files)
    assert len(_read_metadata(out)) == 4
    _no_partial_left(out)


def test_dropped_connection_corrupt_zip_and_http_500_are_retried(server, archive, tmp_path):
    info = archive
    first, second = info.studies[0], info.studies[1]
    server.faults = {
        first.pet_series_uid: ["drop"],
        first.ct_series_uid: ["corrupt"],
        second.pet_series_uid: ["http500"],
        second.ct_series_uid: ["drop", "http500"],
    }
    out = tmp_path / "lung"
    report = _fetch(server, out, n=2)
    requests = server.image_requests()
    assert requests.count(first.pet_series_uid) == 2
    assert requests.count(first.ct_series_uid) == 2
    assert requests.count(second.pet_series_uid) == 2
    assert requests.count(second.ct_series_uid) == 3
    assert _hashes(report.pairs[0].pet.files) == _hashes(first.pet_files)
    assert _hashes(report.pairs[0].ct.files) == _hashes(first.ct_files)
    assert _hashes(report.pairs[1].ct.files) == _hashes(second.ct_files)
    _no_partial_left(out)


def test_series_with_a_missing_file_fails_cleanly_and_keeps_the_rest(server, archive, tmp_path):
    info = archive
    first, second = info.studies[0], info.studies[1]
    server.persistent_faults = {second.ct_series_uid: "missing"}
    out = tmp_path / "lung"
    with pytest.raises(FetchError, match=r"1 series could not be downloaded.*server lists"):
        _fetch(server, out, n=2)
    assert server.image_requests().count(second.ct_series_uid) == FAST_RETRY.attempts
    ct_dirs = list(out.rglob(f"*-{second.ct_series_uid[-5:]}"))
    assert ct_dirs == []
    rows = _read_metadata(out)
    assert {r["Series UID"] for r in rows} == {first.pet_series_uid, first.ct_series_uid}
    _no_partial_left(out)

    server.persistent_faults = {}  # the archive is fixed: the next run completes the tree
    report = _fetch(server, out, n=2)
    assert report.downloaded_series == 1 and len(_read_metadata(out)) == 4


def test_patient_without_matching_frame_of_reference_is_replaced(server, archive, tmp_path):
    info = archive
    first, second, third, fourth = info.studies
    out = tmp_path / "lung"
    report = _fetch(server, out, n=3)
    assert report.patient_ids == (first.patient_id, second.patient_id, fourth.patient_id)
    assert report.unpaired_patients == (third.patient_id,)
    assert not (out / COLLECTION / third.patient_id).exists()
    assert len(_read_metadata(out)) == 6


def test_patient_list_fetches_exactly_those_and_rejects_ct_only(server, archive, tmp_path):
    info = archive
    fourth = info.studies[3]
    out = tmp_path / "lung"
    with _client(server) as client:
        plan = plan_fetch(client, COLLECTION, out, patient_ids=[fourth.patient_id])
        report = execute_fetch(client, plan)
        assert report.patient_ids == (fourth.patient_id,)
        with pytest.raises(FetchError, match="CTONLY-0001 has no study with both a PET"):
            plan_fetch(client, COLLECTION, out, patient_ids=[info.ct_only_patient])


def test_offline_error_names_the_url(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/nbia-api/services/v4/"
    with TciaClient(url, retry=FAST_RETRY) as client, pytest.raises(FetchError) as excinfo:
        plan_fetch(client, COLLECTION, tmp_path / "out", n_patients=2)
    message = str(excinfo.value)
    assert f"cannot reach {url}getPatient?Collection=Lung-PET-CT-Dx" in message
    assert "after 3 attempts" in message
    assert not (tmp_path / "out").exists()


def test_cli_dry_run_lists_series_and_downloads_nothing(server, archive, tmp_path):
    info = archive
    first = info.studies[0]
    out = tmp_path / "lung"
    result = CliRunner().invoke(
        cli,
        ["fetch", "--collection", COLLECTION, "--patients", "2", "--out", str(out), "--dry-run"],
        env={"PETCTIQA_TCIA_URL": server.base_url},
    )
    assert result.exit_code == 0, result.output
    assert first.patient_id in result.output
    assert "CT WB AC 5.0" in result.output  # the first-ranked candidate, verified after download
    total = sum(
        Path(f).stat().st_size
        for study in info.studies[:2]
        for f in (*study.pet_files, *study.ct_files)
    ) - sum(Path(f).stat().st_size for f in first.ct_files)
    total += sum(Path(f).stat().st_size for f in info.extra["distractor"])
    assert (
        f"2 patient(s), 2 PET/CT stud(ies): 4 series to download ({total / 1e6:.2f} MB), "
        "0 already complete"
    ) in result.output
    assert server.image_requests() == []
    assert not out.exists()


def test_cli_dry_run_prints_server_text_with_control_characters_escaped(server, archive, tmp_path):
    first = archive.studies[0]
    hostile_id = "PHANTOM\x1b[2J-1"  # ESC [2J clears the screen
    server.relabel(first.pet_series_uid, PatientID=hostile_id, SeriesDescription="PET\x1b]0;x\x07")
    server.relabel(first.ct_series_uid, PatientID=hostile_id)
    server.relabel(archive.distractor_ct_uid, PatientID=hostile_id)
    result = CliRunner().invoke(
        cli,
        ["fetch", "--collection", COLLECTION, "--patients", "2", "--out", str(tmp_path / "o"),
         "--dry-run"],
        env={"PETCTIQA_TCIA_URL": server.base_url},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "PHANTOM\\x1b[2J-1  study" in result.output
    assert "PET PET\\x1b]0;x\\x07" in result.output


def test_cli_fetch_then_index_and_pair(server, archive, tmp_path):
    index_module = pytest.importorskip("petctiqa.dicom.index")
    pairing_module = pytest.importorskip("petctiqa.dicom.pairing")
    info = archive
    first, second = info.studies[0], info.studies[1]
    out = tmp_path / "lung"
    result = CliRunner().invoke(
        cli,
        ["fetch", "--patients", "2", "--out", str(out), "--workers", "2"]
        + ["--base-url", server.base_url],
    )
    assert result.exit_code == 0, result.output
    assert "downloaded 4 series" in result.output
    index = index_module.index_dicom_tree(out)
    # metadata.csv and fetch's record are expected, never reported as stray files
    skipped = sorted(s.path.name for s in index.skipped)
    assert skipped == [".petctiqa-fetch-verified.json", "metadata.csv"]
    assert all(index_module.is_nbia_metadata(s) for s in index.skipped)
    pairs = pairing_module.find_pet_ct_pairs(index)
    assert [(p.patient_id, p.pet.series_uid, p.ct.series_uid) for p in pairs] == [
        (first.patient_id, first.pet_series_uid, first.ct_series_uid),
        (second.patient_id, second.pet_series_uid, second.ct_series_uid),
    ]


def test_plan_uses_the_listing_size_and_asks_getseriessize_only_without_it(server, tmp_path):
    with TciaClient(server.base_url, retry=RetryPolicy(attempts=1)) as client:
        plan = plan_fetch(client, "Lung-PET-CT-Dx", tmp_path / "a", n_patients=1)
        assert plan.total_download_bytes > 0
        assert not [e for e, _ in server.requests if e == "getSeriesSize"]
        for fake in server.series.values():
            del fake.record["FileSize"]
        again = plan_fetch(client, "Lung-PET-CT-Dx", tmp_path / "b", n_patients=1)
    assert again.total_download_bytes == plan.total_download_bytes
    assert len([e for e, _ in server.requests if e == "getSeriesSize"]) == len(again.download_bytes)


def test_a_member_with_missing_image_tags_fails_its_series_only(archive, tmp_path):
    import io
    import zipfile

    from petctiqa.fetch import SeriesCheckFailed, install_series_zip
    from petctiqa.tcia_client import parse_series_record

    study = archive.studies[0]
    ds = pydicom.dcmread(study.ct_files[0])
    del ds.Rows
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    zip_path = tmp_path / "series.zip"
    with zipfile.ZipFile(zip_path, "w") as archive_zip:
        archive_zip.writestr("1-01.dcm", buffer.getvalue())
    record = {
        "SeriesInstanceUID": str(ds.SeriesInstanceUID),
        "StudyInstanceUID": str(ds.StudyInstanceUID),
        "PatientID": str(ds.PatientID),
        "Modality": "CT",
        "ImageCount": 1,
    }
    series = parse_series_record(record, "test")
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(SeriesCheckFailed, match="1-01.dcm has missing or malformed image tags"):
        install_series_zip(zip_path, series, tmp_path / "final", staging)
    assert not (tmp_path / "final").exists() and not any(staging.iterdir())


def test_a_second_fetch_on_the_same_folder_is_refused_while_one_runs(server, tmp_path):
    from petctiqa.fetch import LOCK_FILE_NAME, output_lock

    out = tmp_path / "out"
    with TciaClient(server.base_url, retry=RetryPolicy(attempts=1)) as client:
        plan = plan_fetch(client, "Lung-PET-CT-Dx", out, n_patients=1)
        with output_lock(out):
            assert (out / LOCK_FILE_NAME).is_file()
            with pytest.raises(FetchError, match="another petctiqa fetch is writing"):
                execute_fetch(client, plan)
            assert not server.image_requests()
        assert not (out / LOCK_FILE_NAME).exists()
        report = execute_fetch(client, plan)
    assert report.pairs and not (out / LOCK_FILE_NAME).exists()


# -- issue 18.1: names from the server never choose where files go -------------------------------

HOSTILE_LONG = "\U0001d538" * 100  # 4 UTF-8 bytes each: 64 of them alone exceed NAME_MAX


def _files_outside(root: Path, out: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and out not in p.parents]


def _assert_safe_tree(out: Path) -> None:
    for path in out.rglob("*"):
        assert out.resolve() in path.resolve().parents
        assert len(path.name.encode()) <= 255 and "\x00" not in path.name


def test_hostile_listing_names_stay_inside_out(server, archive, tmp_path):
    first = archive.studies[0]
    hostile = {
        "PatientID": "../../escape",
        "StudyDesc": "/etc/abs\x00olute",
        "Collection": COLLECTION,
    }
    server.relabel(first.pet_series_uid, **hostile, SeriesDescription=HOSTILE_LONG)
    server.relabel(first.ct_series_uid, **hostile, SeriesDescription="../" * 90 + "x")
    server.relabel(archive.distractor_ct_uid, **hostile)
    out = tmp_path / "a" / "b" / "out"
    with _client(server) as client:
        plan = plan_fetch(client, COLLECTION, out, patient_ids=["../../escape"])
        report = execute_fetch(client, plan)
    assert report.patient_ids == ("../../escape",)
    assert _hashes(report.pairs[0].pet.files) == _hashes(first.pet_files)
    assert _files_outside(tmp_path, out) == []
    _assert_safe_tree(out)
    patient_dirs = [p.name for p in (out / COLLECTION).iterdir()]
    assert patient_dirs == ["escape"]
    assert _read_metadata(out)[0]["Subject ID"] == "../../escape"


def test_hostile_series_uid_fails_that_series_and_writes_nothing_outside(server, archive, tmp_path):
    first = archive.studies[0]
    bad_uid = "../../../../nowhere/../escaped"
    server.relabel(first.pet_series_uid, SeriesInstanceUID=bad_uid)
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(FetchError, match=r"1 series could not be downloaded.*belong to series"):
        _fetch(server, out, n=1)
    assert server.image_requests().count(bad_uid) == FAST_RETRY.attempts
    assert _files_outside(tmp_path, out) == []
    _assert_safe_tree(out)


def test_hostile_folder_components_are_single_safe_names(tmp_path):
    from petctiqa.fetch import series_directory

    for text in ("..", ".", "/abs/path", "a\x00b", ".petctiqa-partial", HOSTILE_LONG, "é" * 300):
        series = _remote("1.2.3/../..", "CT", text, 10, 2)
        series = RemoteSeries(**{**series.__dict__, "patient_id": text, "collection": text})
        directory = series_directory(tmp_path, series)
        parts = directory.relative_to(tmp_path).parts
        assert len(parts) == 4, (text, parts)
        for part in parts:
            assert part not in (".", "..") and not part.startswith(".")
            assert "/" not in part and "\x00" not in part and len(part.encode()) <= 255


def test_zip_member_names_are_made_safe(server, archive, tmp_path):
    first = archive.studies[0]
    fake = server.series[first.ct_series_uid]
    names = ["x" * 300 + ".dcm", "../../../evil.dcm"]
    fake.members = [(names[k % 2] if k < 2 else n, d) for k, (n, d) in enumerate(fake.members)]
    out = tmp_path / "out"
    report = _fetch(server, out, n=1)
    assert _hashes(report.pairs[0].ct.files) == _hashes(first.ct_files)
    assert _files_outside(tmp_path, out) == []
    _assert_safe_tree(out)
    assert (report.pairs[0].ct.directory / "evil.dcm").is_file()


# -- issue 18.7: damaged series are repaired, interrupted downloads resume -----------------------


def test_truncated_or_altered_file_of_a_complete_series_is_downloaded_again(
    server, archive, tmp_path
):
    first = archive.studies[0]
    out = tmp_path / "out"
    report = _fetch(server, out, n=1)
    ct_files = sorted(report.pairs[0].ct.files)
    truncated, altered = ct_files[2], ct_files[5]
    truncated.write_bytes(truncated.read_bytes()[:-100])  # same count, every header readable
    data = bytearray(altered.read_bytes())
    data[-10] ^= 0xFF  # same size, one pixel byte changed
    altered.write_bytes(bytes(data))
    server.requests.clear()
    messages: list[str] = []
    with _client(server) as client:
        plan = plan_fetch(client, COLLECTION, out, n_patients=1)
        repaired = execute_fetch(client, plan, log=messages.append)
    assert server.image_requests() == [first.ct_series_uid]
    assert repaired.downloaded_series == 1 and repaired.reused_series == 1
    assert _hashes(repaired.pairs[0].ct.files) == _hashes(first.ct_files)
    assert any(truncated.name in m and "bytes" in m for m in messages), messages

    altered.write_bytes(bytes(data))
    server.requests.clear()
    again = _fetch(server, out, n=1)
    assert server.image_requests() == [first.ct_series_uid]
    assert _hashes(again.pairs[0].ct.files) == _hashes(first.ct_files)
    server.requests.clear()
    _fetch(server, out, n=1)
    assert server.image_requests() == []


def test_dropped_download_resumes_with_a_range_request(server, archive, tmp_path):
    first = archive.studies[0]
    server.supports_range = True
    server.faults = {first.pet_series_uid: ["drop"]}
    out = tmp_path / "out"
    report = _fetch(server, out, n=1)
    zip_size = len(server.zip_bytes(first.pet_series_uid))
    assert server.ranges == [(first.pet_series_uid, f"bytes={zip_size // 2}-")]
    assert _hashes(report.pairs[0].pet.files) == _hashes(first.pet_files)
    _no_partial_left(out)


def test_interrupted_run_resumes_the_partial_download_next_run(server, archive, tmp_path):
    first = archive.studies[0]
    server.supports_range = True
    server.persistent_faults = {first.pet_series_uid: "drop"}
    out = tmp_path / "out"
    with pytest.raises(FetchError, match="1 series could not be downloaded"):
        _fetch(server, out, n=1)
    zip_size = len(server.zip_bytes(first.pet_series_uid))
    kept = 0
    for _ in range(FAST_RETRY.attempts):  # each try gets half of the rest
        kept += (zip_size - kept) // 2
    parts = list((out / PARTIAL_DIR_NAME).glob("*.part"))
    assert [p.stat().st_size for p in parts] == [kept]
    server.persistent_faults = {}
    server.ranges.clear()
    report = _fetch(server, out, n=1)
    assert server.ranges == [(first.pet_series_uid, f"bytes={kept}-")]
    assert _hashes(report.pairs[0].pet.files) == _hashes(first.pet_files)
    _no_partial_left(out)


def test_server_without_range_support_restarts_and_says_so(server, archive, tmp_path):
    first = archive.studies[0]
    server.faults = {first.pet_series_uid: ["drop"]}
    messages: list[str] = []
    out = tmp_path / "out"
    with _client(server) as client:
        plan = plan_fetch(client, COLLECTION, out, n_patients=1)
        report = execute_fetch(client, plan, log=messages.append)
    assert server.ranges and server.ranges[0][0] == first.pet_series_uid
    assert any("restart" in m and "Range" in m for m in messages), messages
    assert _hashes(report.pairs[0].pet.files) == _hashes(first.pet_files)


def test_cli_read_timeout_option_cuts_a_stalled_download_short(server, archive, tmp_path):
    import time

    first = archive.studies[0]
    server.stall_s = 8.0
    server.faults = {first.pet_series_uid: ["stall"]}
    started = time.monotonic()
    result = CliRunner().invoke(
        cli,
        ["fetch", "--patients", "1", "--out", str(tmp_path / "out"), "--read-timeout", "0.5"]
        + ["--base-url", server.base_url],
    )
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < server.stall_s
    assert server.image_requests().count(first.pet_series_uid) == 2


def test_library_states_facts_and_the_cli_words_the_flags(server, archive, tmp_path):
    second = archive.studies[1]
    server.persistent_faults = {second.ct_series_uid: "missing"}
    out = tmp_path / "lung"
    with pytest.raises(FetchError) as excinfo:
        _fetch(server, out, n=2)
    assert "--" not in str(excinfo.value) and "run the same command" not in str(excinfo.value)
    result = CliRunner().invoke(
        cli,
        ["fetch", "--patients", "2", "--out", str(out), "--retries", "1"]
        + ["--base-url", server.base_url],
    )
    assert result.exit_code == 2
    assert "1 series could not be downloaded" in result.output
    assert result.output.rstrip().endswith("run the same command again to resume")


def test_real_tcia_series_fetch_verify_and_pair(shared_data, tmp_path):
    """STS_001's cropped PET and CT (real GE headers, TCIA) through the whole fetch path: the
    checks of petctiqa.dicom accept them, pair them, and a rerun re-uses them by their record."""
    source = shared_data / "dicom" / "STS_001"
    fake = FakeTcia(collection="Soft-tissue-Sarcoma")
    pet_uid = fake.add_series(sorted((source / "PET_crop").glob("*.dcm")), series_number=2)
    ct_uid = fake.add_series(sorted((source / "CT_crop").glob("*.dcm")), series_number=3)
    fake.start()
    try:
        out = tmp_path / "sts"
        with _client(fake) as client:
            plan = plan_fetch(client, "Soft-tissue-Sarcoma", out, n_patients=1)
            report = execute_fetch(client, plan)
            assert [(p.pet.remote.series_uid, p.ct.remote.series_uid) for p in report.pairs] == [
                (pet_uid, ct_uid)
            ]
            assert report.pairs[0].pet.info.n_slices == 59
            assert _hashes(report.pairs[0].ct.files) == _hashes((source / "CT_crop").glob("*"))
            fake.requests.clear()
            again = execute_fetch(
                client, plan_fetch(client, "Soft-tissue-Sarcoma", out, n_patients=1)
            )
        assert fake.image_requests() == [] and again.reused_series == 2
    finally:
        fake.stop()
