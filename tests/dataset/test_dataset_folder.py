"""The dataset folder (petctiqa/dataset/folder.py): the reader study and the trainer read the
same records through it, with the same checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from petctiqa.dataset.folder import (
    SIMULATED_BANNER,
    DatasetFolder,
    read_references,
    read_render_protocol,
    read_split,
    starts_with_simulated_banner,
)
from petctiqa.errors import DatasetError
from petctiqa.iqa.data import load_iqa_dataset
from petctiqa.ratings.study import open_study, simulate_study
from petctiqa.ratings.study_images import read_study_images
from petctiqa.ratings.web import create_app
from tests.ratings.conftest import write_tiny_dataset


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "ds")


def _rewrite_manifest(root: Path, column: str, row_index: int, value: str) -> None:
    path = root / "manifest.csv"
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    rows[row_index + 1][rows[0].index(column)] = value
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _write_mos(root: Path, images: list[str] | None = None) -> None:
    """A mos.csv for the tiny dataset: every manifest image rated, MOS 4 - jpeg level."""
    study = read_study_images(root)
    with open(root / "mos.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "image_id", "patient_id", "slice_id", "mos", "n"])
        for i, im in enumerate(study):
            image = images[i] if images and i < len(images) else im.image
            writer.writerow([image, im.image_id, im.patient_id, im.slice_id, 4 - im.jpeg_level, 3])


def test_folder_names_every_artefact(tmp_path):
    folder = DatasetFolder(tmp_path)
    assert folder.manifest == tmp_path / "manifest.csv"
    assert folder.split == tmp_path / "split.csv"
    assert folder.dataset_json == tmp_path / "dataset.json"
    assert folder.mos == tmp_path / "mos.csv"
    assert folder.ratings_db == tmp_path / "ratings.sqlite"
    assert folder.images == tmp_path / "images"
    assert folder.references == tmp_path / "references"
    assert folder.crops_sheets == tmp_path / "sheets" / "crops"
    assert folder.build_state == tmp_path / ".build-state"
    assert folder.file("images/a.jpg", "x") == tmp_path / "images" / "a.jpg"
    with pytest.raises(DatasetError, match="stays inside"):
        folder.file("../a.jpg", "x")


def test_read_split_is_one_reader_with_an_explicit_choice(tmp_path):
    with pytest.raises(DatasetError, match="split file not found"):
        read_split(tmp_path, required=True)
    assert read_split(tmp_path, required=False) == {}
    (tmp_path / "split.csv").write_text("patient_id,split\nP1,train\nP2,test\n")
    assert read_split(tmp_path, required=False) == {"P1": "train", "P2": "test"}
    assert read_split(tmp_path, required=True) == {"P1": "train", "P2": "test"}


def test_study_refuses_a_bad_split_value(tiny_dataset):
    # Before the dataset folder, the reader study took any text as a split name.
    (tiny_dataset / "split.csv").write_text(
        "patient_id,split\nPHANTOM-0001,validation\nPHANTOM-0002,test\n"
    )
    with pytest.raises(DatasetError, match=r"split.csv: line 2: bad row"):
        read_study_images(tiny_dataset)


def test_study_refuses_a_patient_listed_twice_in_split(tiny_dataset):
    (tiny_dataset / "split.csv").write_text(
        "patient_id,split\nPHANTOM-0001,train\nPHANTOM-0002,test\nPHANTOM-0001,test\n"
    )
    with pytest.raises(DatasetError, match="listed twice"):
        read_study_images(tiny_dataset)


def test_study_and_trainer_read_the_same_split(tiny_dataset):
    _write_mos(tiny_dataset)
    study = {im.image: im.split for im in read_study_images(tiny_dataset)}
    trained = {
        str(s.image.relative_to(tiny_dataset)): s.split
        for s in load_iqa_dataset(tiny_dataset).samples
    }
    assert study == trained
    assert set(study.values()) == {"train", "test"}
    assert sum(v == "test" for v in study.values()) == 2 * 27


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "references/../../x.png"])
def test_trainer_refuses_a_manifest_reference_outside_the_folder(tiny_dataset, bad):
    # Before: the trainer joined any manifest reference cell to the folder unchecked.
    _write_mos(tiny_dataset)
    _rewrite_manifest(tiny_dataset, "reference", 3, bad)
    with pytest.raises(DatasetError, match=r"manifest.csv:5: column 'reference'.*stays inside"):
        load_iqa_dataset(tiny_dataset)


def test_trainer_refuses_a_mos_image_outside_the_folder(tiny_dataset, tmp_path):
    # Before: a mos.csv image cell such as ../outside.jpg was read from outside the dataset.
    outside = tiny_dataset.parent / "outside.jpg"
    outside.write_bytes((tiny_dataset / read_study_images(tiny_dataset)[0].image).read_bytes())
    _write_mos(tiny_dataset, images=["../outside.jpg"])
    with pytest.raises(DatasetError, match=r"mos.csv:2: column 'image'.*stays inside"):
        load_iqa_dataset(tiny_dataset)


def test_trainer_reads_references_through_the_folder(tiny_dataset):
    _write_mos(tiny_dataset)
    samples = load_iqa_dataset(tiny_dataset).samples
    assert len(samples) == 4 * 27
    for sample in samples:
        assert sample.reference == tiny_dataset / "references" / f"{sample.slice_id}.png"
        assert sample.reference.is_file()
    refs = read_references(tiny_dataset)
    assert refs["images/PHANTOM-0002_s1_p2g1j0.jpg"] == (
        tiny_dataset / "references" / "PHANTOM-0002_s1.png"
    )


def test_references_of_a_folder_without_manifest_or_reference_column(tmp_path):
    assert read_references(tmp_path) == {}
    (tmp_path / "manifest.csv").write_text("image,image_id\nimages/a.jpg,a\n")
    assert read_references(tmp_path) == {}


def test_render_protocol_from_dataset_json(tmp_path):
    assert read_render_protocol(tmp_path) is None
    info = {"protocol": "mine", "settings": {"protocol": {"name": "x", "render": {"w": 1}}}}
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    assert read_render_protocol(tmp_path) == {"name": "mine", "render": {"w": 1}}
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(DatasetError, match="dataset.json: cannot read JSON"):
        read_render_protocol(tmp_path)


def test_one_simulated_banner_for_every_reader(tiny_dataset):
    assert starts_with_simulated_banner(SIMULATED_BANNER + "\n")
    assert not starts_with_simulated_banner("image,mos\n")
    _write_mos(tiny_dataset)
    text = (tiny_dataset / "mos.csv").read_text()
    assert not load_iqa_dataset(tiny_dataset).simulated
    (tiny_dataset / "mos.csv").write_text(SIMULATED_BANNER + "\n" + text)
    assert load_iqa_dataset(tiny_dataset).simulated


def test_admin_download_carries_the_one_banner(tiny_dataset):
    # Before: the admin's ratings_raw.csv had its own banner text.
    study = open_study(tiny_dataset)
    simulate_study(study, 1)
    app = create_app(tiny_dataset, study.store, study.scale, study.images)
    token = study.store.new_admin_token()
    response = app.test_client().get(f"/admin/{token}/ratings_raw.csv")
    assert response.status_code == 200
    assert response.get_data(as_text=True).split("\n")[0] == SIMULATED_BANNER
    study.store.close()


def test_study_refuses_a_backslash_path(tiny_dataset):
    _rewrite_manifest(tiny_dataset, "image", 0, "..\\..\\x.jpg")
    with pytest.raises(DatasetError, match=r"manifest.csv:2: column 'image'"):
        read_study_images(tiny_dataset)
