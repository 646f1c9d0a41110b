"""Archive scoring: rows, study summaries, unreadable inputs, resume after a kill, torchrun."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from petctiqa_cli.main import cli

VENV_BIN = Path(sys.executable).parent


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def run_score(archive, checkpoint, out, *extra):
    args = ["score", str(archive), "--checkpoint", str(checkpoint), "--out", str(out),
            "--device", "cpu", "--runtime", "eager", "--slice-stride", "8", *extra]  # fmt: skip
    return CliRunner().invoke(cli, args)


def test_rows_summaries_and_unreadable_input(archive, checkpoint, tmp_path):
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    (copy / "images" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "scores.csv"
    result = run_score(copy, checkpoint, out)
    assert result.exit_code == 1, result.output
    assert "0..4 MOS" in result.stderr and "1 inputs could not be scored" in result.stderr
    rows = read_rows(out)
    kinds = [r["kind"] for r in rows]
    # images sorted by path (broken.png first), then the study's slices and its summary
    assert kinds[:4] == ["error", "image", "image", "image"] and kinds[-1] == "study"
    assert set(kinds[4:-1]) == {"slice"} and len(kinds[4:-1]) >= 2
    assert "broken.png" in rows[0]["error"] and rows[0]["score"] == ""
    assert all(r["scale"] == "0..4" and r["simulated"] == "false" for r in rows)
    slices = [float(r["score"]) for r in rows[4:-1]]
    study = rows[-1]
    assert float(study["score"]) == pytest.approx(sum(slices) / len(slices), abs=2e-6)
    assert float(study["worst_score"]) == pytest.approx(min(slices), abs=1e-6)
    worst = rows[4 + slices.index(min(slices))]["source"]
    assert study["worst_source"] == worst
    assert float(study["fraction_below"]) == 1.0  # random weights: all far below 2.0
    # the threshold only shapes the summary: a rerun reads the journal and re-summarises
    ranked = sorted(slices)
    threshold = (ranked[0] + ranked[1]) / 2
    rerun = run_score(copy, checkpoint, out, "--threshold", repr(threshold))
    assert rerun.exit_code == 1 and "5 already scored" in rerun.stderr
    assert float(read_rows(out)[-1]["fraction_below"]) == pytest.approx(1 / len(slices), abs=1e-6)
    assert rows[4]["key"].startswith("slice:") and "/slice" in rows[4]["source"]


def test_simulated_checkpoint_is_marked_in_terminal_and_files(
    archive, simulated_checkpoint, tmp_path
):
    simulated = simulated_checkpoint
    image = archive / "images" / "img0.png"
    for out in (tmp_path / "s.json", tmp_path / "s.csv"):
        result = CliRunner().invoke(
            cli, ["score", str(image), "--checkpoint", str(simulated), "--out", str(out),
                  "--device", "cpu", "--runtime", "eager"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "SIMULATED" in result.stderr and "0..4 MOS" in result.stderr
        text = out.read_text()
        assert ('"simulated": true' in text) if out.suffix == ".json" else (",true," in text)


def test_resume_after_kill_gives_the_same_output(archive, checkpoint, tmp_path):
    reference = tmp_path / "reference.csv"
    assert run_score(archive, checkpoint, reference).exit_code == 0
    out = tmp_path / "scores.csv"
    out.write_text("earlier output\n")
    command = [str(VENV_BIN / "petctiqa"), "score", str(archive), "--checkpoint", str(checkpoint),
               "--out", str(out), "--device", "cpu", "--runtime", "eager", "--slice-stride", "1",
               "--batch-size", "1", "--jobs", "1"]  # fmt: skip
    part = out.with_name("scores.csv.journal") / "part-0.jsonl"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if part.is_file() and part.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert out.read_text() == "earlier output\n"  # never a partial output
    scored_before = part.read_bytes().count(b'"key"')
    assert scored_before >= 3
    with open(part, "ab") as handle:
        handle.write(b'{"unit": "cut by a ki')  # a line cut by the kill
    # stride 1 this time: the journal belongs to these settings; compare with a fresh run
    fresh = tmp_path / "fresh.csv"
    args = ("--slice-stride", "1", "--batch-size", "1")
    result = CliRunner().invoke(cli, ["score", str(archive), "--checkpoint", str(checkpoint),
                                      "--out", str(fresh), "--device", "cpu", "--runtime",
                                      "eager", *args])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["score", str(archive), "--checkpoint", str(checkpoint),
                                      "--out", str(out), "--device", "cpu", "--runtime",
                                      "eager", *args])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_text() == fresh.read_text()
    lines = part.read_text().splitlines()
    keys = [line for line in lines if '"key"' in line]
    # nothing scored twice: the rows of the killed run were kept, the rest added
    assert len(keys) == len({k.split('"key": ')[1].split(",")[0] for k in keys})
    # a rerun of a finished run scores nothing and writes the same file
    assert "already scored" in result.stderr


def test_journal_of_other_settings_is_refused(archive, checkpoint, tmp_path):
    out = tmp_path / "scores.csv"
    assert run_score(archive / "images", checkpoint, out).exit_code == 0
    result = run_score(archive / "images", checkpoint, out, "--slice-stride", "3")
    assert result.exit_code != 0
    assert "other settings (slice_stride)" in result.output


@pytest.mark.slow
def test_torchrun_two_gloo_processes_write_the_single_process_output(archive, checkpoint, tmp_path):
    single = tmp_path / "single.csv"
    assert run_score(archive, checkpoint, single).exit_code == 0
    sharded = tmp_path / "sharded.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(VENV_BIN / "torchrun"), "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
         "-m", "petctiqa_cli.main", "score", str(archive), "--checkpoint", str(checkpoint),
         "--out", str(sharded), "--device", "cpu", "--runtime", "eager", "--slice-stride", "8",
         "--jobs", "1"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sharded.read_text() == single.read_text()
    parts = sorted(p.name for p in (tmp_path / "sharded.csv.journal").glob("part-*.jsonl"))
    assert parts == ["part-0.jsonl", "part-1.jsonl"]
    for part in parts:  # both processes scored a share
        assert '"key"' in (tmp_path / "sharded.csv.journal" / part).read_text()


def test_merge_gives_error_rows_for_unfinished_and_empty_units(tmp_path):
    from petctiqa.scoring.archive import merged_rows
    from petctiqa.scoring.journal import JournalState
    from petctiqa.scoring.walk import Unit

    empty = Unit("study", "study:a", "A#P/ct", tmp_path)
    lost = Unit("image", "file:x@1", "x.png", tmp_path / "x.png")
    state = JournalState(done={"study:a"})
    rows = merged_rows([empty, lost], state, 2.0)
    assert [r["kind"] for r in rows] == ["error", "error"]
    assert "no slice inside the PET/CT overlap" in rows[0]["error"]
    assert "not scored (a process failed)" in rows[1]["error"]


def test_workers_and_a_given_walk_write_the_same_file(archive, checkpoint, tmp_path):
    """Worker processes (jobs 2, rendering ahead while the model runs) and in-process
    decoding (jobs 1), with the walk done inside or handed in, write byte-identical files."""
    from petctiqa.iqa.score import Scorer
    from petctiqa.scoring.archive import ArchiveOptions, score_archive, start_worker_imports
    from petctiqa.scoring.walk import walk_inputs

    start_worker_imports(2)  # the pool below reuses the fork server started here
    scorer = Scorer(checkpoint, "cpu")
    units = walk_inputs([archive], 8)
    texts = []
    for jobs, given in ((1, None), (2, units), (2, None)):
        out = tmp_path / f"jobs{jobs}-{given is None}.csv"
        options = ArchiveOptions(batch_size=2, slice_stride=8, jobs=jobs)
        result = score_archive(scorer, [archive], out, scorer.model, options, units=given)
        assert result is not None and (result.units, result.errors) == (4, 0)
        texts.append(out.read_text())
    assert texts[0] == texts[1] == texts[2]
    assert texts[0].count("\nslice,") >= 2 and texts[0].count("\nimage,") == 3


def test_jobs_1_renders_in_a_thread_beside_the_model(archive, checkpoint, tmp_path, monkeypatch):
    """With jobs 1 units are decoded in one thread of the scoring process (rendering the next
    study while the model runs), not inline between batches nor in worker processes."""
    import threading

    from petctiqa.iqa.score import Scorer
    from petctiqa.scoring import archive as archive_module

    threads = []

    def recording_decode(*args):
        threads.append(threading.current_thread().name)
        return decode(*args)

    decode = archive_module.decode_unit
    monkeypatch.setattr(archive_module, "decode_unit", recording_decode)
    scorer = Scorer(checkpoint, "cpu")
    options = archive_module.ArchiveOptions(batch_size=2, slice_stride=8, jobs=1)
    result = archive_module.score_archive(
        scorer, [archive], tmp_path / "s.csv", scorer.model, options
    )
    assert result is not None and result.units == 4 == len(threads)
    assert {name.split("_")[0] for name in threads} == {"petctiqa-render"}


def test_threads_per_process_shares_the_node_cores(monkeypatch):
    from petctiqa.scoring.shard import threads_per_process

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads_per_process(8) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads_per_process(8) == 4 and threads_per_process(2) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert threads_per_process(2) == 1 and threads_per_process(16) == 5


def test_default_jobs_renders_in_process_only_on_small_full_cpus(monkeypatch):
    from petctiqa.pool import available_cores
    from petctiqa.scoring.archive import default_jobs

    assert default_jobs("cpu", model_threads=2, cores=2) == 1  # the measured 2-core case
    assert default_jobs("cpu", model_threads=1, cores=2) == 2  # a core left for rendering
    assert default_jobs("cpu", model_threads=8, cores=8) == 2  # not measured: as before
    assert default_jobs("cuda", model_threads=2, cores=2) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: this process's share of cores
    share = available_cores() // 2
    assert default_jobs("cpu", model_threads=max(1, share)) == (1 if share <= 2 else 2)
