from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch


def _torchrun(script, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        str(script),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_ddp_two_gloo_processes_train_one_step(tiny_csv, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from petctiqa.iqa.data import load_iqa_dataset
        from petctiqa.msiqa.model import MsIqaConfig
        from petctiqa.iqa.train import TrainOptions, train
        torch.set_num_threads(1)
        opts = TrainOptions(epochs=1, batch_size=4, device="cpu", progress=False,
                            model=MsIqaConfig(use_swin=False, image_size=64))
        train(load_iqa_dataset(Path({str(tiny_csv)!r})), Path({str(tmp_path / "run")!r}), opts)
        print("rank", torch.distributed.get_rank(), "world", torch.distributed.get_world_size())
    """)
    )
    done = _torchrun(script)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rank 0 world 2" in done.stdout and "rank 1 world 2" in done.stdout
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(metrics["epoch"]) == [1]
    assert (tmp_path / "run" / "best.pt").is_file()
    # Inputs are NCHW-contiguous, so the 1x1 conv grads match DDP's bucket views.
    assert "Grad strides do not match" not in done.stderr


@pytest.mark.slow
def test_ddp_folds_rank0_writes_folds_csv_and_all_ranks_agree(tiny_csv, tmp_path):
    """--folds under torchrun: folds.csv holds rank 0's (real) figures, every rank returns
    them, and the summary is printed once."""
    out = tmp_path / "folds"
    script = tmp_path / "ddp_folds.py"
    script.write_text(
        textwrap.dedent(f"""
        import json
        import torch
        from pathlib import Path
        from petctiqa.iqa.data import load_iqa_dataset
        from petctiqa.msiqa.model import MsIqaConfig
        from petctiqa.iqa.folds import train_folds
        from petctiqa.iqa.train import TrainOptions
        from petctiqa_cli.train import report_folds
        torch.set_num_threads(1)
        opts = TrainOptions(epochs=1, batch_size=4, device="cpu", progress=False,
                            model=MsIqaConfig(use_swin=False, image_size=64))
        out = Path({str(out)!r})
        r = train_folds(load_iqa_dataset(Path({str(tiny_csv)!r})), out, 2, opts)
        summary = {{
            "rank": torch.distributed.get_rank(),
            "last": [f.last_srocc for f in r.folds],
            "best": [f.best_srocc for f in r.folds],
            "plcc": [f.last_plcc for f in r.folds],
            "means": [r.last_srocc_mean, r.srocc_mean, r.last_plcc_mean, r.plcc_mean],
        }}
        print("RESULT " + json.dumps(summary), flush=True)
        report_folds(r, out)
    """)
    )
    done = _torchrun(script)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [
        json.loads(line[len("RESULT ") :])
        for line in done.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    assert sorted(r["rank"] for r in results) == [0, 1]
    rank0, rank1 = sorted(results, key=lambda r: r["rank"])
    assert {k: v for k, v in rank1.items() if k != "rank"} == {
        k: v for k, v in rank0.items() if k != "rank"
    }
    assert all(math.isfinite(v) for v in rank0["last"] + rank0["best"] + rank0["means"])
    # printed once (rank 0), with both figures
    assert done.stdout.count("fold 1: last epoch 1") == 1
    assert done.stdout.count("fold 2: last epoch 1") == 1
    assert done.stdout.count("last epoch (unbiased): SROCC") == 1
    assert done.stdout.count("best epoch (chosen on the test fold: optimistic)") == 1

    folds = pd.read_csv(out / "folds.csv", dtype={"fold": str})
    assert list(folds["fold"]) == ["1", "2", "mean", "std"]
    assert list(folds.columns) == [
        "fold", "last_epoch", "last_srocc", "last_plcc", "best_epoch", "best_srocc", "best_plcc",
    ]  # fmt: skip
    for i in (1, 2):
        row = folds.iloc[i - 1]
        metrics = pd.read_csv(out / f"fold_{i}" / "metrics.csv")
        last, best = metrics.iloc[-1], metrics[metrics["best"] == 1].iloc[0]
        assert row["last_srocc"] == pytest.approx(last["test_srocc"], abs=1e-6)
        assert row["last_plcc"] == pytest.approx(last["test_plcc"], abs=1e-6)
        assert row["best_srocc"] == pytest.approx(best["test_srocc"], abs=1e-6)
        assert row["last_srocc"] == pytest.approx(rank0["last"][i - 1], abs=1e-6)
        ckpt = torch.load(out / f"fold_{i}" / "last.pt", weights_only=True)
        assert len(ckpt["rng_ranks"]) == 2
    means = folds.set_index("fold")
    assert means.loc["mean", "last_srocc"] == pytest.approx(folds["last_srocc"][:2].mean(), 1e-5)
    assert means.loc["mean", "best_srocc"] == pytest.approx(rank0["means"][1], abs=1e-6)
    assert means.loc["std", "last_plcc"] == pytest.approx(folds["last_plcc"][:2].std(), 1e-5)


@pytest.mark.slow
def test_resume_continues_exactly(tiny_csv, small_config, tmp_path):
    from petctiqa.iqa.data import load_iqa_dataset
    from petctiqa.iqa.train import TrainOptions, train

    ds = load_iqa_dataset(tiny_csv)
    opts = TrainOptions(epochs=1, batch_size=4, device="cpu", model=small_config, progress=False)
    train(ds, tmp_path / "a", opts)
    resumed = train(
        ds, tmp_path / "a", TrainOptions(**{**opts.__dict__, "epochs": 2, "resume": True})
    )
    straight = train(ds, tmp_path / "b", TrainOptions(**{**opts.__dict__, "epochs": 2}))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert len(resumed.history) == 2
    for key in ("test_srocc", "test_plcc"):
        assert [h[key] for h in resumed.history] == [h[key] for h in straight.history]
    # last epoch vs best epoch, as reported and as written to metrics.csv
    metrics = pd.read_csv(tmp_path / "a" / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert resumed.last_epoch == 2 and resumed.last_srocc == metrics["test_srocc"].iloc[-1]
    assert list(metrics["best"]) == [int(e == resumed.best_epoch) for e in (1, 2)]
    assert resumed.best_srocc == max(metrics["test_srocc"])
    for a, b in zip(
        resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_rng_state_round_trip_cpu():
    from petctiqa.iqa.device import restore_rng_state, rng_state

    torch.manual_seed(3)
    state = rng_state()
    assert set(state) == {"torch"} or (torch.cuda.is_available() and "cuda" in state)
    first = torch.rand(5)
    torch.rand(100)
    restore_rng_state(state)
    assert torch.equal(torch.rand(5), first)
