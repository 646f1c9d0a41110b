"""`petctiqa score` on a DICOM PET/CT study: each slice in the PET/CT overlap is rendered with the
dataset protocol and scored exactly as the same render saved as a lossless PNG would be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from petctiqa.dicom.index import index_dicom_tree
from petctiqa.dicom.pairing import find_pet_ct_pairs
from petctiqa.dicom.suv import load_pet_suv
from petctiqa.dicom.volume import load_volume
from petctiqa.iqa.score import Scorer
from petctiqa.phantom import write_phantom_study
from petctiqa.protocol import load_dataset_protocol
from petctiqa.render import render_slice


def test_dicom_study_scores_equal_scores_of_the_rendered_pngs(trained_run, tmp_path):
    study_dir = tmp_path / "dicom"
    write_phantom_study(study_dir, 1, seed=3, ct_matrix=64, pet_matrix=32)
    scorer = Scorer(Path(trained_run.best_checkpoint), device="cpu")

    records = scorer.score([study_dir], batch_size=4, slice_stride=5)

    # Independent path: find the pair, render the same slices, save them as PNG and score those.
    (pair,) = find_pet_ct_pairs(index_dicom_tree(study_dir))
    ct, pet = load_volume(pair.ct), load_pet_suv(pair.pet)
    low, high = pair.overlap_mm
    positions = ct.slice_positions_mm
    inside = np.flatnonzero((positions >= low - 1e-3) & (positions <= high + 1e-3))[::5]
    assert len(records) == len(inside) >= 2
    settings = load_dataset_protocol().render
    pngs = []
    for k in inside:
        png = tmp_path / f"slice{int(k):03d}.png"
        Image.fromarray(render_slice(ct, pet, int(k), settings)).save(png)
        pngs.append(png)
    png_records = scorer.score(pngs, batch_size=4)

    for dicom_record, png_record, k in zip(records, png_records, inside, strict=True):
        assert dicom_record.source.endswith(f"/slice{int(k)}")
        assert pair.patient_id in dicom_record.source
        assert abs(dicom_record.score - png_record.score) < 1e-5
        assert 0.0 <= dicom_record.w <= 1.0
