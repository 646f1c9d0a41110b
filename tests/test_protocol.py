from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources

import numpy as np
import pytest

from petctiqa.errors import ProtocolError
from petctiqa.protocol import (
    load_dataset_protocol,
    parse_dataset_protocol,
    shipped_protocol_names,
)
from petctiqa.render import fuse_pet_on_ct
from petctiqa.seeding import derive_seed, rng_for


def test_shipped_protocols_load_with_published_values():
    assert {"pet-ct-iqa-ds", "pet-ct-iqa-ds-shot"} <= set(shipped_protocol_names())
    p = load_dataset_protocol("pet-ct-iqa-ds")
    assert p.selection.patients == 20 and p.selection.slices_per_patient == 5
    assert p.distortions.poisson_form == "impulse"
    assert p.distortions.poisson_levels == (0.0, 0.005, 0.010)
    assert p.distortions.gaussian_sigmas == (0.0, 5.0, 10.0)
    assert p.distortions.jpeg_qualities == (100, 70, 40)
    assert (p.render.ct_window_width, p.render.ct_window_level) == (350.0, 40.0)
    shot = load_dataset_protocol("pet-ct-iqa-ds-shot")
    assert shot.distortions.poisson_form == "shot"
    assert shot.render == p.render


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["render"].__setitem__("ct_window_width", "wide"), "render.ct_window_width"),
        (
            lambda d: d["distortions"]["gaussian"].__setitem__("sigmas", [0, 5]),
            "distortions.gaussian.sigmas",
        ),
        (
            lambda d: d["distortions"]["poisson"].__setitem__("form", "dense"),
            "distortions.poisson.form",
        ),
        (
            lambda d: d["distortions"]["jpeg"].__setitem__("qualities", [100, 70, 140]),
            "distortions.jpeg.qualities",
        ),
        (lambda d: d["selection"].__setitem__("patinets", 3), "selection.patinets"),
        (lambda d: d["selection"].pop("patients"), "selection.patients"),
        (lambda d: d["render"].__setitem__("suv_max", -1.0), "render.suv_max"),
        (lambda d: d["render"].__setitem__("colormap", "hott"), "render.colormap"),
    ],
)
def test_bad_field_is_named(edit, field):
    from importlib import resources

    with resources.files("petctiqa_protocols").joinpath("pet-ct-iqa-ds.toml").open("rb") as fh:
        import tomllib

        data = tomllib.load(fh)
    edit(data)
    with pytest.raises(ProtocolError, match=f"field '{field}'"):
        parse_dataset_protocol(data, "my.toml")


def test_protocol_path_errors(tmp_path):
    with pytest.raises(ProtocolError, match="not found"):
        load_dataset_protocol(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[protocol\nname=1")
    with pytest.raises(ProtocolError, match="invalid TOML"):
        load_dataset_protocol(bad)
    with pytest.raises(ProtocolError) as error:
        load_dataset_protocol("nope")
    # only dataset protocols are offered, not the rating scale that ships beside them
    assert str(error.value) == (
        "unknown dataset protocol 'nope': not a file, and not a shipped dataset protocol "
        "(pet-ct-iqa-ds, pet-ct-iqa-ds-shot)"
    )


def test_rating_scale_is_not_a_dataset_protocol(tmp_path):
    assert shipped_protocol_names("dataset") == ["pet-ct-iqa-ds", "pet-ct-iqa-ds-shot"]
    assert shipped_protocol_names("rating-scale") == ["likert-0-4"]
    assert "likert-0-4" in shipped_protocol_names()
    with pytest.raises(ProtocolError) as error:
        load_dataset_protocol("likert-0-4")
    assert str(error.value) == (
        "likert-0-4 is a rating-scale protocol, not a dataset protocol (dataset protocols: "
        "pet-ct-iqa-ds, pet-ct-iqa-ds-shot)"
    )
    copy = tmp_path / "my-scale.toml"
    copy.write_text((resources.files("petctiqa_protocols") / "likert-0-4.toml").read_text())
    with pytest.raises(ProtocolError, match=r"my-scale.toml is a rating-scale protocol, not a"):
        load_dataset_protocol(copy)


def _shipped_data() -> dict:
    with resources.files("petctiqa_protocols").joinpath("pet-ct-iqa-ds.toml").open("rb") as fh:
        return tomllib.load(fh)


def test_blend_weights_that_make_every_image_black_are_refused():
    data = _shipped_data()
    data["render"].update(ct_weight=0.0, pet_weight=0.0)
    with pytest.raises(ProtocolError) as error:
        parse_dataset_protocol(data, "my.toml")
    assert str(error.value).startswith(
        "my.toml: field 'render.pet_weight' must be > 0 when render.ct_weight is 0 in mode "
        "'fused' (every image would be black)"
    )
    data["render"].update(ct_weight=0.001, pet_weight=0.0005, normalize_max=False)
    with pytest.raises(ProtocolError, match=r"field 'render.ct_weight' \+ render.pet_weight"):
        parse_dataset_protocol(data, "my.toml")
    data["render"]["pet_weight"] = -0.1
    with pytest.raises(ProtocolError, match=r"field 'render.pet_weight' must be >= 0.0, got -0.1"):
        parse_dataset_protocol(data, "my.toml")
    # one layer alone is fine
    data["render"].update(ct_weight=0.0, pet_weight=0.37, normalize_max=True)
    assert parse_dataset_protocol(data, "my.toml").render.pet_weight == 0.37


@pytest.mark.parametrize("mode", ["ct", "pet"])
def test_single_layer_modes_ignore_the_weights_and_are_not_black(mode):
    """ct / pet draw their layer at full strength: zero blend weights still give an image."""
    data = _shipped_data()
    data["render"].update(mode=mode, ct_weight=0.0, pet_weight=0.0)
    settings = parse_dataset_protocol(data, "my.toml").render
    ct = np.full((64, 64), -1000.0, np.float32)
    ct[16:48, 16:48] = 40.0  # soft tissue at the window level: grey 0.5
    pet = np.zeros((64, 64), np.float32)
    pet[24:40, 24:40] = 3.5  # half the SUV range
    rgb = fuse_pet_on_ct(ct, pet, dataclasses.replace(settings, size=64))
    assert rgb.max() == 255 and rgb[0, 0].tolist() == [0, 0, 0]
    centre = rgb[32, 32].tolist()
    if mode == "ct":
        assert centre == [255, 255, 255] and rgb[20, 20].tolist() == [255, 255, 255]
    else:
        assert centre[0] == 255 and rgb[20, 20].tolist() == [0, 0, 0]


def test_seeds_are_stable_and_independent():
    # SHA-256 based: fixed across processes and platforms.
    assert derive_seed(0, "P001/s1/p0g0j0") == derive_seed(0, "P001/s1/p0g0j0")
    assert derive_seed(0, "a") != derive_seed(1, "a")
    assert derive_seed(0, "a") != derive_seed(0, "b")
    assert (
        rng_for(7, "x").integers(0, 2**31, 4).tolist()
        == rng_for(7, "x").integers(0, 2**31, 4).tolist()
    )
