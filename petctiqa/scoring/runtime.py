"""Inference runtimes for scoring: PyTorch eager, or the same network exported to ONNX and run
by ONNX Runtime (``ort``) or OpenVINO (``openvino``), the fast CPU paths (figures and the choice:
docs/scoring.md).

:func:`prepare_runtime` returns an object with ``eval()`` and ``forward_parts(x)`` that
:func:`petctiqa.iqa.inference.predict_stacks` drives exactly like the torch model, so every
runtime shares the one inference path (batching, crop averaging, streaming).

The ONNX export is made once per (checkpoint bytes, input shape, batch size, versions) and kept
in a cache folder that both ONNX runtimes read; shapes are static (a short last batch is padded
by repeating its last input and the padding's outputs dropped), because MS-IQA's adaptive
pooling sizes come from the input size. ``nn.AdaptiveMaxPool1d``, which the exporter cannot
translate, is swapped in the exported copy for an exactly equal gather + max
(:class:`GatherMaxPool1d`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petctiqa.atomic import atomic_write_bytes
from petctiqa.errors import ModelError
from petctiqa.scoring.shard import local_world_size
from petctiqa.scoring.walk import checkpoint_sha256

RUNTIMES = ("auto", "eager", "ort", "openvino")
ONNX_RUNTIMES = ("openvino", "ort")
"""The runtimes that run the ONNX export, in the order ``auto`` prefers them (OpenVINO measured
faster than ONNX Runtime here: docs/scoring.md, "Runtime")."""
AUTO_ONNX_MIN_INPUTS = 256
"""``auto`` picks an ONNX runtime from this many network inputs on when no export is cached yet:
below it the one-off export costs more than it saves (docs/scoring.md, "Runtime")."""
PARTS = ("score", "s", "w")
_RUNTIME_PACKAGES = {"ort": ("onnxruntime",), "openvino": ("openvino",)}
_EXPORTER_PACKAGES = ("onnx", "onnxscript")


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime``'s packages and torch's ONNX exporter are installed (a probe: imports
    nothing)."""
    needed = (*_RUNTIME_PACKAGES.get(runtime, ()), *_EXPORTER_PACKAGES)
    return all(importlib.util.find_spec(name) is not None for name in needed)


