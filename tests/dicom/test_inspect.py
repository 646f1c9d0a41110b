from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from petctiqa_cli.main import cli


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_inspect_text_on_real_data(runner, shared_data):
    result = runner.invoke(cli, ["inspect", str(shared_data / "dicom")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert (
        "3 patient(s), 3 study(ies), 6 image series, 3 PET/CT pair(s); 523 files, 1 skipped" in out
    )
    lines = out.splitlines()
    wholebody = next(
        line for line in lines if "PET AC" in line and "BQML" in line and "START" in line
    )
    assert "0.000242903" in wholebody and "66.521" in wholebody and " 2711 " in wholebody
    series_row = next(line for line in lines if "STS_001/PET_wholebody" in line)
    assert "267" in series_row and "128x128" in series_row and "4.69 x 4.69 x 3.27" in series_row
    assert "not a DICOM file: README.md" in out
    # tables are aligned: every row of the series table has its folder in the same column
    header = next(line for line in lines if line.strip().startswith("patient") and "folder" in line)
    column = header.index("folder")
    rows = [line for line in lines if line.rstrip().endswith(("/CT", "_crop", "_wholebody"))]
    assert len(rows) == 6 and all(row[column - 2 : column] == "  " for row in rows)


def test_inspect_json(runner, shared_data):
    result = runner.invoke(cli, ["inspect", "--json", str(shared_data / "dicom" / "STS_001")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["patients"] == ["STS_001"]
    assert len(data["series"]) == 3 and len(data["pairs"]) == 2
    pet = next(s for s in data["series"] if s["units"] == "BQML")
    assert pet["slices"] == 267 and pet["rows"] == 128
    assert pet["suv"]["factor"] == pytest.approx(2.42903e-4, abs=5e-10)
    assert pet["suv"]["uptake_time_s"] == 2711.0
    assert pet["suv"]["suv_max"] == pytest.approx(66.5215, abs=1e-3)
    assert data["skipped"]["count"] == 0


def test_inspect_ct_only_and_errors(runner, shared_data, tmp_path):
    result = runner.invoke(cli, ["inspect", str(shared_data / "dicom" / "CRLM-CT-1004")])
    assert result.exit_code == 0, result.output
    assert "0 PET/CT pair(s)" in result.output and "no PET series" in result.output

    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert "folder is empty" in result.output

    (tmp_path / "notes.txt").write_text("hello")
    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert "no DICOM image series among 1 files (1 not a DICOM file)" in result.output


def test_inspect_reports_broken_series_without_failing(runner, tmp_path, dicom_writers):
    w = dicom_writers
    w.write_series(tmp_path / "pet", "PT", [0.0, 3.0], pet_tags={"weight": None})
    w.write_series(tmp_path / "ct", "CT", [0.0, 2.0, 2.0])
    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "duplicate slice position 2.000 mm" in result.output
    assert "error: PT series 'synthetic PT' in" in result.output
    assert "missing PatientWeight (kg)" in result.output
