"""Inference runtimes for scoring: PyTorch eager, or the same network exported to ONNX and run
by ONNX Runtime (``ort``), the fast CPU path (figures and the choice: docs/scoring.md).

:func:`prepare_runtime` returns an object with ``eval()`` and ``forward_parts(x)`` that
:func:`petctiqa.iqa.inference.predict_stacks` drives exactly like the torch model, so both
runtimes share the one inference path (batching, crop averaging, streaming).

The ONNX export is made once per (checkpoint bytes, input shape, batch size, versions) and kept
in a cache folder; shapes are static (a short last batch is padded by repeating its last input
and the padding's outputs dropped), because MS-IQA's adaptive pooling sizes come from the input
size. ``nn.AdaptiveMaxPool1d``, which the exporter cannot translate, is swapped in the exported
copy for an exactly equal gather + max (:class:`GatherMaxPool1d`).
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petctiqa.atomic import atomic_write_bytes
from petctiqa.errors import ModelError

RUNTIMES = ("auto", "eager", "ort")
AUTO_ORT_MIN_INPUTS = 256
"""``auto`` picks ONNX Runtime from this many network inputs on when no export is cached yet:
below it the one-off export costs more than it saves (docs/scoring.md, "Runtime")."""
PARTS = ("score", "s", "w")


def ort_available() -> bool:
    try:
        # lazy: a probe of whether the ONNX stack imports here
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def default_cache_dir() -> Path:
    """$PETCTIQA_ONNX_CACHE, else $XDG_CACHE_HOME/petctiqa/onnx, else ~/.cache/petctiqa/onnx."""
    if os.environ.get("PETCTIQA_ONNX_CACHE"):
        return Path(os.environ["PETCTIQA_ONNX_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "petctiqa" / "onnx"


def choose_runtime(requested: str, device_type: str, inputs: int, cached: bool) -> tuple[str, str]:
    """(runtime, why) for ``requested`` in :data:`RUNTIMES`."""
    if requested not in RUNTIMES:
        raise ModelError(f"runtime {requested!r} is not one of {', '.join(RUNTIMES)}")
    if requested == "ort":
        if device_type != "cpu":
            raise ModelError("runtime ort runs on the CPU only; use device cpu", setting="runtime")
        if not ort_available():
            raise ModelError(
                "runtime ort needs onnxruntime and onnxscript (pip install them)",
                setting="runtime",
            )
        return "ort", "requested"
    if requested == "eager":
        return "eager", "requested"
    if device_type != "cpu":
        return "eager", f"device {device_type}"
    if not ort_available():
        return "eager", "onnxruntime is not installed"
    if cached:
        return "ort", "export cached"
    if inputs >= AUTO_ORT_MIN_INPUTS:
        return "ort", f"{inputs} inputs >= {AUTO_ORT_MIN_INPUTS}"
    return "eager", f"{inputs} inputs < {AUTO_ORT_MIN_INPUTS} (the ONNX export would not pay)"


class GatherMaxPool1d:
    """``AdaptiveMaxPool1d(output)`` as gather + max: torch's exact windows
    ``[floor(i L / O), ceil((i + 1) L / O))``, shorter windows padded with their last index."""

    def __new__(cls, output_size: int):
        class _Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.output_size = output_size

            def forward(self, x):
                length, out = int(x.shape[-1]), self.output_size
                starts = [(i * length) // out for i in range(out)]
                ends = [-((-(i + 1) * length) // out) for i in range(out)]
                width = max(e - b for b, e in zip(starts, ends, strict=True))
                index = [
                    [min(b + k, e - 1) for k in range(width)]
                    for b, e in zip(starts, ends, strict=True)
                ]
                return x[..., torch.tensor(index, device=x.device)].amax(-1)

        return _Module()


def exportable_copy(model):
    """A copy of ``model`` whose layers the ONNX exporter cannot translate are swapped for
    exact equivalents, wrapped to return one (B, 3) tensor of (score, s, w)."""
    clone = copy.deepcopy(model).eval()
    for name, module in list(clone.named_modules()):
        if isinstance(module, torch.nn.AdaptiveMaxPool1d):
            parent_name, _, child = name.rpartition(".")
            parent = clone.get_submodule(parent_name) if parent_name else clone
            setattr(parent, child, GatherMaxPool1d(int(module.output_size)))

    class Parts(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = clone

        def forward(self, x):
            parts = self.net.forward_parts(x)
            return torch.stack([parts[k] for k in PARTS], 1)

    return Parts().eval()


def export_key(checkpoint: Path, shape: tuple[int, ...]) -> str:
    """Cache name: checkpoint content, input shape and the versions that shape the graph."""
    import onnxruntime  # lazy: slow to import; only the ORT runtime needs it

    digest = hashlib.sha256()
    with open(checkpoint, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(repr((shape, torch.__version__, onnxruntime.__version__)).encode())
    return digest.hexdigest()[:32]


def export_onnx(model, shape: tuple[int, ...], target: Path) -> None:
    """Export ``model`` for float32 inputs of ``shape`` to ``target`` (atomic)."""
    wrapped = exportable_copy(model)
    example = torch.zeros(shape, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        torch.onnx.export(
            wrapped, (example,), str(path), input_names=["x"], output_names=["parts"],
            dynamo=True, external_data=False, verbose=False,
        )  # fmt: skip
        atomic_write_bytes(target, path.read_bytes())


class OrtModel:
    """ONNX Runtime sessions standing in for a torch model in ``predict_stacks``."""

    def __init__(
        self, model, checkpoint: Path, batch_size: int, cache_dir: Path, threads: int
    ) -> None:
        self.model = model
        self.checkpoint = Path(checkpoint)
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.sessions: dict[tuple[int, ...], Any] = {}

    def eval(self) -> OrtModel:
        return self

    def cache_path(self, item_shape: tuple[int, ...]) -> Path:
        shape = (self.batch_size, *item_shape)
        return self.cache_dir / f"{export_key(self.checkpoint, shape)}.onnx"

    def session(self, item_shape: tuple[int, ...]):
        if item_shape not in self.sessions:
            import onnxruntime as ort  # lazy: slow to import; only the ORT runtime needs it

            path = self.cache_path(item_shape)
            if not path.is_file():
                export_onnx(self.model, (self.batch_size, *item_shape), path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Idle ORT threads spin by default; on a CPU shared with other work that spinning
            # costs more than it saves (docs/scoring.md, "Runtime").
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sessions[item_shape] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        return self.sessions[item_shape]

    def warm(self, item_shapes: list[tuple[int, ...]]) -> None:
        """Open the sessions for ``item_shapes`` now (exporting what is not cached), rather than
        at the first batch; loading MS-IQA's session takes seconds (docs/scoring.md)."""
        for shape in item_shapes:
            self.session(tuple(shape))

    def forward_parts(self, x) -> dict[str, Any]:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        count = len(batch)
        if count < self.batch_size:
            pad = np.repeat(batch[-1:], self.batch_size - count, axis=0)
            batch = np.concatenate([batch, pad])
        (out,) = self.session(tuple(batch.shape[1:])).run(None, {"x": batch})
        out = torch.from_numpy(out[:count])
        return {key: out[:, i] for i, key in enumerate(PARTS)}


def prepare_runtime(
    model,
    runtime: str,
    checkpoint: Path,
    batch_size: int,
    cache_dir: Path | None = None,
    threads: int | None = None,
):
    """The object ``predict_stacks`` should drive for ``runtime`` ("eager" or "ort")."""
    if runtime == "eager":
        return model
    return OrtModel(
        model,
        checkpoint,
        batch_size,
        cache_dir or default_cache_dir(),
        threads or torch.get_num_threads(),
    )
