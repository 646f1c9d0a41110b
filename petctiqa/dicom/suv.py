"""Body-weight SUV for PET series.

    SUVbw [g/ml] = activity [Bq/ml] * weight [g] / decayed dose [Bq]
    decayed dose  = RadionuclideTotalDose * 2 ** (-dt / RadionuclideHalfLife)   (DecayCorrection START)
                  = RadionuclideTotalDose                                       (DecayCorrection ADMIN)
    dt [s]        = scan start - injection (RadiopharmaceuticalStartDateTime, else
                    the series date + RadiopharmaceuticalStartTime)

The scan start is SeriesDate/SeriesTime unless that is later than the earliest
AcquisitionDate/AcquisitionTime of the series' slices (some scanners rewrite SeriesTime), in
which case the earliest acquisition is used. Units GML (already SUV, SUVType BW or absent) pass
through with factor 1. Images must be attenuation- and decay-corrected (CorrectedImage ATTN and
DECY) to be converted from BQML.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from petctiqa.dicom.header_scan import HeaderLike
from petctiqa.dicom.records import SeriesInfo, Volume, series_label
from petctiqa.dicom.volume import full_dataset, read_sorted_series, rescaled_pixels
from petctiqa.errors import DicomError

SUV_UNIT = "SUVbw"
TIME_ONLY_MAX_UPTAKE = timedelta(hours=12)
"""With an injection time but no date, an injection 'later' than the scan is taken as the day
before only when that gives an uptake time below this (the scan crossed midnight)."""


@dataclass(frozen=True)
class SuvParameters:
    """Everything that went into a series' SUV factor (for reports and checks)."""

    units: str
    """Units of the stored values (BQML or GML)."""
    factor: float
    """Multiply stored values by this to get SUVbw (1.0 for GML)."""
    weight_kg: float | None
    injected_dose_bq: float | None
    half_life_s: float | None
    decay_correction: str
    injection_time: datetime | None
    scan_time: datetime | None
    uptake_time_s: float | None
    """dt = scan start - injection (s)."""
    decay_factor: float | None
    """2 ** (-dt / half-life) applied to the dose (1.0 for ADMIN)."""


def parse_date(value: object, keyword: str) -> date | None:
    """DICOM DA (YYYYMMDD, or the old YYYY.MM.DD) -> date; None when empty."""
    if value in (None, ""):
        return None
    try:
        return DA(str(value).strip())
    except ValueError as exc:
        raise DicomError(f"{keyword} {value!r} is not a DICOM date") from exc


def parse_time(value: object, keyword: str) -> time | None:
    """DICOM TM (HHMMSS.FFFFFF, HHMM, HH, or the old HH:MM:SS) -> time; None when empty."""
    if value in (None, ""):
        return None
    try:
        return TM(str(value).strip())
    except ValueError as exc:
        raise DicomError(f"{keyword} {value!r} is not a DICOM time") from exc


def parse_datetime(value: object, keyword: str) -> datetime | None:
    """DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) -> naive local datetime; None when empty."""
    if value in (None, ""):
        return None
    try:
        parsed = DT(str(value).strip())
    except ValueError as exc:
        raise DicomError(f"{keyword} {value!r} is not a DICOM date-time") from exc
    return datetime(
        parsed.year,
        parsed.month,
        parsed.day,
        parsed.hour,
        parsed.minute,
        parsed.second,
        parsed.microsecond,
    )


def _combine(day: date | None, moment: time | None) -> datetime | None:
    if day is None or moment is None:
        return None
    return datetime.combine(
        day, time(moment.hour, moment.minute, moment.second, moment.microsecond)
    )


