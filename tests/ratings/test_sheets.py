"""Sheet import (validated, all or nothing) and study export (mos.csv contract)."""

from __future__ import annotations

import csv
import time

import numpy as np
import pandas as pd
import pytest
from openpyxl import Workbook

from petctiqa.errors import RatingError
from petctiqa.ratings.aggregate import AggregationOptions
from petctiqa.ratings.export import StudyWarning, export_study
from petctiqa.ratings.figures import SIMULATED_FIGURE_TITLE
from petctiqa.ratings.mixing import SIMULATED_BANNER
from petctiqa.ratings.sheet_import import import_sheets
from petctiqa.ratings.study import open_study, simulate_study
from tests.ratings.conftest import write_tiny_dataset


def write_csv(path, rows, header=("image", "score")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def full_sheet(images, offset=0):
    return [(im.image, (i + offset) % 5) for i, im in enumerate(images)]


def test_valid_csv_and_xlsx_sheets_are_imported(tiny_dataset, tmp_path):
    study = open_study(tiny_dataset)
    a = write_csv(tmp_path / "reader1.csv", full_sheet(study.images))
    book = Workbook()
    sheet = book.active
    sheet.append(["image_id", "score", "rater"])
    for i, im in enumerate(study.images):
        sheet.append([im.image_id, (i + 1) % 5, "reader2"])
    book.save(tmp_path / "whatever.xlsx")
    checks, count = import_sheets(study.store, [a, tmp_path / "whatever.xlsx"], study.images)
    assert [c.problems for c in checks] == [(), ()]
    assert count == 216
    ratings = study.store.ratings()
    assert {r.rater for r in ratings} == {"reader1", "reader2"}
    first = {(r.rater, r.image): r.score for r in ratings}
    assert first[("reader1", study.images[3].image)] == 3
    assert first[("reader2", study.images[3].image)] == 4
    assert all(r.source == "import" and not r.simulated for r in ratings)


def test_a_half_valid_sheet_imports_nothing_and_problems_name_file_and_line(tiny_dataset, tmp_path):
    study = open_study(tiny_dataset)
    good = write_csv(tmp_path / "good.csv", full_sheet(study.images))
    rows = full_sheet(study.images)
    rows[0] = ("images/unknown.jpg", 2)  # line 2
    rows[1] = (rows[1][0], 7)  # line 3
    rows[2] = (rows[2][0], "2.5")  # line 4
    rows[3] = (rows[4][0], 1)  # line 5 duplicates line 6's image
    bad = write_csv(tmp_path / "bad.csv", rows)
    checks, count = import_sheets(study.store, [good, bad], study.images)
    assert count == 0 and study.store.ratings() == []
    messages = [str(p) for p in checks[1].problems]
    assert messages[0] == f"{bad}:2: unknown image 'images/unknown.jpg'"
    assert messages[1] == f"{bad}:3: score '7' is not an integer 0..4"
    assert messages[2] == f"{bad}:4: score '2.5' is not an integer 0..4"
    assert messages[3].startswith(f"{bad}:6: duplicate image") and "first on line 5" in messages[3]
    assert f"{bad}: missing 2 of 108 images (first: {study.images[0].image})" in messages
    # re-importing a rater already in the database is refused too
    import_sheets(study.store, [good], study.images)
    checks, count = import_sheets(study.store, [good], study.images)
    assert count == 0 and "already has 108" in str(checks[0].problems[0])


def test_export_writes_the_mos_csv_contract_and_labels_simulation(tiny_dataset):
    study = open_study(tiny_dataset)
    stored = simulate_study(study, 5, seed=2)
    assert stored == 540
    paths = export_study(study.store, tiny_dataset, study.images, tiny_dataset, figure=False)
    assert paths["mos"] == tiny_dataset / "mos.csv"
    text = (tiny_dataset / "mos.csv").read_text()
    assert text.startswith(SIMULATED_BANNER + "\n")
    mos = pd.read_csv(tiny_dataset / "mos.csv", comment="#")
    for column in (
        "image",
        "mos",
        "std",
        "n",
        "ci95_low",
        "ci95_high",
        "patient_id",
        "slice_id",
        "poisson_level",
        "gaussian_level",
        "jpeg_level",
        "split",
        "simulated",
    ):
        assert column in mos.columns
    manifest = pd.read_csv(tiny_dataset / "manifest.csv")
    assert list(mos.image) == list(manifest.image)
    assert (mos.n == 5).all() and mos.simulated.all()
    assert set(mos.split) == {"train", "test"}
    raw = pd.read_csv(tiny_dataset / "ratings_raw.csv", comment="#")
    assert len(raw) == 540 and raw.simulated.all()
    first = raw[raw.image == mos.image[0]].score
    assert mos.mos[0] == first.mean()
    assert np.isclose(
        mos.ci95_high[0] - mos.mos[0], 2.776445 * first.std(ddof=1) / np.sqrt(5), atol=1e-5
    )
    report = pd.read_csv(tiny_dataset / "rater_report.csv", comment="#")
    assert list(report.rater) == [f"sim{i:02d}" for i in range(1, 6)]
    assert {"bt500_rejected", "bt500_reason", "mle_bias", "mle_inconsistency"} <= set(
        report.columns
    )
    assert (tiny_dataset / "agreement.json").read_text().count('"simulated": true') == 1


def test_export_of_a_real_study_has_no_simulation_banner(tiny_dataset, tmp_path):
    study = open_study(tiny_dataset)
    sheets = [write_csv(tmp_path / f"r{k}.csv", full_sheet(study.images, k)) for k in range(3)]
    import_sheets(study.store, sheets, study.images)
    out = tmp_path / "out"
    export_study(
        study.store, tiny_dataset, study.images, out, AggregationOptions(ci="normal"), figure=True
    )
    assert not (out / "mos.csv").read_text().startswith("#")
    mos = pd.read_csv(out / "mos.csv")
    assert not mos.simulated.any() and (mos.n == 3).all()
    assert (out / "agreement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_refuses_to_average_simulated_with_real_raters(tiny_dataset, tmp_path):
    study = open_study(tiny_dataset)
    simulate_study(study, 3, seed=1)
    sheets = [write_csv(tmp_path / f"dr{k}.csv", full_sheet(study.images, k)) for k in range(2)]
    assert import_sheets(study.store, sheets, study.images)[1] == 216
    with pytest.raises(RatingError, match="refusing to average SIMULATED raters") as info:
        export_study(study.store, tiny_dataset, study.images, tmp_path / "a", figure=False)
    assert "sim01, sim02, sim03" in str(info.value) and "dr0, dr1" in str(info.value)
    assert not (tmp_path / "a").exists()
    # only the real raters
    export_study(
        study.store, tiny_dataset, study.images, tmp_path / "b", figure=False, simulated="exclude"
    )
    text = (tmp_path / "b" / "mos.csv").read_text()
    assert not text.startswith("#")
    mos = pd.read_csv(tmp_path / "b" / "mos.csv")
    assert (mos.n == 2).all() and not mos.simulated.any()
    first = study.images[0].image
    assert mos.loc[mos.image == first, "mos"].item() == 0.5  # dr0 gave 0, dr1 gave 1
    report = pd.read_csv(tmp_path / "b" / "rater_report.csv")
    assert list(report.rater) == ["dr0", "dr1"]
    # mixed on purpose: labelled SIMULATED everywhere
    export_study(
        study.store, tiny_dataset, study.images, tmp_path / "c", figure=False, simulated="include"
    )
    assert (tmp_path / "c" / "mos.csv").read_text().startswith(SIMULATED_BANNER)
    mos = pd.read_csv(tmp_path / "c" / "mos.csv", comment="#")
    assert (mos.n == 5).all() and mos.simulated.all()
    report = pd.read_csv(tmp_path / "c" / "rater_report.csv", comment="#")
    assert dict(zip(report.rater, report.simulated, strict=True)) == {
        "dr0": False,
        "dr1": False,
        "sim01": True,
        "sim02": True,
        "sim03": True,
    }


def test_export_of_a_partly_rated_study_warns_how_many_images_have_no_ratings(
    tiny_dataset, tmp_path
):
    study = open_study(tiny_dataset)
    rows = full_sheet(study.images)[:100]
    sheets = [write_csv(tmp_path / f"r{k}.csv", rows) for k in range(3)]
    import_sheets(study.store, sheets, study.images, allow_missing=True)
    with pytest.warns(StudyWarning, match="^8 of 108 images have no ratings yet"):
        export_study(
            study.store, tiny_dataset, study.images, tmp_path / "o", AggregationOptions(mle=False)
        )
    mos = pd.read_csv(tmp_path / "o" / "mos.csv")
    assert (mos.n == 0).sum() == 8 and mos.loc[mos.n == 0, "mos"].isna().all()


def test_a_sheet_for_a_simulated_rater_is_refused_before_anything_is_written(
    tiny_dataset, tmp_path
):
    study = open_study(tiny_dataset)
    study.store.add_raters(["sim01"], simulated=True)  # a simulated rater, nothing rated yet
    new = write_csv(tmp_path / "newcomer.csv", full_sheet(study.images))
    clash = write_csv(tmp_path / "sim01.csv", full_sheet(study.images))
    checks, count = import_sheets(study.store, [new, clash], study.images)
    assert count == 0 and study.store.ratings() == []
    assert checks[0].problems == ()
    assert [str(p) for p in checks[1].problems] == [
        f"{clash}: rater 'sim01' is a simulated rater in this study; a real sheet cannot use "
        "that name (rename the rater)"
    ]
    # the valid sheet's rater was not registered either
    assert study.store.rater("newcomer") is None
    assert [r.rater for r in study.store.raters()] == ["sim01"]


def test_agreement_figure_of_a_simulated_study_is_titled_simulated(tiny_dataset, tmp_path):
    from PIL import Image

    study = open_study(tiny_dataset)
    simulate_study(study, 3, seed=0)
    export_study(
        study.store, tiny_dataset, study.images, tmp_path / "sim", AggregationOptions(mle=False)
    )
    with Image.open(tmp_path / "sim" / "agreement.png") as im:
        assert im.text["Title"] == SIMULATED_FIGURE_TITLE
    # a real study's figure is not
    real = write_tiny_dataset(tmp_path / "real")
    study = open_study(real)
    sheets = [write_csv(tmp_path / f"r{k}.csv", full_sheet(study.images, k)) for k in range(3)]
    import_sheets(study.store, sheets, study.images)
    export_study(
        study.store, real, study.images, tmp_path / "real_out", AggregationOptions(mle=False)
    )
    with Image.open(tmp_path / "real_out" / "agreement.png") as im:
        assert "SIMULATED" not in im.text["Title"]


def test_export_of_2700_images_by_5_raters_is_fast(tmp_path):
    # the old exporter rebuilt a set of all ratings per image (O(n^2)): 21.5 s here
    dataset = write_tiny_dataset(tmp_path / "big", patients=20, slices=5, size=(8, 8))
    study = open_study(dataset, seed=0)
    assert simulate_study(study, 5, seed=0) == 13500
    start = time.perf_counter()
    paths = export_study(study.store, dataset, study.images, tmp_path / "out", figure=False)
    elapsed = time.perf_counter() - start
    mos = pd.read_csv(paths["mos"], comment="#")
    assert len(mos) == 2700 and (mos.n == 5).all()
    assert np.isfinite(mos.mle_quality).all() and mos.mle_quality_std.max() < 0.35
    assert elapsed < 5.0, elapsed
