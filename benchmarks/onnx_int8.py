"""Would int8 make CPU scoring fast enough? MS-IQA's ONNX export quantised to int8 by ONNX
Runtime's static quantiser, timed against the float32 export, with the score difference on the
0..4 scale (issue #14; docs/scoring.md, "Runtime").

    .venv/bin/python benchmarks/onnx_int8.py [--work DIR] [--steps 3] [--batch 16] [--threads 2]

Random-init MS-IQA (the checkpoint ``benchmarks/scoring.py`` makes), calibrated on random
normal inputs: the speed is what int8 kernels give this CPU; the difference shows whether int8
can keep scores within the 1e-3 that ``score``'s runtimes promise (it is not a measure of
accuracy on rated images, which would need a trained MS-IQA). Not a ``score`` runtime.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def quantise(source: Path, target: Path, batch: int) -> float:
    """Seconds to write the int8 (QDQ, per-channel weights) model of ``source`` to ``target``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rng = np.random.default_rng(0)

    class RandomInputs(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = 2

        def get_next(self):
            if self.left == 0:
                return None
            self.left -= 1
            return {"x": rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)}

    start = time.perf_counter()
    prepared = target.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared), str(target), RandomInputs(), quant_format=QuantFormat.QDQ,
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return time.perf_counter() - start


def mos_scores(scorer, runner, x: np.ndarray) -> np.ndarray:
    """Scores on the 0..4 scale (the checkpoint's label scale) of ``runner`` on ``x``."""
    import torch

    normalised = torch.from_numpy(runner.run(None, {"x": x})[0][:, 0])
    return np.asarray(scorer.label_scale.denormalise(normalised), dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="", help="keep the checkpoint and exports here")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    from scoring import make_checkpoint

    from petctiqa.iqa.score import Scorer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(args.work or folder)
        work.mkdir(parents=True, exist_ok=True)
        scorer = Scorer(make_checkpoint("msiqa", work / "msiqa.pt"), "cpu")
        # score's own ONNX Runtime path: its export, and its session options for both models
        fp32 = scorer.runtime_model("ort", 1, args.batch, cache_dir=work / "onnx")[0]
        shape = (3, 224, 224)
        float32 = fp32.session(shape)
        int8 = work / "msiqa-int8.onnx"
        if not int8.is_file():
            print(f"int8 quantisation: {quantise(fp32.cache_path(shape), int8, args.batch):.1f} s")
        sessions = {"float32": float32, "int8": fp32.open(int8)}
        x = np.random.default_rng(1).standard_normal((args.batch, 3, 224, 224), dtype=np.float32)
        scores = {name: mos_scores(scorer, runner, x) for name, runner in sessions.items()}
        difference = float(np.abs(scores["int8"] - scores["float32"]).max())
        spread = float(np.ptp(scores["float32"]))
        print(f"max |int8 - float32| on 0..4: {difference:.2e} (float32 scores span {spread:.2e})")
        rates: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.steps):
            for name, runner in sessions.items():
                start = time.perf_counter()
                runner.run(None, {"x": x})
                rates[name].append(args.batch / (time.perf_counter() - start))
        for name, values in rates.items():
            ratios = [v / f for v, f in zip(values, rates["float32"], strict=True)]
            print(
                f"{name}: {', '.join(f'{v:.2f}' for v in values)} images/s "
                f"({', '.join(f'{r:.2f}x' for r in ratios)} float32, pair by pair)"
            )


if __name__ == "__main__":
    main()