def acquisition_datetime(header: HeaderLike) -> datetime | None:
    """AcquisitionDateTime, else (AcquisitionDate or SeriesDate) + AcquisitionTime."""
    explicit = parse_datetime(header.get("AcquisitionDateTime"), "AcquisitionDateTime")
    if explicit is not None:
        return explicit
    day = parse_date(header.get("AcquisitionDate"), "AcquisitionDate") or parse_date(
        header.get("SeriesDate"), "SeriesDate"
    )
    return _combine(day, parse_time(header.get("AcquisitionTime"), "AcquisitionTime"))


def scan_start(header: Dataset, acquisition_times: Iterable[datetime | None] = ()) -> datetime:
    """Series start: SeriesDate+SeriesTime, or the earliest acquisition when that is earlier."""
    series_day = parse_date(header.get("SeriesDate"), "SeriesDate") or parse_date(
        header.get("StudyDate"), "StudyDate"
    )
    series_time = _combine(series_day, parse_time(header.get("SeriesTime"), "SeriesTime"))
    acquisitions = [t for t in acquisition_times if t is not None]
    own = acquisition_datetime(header)
    if own is not None:
        acquisitions.append(own)
    earliest = min(acquisitions) if acquisitions else None
    if series_time is None and earliest is None:
        raise DicomError(
            "no SeriesDate/SeriesTime or AcquisitionDate/AcquisitionTime: scan time unknown"
        )
    if series_time is None:
        return earliest  # type: ignore[return-value]
    if earliest is not None and series_time > earliest:
        return earliest
    return series_time


def injection_start(info: Dataset, scan_time: datetime) -> datetime:
    """Injection date-time from a RadiopharmaceuticalInformationSequence item.

    RadiopharmaceuticalStartDateTime is used as is. With only RadiopharmaceuticalStartTime the
    date is the scan's date, or the day before when the scan crossed midnight.
    """
    explicit = parse_datetime(
        info.get("RadiopharmaceuticalStartDateTime"), "RadiopharmaceuticalStartDateTime"
    )
    if explicit is not None:
        return explicit
    start = parse_time(info.get("RadiopharmaceuticalStartTime"), "RadiopharmaceuticalStartTime")
    if start is None:
        raise DicomError(
            "RadiopharmaceuticalInformationSequence has neither RadiopharmaceuticalStartDateTime "
            "nor RadiopharmaceuticalStartTime: injection time unknown"
        )
    injection = _combine(scan_time.date(), start)
    assert injection is not None
    if injection > scan_time and injection - timedelta(days=1) >= scan_time - TIME_ONLY_MAX_UPTAKE:
        injection -= timedelta(days=1)
    return injection


def _multi_value(value: object) -> list[str]:
    """A possibly multi-valued string tag as a list (a single value is a plain str)."""
    if value in (None, ""):
        return []
    if isinstance(value, str | bytes):
        return [str(value)]
    return [str(v) for v in value]  # type: ignore[union-attr]


def _positive(value: object, what: str) -> float:
    if value in (None, ""):
        raise DicomError(f"missing {what}: cannot compute body-weight SUV")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{what} {value!r} is not a number") from exc
    if not number > 0:
        raise DicomError(f"{what} is {number:g}: must be positive to compute body-weight SUV")
    return number


