"""Sheet import (validated, all or nothing) and study export (mos.csv contract)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
from openpyxl import Workbook

from petctiqa.ratings.sheets import SIMULATED_BANNER, export_study, import_sheets
from petctiqa.ratings.study import open_study, simulate_study


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
    export_study(study.store, tiny_dataset, study.images, out, ci="normal", figure=True)
    assert not (out / "mos.csv").read_text().startswith("#")
    mos = pd.read_csv(out / "mos.csv")
    assert not mos.simulated.any() and (mos.n == 3).all()
    assert (out / "agreement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
