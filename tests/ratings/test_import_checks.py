"""Sheet import and export edge cases (issue #18 item 11): plain ASCII integers only, formula
cells without cached values named as such, long problem lists capped, and a failed command
leaves no empty database behind."""

from __future__ import annotations

import csv

import pandas as pd
from click.testing import CliRunner
from openpyxl import Workbook

from petctiqa.ratings.sheet_import import check_sheet
from petctiqa.ratings.study_images import read_study_images
from petctiqa_cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, ["collect-ratings", *map(str, args)])


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score"])
        writer.writerows(rows)
    return path


def test_only_plain_ascii_integers_are_scores(tiny_dataset, tmp_path):
    images = read_study_images(tiny_dataset)
    rows = [(im.image, 2) for im in images]
    odd = ["0_4", "\u0663", "\uff13", "3.0", " 1e0", "4 ", "+2", "0x3"]
    for i, text in enumerate(odd):
        rows[i] = (images[i].image, text)
    check = check_sheet(write_csv(tmp_path / "r.csv", rows), images, {})
    found = {p.line: p.message for p in check.problems}
    assert found == {
        2: "score '0_4' is not a number (digits 0-9)",
        3: "score '\u0663' is not a number (digits 0-9)",
        4: "score '\uff13' is not a number (digits 0-9)",
        5: "score '3.0' is not an integer 0..4",
        6: "score '1e0' is not an integer 0..4",  # cells are stripped
        9: "score '0x3' is not a number (digits 0-9)",
    }
    scores = {r.image: r.score for r in check.ratings}
    assert scores[images[5].image] == 4 and scores[images[6].image] == 2
    assert len(scores) == len(images) - 6


def test_xlsx_numbers_and_formulas_without_cached_values(tiny_dataset, tmp_path):
    images = read_study_images(tiny_dataset)
    book = Workbook()
    sheet = book.active
    sheet.append(["image", "score"])
    for i, im in enumerate(images):
        sheet.append([im.image, 3.0 if i == 0 else "=1+1" if i == 1 else i % 5])
    book.save(tmp_path / "r.xlsx")  # openpyxl stores formulas without a computed value
    check = check_sheet(tmp_path / "r.xlsx", images, {})
    assert [(p.line, p.message) for p in check.problems] == [
        (
            3,
            "cell '=1+1' is a formula without a cached value (the file was saved by a program "
            "that does not compute formulas; open and save it in a spreadsheet program, or "
            "paste the values)",
        ),
        (None, f"missing 1 of 108 images (first: {images[1].image})"),
    ]
    assert check.ratings[0].score == 3  # a number cell 3.0 is the integer 3


def test_a_100000_row_sheet_prints_the_first_problems_and_a_count(tiny_dataset, tmp_path):
    sheet = write_csv(tmp_path / "big.csv", [(f"images/x{i}.jpg", 2) for i in range(100_000)])
    result = run("import", "--dataset", tiny_dataset, sheet)
    assert result.exit_code == 2
    lines = result.output.splitlines()
    problems = [line for line in lines if line.startswith(f"{sheet}:")]
    assert len(problems) == 50 and problems[0] == f"{sheet}:2: unknown image 'images/x0.jpg'"
    assert "... and 99951 more problem(s) not shown" in lines
    assert "100001 problem(s) in 1 of 1 sheet(s); nothing imported" in result.output


def test_a_failed_import_or_an_empty_export_leaves_no_database(tiny_dataset, tmp_path):
    db = tiny_dataset / "ratings.sqlite"
    bad = write_csv(tmp_path / "r1.csv", [("images/none.jpg", 2)])
    result = run("import", "--dataset", tiny_dataset, bad)
    assert result.exit_code == 2 and "nothing imported" in result.output
    result = run("export", "--dataset", tiny_dataset, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no ratings to export" in result.output
    result = run("serve", "--dataset", tiny_dataset, "--raters", ",")
    assert result.exit_code == 2 and "no raters" in result.output
    left = sorted(p.name for p in tiny_dataset.iterdir() if p.name.startswith("ratings"))
    assert left == [] and not (tmp_path / "out").exists()
    # a database that existed before is kept as it was
    manifest = pd.read_csv(tiny_dataset / "manifest.csv")
    good = write_csv(tmp_path / "r2.csv", [(im, 1) for im in manifest.image[:5]])
    assert run("import", "--dataset", tiny_dataset, "--allow-missing", good).exit_code == 0
    assert run("import", "--dataset", tiny_dataset, bad).exit_code == 2
    assert db.exists() and run("export", "--dataset", tiny_dataset, "--no-mle").exit_code == 0
