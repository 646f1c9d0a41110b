from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
import pytest


@pytest.mark.slow
def test_ddp_two_gloo_processes_train_one_step(tiny_csv, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from petctiqa.msiqa.data import load_iqa_dataset
        from petctiqa.msiqa.model import MsIqaConfig
        from petctiqa.msiqa.train import TrainOptions, train
        torch.set_num_threads(1)
        opts = TrainOptions(epochs=1, batch_size=4, device="cpu", progress=False,
                            model=MsIqaConfig(use_swin=False, image_size=64))
        train(load_iqa_dataset(Path({str(tiny_csv)!r})), Path({str(tmp_path / "run")!r}), opts)
        print("rank", torch.distributed.get_rank(), "world", torch.distributed.get_world_size())
    """)
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rank 0 world 2" in done.stdout and "rank 1 world 2" in done.stdout
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(metrics["epoch"]) == [1]
    assert (tmp_path / "run" / "best.pt").is_file()


@pytest.mark.slow
def test_resume_continues_exactly(tiny_csv, small_config, tmp_path):
    from petctiqa.msiqa.data import load_iqa_dataset
    from petctiqa.msiqa.train import TrainOptions, train

    ds = load_iqa_dataset(tiny_csv)
    opts = TrainOptions(epochs=1, batch_size=4, device="cpu", model=small_config, progress=False)
    train(ds, tmp_path / "a", opts)
    resumed = train(
        ds, tmp_path / "a", TrainOptions(**{**opts.__dict__, "epochs": 2, "resume": True})
    )
    straight = train(ds, tmp_path / "b", TrainOptions(**{**opts.__dict__, "epochs": 2}))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
