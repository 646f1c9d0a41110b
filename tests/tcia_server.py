"""A fake TCIA NBIA v4 server for tests: http.server on 127.0.0.1 (ephemeral port, own thread).

It serves getPatient, getSeries, getSeriesSize and getImage from DICOM files given to it, and can
inject faults into getImage per series: "drop" (connection closed half-way through the body),
"corrupt" (a flipped byte inside a zip member, so its CRC fails), "http500" (an HTTP 500 answer),
"stall" (half the body, then :attr:`FakeTcia.stall_s` seconds of silence before the connection
closes) -- each consumed by one request -- and "missing" (every zip lacks its last file).

With ``supports_range`` it answers ``Range: bytes=N-`` with 206 and the rest of the zip (the
zips are byte-identical on every request; ``If-Range`` with another ETag gets the whole zip),
as a resumable server would; otherwise it ignores Range and sends the whole zip with 200.
:meth:`FakeTcia.relabel` changes what the listing says about a series (hostile names).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pydicom

API_PREFIX = "/nbia-api/services/v4/"


@dataclass
class FakeSeries:
    record: dict
    """The getSeries JSON object."""
    members: list[tuple[str, bytes]]
    """Zip member names and contents, in order."""


@dataclass
class FakeTcia:
    collection: str = "Lung-PET-CT-Dx"
    collection_uri: str = "https://doi.org/10.7937/TCIA.2020.NNC2-0461"
    series: dict[str, FakeSeries] = field(default_factory=dict)
    patients: list[str] = field(default_factory=list)
    faults: dict[str, list[str]] = field(default_factory=dict)
    persistent_faults: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    supports_range: bool = False
    ranges: list[tuple[str, str]] = field(default_factory=list)
    """(SeriesInstanceUID, Range header) of every getImage request that sent one."""
    stall_s: float = 3.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # -- content ----------------------------------------------------------------------------

    def add_series(
        self,
        files: Sequence[Path],
        *,
        description: str | None = None,
        series_number: int | None = None,
    ) -> str:
        """Serve the DICOM ``files`` (one series); the listing is built from the first header,
        with ``description``/``series_number`` overriding the header's when given."""
        header = pydicom.dcmread(files[0], stop_before_pixels=True)
        uid = str(header.SeriesInstanceUID)
        patient = str(header.PatientID)
        members = [(f"1-{k:02d}.dcm", Path(f).read_bytes()) for k, f in enumerate(files, 1)]
        date = str(header.get("StudyDate", ""))
        record = {
            "SeriesInstanceUID": uid,
            "StudyInstanceUID": str(header.StudyInstanceUID),
            "Modality": str(header.Modality),
            "SeriesDescription": description or str(header.get("SeriesDescription", "")),
            "SeriesNumber": series_number or int(header.get("SeriesNumber", 1)),
            "Collection": self.collection,
            "PatientID": patient,
            "Manufacturer": str(header.get("Manufacturer", "")),
            "ImageCount": len(members),
            "FileSize": sum(len(b) for _, b in members),
            "StudyDesc": str(header.get("StudyDescription", "")),
            "StudyDate": f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else "",
            "ThirdPartyAnalysis": "NO",
            "CollectionURI": self.collection_uri,
        }
        self.series[uid] = FakeSeries(record, members)
        if patient not in self.patients:
            self.patients.append(patient)
        return uid

    def relabel(self, uid: str, **fields: object) -> str:
        """Change listing fields of series ``uid`` (``PatientID``, ``StudyDesc``,
        ``SeriesInstanceUID``, ...); the DICOM files stay as they are. Returns the new UID."""
        fake = self.series.pop(uid)
        old_patient = fake.record["PatientID"]
        fake.record.update(fields)
        new_uid = str(fake.record["SeriesInstanceUID"])
        self.series[new_uid] = fake
        new_patient = fake.record["PatientID"]
        if new_patient not in self.patients:
            self.patients.append(new_patient)
        if all(s.record["PatientID"] != old_patient for s in self.series.values()):
            self.patients.remove(old_patient)
        return new_uid

    def zip_bytes(self, uid: str, members: list[tuple[str, bytes]] | None = None) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, data in self.series[uid].members if members is None else members:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                archive.writestr(info, data)
        return buffer.getvalue()

    def image_requests(self) -> list[str]:
        """SeriesInstanceUIDs asked of getImage, in order."""
        return [p["SeriesInstanceUID"] for e, p in self.requests if e == "getImage"]

    # -- server -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{API_PREFIX}"

    def start(self) -> FakeTcia:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                if not parsed.path.startswith(API_PREFIX):
                    self._send(404, b"not found", "text/plain")
                    return
                endpoint = parsed.path[len(API_PREFIX) :]
                with fake._lock:
                    fake.requests.append((endpoint, params))
                    if endpoint == "getImage" and self.headers.get("Range"):
                        fake.ranges.append(
                            (params.get("SeriesInstanceUID", ""), self.headers["Range"])
                        )
                handler = getattr(fake, f"_serve_{endpoint}", None)
                if handler is None:
                    self._send(404, b"unknown endpoint", "text/plain")
                    return
                handler(self, params)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def send_json(self, payload: object) -> None:
                self._send(200, json.dumps(payload).encode(), "application/json")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- endpoints --------------------------------------------------------------------------

    def _serve_getPatient(self, handler, params: dict[str, str]) -> None:
        if params.get("Collection") != self.collection:
            handler.send_json([])
            return
        handler.send_json(
            [
                {"PatientId": p, "PatientName": p, "Collection": self.collection}
                for p in self.patients
            ]
        )

    def _serve_getSeries(self, handler, params: dict[str, str]) -> None:
        records = [
            s.record
            for s in self.series.values()
            if s.record["Collection"] == params.get("Collection")
            and params.get("PatientID", s.record["PatientID"]) == s.record["PatientID"]
            and params.get("Modality", s.record["Modality"]) == s.record["Modality"]
        ]
        handler.send_json(records)

    def _serve_getSeriesSize(self, handler, params: dict[str, str]) -> None:
        fake = self.series.get(params.get("SeriesInstanceUID", ""))
        if fake is None:
            handler.send_json([])
            return
        total = sum(len(data) for _, data in fake.members)
        handler.send_json(
            [{"TotalSizeInBytes": f"{float(total)}", "ObjectCount": len(fake.members)}]
        )

    def _serve_getImage(self, handler, params: dict[str, str]) -> None:
        uid = params.get("SeriesInstanceUID", "")
        if uid not in self.series:
            handler._send(404, b"no such series", "text/plain")
            return
        with self._lock:
            queue = self.faults.get(uid, [])
            fault = queue.pop(0) if queue else self.persistent_faults.get(uid)
        members = self.series[uid].members
        if fault == "http500":
            handler._send(500, b"internal error", "text/plain")
            return
        if fault == "missing":
            members = members[:-1]
        body = self.zip_bytes(uid, members)
        if fault == "corrupt":
            # flip one byte inside the first member's data (after its 30-byte local header,
            # the name and a margin), so the zip parses but the CRC check fails
            position = 30 + len(members[0][0]) + 200
            body = body[:position] + bytes([body[position] ^ 0xFF]) + body[position + 1 :]
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        start = self._range_start(handler, etag, len(body))
        handler.send_response(200 if start == 0 else 206)
        handler.send_header("Content-Type", "application/zip")
        handler.send_header("ETag", etag)
        if self.supports_range:
            handler.send_header("Accept-Ranges", "bytes")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        body = body[start:]
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if fault in ("drop", "stall"):
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            if fault == "stall":
                time.sleep(self.stall_s)
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def _range_start(self, handler, etag: str, size: int) -> int:
        """The first byte to send: N for an honoured ``Range: bytes=N-``, else 0."""
        wanted = handler.headers.get("Range", "")
        if_range = handler.headers.get("If-Range")
        if not self.supports_range or not wanted.startswith("bytes=") or not wanted.endswith("-"):
            return 0
        if if_range is not None and if_range != etag:
            return 0
        start = int(wanted[len("bytes=") : -1])
        return start if 0 < start < size else 0
