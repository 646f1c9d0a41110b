"""A small client for TCIA's public NBIA REST API (v4, no login), built on ``requests``.

Only the endpoints ``petctiqa fetch`` needs: ``getPatient``, ``getSeries``, ``getSeriesSize`` and
``getImage`` (a zip of one series). Every call retries network errors, HTTP 429 and 5xx with a
bounded exponential backoff; other HTTP errors and unreachable servers raise
:class:`petctiqa.errors.FetchError` naming the URL. A zip download continues a partial file with
an HTTP Range request; a server that ignores Range sends the whole zip again (the caller is told).

Why not ``tcia_utils``: its NBIA module builds the host name itself
(``https://{services|nlst}.cancerimagingarchive.net``), so it cannot be pointed at another base URL
(a mirror, or the loopback server of our tests); it also pulls in plotly, bs4 and unidecode and
configures the root logger on import. The four endpoints above are a few lines each with
``requests``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
import urllib3

from petctiqa import __version__
from petctiqa.errors import FetchError

DEFAULT_BASE_URL = "https://nbia.cancerimagingarchive.net/nbia-api/services/v4/"
BASE_URL_ENV = "PETCTIQA_TCIA_URL"
"""Environment variable that overrides :data:`DEFAULT_BASE_URL`."""


def resolve_base_url(base_url: str | None = None) -> str:
    """The API base URL: ``base_url`` if given, else ``$PETCTIQA_TCIA_URL``, else TCIA's v4 API.

    Always returned with a trailing slash so endpoint names can be appended.
    """
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"base URL {url!r} must start with http:// or https://")
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: wait ``base_delay_s * 2**k`` (at most ``max_delay_s``) seconds
    after failed attempt k (k = 0, 1, ...), for at most ``attempts`` attempts in total."""

    attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay_s(self, failed_attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2.0**failed_attempt)


class TransientError(Exception):
    """A failure worth retrying: connection lost or refused, timeout, HTTP 429/5xx, short body."""


@dataclass(frozen=True)
class RemoteSeries:
    """One series as listed by ``getSeries`` (no DICOM header read yet)."""

    collection: str
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    series_description: str
    series_number: float | None
    study_description: str
    study_date: str
    """As the server gives it (``2007-04-04``, ``2007-04-04 00:00:00.0`` or ``20070404``)."""
    image_count: int
    """Number of instances the server holds for this series (the completeness check)."""
    file_size: int | None
    """Bytes, when the listing gives it."""
    manufacturer: str
    third_party_analysis: str
    collection_uri: str


@dataclass(frozen=True)
class ZipDownload:
    """What one ``getImage`` attempt did to the partial zip file."""

    received: int
    """Bytes received in this attempt."""
    resumed_from: int
    """Offset the server continued from (HTTP 206); 0 when it sent the zip from the start."""
    discarded: int
    """Bytes of an earlier partial file thrown away because the server ignored the Range
    request (HTTP 200) or could not satisfy it (HTTP 416)."""


@dataclass(frozen=True)
class SeriesSize:
    """``getSeriesSize``: total bytes of the series' files and their count."""

    total_bytes: int
    object_count: int


