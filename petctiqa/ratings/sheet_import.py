"""Per-rater rating sheets (CSV or XLSX) into a study: validated, imported all or nothing.

One sheet per rater, columns ``image`` (path as in manifest.csv) or ``image_id``, and ``score``;
optional ``rater`` (default: the file name stem). :func:`check_sheet` lists every problem of one
sheet as ``FILE:LINE: message``; :func:`import_sheets` writes nothing unless no sheet has one.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from petctiqa.errors import RatingError
from petctiqa.ratings.store import Rating, RatingStore, check_rater_id, utc_now
from petctiqa.ratings.study_images import StudyImage

SHEET_IMAGE_COLUMNS = ("image", "image_id", "stimulus")


@dataclass(frozen=True)
class SheetProblem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class SheetCheck:
    """Validation result of one sheet: the ratings it would add, or its problems."""

    file: str
    rater: str
    ratings: tuple[Rating, ...]
    problems: tuple[SheetProblem, ...]

    def with_problem(self, message: str) -> SheetCheck:
        """This check with one more problem about the whole sheet (no line number)."""
        return replace(self, problems=(*self.problems, SheetProblem(self.file, None, message)))


_PLAIN_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


class UncachedFormula(str):
    """A formula cell saved without its computed value (the text is the formula); its value
    is unknown, so it is reported rather than read as empty."""


def _xlsx_cell_text(value: object) -> str:
    """A cell's value as the text a CSV would hold (3.0 stored as a number reads as ``3``)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _load_xlsx(path: Path, data_only: bool):  # noqa: ANN202 - openpyxl workbook
    # lazy: openpyxl is slow to import (docs/architecture.md, "Imports"); only .xlsx needs it
    from openpyxl import load_workbook

    try:
        return load_workbook(path, read_only=True, data_only=data_only)
    except Exception as exc:  # openpyxl raises many types for a bad file
        raise RatingError(f"{path}: not a readable XLSX workbook ({exc})") from None


def _uncached_formulas(path: Path, rows: list[tuple[int, list[str]]]) -> None:
    """Mark, in place, the empty cells of ``rows`` that are formulas saved without a cached
    value (a program that writes XLSX without computing it, e.g. openpyxl)."""
    empty = {number: cells for number, cells in rows if "" in cells}
    if not empty:
        return
    book = _load_xlsx(path, data_only=False)
    for number, values in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1):
        cells = empty.get(number)
        if cells is None:
            continue
        for i, value in enumerate(values[: len(cells)]):
            if cells[i] == "" and isinstance(value, str) and value.startswith("="):
                cells[i] = UncachedFormula(value)
    book.close()


def _read_sheet_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a CSV or XLSX sheet (first worksheet)."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        book = _load_xlsx(path, data_only=True)
        rows = []
        header: list[str] = []
        for number, values in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1):
            cells = [_xlsx_cell_text(v) for v in values]
            if number == 1:
                header = [c.lower() for c in cells]
            elif any(cells):
                rows.append((number, cells))
        book.close()
        _uncached_formulas(path, rows)
        return header, rows
    if suffix in (".csv", ".txt"):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise RatingError(f"{path}: cannot read sheet ({exc})") from None
        reader = csv.reader(io.StringIO(text))
        rows = []
        header = []
        for number, cells in enumerate(reader, start=1):
            cells = [c.strip() for c in cells]
            if number == 1:
                header = [c.lower() for c in cells]
            elif any(cells):
                rows.append((number, cells))
        return header, rows
    raise RatingError(f"{path}: unsupported sheet type {suffix!r} (use .csv or .xlsx)")


@dataclass(frozen=True)
class _Columns:
    """Where a sheet's columns are, and how its image keys map to study images."""

    image: int
    score: int
    rater: int | None
    width: int
    by_path: dict[str, str]
    by_id: dict[str, str]

    def image_of(self, key: str) -> str | None:
        return self.by_path.get(key) or self.by_id.get(key) or self.by_id.get(Path(key).stem)


def _score_problem(text: str, scale_min: int, scale_max: int) -> str | None:
    """Why ``text`` is not a score on the scale, or None."""
    # plain ASCII digits only: float() would read '0_4' as 4 and an Arabic-Indic digit as 3
    integer = _PLAIN_INTEGER.fullmatch(text)
    if not integer and not _PLAIN_NUMBER.fullmatch(text):
        return f"score {text!r} is not a number (digits 0-9)"
    # (a long digit string is off the scale anyway; int() refuses > 4300 digits)
    if not integer or len(text) >= 20 or not scale_min <= int(text) <= scale_max:
        return f"score {text!r} is not an integer {scale_min}..{scale_max}"
    return None


_FORMULA_PROBLEM = (
    "cell {!r} is a formula without a cached value (the file was saved by a program that does "
    "not compute formulas; open and save it in a spreadsheet program, or paste the values)"
)


