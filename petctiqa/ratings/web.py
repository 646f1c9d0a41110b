"""The rating web app (Flask; served by :mod:`petctiqa.ratings.serving`).

Routes (``<token>`` is a rater's private token, ``<admin>`` the admin token):

- ``GET  /r/<token>``                      the rating page (keys 0-4 rate, Backspace/U undo)
- ``GET  /api/r/<token>/state``            progress, the current image, training block, scale
- ``POST /api/r/<token>/rating``           ``{"image", "position", "score"[, "viewing"]}`` -> 201 /
  400 / 404 / 409 (``viewing``: optional JSON object, how the image was viewed; stored as is)
- ``POST /api/r/<token>/undo``             withdraw the last rating -> 200 / 409
- ``POST /api/r/<token>/training-done``    the training block was seen
- ``GET  /r/<token>/image/<path>``         an image of the study (whitelisted paths only)
- ``GET  /admin/<admin>``                  progress table; ``/admin/<admin>/progress.json``;
  ``/admin/<admin>/ratings_raw.csv``

The rater routes are the blueprint in :mod:`~petctiqa.ratings.web_rater`, the admin routes the
one in :mod:`~petctiqa.ratings.web_admin`; this module builds the app and what applies to every
route. A rater token reaches only its own session; every error is JSON ``{"error": "..."}``.
Every POST must come from the page's own origin (``Origin`` / ``Sec-Fetch-Site``) with an
``application/json`` body of at most :data:`~petctiqa.ratings.serving.MAX_BODY_BYTES`; every
response forbids framing and sets a Content-Security-Policy that allows only this server's own
scripts, styles and images.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, request
from PIL import Image
from werkzeug.exceptions import HTTPException

from petctiqa.ratings.scale import RatingScale
from petctiqa.ratings.serving import MAX_BODY_BYTES
from petctiqa.ratings.store import RatingStore
from petctiqa.ratings.study_images import StudyImage, distortion_strength
from petctiqa.ratings.web_admin import admin_pages
from petctiqa.ratings.web_context import EXTENSION_KEY, StudyContext
from petctiqa.ratings.web_rater import MAX_VIEWING_CHARS, rater_pages
from petctiqa.seeding import rng_for

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this server's own scripts, styles and images; no inline code; never in a frame."""
__all__ = ["MAX_VIEWING_CHARS", "bind_warning", "create_app", "is_loopback", "training_anchors"]


def cross_origin_refusal() -> str | None:
    """Why this state-changing request must be refused as cross-origin, or None.

    Browsers send ``Sec-Fetch-Site`` and/or ``Origin`` with every POST; a request that has
    neither comes from a non-browser client, which holds the link anyway."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-origin request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("Origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host):
        return f"cross-origin request refused (Origin {origin[:100]!r} is not {request.host!r})"
    return None


def is_loopback(host: str) -> bool:
    """True for localhost / 127.0.0.0/8 / ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warning(host: str) -> str | None:
    """The warning ``serve`` prints when ``host`` is not a loopback address (None if it is)."""
    if is_loopback(host):
        return None
    return (
        f"warning: serving on {host}, reachable from other machines; the rater and admin links "
        "carry secrets, use only on a trusted network or behind a TLS proxy"
    )


def training_anchors(images: Sequence[StudyImage], seed: int, slices: int) -> list[tuple[str, str]]:
    """(relative path, caption) pairs for the training block: for ``slices`` source slices
    (seeded choice), the undistorted reference render and the most distorted image."""
    by_slice: dict[str, list[StudyImage]] = {}
    for im in images:
        by_slice.setdefault(im.slice_id, []).append(im)
    names = sorted(by_slice)
    if not names or slices <= 0:
        return []
    pick = rng_for(seed, "training").permutation(len(names))[: min(slices, len(names))]
    strength = distortion_strength(images)
    anchors = []
    for i in sorted(pick):
        group = by_slice[names[i]]
        worst = max(group, key=lambda im: strength[im.image])
        anchors.append(
            (group[0].reference, f"Reference render of {names[i]}: no distortion (expect 4)")
        )
        anchors.append((worst.image, f"Strongest distortion of {names[i]} (expect 0 or 1)"))
    return anchors


def _image_size(path: Path) -> tuple[int | None, int | None]:
    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return (None, None)


def study_context_for(
    dataset: Path,
    store: RatingStore,
    scale: RatingScale,
    images: Sequence[StudyImage],
    training: bool | None = None,
) -> StudyContext:
    """The :class:`StudyContext` of one study (training: the scale's setting unless given)."""
    root = Path(dataset).resolve()
    sizes = {row[0]: (row[3], row[4]) for row in store.images()}
    anchors = []
    if scale.training if training is None else training:
        seed = int(store.meta("seed") or 0)
        for rel, caption in training_anchors(images, seed, scale.training_slices):
            size = sizes[rel] if rel in sizes else _image_size(root / rel)
            anchors.append((rel, caption, *size))
    served = frozenset(sizes) | {a[0] for a in anchors}
    return StudyContext(root, store, scale, sizes, tuple(anchors), served)


def _json_error(err: HTTPException):
    # every error, 500 included, is JSON (never an HTML page or a traceback)
    return jsonify(error=err.description or str(err)), err.code


def _same_origin_state_changes() -> None:
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        refusal = cross_origin_refusal()
        if refusal is not None:
            abort(403, description=refusal)
        if request.mimetype != "application/json":
            # an HTML form cannot send JSON, and a cross-origin script needs a CORS
            # preflight for it, which this server never grants
            abort(415, description="send the body as application/json")


def _security_headers(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    resp.headers["X-Frame-Options"] = "DENY"
    return resp


def create_app(
    dataset: Path,
    store: RatingStore,
    scale: RatingScale,
    images: Sequence[StudyImage],
    training: bool | None = None,
) -> Flask:
    """Build the Flask app for one study (``store`` must be initialised with ``images``)."""
    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[EXTENSION_KEY] = study_context_for(dataset, store, scale, images, training)
    app.register_error_handler(HTTPException, _json_error)
    app.before_request(_same_origin_state_changes)
    app.after_request(_security_headers)
    app.add_url_rule(
        "/", "index", lambda: jsonify(message="petctiqa reader study: open your private rater link")
    )
    app.register_blueprint(rater_pages)
    app.register_blueprint(admin_pages)
    return app
