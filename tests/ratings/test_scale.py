"""The rating-scale protocol loader."""

from __future__ import annotations

import pytest

from petctiqa.errors import ProtocolError
from petctiqa.ratings.scale import load_rating_scale


def test_shipped_likert_scale():
    scale = load_rating_scale()
    assert (scale.name, scale.min, scale.max) == ("likert-0-4", 0, 4)
    assert scale.scores == (0, 1, 2, 3, 4)
    assert scale.labels[0].startswith("0 - Bad") and scale.labels[4].startswith("4 - Excellent")
    assert scale.break_every == 100 and scale.training and scale.training_slices == 2
    assert "0 to 4" in scale.instructions


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("labels = [", 'labels = ["extra",'), "field 'scale.labels' must be a list of 5"),
        (("max = 4", "max = 0"), "field 'scale.max' must be greater than min"),
        (("break_every = 100", "break_every = -1"), "field 'session.break_every' must be >= 0"),
        (("training = true", "training = 1"), "field 'session.training' must be true or false"),
        (("[session]", "[session]\nbreak_evry = 3"), "field 'session.break_evry' is not a known"),
    ],
)
def test_bad_scale_fields_are_named(tmp_path, change, message):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "protocols" / "likert-0-4.toml").read_text()
    path = tmp_path / "scale.toml"
    path.write_text(text.replace(*change, 1))
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(")):
        load_rating_scale(path)
