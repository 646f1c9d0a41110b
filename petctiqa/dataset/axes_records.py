"""Manifest rows of a protocol with its own ``[[distortions.axes]]`` (the classic grid's rows
are made in :mod:`petctiqa.dataset.build`): one :class:`AxesImageRecord` per image, with every
axis's level (grid axes) and exact parameter value (see :mod:`petctiqa.dataset.manifest`)."""

from __future__ import annotations

from petctiqa.dataset.layout import image_rel_path
from petctiqa.dataset.manifest import AxesImageRecord, AxisValue, axis_stems
from petctiqa.dataset.records import PreparedPatient, SliceOutcome
from petctiqa.distort import slice_specs
from petctiqa.distortions import get_distortion
from petctiqa.protocol import DistortionSettings


def axes_records(
    plans: list[PreparedPatient],
    settings: DistortionSettings,
    outcomes: dict[str, SliceOutcome],
    seed: int,
    image_format: str,
) -> list[AxesImageRecord]:
    """One record per image, by patient, slice and the design's cell order, with the hashes
    the slice tasks reported."""
    axes = settings.axes or ()
    stems = axis_stems([(a.distortion, a.code) for a in axes])
    value_columns = [
        f"{stem}_{get_distortion(a.distortion).parameter.name}"
        for stem, a in zip(stems, axes, strict=True)
    ]
    records = []
    for plan in sorted(plans, key=lambda p: p.patient_id):
        for item in plan.slices:
            hashes = dict(outcomes[item.slice_id].image_sha256)
            for cell in slice_specs(settings, seed, item.slice_id):
                image_id = f"{item.slice_id}_{cell.code}"
                values = tuple(
                    AxisValue(
                        column,
                        float(value),
                        level if axis.value_range is None else None,
                        f"{stem}_level" if axis.value_range is None else None,
                    )
                    for stem, column, axis, value, level in zip(
                        stems, value_columns, axes, cell.values, cell.levels, strict=True
                    )
                )
                records.append(
                    AxesImageRecord(
                        image=image_rel_path(image_id, image_format),
                        image_id=image_id,
                        **plan.provenance(item),
                        axes=values,
                        seed=seed,
                        sha256=hashes[image_id],
                    )
                )
    return records
