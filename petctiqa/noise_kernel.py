"""A compiled (numba) kernel for the Gaussian stage's hot loop, used when numba is installed.

:func:`petctiqa.distort.apply_gaussian_noise` adds table-sampled integer noise to every channel
value. In NumPy that is five passes over the image (widen the 16-bit draws to indices, gather, find
the crossed cells, add, clip); this kernel does it in one pass (figures: ``docs/dataset.md``,
"Speed") and consumes the same random draws in the same order, so the noisy image is byte-identical
to the NumPy path's (tested). Without numba, or with ``PETCTIQA_NO_NUMBA=1`` in the environment, the
NumPy path runs.

The kernel is compiled when this module is imported (explicit signatures), with numba's
on-disk cache, so a worker process forked after the import (see
``petctiqa.dataset.build.WORKER_MODULES``) starts with it ready.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

DISABLE_ENV = "PETCTIQA_NO_NUMBA"


def add_table_steps(
    image: np.ndarray,
    draws: np.ndarray,
    coarse: np.ndarray,
    crossed_marker: int,
    out: np.ndarray,
    crossed: np.ndarray,
) -> int:
    """``out[i] = clip(image[i] + coarse[draws[i]], 0, 255)`` for every i whose table cell is
    final; the positions of the others (cells marked ``crossed_marker``) go to ``crossed`` in
    ascending order, and their count is returned (the caller resolves and writes them).

    All arrays are 1-D and contiguous: image/out uint8, draws uint16, coarse int8 (the compiled
    signature), crossed intp with room for every position.
    """
    count = 0
    for i in range(image.size):
        step = coarse[draws[i]]
        if step == crossed_marker:
            crossed[count] = i
            count += 1
            continue
        total = np.int16(image[i]) + np.int16(step)
        if total < 0:
            total = 0
        elif total > 255:
            total = 255
        out[i] = total
    return count


def _signature():  # a numba function type
    """The one compiled signature. Inputs are typed read-only, which writable arrays match
    too; tables are int8, which covers every sigma up to ~40 on the 0..255 scale (wider
    tables take the NumPy path). Each signature adds its own load from numba's cache at import,
    so there is only this one."""
    from numba import types  # lazy: numba is slow to import; reached only from _compile

    def readonly(dtype):
        return types.Array(dtype, 1, "C", readonly=True)

    return types.int64(
        readonly(types.uint8),
        readonly(types.uint16),
        readonly(types.int8),
        types.int8,
        types.Array(types.uint8, 1, "C"),
        types.Array(types.intp, 1, "C"),
    )


def _compile() -> Callable[..., int] | None:
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    try:
        import numba  # lazy: not imported when disabled; missing, NumPy does the work
    except ImportError:
        return None
    return numba.njit(_signature(), cache=True, nogil=True)(add_table_steps)


compiled_add_table_steps = _compile()
"""The compiled kernel, or None (numba missing or disabled): then the NumPy path runs."""
