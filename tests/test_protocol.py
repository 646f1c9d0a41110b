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
        "(pet-ct-iqa-ds, pet-ct-iqa-ds-continuous, pet-ct-iqa-ds-shot, pet-ct-lowdose)"
    )


def test_rating_scale_is_not_a_dataset_protocol(tmp_path):
    assert shipped_protocol_names("dataset") == [
        "pet-ct-iqa-ds",
        "pet-ct-iqa-ds-continuous",
        "pet-ct-iqa-ds-shot",
        "pet-ct-lowdose",
    ]
    assert shipped_protocol_names("rating-scale") == ["likert-0-4"]
    assert "likert-0-4" in shipped_protocol_names()
    with pytest.raises(ProtocolError) as error:
        load_dataset_protocol("likert-0-4")
    assert str(error.value) == (
        "likert-0-4 is a rating-scale protocol, not a dataset protocol (dataset protocols: "
        "pet-ct-iqa-ds, pet-ct-iqa-ds-continuous, pet-ct-iqa-ds-shot, pet-ct-lowdose)"
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


# ----------------------------------------------------------------------------- extends and axes


def _write(path, text: str):
    path.write_text(text)
    return path


def test_shot_protocol_extends_the_published_one_and_means_what_it_meant(tmp_path):
    """pet-ct-iqa-ds-shot.toml now states only its differences; resolved, it equals the complete
    file it replaced (the full text as shipped before extends existed)."""
    text = (resources.files("petctiqa_protocols") / "pet-ct-iqa-ds-shot.toml").read_text()
    assert 'extends = "pet-ct-iqa-ds"' in text and "[render]" not in text
    full = _shipped_data()
    full["protocol"].update(
        name="pet-ct-iqa-ds-shot",
        description=load_dataset_protocol("pet-ct-iqa-ds-shot").description,
    )
    full["distortions"]["poisson"] = {"form": "shot", "levels": [0.0, 1000.0, 250.0]}
    complete = parse_dataset_protocol(full, "package:pet-ct-iqa-ds-shot")
    assert load_dataset_protocol("pet-ct-iqa-ds-shot") == complete


def test_dataclass_defaults_are_the_published_protocol():
    """The shipped root file is where defaults are written; the dataclasses must agree with it."""
    from petctiqa.protocol import (
        DistortionSettings,
        OutputSettings,
        RenderSettings,
        SelectionSettings,
    )

    p = load_dataset_protocol("pet-ct-iqa-ds")
    assert p.selection == SelectionSettings() and p.render == RenderSettings()
    assert p.distortions == DistortionSettings() and p.output == OutputSettings()


def test_extends_a_path_relative_to_the_file_and_inherits_everything_else(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(
        tmp_path / "sub" / "base.toml",
        'extends = "pet-ct-iqa-ds"\n[protocol]\nname = "base"\n[render]\nsuv_max = 5.0\n',
    )
    child = _write(
        tmp_path / "child.toml",
        'extends = "sub/base.toml"\n[protocol]\nname = "child"\n[distortions.gaussian]\n'
        "sigmas = [0.0, 2.0, 4.0]\n",
    )
    p = load_dataset_protocol(child)
    published = load_dataset_protocol("pet-ct-iqa-ds")
    assert (p.name, p.description, p.render.suv_max) == ("child", "", 5.0)
    assert p.distortions.gaussian_sigmas == (0.0, 2.0, 4.0)
    assert p.distortions.poisson_levels == published.distortions.poisson_levels
    assert p.selection == published.selection and p.output == published.output


def test_extends_errors_name_the_file_and_field(tmp_path):
    loop_a = _write(tmp_path / "a.toml", 'extends = "b.toml"\n[protocol]\nname = "a"\n')
    _write(tmp_path / "b.toml", 'extends = "a.toml"\n[protocol]\nname = "b"\n')
    with pytest.raises(ProtocolError, match=r"a.toml: field 'extends' makes a cycle \(.*a.toml"):
        load_dataset_protocol(loop_a)
    missing = _write(tmp_path / "m.toml", 'extends = "nope.toml"\n[protocol]\nname = "m"\n')
    with pytest.raises(ProtocolError, match=r"nope.toml: protocol file not found"):
        load_dataset_protocol(missing)
    unknown = _write(tmp_path / "u.toml", 'extends = "pet-ct-iqa"\n[protocol]\nname = "u"\n')
    with pytest.raises(ProtocolError, match="unknown dataset protocol 'pet-ct-iqa'"):
        load_dataset_protocol(unknown)
    _write(tmp_path / "bb.toml", "[protocol]\nname = 'bb'\n[render]\nsize = 3\n")
    child = _write(tmp_path / "c.toml", 'extends = "bb.toml"\n[protocol]\nname = "c"\n')
    with pytest.raises(ProtocolError, match=r"bb.toml: field 'selection' is missing"):
        load_dataset_protocol(child)
    typo = _write(
        tmp_path / "t.toml",
        'extends = "pet-ct-iqa-ds"\n[protocol]\nname = "t"\n[render]\nsiz = 3\n',
    )
    with pytest.raises(ProtocolError, match=r"t.toml: field 'render.siz' is not a known field"):
        load_dataset_protocol(typo)
    nameless = _write(tmp_path / "n.toml", 'extends = "pet-ct-iqa-ds"\n')
    with pytest.raises(ProtocolError, match=r"n.toml: field 'protocol' is missing"):
        load_dataset_protocol(nameless)


CLASSIC_AS_AXES = """
extends = "pet-ct-iqa-ds"
[protocol]
name = "axes"
[[distortions.axes]]
distortion = "impulse_poisson"
levels = [0.0, 0.005, 0.010]
code = "p"
[[distortions.axes]]
distortion = "gaussian"
levels = [0.0, 5.0, 10.0]
[[distortions.axes]]
distortion = "jpeg"
levels = [100, 70, 40]
"""


def test_axes_describing_the_classic_grid_equal_the_classic_tables(tmp_path):
    from petctiqa.distort import distortion_grid

    p = load_dataset_protocol(_write(tmp_path / "axes.toml", CLASSIC_AS_AXES))
    published = load_dataset_protocol("pet-ct-iqa-ds")
    assert p.distortions == published.distortions and p.distortions.axes is None
    assert distortion_grid(p.distortions) == distortion_grid(published.distortions)
    assert [(a.distortion, a.code) for a in published.distortions.grid_axes()] == [
        ("impulse_poisson", "p"),
        ("gaussian", "g"),
        ("jpeg", "j"),
    ]


def test_other_axes_are_kept_in_order_with_their_options(tmp_path):
    text = CLASSIC_AS_AXES.replace(
        'distortion = "gaussian"\nlevels = [0.0, 5.0, 10.0]',
        'distortion = "gaussian"\nlevels = [0.0, 5.0]',
    ).replace("levels = [100, 70, 40]", 'levels = [90]\noptions = { subsampling = "4:4:4" }')
    p = load_dataset_protocol(_write(tmp_path / "two.toml", text))
    axes = p.distortions.axes
    assert [(a.distortion, a.code, a.levels) for a in axes] == [
        ("impulse_poisson", "p", (0.0, 0.005, 0.010)),
        ("gaussian", "g", (0.0, 5.0)),
        ("jpeg", "j", (90.0,)),
    ]
    assert axes[2].options == (("subsampling", "4:4:4"),)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"gaussian"', '"gausian"', r"axes\[1\].distortion' names 'gausian' \(known: "),
        ("levels = [0.0, 5.0, 10.0]", "levels = [0.0, -5.0]", r"axes\[1\].levels' must be >= 0"),
        ("levels = [0.0, 5.0, 10.0]", "levels = []", r"axes\[1\].levels' must be a list of one"),
        ('code = "p"', 'code = "g"', r"axes\[1\].code' 'g' is already the code"),
        ('code = "p"', 'code = "P1"', r"axes\[0\].code' must be one lower-case letter"),
        ("levels = [100, 70, 40]", "levels = [100]\noptions = { q = 1 }", r"axes\[2\].options'"),
        ('distortion = "jpeg"', 'distortion = "shot_poisson"', r"'distortions.axes' must end with"),
        (
            '"impulse_poisson"\nlevels = [0.0, 0.005, 0.010]',
            '"jpeg"\nlevels = [90]',
            r"axes\[1\].distortion' acts on fused_rgb and must come before the encoded_file",
        ),
    ],
)
def test_bad_axes_name_the_field(tmp_path, old, new, message):
    assert old in CLASSIC_AS_AXES
    path = _write(tmp_path / "bad.toml", CLASSIC_AS_AXES.replace(old, new, 1))
    with pytest.raises(ProtocolError, match=message):
        load_dataset_protocol(path)


def test_shipped_axes_protocols_load():
    lowdose = load_dataset_protocol("pet-ct-lowdose").distortions
    assert [(a.distortion, a.code, a.levels) for a in lowdose.axes] == [
        ("pet_ct_misregistration", "m", (0.0, 5.0, 10.0)),
        ("pet_count_reduction", "p", (1.0, 0.25, 0.1)),
        ("ct_dose_reduction", "c", (1.0, 0.25, 0.1)),
        ("jpeg", "j", (100.0,)),
    ]
    assert lowdose.images_per_slice is None
    continuous = load_dataset_protocol("pet-ct-iqa-ds-continuous").distortions
    assert continuous.images_per_slice == 27
    assert [(a.distortion, a.value_range) for a in continuous.axes] == [
        ("impulse_poisson", (0.0, 0.010)),
        ("gaussian", (0.0, 10.0)),
        ("jpeg", (40.0, 100.0)),
    ]


CONTINUOUS = CLASSIC_AS_AXES.replace("levels = [0.0, 0.005, 0.010]", "range = [0.0, 0.01]")
WITH_IMAGES = 'name = "axes"\n[distortions]\nimages_per_slice = 27\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CONTINUOUS, r"'distortions.images_per_slice' is missing: axis 'p' gives a range"),
        (
            CONTINUOUS.replace('name = "axes"\n', WITH_IMAGES),
            r"images_per_slice' cannot mix with levels: axis 'g' has 3 levels",
        ),
        (
            CLASSIC_AS_AXES.replace(
                "levels = [0.0, 0.005, 0.010]", "levels = [0.0]\nrange = [0.0, 0.01]"
            ),
            r"axes\[0\].levels' must be given, or else range = \[low, high\] \(not both\)",
        ),
        (
            CLASSIC_AS_AXES.replace("levels = [0.0, 0.005, 0.010]", "range = [0.01, 0.0]"),
            r"axes\[0\].range' must be \[low, high\] with low < high",
        ),
        (
            CLASSIC_AS_AXES.replace("levels = [100, 70, 40]", "range = [40.5, 100]"),
            r"axes\[2\].range' must hold integers \(quality\)",
        ),
        (
            CLASSIC_AS_AXES.replace('name = "axes"\n', WITH_IMAGES),
            r"images_per_slice' needs at least one axis with range",
        ),
    ],
)
def test_continuous_designs_are_checked(tmp_path, text, message):
    with pytest.raises(ProtocolError, match=message):
        load_dataset_protocol(_write(tmp_path / "bad.toml", text))
