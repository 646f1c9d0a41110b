"""Deterministic seeds: every random draw in petctiqa comes from a generator seeded by
(dataset seed, item key), so results do not depend on worker count, order or resume point."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(dataset_seed: int, key: str) -> int:
    """A 64-bit seed from a dataset seed and a stable item key (e.g. ``"P003/s2/p1g0j2"``).

    Uses SHA-256, so it is identical across platforms, Python versions and processes
    (unlike ``hash()``).
    """
    digest = hashlib.sha256(f"{int(dataset_seed)}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def rng_for(dataset_seed: int, key: str) -> np.random.Generator:
    """A NumPy generator (PCG64) for one item, independent of every other item's."""
    return np.random.Generator(np.random.PCG64(derive_seed(dataset_seed, key)))