def suv_parameters(
    header: Dataset, acquisition_times: Iterable[datetime | None] = ()
) -> SuvParameters:
    """The body-weight SUV factor of a PET series from one slice's header.

    ``acquisition_times`` are the other slices' acquisition date-times (for the earliest-
    acquisition rule). Raises DicomError (without the file name; callers add it) for a unit that
    cannot be converted, missing weight/dose/half-life, uncorrected images or negative dt.
    """
    units = str(header.get("Units", "") or "").strip().upper()
    decay = str(header.get("DecayCorrection", "") or "").strip().upper()
    if units == "GML":
        suv_type = str(header.get("SUVType", "") or "").strip().upper()
        if suv_type not in ("", "BW"):
            raise DicomError(f"Units GML with SUVType {suv_type}: not body-weight SUV")
        return SuvParameters(units, 1.0, None, None, None, decay, None, None, None, None)
    if units != "BQML":
        shown = units or "(empty)"
        raise DicomError(f"Units {shown} cannot be converted to SUV (need BQML or GML)")

    corrected = {v.strip().upper() for v in _multi_value(header.get("CorrectedImage"))}
    lacking = [flag for flag in ("ATTN", "DECY") if flag not in corrected]
    if lacking:
        raise DicomError(
            f"CorrectedImage lacks {'/'.join(lacking)}: images not attenuation/decay corrected, "
            "SUV would be wrong"
        )
    if decay not in ("START", "ADMIN"):
        raise DicomError(
            f"DecayCorrection {decay or '(empty)'} is not supported (need START or ADMIN)"
        )
    weight_kg = _positive(header.get("PatientWeight"), "PatientWeight (kg)")
    sequence = header.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise DicomError(
            "missing RadiopharmaceuticalInformationSequence: dose and injection unknown"
        )
    info = sequence[0]
    dose_bq = _positive(info.get("RadionuclideTotalDose"), "RadionuclideTotalDose (Bq)")
    half_life_s = _positive(info.get("RadionuclideHalfLife"), "RadionuclideHalfLife (s)")

    scan_time = scan_start(header, acquisition_times)
    injection = injection_start(info, scan_time)
    dt = (scan_time - injection).total_seconds()
    if dt < 0:
        raise DicomError(
            f"injection {injection.isoformat(sep=' ')} is after the scan start "
            f"{scan_time.isoformat(sep=' ')} (negative uptake time {dt:.0f} s)"
        )
    decay_factor = 2.0 ** (-dt / half_life_s) if decay == "START" else 1.0
    factor = weight_kg * 1000.0 / (dose_bq * decay_factor)
    return SuvParameters(
        units=units,
        factor=factor,
        weight_kg=weight_kg,
        injected_dose_bq=dose_bq,
        half_life_s=half_life_s,
        decay_correction=decay,
        injection_time=injection,
        scan_time=scan_time,
        uptake_time_s=dt,
        decay_factor=decay_factor,
    )


def suv_factor(header: Dataset, acquisition_times: Iterable[datetime | None] = ()) -> float:
    """Multiply stored PET values (after rescale) by this to get SUVbw; 1.0 for GML."""
    return suv_parameters(header, acquisition_times).factor


def series_suv_parameters(headers: Sequence[HeaderLike], label: str) -> SuvParameters:
    """SUV parameters of a series from all its slice headers (the first one's in full: it is
    read again with pydicom when scanned); errors name the series."""
    if not headers:
        raise DicomError(f"{label}: no slices")
    try:
        times = [acquisition_datetime(h) for h in headers]
        return suv_parameters(full_dataset(headers[0], stop_before_pixels=True), times)
    except DicomError as exc:
        raise DicomError(f"{label}: {exc}") from exc


def load_pet_suv_with_parameters(series: SeriesInfo) -> tuple[Volume, SuvParameters]:
    """Load a PET series as body-weight SUV (unit "SUVbw") and say how it was converted."""
    label = series_label(series)
    if series.modality != "PT":
        raise DicomError(f"{label}: not a PET series (Modality {series.modality})")
    sorted_series = read_sorted_series(series)
    parameters = series_suv_parameters(sorted_series.datasets, label)
    array = rescaled_pixels(sorted_series, label)
    if parameters.factor != 1.0:
        array *= parameters.factor
    volume = Volume(
        array=array,
        affine=sorted_series.geometry.affine,
        unit=SUV_UNIT,
        series=series,
        sop_instance_uids=tuple(str(ds.get("SOPInstanceUID", "")) for ds in sorted_series.datasets),
    )
    return volume, parameters


def load_pet_suv(series: SeriesInfo) -> Volume:
    """Load a PET series as body-weight SUV (float32, unit "SUVbw"), sorted along the normal."""
    return load_pet_suv_with_parameters(series)[0]