def _row_problem(cells: list[str], cols: _Columns, seen: dict[str, int]) -> str | None:
    """Why a row's image cannot be taken (formula, empty, unknown, duplicate), or None."""
    formula = next((c for c in cells if isinstance(c, UncachedFormula)), None)
    if formula is not None:
        return _FORMULA_PROBLEM.format(str(formula))
    key = cells[cols.image].replace("\\", "/")
    image = cols.image_of(key)
    if not key:
        return "image is empty"
    if image is None:
        return f"unknown image {key!r}"
    if image in seen:
        return f"duplicate image {key!r} (first on line {seen[image]})"
    return None


def _sheet_problems(
    name: str,
    rater: str,
    images: Sequence[StudyImage],
    seen: dict[str, int],
    already_rated: dict[str, set[str]],
    allow_missing: bool,
) -> list[SheetProblem]:
    """Problems of the sheet as a whole: rater name, missing images, images already rated."""
    problems = []
    try:
        check_rater_id(rater)
    except RatingError as exc:
        problems.append(SheetProblem(name, None, str(exc)))
    missing = [im.image for im in images if im.image not in seen]
    if missing and not allow_missing:
        problems.append(
            SheetProblem(
                name, None, f"missing {len(missing)} of {len(images)} images (first: {missing[0]})"
            )
        )
    clash = sorted(already_rated.get(rater, set()) & set(seen))
    if clash:
        problems.append(
            SheetProblem(
                name,
                seen[clash[0]],
                f"rater {rater!r} already has {len(clash)} of these images in the "
                f"database (first: {clash[0]})",
            )
        )
    return problems


def check_sheet(
    path: Path,
    images: Sequence[StudyImage],
    already_rated: dict[str, set[str]],
    scale_min: int = 0,
    scale_max: int = 4,
    rater: str | None = None,
    allow_missing: bool = False,
) -> SheetCheck:
    """Validate one per-rater sheet (columns ``image`` or ``image_id``, ``score``, optional
    ``rater``; rater defaults to the file name stem). Problems: unknown image, duplicate image,
    score not an integer in range, images of the study missing from the sheet, images the rater
    already has in the database, more than one rater in one sheet."""
    name = str(path)
    header, rows = _read_sheet_rows(path)
    image_col = next((header.index(c) for c in SHEET_IMAGE_COLUMNS if c in header), None)
    if image_col is None or "score" not in header:
        problem = SheetProblem(name, 1, "needs columns image and score")
        return SheetCheck(name, rater or path.stem, (), (problem,))
    cols = _Columns(
        image_col,
        header.index("score"),
        header.index("rater") if "rater" in header else None,
        len(header),
        {im.image: im.image for im in images},
        {im.image_id: im.image for im in images},
    )
    problems: list[SheetProblem] = []
    seen: dict[str, int] = {}
    scores: list[tuple[str, int]] = []
    for line, cells in rows:
        cells = cells + [""] * (cols.width - len(cells))
        row_rater = cells[cols.rater] if cols.rater is not None else None
        if row_rater and rater is not None and row_rater != rater:
            problems.append(SheetProblem(name, line, f"rater {row_rater!r} differs from {rater!r}"))
            continue
        rater = rater or row_rater or None
        message = _row_problem(cells, cols, seen)
        if message is None:
            image = cols.image_of(cells[cols.image].replace("\\", "/"))
            seen[image] = line
            message = _score_problem(cells[cols.score], scale_min, scale_max)
        if message is not None:
            problems.append(SheetProblem(name, line, message))
            continue
        scores.append((image, int(cells[cols.score])))
    rater = rater or path.stem
    problems += _sheet_problems(name, rater, images, seen, already_rated, allow_missing)
    now = utc_now()
    ratings = tuple(
        Rating(rater, image, score, None, now, "import", False) for image, score in scores
    )
    return SheetCheck(name, rater, ratings, tuple(problems))


def import_sheets(
    store: RatingStore,
    paths: Sequence[Path],
    images: Sequence[StudyImage],
    allow_missing: bool = False,
) -> tuple[list[SheetCheck], int]:
    """Validate every sheet; import all of them in one transaction only if none has a problem.

    Returns (checks, number of ratings imported); 0 imported when any sheet has problems.
    """
    already: dict[str, set[str]] = {}
    for r in store.ratings():
        already.setdefault(r.rater, set()).add(r.image)
    checks = []
    raters_seen: dict[str, str] = {}
    for path in paths:
        check = check_sheet(
            Path(path), images, already, store.scale_min, store.scale_max, None, allow_missing
        )
        if check.rater in raters_seen and not check.problems:
            check = check.with_problem(f"rater {check.rater!r} also in {raters_seen[check.rater]}")
        existing = store.rater(check.rater)
        if existing is not None and existing.simulated:
            check = check.with_problem(
                f"rater {check.rater!r} is a simulated rater in this study; a real "
                "sheet cannot use that name (rename the rater)"
            )
        raters_seen.setdefault(check.rater, check.file)
        checks.append(check)
    if any(c.problems for c in checks):
        return checks, 0
    # new raters and all ratings in ONE transaction: nothing is written unless all of it is
    new_raters = [c.rater for c in checks if store.rater(c.rater) is None]
    count = store.add_raters_with_ratings(new_raters, [r for c in checks for r in c.ratings])
    return checks, count