def _first(record: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        value = record.get(key)
        if value not in (None, ""):
            return value
    return default


def _to_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_series_record(record: Mapping[str, Any], url: str) -> RemoteSeries:
    """Turn one ``getSeries`` JSON object into a :class:`RemoteSeries`.

    Accepts the key spellings of NBIA API v1-v4 (``StudyDesc``/``StudyDescription``, ...).
    """
    missing = [
        key
        for key in ("SeriesInstanceUID", "StudyInstanceUID", "Modality", "ImageCount")
        if record.get(key) in (None, "")
    ]
    if missing:
        raise FetchError(f"{url} returned a series without {', '.join(missing)}: {dict(record)}")
    count = _to_float(record["ImageCount"])
    if count is None or count < 0:
        raise FetchError(f"{url} returned ImageCount {record['ImageCount']!r} (not a count)")
    size = _to_float(_first(record, "FileSize", "TotalSizeInBytes"))
    return RemoteSeries(
        collection=str(_first(record, "Collection", default="")),
        patient_id=str(_first(record, "PatientID", "PatientId", "Subject ID", default="")),
        study_uid=str(record["StudyInstanceUID"]),
        series_uid=str(record["SeriesInstanceUID"]),
        modality=str(record["Modality"]).upper(),
        series_description=str(_first(record, "SeriesDescription", default="")),
        series_number=_to_float(_first(record, "SeriesNumber")),
        study_description=str(_first(record, "StudyDescription", "StudyDesc", default="")),
        study_date=str(_first(record, "StudyDate", "SeriesDate", default="")),
        image_count=int(count),
        file_size=None if size is None else int(size),
        manufacturer=str(_first(record, "Manufacturer", default="")),
        third_party_analysis=str(_first(record, "ThirdPartyAnalysis", default="NO")),
        collection_uri=str(_first(record, "CollectionURI", "DataDescriptionURI", default="")),
    )


class TciaClient:
    """NBIA REST client. Thread-safe: each thread gets its own ``requests.Session``.

    ``timeout_s`` is (connect, read) in seconds; the read timeout applies between bytes, not to a
    whole download. ``sleep`` is injectable so tests need not wait.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout_s: tuple[float, float] = (15.0, 120.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.retry = retry
        self.timeout_s = timeout_s
        self.sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------

    def url(self, endpoint: str, params: Mapping[str, str] | None = None) -> str:
        """The full URL of an endpoint call (for requests and for error messages)."""
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.base_url}{endpoint}{query}"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"petctiqa/{__version__} (+requests)"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def __enter__(self) -> TciaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(
        self, url: str, *, stream: bool, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        """One GET; maps retryable failures to TransientError and the rest to FetchError
        (HTTP 416 is returned to the caller of a Range request)."""
        try:
            response = self._session().get(
                url, stream=stream, timeout=self.timeout_s, headers=dict(headers or {})
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"cannot reach {url}: {_reason(exc)}") from exc
        except requests.RequestException as exc:
            raise FetchError(f"request to {url} failed: {_reason(exc)}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            response.close()
            raise TransientError(f"HTTP {response.status_code} from {url}")
        if response.status_code == 416 and headers and "Range" in headers:
            return response
        if response.status_code >= 400:
            response.close()
            raise FetchError(f"HTTP {response.status_code} from {url}")
        return response

    def with_retries(self, action: Callable[[], Any], what: str) -> Any:
        """Run ``action`` until it succeeds, retrying TransientError per the retry policy.

        After the last attempt the error becomes a FetchError with the last reason (which names
        the URL); ``what`` names the call when there was no attempt at all.
        """
        last: TransientError | None = None
        for attempt in range(self.retry.attempts):
            try:
                return action()
            except TransientError as exc:
                last = exc
                if attempt + 1 < self.retry.attempts:
                    self.sleep(self.retry.delay_s(attempt))
        raise FetchError(f"{last or what} (gave up after {self.retry.attempts} attempts)")

    def get_json(self, endpoint: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET an endpoint that answers a JSON array (an empty body means "no results")."""
        url = self.url(endpoint, params)

        def action() -> list[dict[str, Any]]:
            with self._get(url, stream=False) as response:
                try:
                    text = response.text
                except requests.RequestException as exc:
                    raise TransientError(f"connection lost reading {url}: {_reason(exc)}") from exc
            if not text.strip():
                return []
            try:
                payload = json.loads(text)
            except ValueError as exc:
                raise FetchError(f"{url} did not return JSON: {text[:80]!r}") from exc
            if isinstance(payload, dict):
                payload = [payload]
            if not isinstance(payload, list):
                raise FetchError(f"{url} returned {type(payload).__name__}, expected a list")
            return payload

        return self.with_retries(action, url)

    # -- endpoints ------------------------------------------------------------------------------

    def patients(self, collection: str) -> list[str]:
        """Patient IDs of a collection (``getPatient``), in the server's order."""
        records = self.get_json("getPatient", {"Collection": collection})
        ids = [_first(r, "PatientId", "PatientID", "Subject ID") for r in records]
        return [str(i) for i in ids if i]

    def series(
        self, collection: str, patient_id: str | None = None, modality: str | None = None
    ) -> list[RemoteSeries]:
        """Series of a collection, optionally of one patient and/or one modality (``getSeries``)."""
        params = {"Collection": collection}
        if patient_id is not None:
            params["PatientID"] = patient_id
        if modality is not None:
            params["Modality"] = modality
        url = self.url("getSeries", params)
        return [parse_series_record(r, url) for r in self.get_json("getSeries", params)]

    def series_size(self, series_uid: str) -> SeriesSize:
        """Download size of one series (``getSeriesSize``)."""
        params = {"SeriesInstanceUID": series_uid}
        records = self.get_json("getSeriesSize", params)
        total = _to_float(records[0].get("TotalSizeInBytes")) if records else None
        count = _to_float(records[0].get("ObjectCount")) if records else None
        if total is None or count is None:
            raise FetchError(f"{self.url('getSeriesSize', params)} returned no size: {records}")
        return SeriesSize(total_bytes=int(total), object_count=int(count))

    def download_series_zip(
        self, series_uid: str, dest: Path, on_bytes: Callable[[int], None] | None = None
    ) -> ZipDownload:
        """ONE attempt at streaming ``getImage`` (the series as a zip) into ``dest``.

        When ``dest`` already holds part of the zip, asks for the rest (``Range: bytes=N-``, with
        ``If-Range`` when an earlier answer gave an ETag or Last-Modified, kept in
        ``<dest>.validator``) and appends on HTTP 206; on 200 or 416 the partial bytes are
        discarded and the zip is written from the start. Raises TransientError when the
        connection drops or the body is shorter than its Content-Length; what arrived stays in
        ``dest`` for the next attempt.
        """
        url = self.url("getImage", {"SeriesInstanceUID": series_uid, "NewFileNames": "Yes"})
        offset = dest.stat().st_size if dest.is_file() else 0
        validator_path = dest.with_name(dest.name + ".validator")
        headers = _range_headers(offset, validator_path)
        with self._get(url, stream=True, headers=headers) as response:
            try:
                start = _resume_offset(response, offset, url)
            except TransientError:
                dest.unlink(missing_ok=True)  # the part cannot be continued: start over
                raise
            if start == 0:
                _remember_validator(response, validator_path)
            received = self._stream_body(response, dest, start, url, on_bytes)
        return ZipDownload(received=received, resumed_from=start, discarded=offset - start)

    def _stream_body(
        self,
        response: requests.Response,
        dest: Path,
        start: int,
        url: str,
        on_bytes: Callable[[int], None] | None,
    ) -> int:
        expected = _to_float(response.headers.get("Content-Length"))
        received = 0
        try:
            with open(dest, "ab" if start else "wb") as handle:
                # read1 returns what has arrived, so a dropped connection loses no received
                # byte (iter_content's fixed-size reads drop the last partial chunk)
                while chunk := response.raw.read1(1 << 20, decode_content=True):
                    handle.write(chunk)
                    received += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as exc:
            raise TransientError(
                f"connection lost after {start + received} bytes of {url}: {_reason(exc)}"
            ) from exc
        if expected is not None and received != int(expected):
            raise TransientError(f"{url} sent {received} of {int(expected)} bytes")
        return received


def _range_headers(offset: int, validator_path: Path) -> dict[str, str]:
    """Request headers that ask for the rest of a partial file (none when there is none)."""
    if offset == 0:
        return {}
    headers = {"Range": f"bytes={offset}-"}
    # without a validator the zip's CRCs and the DICOM checks still catch a changed file
    with contextlib.suppress(OSError):
        headers["If-Range"] = validator_path.read_text(encoding="utf-8").strip()
    return headers


def _remember_validator(response: requests.Response, validator_path: Path) -> None:
    """Keep the answer's ETag (or Last-Modified) for the If-Range of a later resume."""
    validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
    if validator:
        validator_path.write_text(validator, encoding="utf-8")
    else:
        validator_path.unlink(missing_ok=True)


def _resume_offset(response: requests.Response, offset: int, url: str) -> int:
    """Where the answer's body starts in the zip: ``offset`` for a 206 that continues exactly
    there, 0 for a whole zip. A 206 that starts elsewhere and a 416 are refused (the caller
    starts over)."""
    if response.status_code == 416:
        raise TransientError(f"HTTP 416 from {url} for bytes {offset}-: starting over")
    if response.status_code != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")
    unit, _, span = content_range.partition(" ")
    first = span.split("-", 1)[0]
    if unit != "bytes" or not first.isdigit() or int(first) != offset:
        raise TransientError(f"{url} answered bytes {content_range!r} to a request for {offset}-")
    return offset


def _reason(exc: BaseException) -> str:
    """A short reason for a requests exception (the innermost cause, without the noise)."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    return text if len(text) <= 160 else text[:157] + "..."
