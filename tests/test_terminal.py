"""Server and DICOM text is printed with its control characters escaped."""

from __future__ import annotations

import pydicom
from click.testing import CliRunner

from petctiqa.phantom import write_phantom_study
from petctiqa.terminal import printable
from petctiqa_cli.main import cli


def test_printable_escapes_controls_and_keeps_the_rest():
    assert printable("Lung_Dx-A0001 CT 5.0 mm") == "Lung_Dx-A0001 CT 5.0 mm"
    assert printable("café Ünïcode 肺") == "café Ünïcode 肺"
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("title\x1b]0;pwned\x07") == "title\\x1b]0;pwned\\x07"
    assert printable("x\ny\tz\r") == "x\\ny\\tz\\r"
    assert printable("x\ny\r", keep_newlines=True) == "x\ny\\r"
    assert printable("del\x7f csi\x9b") == "del\\x7f csi\\x9b"
    assert printable("ab\u202edc") == "ab\\u202edc"  # right-to-left override
    assert printable("a\u2028b") == "a\\u2028b"


def test_inspect_prints_dicom_descriptions_escaped(tmp_path):
    study = write_phantom_study(tmp_path / "src", 1, seed=0, ct_matrix=32, pet_matrix=16)
    for path in study.ct_files:
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "CT\x1b[2Jcleared"
        ds.save_as(path)
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "src")])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "CT\\x1b[2Jcleared" in result.output


def test_error_messages_are_printed_escaped(tmp_path):
    bad = tmp_path / "p\x1b[2J.toml"
    result = CliRunner().invoke(
        cli, ["build-dataset", "--out", str(tmp_path / "o"), "--protocol", str(bad)]
    )
    assert result.exit_code == 2
    assert "\x1b" not in result.output
    assert "p\\x1b[2J.toml" in result.output