def default_cache_dir() -> Path:
    """$PETCTIQA_ONNX_CACHE, else $XDG_CACHE_HOME/petctiqa/onnx, else ~/.cache/petctiqa/onnx."""
    if os.environ.get("PETCTIQA_ONNX_CACHE"):
        return Path(os.environ["PETCTIQA_ONNX_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "petctiqa" / "onnx"


def choose_runtime(requested: str, device_type: str, inputs: int, cached: bool) -> tuple[str, str]:
    """(runtime, why) for ``requested`` in :data:`RUNTIMES`; ``cached``: an ONNX export of this
    checkpoint is in the cache."""
    if requested not in RUNTIMES:
        raise ModelError(f"runtime {requested!r} is not one of {', '.join(RUNTIMES)}")
    if requested in ONNX_RUNTIMES:
        if device_type != "cpu":
            raise ModelError(
                f"runtime {requested} runs on the CPU only; use device cpu", setting="runtime"
            )
        if not runtime_available(requested):
            packages = " and ".join((*_RUNTIME_PACKAGES[requested], *_EXPORTER_PACKAGES))
            raise ModelError(
                f"runtime {requested} needs {packages} (pip install them)", setting="runtime"
            )
        return requested, "requested"
    if requested == "eager":
        return "eager", "requested"
    if device_type != "cpu":
        return "eager", f"device {device_type}"
    fast = next((name for name in ONNX_RUNTIMES if runtime_available(name)), None)
    if fast is None:
        return "eager", "neither openvino nor onnxruntime is installed"
    if cached:
        return fast, "export cached"
    if inputs >= AUTO_ONNX_MIN_INPUTS:
        return fast, f"{inputs} inputs >= {AUTO_ONNX_MIN_INPUTS}"
    return "eager", f"{inputs} inputs < {AUTO_ONNX_MIN_INPUTS} (the ONNX export would not pay)"


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
    """Cache name: checkpoint content, input shape and the versions that shape the graph (torch
    and its exporter, onnxscript; not the runtime that reads it)."""
    versions = (shape, torch.__version__, version("onnxscript"))
    return hashlib.sha256(f"{checkpoint_sha256(checkpoint)}{versions!r}".encode()).hexdigest()[:32]


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


class OnnxModel:
    """The cached ONNX export of ``model`` standing in for it in ``predict_stacks``; subclasses
    open the export with one runtime (:meth:`open`) and run a batch through it (:meth:`run`)."""

    def __init__(
        self, model, checkpoint: Path, batch_size: int, cache_dir: Path, threads: int
    ) -> None:
        self.model = model
        self.checkpoint = Path(checkpoint)
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.sessions: dict[tuple[int, ...], Any] = {}

    def eval(self) -> OnnxModel:
        return self

    def cache_path(self, item_shape: tuple[int, ...]) -> Path:
        shape = (self.batch_size, *item_shape)
        return self.cache_dir / f"{export_key(self.checkpoint, shape)}.onnx"

    def open(self, path: Path) -> Any:
        raise NotImplementedError

    def run(self, session: Any, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def session(self, item_shape: tuple[int, ...]):
        if item_shape not in self.sessions:
            path = self.cache_path(item_shape)
            if not path.is_file():
                export_onnx(self.model, (self.batch_size, *item_shape), path)
            self.sessions[item_shape] = self.open(path)
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
        out = self.run(self.session(tuple(batch.shape[1:])), batch)
        out = torch.from_numpy(np.array(out[:count], dtype=np.float32))
        return {key: out[:, i] for i, key in enumerate(PARTS)}


class OrtModel(OnnxModel):
    """The export run by ONNX Runtime's CPU execution provider."""

    def open(self, path: Path) -> Any:
        import onnxruntime as ort  # lazy: slow to import; only the ORT runtime needs it

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle ORT threads spin by default; on a CPU shared with other work that spinning
        # costs more than it saves (docs/scoring.md, "Runtime").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, session: Any, batch: np.ndarray) -> np.ndarray:
        (out,) = session.run(None, {"x": batch})
        return out


class OpenVinoModel(OnnxModel):
    """The export compiled by OpenVINO for the CPU, in float32."""

    def open(self, path: Path) -> Any:
        import openvino  # lazy: slow to import; only the OpenVINO runtime needs it

        config = {
            "PERFORMANCE_HINT": "LATENCY",  # one request of a whole batch at a time
            "INFERENCE_NUM_THREADS": self.threads,
            # On CPUs with bf16 units (AVX-512 BF16, AMX) OpenVINO would compute in bf16 by
            # default: scores would then miss eager's within 1e-3.
            "INFERENCE_PRECISION_HINT": "f32",
            # OpenVINO pins its threads to cores, the same cores in every process: torchrun's
            # processes then took turns on one core. Pinning only a node's single process
            # (docs/scoring.md, "2 processes vs 1").
            "ENABLE_CPU_PINNING": local_world_size() == 1,
        }
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        return compiled.create_infer_request()

    def run(self, session: Any, batch: np.ndarray) -> np.ndarray:
        session.infer({0: batch})
        return session.get_output_tensor(0).data


_ONNX_MODELS = {"ort": OrtModel, "openvino": OpenVinoModel}


def prepare_runtime(
    model,
    runtime: str,
    checkpoint: Path,
    batch_size: int,
    cache_dir: Path | None = None,
    threads: int | None = None,
):
    """The object ``predict_stacks`` should drive for ``runtime`` (eager, ort or openvino)."""
    if runtime == "eager":
        return model
    return _ONNX_MODELS[runtime](
        model,
        checkpoint,
        batch_size,
        cache_dir or default_cache_dir(),
        threads or torch.get_num_threads(),
    )
