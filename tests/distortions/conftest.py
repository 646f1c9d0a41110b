"""Real PET and CT slices for the data-domain distortions (from ../shared/data/dicom)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage

from petctiqa.dicom.index import index_dicom_tree
from petctiqa.dicom.records import Volume
from petctiqa.dicom.suv import load_pet_suv_with_parameters
from petctiqa.dicom.volume import load_volume
from petctiqa.distortions.slices import PetCtSlice, pet_acquisition


def largest_region(mask: np.ndarray, erode: int) -> np.ndarray:
    """The largest connected part of ``mask``, eroded ``erode`` pixels (away from its edges)."""
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    region = labels == int(np.argmax(sizes)) + 1
    return ndimage.binary_erosion(region, iterations=erode)


@dataclass(frozen=True)
class LiverSlice:
    data: PetCtSlice
    liver: np.ndarray
    body: np.ndarray


@dataclass(frozen=True)
class Sts001:
    pet: Volume
    pet_crop: Volume
    ct: Volume
    acquisition: object


@pytest.fixture(scope="session")
def sts001_volumes(shared_data) -> Sts001:
    index = index_dicom_tree(shared_data / "dicom" / "STS_001")
    ct_series = next(s for s in index.series if s.modality == "CT")
    wholebody = next(s for s in index.series if s.modality == "PT" and s.rows == 128)
    crop = next(s for s in index.series if s.modality == "PT" and s.rows != 128)
    return Sts001(
        pet=load_pet_suv_with_parameters(wholebody)[0],
        pet_crop=load_pet_suv_with_parameters(crop)[0],
        ct=load_volume(ct_series),
        acquisition=pet_acquisition(wholebody),
    )


@pytest.fixture(scope="session")
def liver_slice(sts001_volumes) -> LiverSlice:
    """STS_001 whole-body FDG PET, native slice 150 through the liver (SUV ~2.1, 128x128 at
    4.69 mm). The CT of STS_001 is a 20 cm crop of the thigh, so this slice has no CT."""
    pet = sts001_volumes.pet
    suv = pet.array[150]
    liver = largest_region((suv > 1.5) & (suv < 3.5), erode=2)
    data = PetCtSlice(
        pet=suv.copy(),
        ct_hu=None,
        pixel_mm=float(np.linalg.norm(pet.affine[:3, 0])),
        slice_thickness_mm=float(np.linalg.norm(pet.affine[:3, 2])),
        pet_unit=pet.unit,
        acquisition=sts001_volumes.acquisition,
    )
    body = ndimage.binary_fill_holes(suv > 0.1)
    return LiverSlice(data, liver, body)


@pytest.fixture(scope="session")
def crlm_ct(shared_data) -> Volume:
    index = index_dicom_tree(shared_data / "dicom" / "CRLM-CT-1004")
    return load_volume(index.series[0])


@pytest.fixture(scope="session")
def abdomen(crlm_ct) -> tuple[PetCtSlice, np.ndarray]:
    """CRLM-CT-1004 slice 25 (upper abdomen, 512x512 at 0.80 mm) and its liver region."""
    hu = crlm_ct.array[25].copy()
    smooth = ndimage.uniform_filter(hu, 7)
    liver = largest_region((smooth > 40) & (smooth < 120), erode=6)
    pixel = float(np.linalg.norm(crlm_ct.affine[:3, 0]))
    return PetCtSlice(np.zeros_like(hu), hu, pixel, 5.0), liver
