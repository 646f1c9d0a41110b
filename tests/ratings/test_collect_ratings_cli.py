"""``petctiqa collect-ratings`` end to end through Click."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import click
import pandas as pd
from click.testing import CliRunner

from petctiqa.ratings.mixing import SIMULATED_BANNER
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
    assert result.exit_code == 2 and "Missing option '--raters'" in result.output
    # an empty rater file is refused too, naming the problem
    empty = tiny_dataset / "raters.txt"
    empty.write_text("\n")
    result = run("serve", "--dataset", tiny_dataset, "--raters", empty)
    assert result.exit_code == 2 and "no raters" in result.output
    assert "[required]" in " ".join(run("serve", "--help").output.split())


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


def test_every_option_of_every_subcommand_has_help():
    from petctiqa_cli.collect_ratings import collect_ratings

    missing = [
        f"{name} {param.opts[0]}"
        for name, command in collect_ratings.commands.items()
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == []
    result = run("aggregate", "--help")
    assert "Output folder for stimulus_mos.csv" in result.output
    assert "Lowest score of the rating scale" in result.output
    result = run("serve", "--help")
    assert "TCP port (0 = any free port)" in result.output and "Worker threads" in result.output


def test_serve_warns_when_bound_to_a_non_loopback_address(tiny_dataset, monkeypatch):
    import waitress

    bound = {}

    class FakeServer:
        effective_port = 8765

        def run(self):  # returns at once instead of serving forever
            bound["ran"] = True

    def fake_create_server(app, host, port, threads, **limits):
        bound.update(host=host, port=port)
        return FakeServer()

    monkeypatch.setattr(waitress, "create_server", fake_create_server)
    result = CliRunner().invoke(
        cli,
        [
            "collect-ratings",
            "serve",
            "--dataset",
            str(tiny_dataset),
            "--raters",
            "amy",
            "--host",
            "0.0.0.0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert bound == {"host": "0.0.0.0", "port": 8765, "ran": True}
    assert "warning: serving on 0.0.0.0, reachable from other machines" in result.output
    result = CliRunner().invoke(
        cli,
        ["collect-ratings", "serve", "--dataset", str(tiny_dataset), "--raters", "amy"]
        + ["--host", "127.0.0.1"],
    )
    assert result.exit_code == 0 and "warning" not in result.output


def test_export_refuses_a_mixed_study_unless_told_and_warns_about_unrated_images(
    tiny_dataset, tmp_path
):
    assert run("simulate", "--dataset", tiny_dataset, "--raters", 2).exit_code == 0
    manifest = pd.read_csv(tiny_dataset / "manifest.csv")
    sheet = tmp_path / "dr_a.csv"
    pd.DataFrame({"image": manifest.image[:100], "score": 2}).to_csv(sheet, index=False)
    result = run("import", "--dataset", tiny_dataset, "--allow-missing", sheet)
    assert result.exit_code == 0, result.output
    result = run("export", "--dataset", tiny_dataset, "--out", tmp_path / "x", "--no-mle")
    assert result.exit_code == 2
    assert "refusing to average SIMULATED raters (sim01, sim02) with real raters (dr_a)" in (
        result.output
    )
    assert "--exclude-simulated" in result.output and not (tmp_path / "x").exists()
    result = run(
        "export", "--dataset", tiny_dataset, "--out", tmp_path / "y", "--exclude-simulated"
    )
    assert result.exit_code == 0, result.output
    assert "warning: 8 of 108 images have no ratings yet" in result.output
    assert "SIMULATED" not in result.output
    mos = pd.read_csv(tmp_path / "y" / "mos.csv")
    assert mos.n.sum() == 100 and not mos.simulated.any()
    result = run(
        "export", "--dataset", tiny_dataset, "--out", tmp_path / "z", "--include-simulated"
    )
    assert result.exit_code == 0, result.output
    assert "note: the study contains SIMULATED ratings" in result.output
    assert pd.read_csv(tmp_path / "z" / "mos.csv", comment="#").n.sum() == 100 + 2 * 108
    both = run("export", "--dataset", tiny_dataset, "--include-simulated", "--exclude-simulated")
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_aggregate_refuses_mixed_raw_csv_and_prints_mle_warnings(tmp_path):
    from tests.ratings.test_aggregate import simulated_panel

    scores, content, truth, _ = simulated_panel(seed=0, patients=2)
    rows = [
        (f"img{e}", f"slice{content[e]}", truth[s].rater, int(scores[e, s]), "true")
        for e in range(len(scores))
        for s in range(len(truth))
    ]
    rows += [(f"img{e}", f"slice{content[e]}", "dr_real", 2, "false") for e in range(5)]
    src = tmp_path / "raw.csv"
    pd.DataFrame(rows, columns=["image", "slice", "rater", "score", "simulated"]).to_csv(
        src, index=False
    )
    result = run("aggregate", src, "--out", tmp_path / "a")
    assert result.exit_code == 2 and "refusing to average SIMULATED raters" in result.output
    common = ["--content-column", "slice", "--exclude-simulated", "--no-mle"]
    result = run("aggregate", src, "--out", tmp_path / "b", *common)
    assert result.exit_code == 0, result.output
    assert "5 stimuli x 1 raters" in result.output
    report = (tmp_path / "b" / "rater_report.csv").read_text()
    assert not report.startswith("#") and report.splitlines()[1].startswith("dr_real,5,")
    sim_only = tmp_path / "sim.csv"
    pd.read_csv(src)[lambda f: f.rater != "dr_real"].to_csv(sim_only, index=False)
    result = run("aggregate", sim_only, "--out", tmp_path / "d", "--content-column", "slice")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # REML: converged
    assert (tmp_path / "d" / "rater_report.csv").read_text().startswith(SIMULATED_BANNER)
    result = run(
        "aggregate",
        sim_only,
        "--out",
        tmp_path / "e",
        "--content-column",
        "slice",
        "--mle-method",
        "ml",
    )
    assert result.exit_code == 0, result.output
    assert "warning: MLE subject model (ml) is not reliable" in result.output
    summary = json.loads((tmp_path / "e" / "agreement.json").read_text())
    assert summary["mle_method"] == "ml" and summary["mle_converged"] is False
    assert "floor" in summary["mle_problems"][0]


def test_sigkill_of_the_server_loses_no_answered_rating(tiny_dataset):
    import re
    import signal
    import sqlite3
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
            "amy",
            "--port",
            "0",
            "--no-training",
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
        link = re.search(r"^\s+amy\s+(http://\S+/r/\S+)", "".join(lines), re.M).group(1)
        api = link.replace("/r/", "/api/r/")
        state = json.loads(urllib.request.urlopen(api + "/state", timeout=10).read())
        answered = {}
        for i in range(12):
            cur = state["current"]
            body = json.dumps({"image": cur["image"], "position": cur["position"], "score": i % 5})
            request = urllib.request.Request(
                api + "/rating",
                data=body.encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 201
                state = json.loads(resp.read())["state"]
            answered[cur["image"]] = i % 5
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(tiny_dataset / "ratings.sqlite")
    stored = dict(conn.execute("SELECT image, score FROM ratings WHERE rater = 'amy'").fetchall())
    conn.close()
    assert stored == answered and len(stored) == 12
    # and the restarted study resumes at the 13th image
    from petctiqa.ratings.study import open_study

    assert open_study(tiny_dataset).store.next_item("amy")[0] == 12
