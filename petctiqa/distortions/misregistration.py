"""PET/CT misregistration: the PET shifted in patient coordinates against the CT (breathing,
patient motion between the CT and the PET frames).

The PET volume's affine is translated by ``shift_mm`` along one patient axis (DICOM LPS:
``x`` right-to-left, ``y`` anterior-to-posterior, ``z`` feet-to-head) and resampled onto the CT
slice again with the render's own trilinear resampling
(:func:`petctiqa.render.resample_pet_to_ct_slice`), so a shift along ``z`` takes the PET from
other planes, exactly as a real cranio-caudal misregistration would. Deterministic: ``rng`` is
not used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from petctiqa.dicom.records import Volume
from petctiqa.distortions.registry import (
    Distortion,
    Parameter,
    keyword_configure,
    register_distortion,
)
from petctiqa.distortions.slices import PetCtSlice
from petctiqa.errors import PetctiqaError

NAME = "pet_ct_misregistration"
AXES = {"x": 0, "y": 1, "z": 2}
MAX_SHIFT_MM = 200.0


def shifted_volume(volume: Volume, shift_mm: float, axis: str) -> Volume:
    """The same voxels placed ``shift_mm`` further along patient axis ``axis``."""
    affine = volume.affine.copy()
    affine[AXES[axis], 3] += shift_mm
    return dataclasses.replace(volume, affine=affine)


@dataclass(frozen=True)
class Misregistration:
    """Settings: the patient axis of the shift (a protocol axis's ``options``)."""

    axis: str = "z"

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise PetctiqaError(f"axis must be one of x, y, z, got {self.axis!r}")

    def __call__(self, data: PetCtSlice, shift_mm: float, rng: np.random.Generator) -> PetCtSlice:
        # lazy: protocol parsing imports every plug-in; render pulls in SciPy
        from petctiqa.render import resample_pet_to_ct_slice

        if not isinstance(data, PetCtSlice) or data.pet_volume is None or data.ct_volume is None:
            raise PetctiqaError(
                f"{NAME} needs a PetCtSlice cut from its PET and CT volumes (pet_ct_slice)"
            )
        if shift_mm == 0.0:
            return dataclasses.replace(data, pet=data.pet.copy())
        moved = shifted_volume(data.pet_volume, shift_mm, self.axis)
        pet = resample_pet_to_ct_slice(moved, data.ct_volume, data.ct_index)
        return dataclasses.replace(data, pet=pet, pet_volume=moved)


DISTORTION = register_distortion(
    Distortion(
        name=NAME,
        domain="pet_activity",
        parameter=Parameter("shift", "mm along the patient axis", 0.0, -MAX_SHIFT_MM, MAX_SHIFT_MM),
        summary="PET shifted against the CT in patient coordinates, resampled as the render does",
        apply=Misregistration(),
        configure=keyword_configure(NAME, Misregistration),
    )
)
