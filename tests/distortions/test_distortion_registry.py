"""The plug-in registry, and the fused-image stages behind petctiqa.distort pinned byte for byte."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from petctiqa.distort import distort_image, distortion_grid
from petctiqa.distortions import (
    DOMAINS,
    Distortion,
    Parameter,
    get_distortion,
    list_distortions,
    register_distortion,
)
from petctiqa.distortions.jpeg import decode_image
from petctiqa.errors import PetctiqaError
from petctiqa.protocol import load_dataset_protocol
from petctiqa.seeding import rng_for


def test_builtin_plugins_declare_name_domain_and_parameter():
    table = {d.name: (d.domain, d.parameter.name) for d in list_distortions()}
    assert table["impulse_poisson"] == ("fused_rgb", "lambda")
    assert table["shot_poisson"] == ("fused_rgb", "peak")
    assert table["gaussian"] == ("fused_rgb", "sigma")
    assert table["jpeg"] == ("encoded_file", "quality")
    assert all(domain in DOMAINS for domain, _ in table.values())
    assert [d.name for d in list_distortions("encoded_file")] == ["jpeg"]


def test_unknown_and_duplicate_names_and_bad_domains_are_refused():
    with pytest.raises(PetctiqaError, match=r"unknown distortion 'gausian' \(known: .*gaussian"):
        get_distortion("gausian")
    clash = Distortion(
        "gaussian", "fused_rgb", Parameter("s", "", 0.0, 0.0), "x", lambda d, v, r: d
    )
    with pytest.raises(PetctiqaError, match="'gaussian' is already registered"):
        register_distortion(clash)
    odd = Distortion("odd", "sinogram", Parameter("s", "", 0.0, 0.0), "x", lambda d, v, r: d)
    with pytest.raises(PetctiqaError, match="domain must be one of pet_activity, ct_hu"):
        register_distortion(odd)
    # registering the very same record again is harmless (a module imported twice)
    same = get_distortion("gaussian")
    assert register_distortion(same) is same


def test_parameter_range_is_checked_when_called():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(PetctiqaError, match=r"'gaussian': sigma must be in \[0.0, 255.0\]"):
        get_distortion("gaussian")(image, -1.0, rng_for(0, "x"))
    with pytest.raises(PetctiqaError, match="quality must be an integer"):
        get_distortion("jpeg")(image, 70.5, rng_for(0, "x"))


def test_plugin_calls_are_deterministic_and_do_not_modify_the_input():
    image = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    before = image.copy()
    for name, value in [("impulse_poisson", 0.5), ("shot_poisson", 100.0), ("gaussian", 7.0)]:
        plugin = get_distortion(name)
        a = plugin(image, value, rng_for(3, name))
        b = plugin(image, value, rng_for(3, name))
        assert np.array_equal(a, b) and not np.array_equal(a, image)
        assert np.array_equal(image, before)
    jpeg = get_distortion("jpeg")(image, 40, rng_for(0, "j"))
    assert jpeg[:2] == b"\xff\xd8" and decode_image(jpeg).shape == image.shape


# sha256 of distort_image's files, computed with the code before the stages became plug-ins
# (petctiqa/distort.py at 97a74b8); the plug-in path must give the same bytes.
PINNED = {
    ("pet-ct-iqa-ds", "p0g0j0", "jpeg", "4:2:0"): "95de2910976bf27537165b82edeac4b0b5f29281e937791a0c92f4e7e31f37ae",
    ("pet-ct-iqa-ds", "p1g1j1", "jpeg", "4:2:0"): "d81a85a26289f0290aa85895b09e0ddeea303ec5616bd34bf40faac394a54516",
    ("pet-ct-iqa-ds", "p2g2j2", "png", "4:2:0"): "467a7f7f3b4cda536dc877ee6d5bdc6bba562150acad22eac76966b192870ad0",
    ("pet-ct-iqa-ds-shot", "p2g1j0", "jpeg", "4:4:4"): "58ffe2adbc75ce884ec34fa67b78da3be63df9c93dd351784860120d85cff1fb",
    ("pet-ct-iqa-ds-shot", "p1g2j2", "png", "4:2:0"): "c94849edb218d8ae942389a777eb198d07135880caf99c24940ae6673aaecff9",
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(PINNED))
def test_distort_image_bytes_are_unchanged_by_the_plugin_refactor(key):
    protocol, code, image_format, subsampling = key
    image = np.random.default_rng(3).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    grid = {s.code: s for s in distortion_grid(load_dataset_protocol(protocol).distortions)}
    data = distort_image(image, grid[code], rng_for(5, f"2/{code}"), image_format, subsampling)
    assert hashlib.sha256(data).hexdigest() == PINNED[key]
