"""The whole 2,700-image set on the built-in full-size phantom (the default command)."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from petctiqa_cli.main import cli


@pytest.mark.slow
def test_default_command_builds_the_full_2700_image_set_on_the_phantom(tmp_path):
    out = tmp_path / "petctiqa-dataset"
    cache = tmp_path / "cache"
    result = CliRunner().invoke(
        cli, ["build-dataset", "--out", str(out), "--quiet", "--phantom-cache", str(cache)]
    )
    assert result.exit_code == 0, result.output
    assert (
        f"no DICOM source given: generating the built-in synthetic PET/CT phantom (20 patients, seed 0) "
        f"in {cache / 'phantom-20p-seed0'} (a cache outside the dataset)"
    ) in result.stderr
    assert not list(out.rglob("*.dcm"))  # the 569 MB of DICOM stay out of the dataset
    assert len(list((out / "sheets" / "crops").glob("*.png"))) == 100
    assert "dataset complete: 2700 images (20 patients x 5 slices x 27)" in result.stdout

    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 2700 and manifest.image.is_unique
    assert manifest.patient_id.nunique() == 20 and manifest.slice_id.nunique() == 100
    assert manifest.groupby("slice_id").size().eq(27).all()
    assert manifest.groupby(["poisson_level", "gaussian_level", "jpeg_level"]).size().eq(100).all()
    assert sorted(manifest.jpeg_quality.unique()) == [40, 70, 100]
    assert sorted(manifest.gaussian_sigma.unique()) == [0.0, 5.0, 10.0]
    assert sorted(manifest.poisson_value.unique()) == [0.0, 0.005, 0.01]
    for row in manifest.itertuples():
        assert hashlib.sha256((out / row.image).read_bytes()).hexdigest() == row.sha256
    # five distinct levels per patient, spread over at least 40 mm of the thorax
    positions = manifest.groupby("patient_id").slice_position_mm.agg(["nunique", "min", "max"])
    assert positions["nunique"].eq(5).all()
    assert (positions["max"] - positions["min"]).min() > 40.0

    assert len(list((out / "references").glob("*.png"))) == 100
    assert len(list((out / "sheets").glob("*.png"))) == 100
    with Image.open(next((out / "references").glob("*.png"))) as reference:
        assert reference.size == (512, 512)

    split = pd.read_csv(out / "split.csv")
    assert split.patient_id.is_unique and len(split) == 20
    assert split.split.value_counts().to_dict() == {"train": 16, "test": 4}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source_kind"] == "phantom" and meta["counts"]["images"] == 2700
    assert meta["counts"]["test_patients"] == 4
