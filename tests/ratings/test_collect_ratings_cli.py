"""``petctiqa collect-ratings`` end to end through Click."""

from __future__ import annotations

import csv
import subprocess
import sys

import pandas as pd
from click.testing import CliRunner

from petctiqa_cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, ["collect-ratings", *map(str, args)])


def test_every_subcommand_has_help_with_examples():
    for sub in ("serve", "import", "export", "aggregate", "simulate", "power"):
        result = run(sub, "--help")
        assert result.exit_code == 0, result.output
        assert "Examples:" in result.output and f"collect-ratings {sub}" in result.output


def test_cli_module_import_stays_light():
    code = (
        "import sys, petctiqa_cli.collect_ratings; "
        "heavy = [m for m in ('torch', 'flask', 'pandas', 'numpy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_aggregate_reproduces_sureal_on_nflx(shared_data, tmp_path):
    src = shared_data / "ratings" / "NFLX_dataset_public_raw_last4outliers.csv"
    out = tmp_path / "agg"
    result = run(
        "aggregate",
        src,
        "--out",
        out,
        "--scale-min",
        1,
        "--scale-max",
        5,
        "--ci",
        "normal",
        "--content-pattern",
        "^([^_]+)_",
    )
    assert result.exit_code == 0, result.output
    assert "BT.500 rejects: rater27, rater29, rater30" in result.output
    mine = pd.read_csv(out / "stimulus_mos.csv")
    ref = pd.read_csv(
        shared_data / "ratings" / "NFLX_dataset_public_raw_last4outliers.sureal_reference.csv"
    )
    assert list(mine.stimulus) == list(ref.stimulus)
    assert (mine.mos - ref.mos).abs().max() < 1e-6
    assert (mine.ci95_halfwidth - ref.mos_ci95_halfwidth).abs().max() < 1e-6
    assert (mine.mle_quality - ref.mle_quality).abs().max() < 0.01
    report = pd.read_csv(out / "rater_report.csv")
    assert report.loc[report.rater == "rater27", "bt500_reason"].item().startswith("rejected: P=")


def test_aggregate_rejects_scores_off_the_scale(shared_data, tmp_path):
    src = shared_data / "ratings" / "NFLX_dataset_public_raw.csv"
    result = run("aggregate", src, "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "error: score 5 of rater" in result.output and "outside the scale 0..4" in result.output


def test_simulate_import_export_and_errors(tiny_dataset, tmp_path):
    result = run("simulate", "--dataset", tiny_dataset, "--raters", 3)
    assert result.exit_code == 0 and "540" not in result.output and "324 SIMULATED" in result.output
    sheet = tmp_path / "dr_x.csv"
    with open(sheet, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score"])
        writer.writerow(["images/PHANTOM-0001_s1_p0g0j0.jpg", 9])
    result = run("import", "--dataset", tiny_dataset, sheet)
    assert result.exit_code == 2
    assert f"{sheet}:2: score '9' is not an integer 0..4" in result.output
    assert "nothing imported" in result.output
    result = run("export", "--dataset", tiny_dataset, "--no-mle")
    assert result.exit_code == 0, result.output
    mos = pd.read_csv(tiny_dataset / "mos.csv", comment="#")
    assert (mos.n == 3).all() and "mle_quality" not in mos.columns
    assert "SIMULATED" in result.output


def test_power_prints_3_to_10_raters():
    result = run("power", "--min-raters", 3, "--max-raters", 4)
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines() if line.strip()[:1].isdigit()]
    assert [int(x[0]) for x in lines] == [3, 4]
    assert float(lines[0][1]) > float(lines[1][1]) > 0


def test_serve_refuses_to_start_without_raters(tiny_dataset):
    result = run("serve", "--dataset", tiny_dataset)
    assert result.exit_code == 2 and "no raters" in result.output


def test_serve_prints_private_links_and_answers_on_loopback(tiny_dataset):
    import json
    import re
    import urllib.request

    proc = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "petctiqa_cli.main",
            "collect-ratings",
            "serve",
            "--dataset",
            str(tiny_dataset),
            "--raters",
            "amy,ben",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        while not any(line.startswith("admin") for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        links = dict(re.findall(r"^\s+(\w+)\s+(http://127\.0\.0\.1:\d+/r/\S+)", text, re.M))
        assert set(links) == {"amy", "ben"} and links["amy"] != links["ben"]
        admin = re.search(r"admin \(shown once, keep it\): (\S+)", text).group(1)
        api = links["amy"].replace("/r/", "/api/r/") + "/state"
        state = json.loads(urllib.request.urlopen(api, timeout=10).read())
        assert state["rater"] == "amy" and state["total"] == 108
        prog = json.loads(urllib.request.urlopen(admin + "/progress.json", timeout=10).read())
        assert [r["rater"] for r in prog["raters"]] == ["amy", "ben"]
        assert "warning" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
