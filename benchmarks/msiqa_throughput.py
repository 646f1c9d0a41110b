"""MS-IQA throughput: training and inference images/s at batch 16, 224 x 224 (random init).

    .venv/bin/python benchmarks/msiqa_throughput.py [--device auto|cpu|cuda] [--steps N] [--batch 16]

``--device auto`` (the default) uses CUDA when it is available, else the CPU. On CUDA it uses
bf16 autocast (fp16 + GradScaler where bf16 is unsupported) and channels_last.
"""

from __future__ import annotations

import argparse
import time

import torch

from petctiqa.iqa.device import resolve_device
from petctiqa.iqa.loss import msiqa_loss
from petctiqa.msiqa.model import MsIqa, MsIqaConfig


def measure(
    device: str, batch: int, steps: int, config: MsIqaConfig | None = None
) -> dict[str, float]:
    """Images/s for training steps (Adam, MS-IQA loss) and inference, after one warm-up step.

    ``device``: "auto", "cpu" or "cuda"; ``config`` defaults to the paper's full model.
    """
    dev = resolve_device(device)
    config = config or MsIqaConfig()
    torch.manual_seed(0)
    model = MsIqa(config).to(dev)
    amp = dev.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    size = config.image_size
    x = torch.randn(batch, 3, size, size, device=dev)
    if amp:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp and dtype == torch.float16)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=amp):
            loss = msiqa_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def infer_step() -> None:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=amp):
            model(x)

    out: dict[str, float] = {}
    for name, step, mode in (("train", train_step, True), ("inference", infer_step, False)):
        model.train(mode)
        step()  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        out[name] = batch * steps / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    result = measure(str(device), args.batch, args.steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device={device.type} ({name}) threads={torch.get_num_threads()} batch={args.batch} "
        f"steps={args.steps}: train {result['train']:.2f} images/s, "
        f"inference {result['inference']:.2f} images/s"
    )


if __name__ == "__main__":
    main()
