"""The rating web app (Flask; served by waitress from the CLI).

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

A rater token reaches only its own session; every error is JSON ``{"error": "..."}``.
Every POST must come from the page's own origin (``Origin`` / ``Sec-Fetch-Site``) with an
``application/json`` body of at most :data:`~petctiqa.ratings.serving.MAX_BODY_BYTES`; every
response forbids framing and sets a Content-Security-Policy that allows only this server's own
scripts, styles and images.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, render_template, request, send_file
from werkzeug.exceptions import HTTPException

from petctiqa.ratings.scale import RatingScale
from petctiqa.ratings.serving import MAX_BODY_BYTES
from petctiqa.ratings.store import Rater, RatingRejected, RatingStore
from petctiqa.ratings.study_images import StudyImage
from petctiqa.seeding import rng_for

MAX_VIEWING_CHARS = 4096
"""The page sends about 200 characters; the cap keeps a rogue client from bloating the study."""
STATUS_OF = {"invalid": 400, "unknown": 404, "conflict": 409}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this server's own scripts, styles and images; no inline code; never in a frame."""


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def json_body() -> object:
    """The request's JSON body, parsed strictly: 415 unless ``application/json``, 413 over
    :data:`MAX_BODY_BYTES`, 400 for invalid JSON, NaN/Infinity or nesting too deep to parse."""
    if request.mimetype != "application/json":
        abort(415, description="send the body as application/json")
    data = request.get_data(cache=False)  # 413 above MAX_CONTENT_LENGTH, before reading
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        abort(400, description="body is not valid JSON (nested too deeply)")
    except ValueError as exc:
        abort(400, description=f"body is not valid JSON ({str(exc)[:120]})")


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
    anchors = []
    for i in sorted(pick):
        group = by_slice[names[i]]
        worst = max(group, key=lambda im: (sum(im.cell), im.cell))
        anchors.append(
            (group[0].reference, f"Reference render of {names[i]}: no distortion (expect 4)")
        )
        anchors.append((worst.image, f"Strongest distortion of {names[i]} (expect 0 or 1)"))
    return anchors


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
    root = Path(dataset).resolve()
    seed = int(store.meta("seed") or 0)
    sizes = {row[0]: (row[3], row[4]) for row in store.images()}
    use_training = scale.training if training is None else training
    anchors = training_anchors(images, seed, scale.training_slices) if use_training else []
    served = set(sizes) | {a[0] for a in anchors}

    def rater_or_404(token: str) -> Rater:
        rater = store.rater_by_token(token)
        if rater is None or rater.simulated:
            abort(404, description="unknown rater link")
        return rater

    def admin_or_404(token: str) -> None:
        if not store.check_admin(token):
            abort(404, description="unknown admin link")

    def image_url(token: str, rel: str) -> str:
        return f"/r/{token}/image/{rel}"

    def anchor_size(rel: str) -> tuple[int | None, int | None]:
        if rel in sizes:
            return sizes[rel]
        try:
            from PIL import Image

            with Image.open(root / rel) as im:
                return im.size
        except OSError:
            return (None, None)

    def state(rater: Rater) -> dict:
        prog = store.progress(rater.rater)
        nxt = store.next_item(rater.rater)
        current = None
        if nxt is not None:
            width, height = sizes.get(nxt[1], (None, None))
            current = {
                "position": nxt[0],
                "image": nxt[1],
                "url": image_url(rater.token, nxt[1]),
                "width": width,
                "height": height,
            }
        show_training = bool(anchors) and not rater.training_done and prog.done == 0
        return {
            "rater": rater.rater,
            "done": prog.done,
            "total": prog.total,
            "current": current,
            "can_undo": prog.done > 0,
            "break_every": scale.break_every,
            "training": [
                {
                    "url": image_url(rater.token, rel),
                    "caption": caption,
                    "width": anchor_size(rel)[0],
                    "height": anchor_size(rel)[1],
                }
                for rel, caption in anchors
            ]
            if show_training
            else [],
        }

    @app.errorhandler(HTTPException)
    def json_error(err: HTTPException):
        # every error, 500 included, is JSON (never an HTML page or a traceback)
        return jsonify(error=err.description or str(err)), err.code

    @app.before_request
    def same_origin_state_changes():
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            refusal = cross_origin_refusal()
            if refusal is not None:
                abort(403, description=refusal)
            if request.mimetype != "application/json":
                # an HTML form cannot send JSON, and a cross-origin script needs a CORS
                # preflight for it, which this server never grants
                abort(415, description="send the body as application/json")

    @app.after_request
    def no_cache(resp: Response) -> Response:
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        resp.headers["X-Frame-Options"] = "DENY"
        return resp

    @app.get("/")
    def index():
        return jsonify(message="petctiqa reader study: open your private rater link")

    @app.get("/r/<token>")
    def rate_page(token: str):
        rater = rater_or_404(token)
        return render_template(
            "rate.html",
            token=rater.token,
            rater=rater.rater,
            scale=scale,
            labels=list(enumerate(scale.labels, start=scale.min)),
        )

    @app.get("/api/r/<token>/state")
    def api_state(token: str):
        return jsonify(state(rater_or_404(token)))

    @app.post("/api/r/<token>/rating")
    def api_rating(token: str):
        rater = rater_or_404(token)
        body = json_body()
        if not isinstance(body, dict):
            abort(400, description="body must be JSON {image, position, score}")
        image, position, score = body.get("image"), body.get("position"), body.get("score")
        if (
            not isinstance(image, str)
            or isinstance(position, bool)
            or not isinstance(position, int)
        ):
            abort(400, description="image must be a string and position an integer")
        viewing = body.get("viewing")
        if viewing is not None and not isinstance(viewing, dict):
            abort(400, description="viewing must be a JSON object")
        viewing_text = None if viewing is None else json.dumps(viewing, separators=(",", ":"))
        if viewing_text is not None and len(viewing_text) > MAX_VIEWING_CHARS:
            abort(400, description=f"viewing is longer than {MAX_VIEWING_CHARS} characters")
        try:
            rating = store.record_web_rating(rater.rater, image, position, score, viewing_text)
        except RatingRejected as exc:
            return jsonify(error=str(exc)), STATUS_OF[exc.kind]
        return jsonify(
            saved={
                "image": rating.image,
                "score": rating.score,
                "position": rating.position,
                "rated_at": rating.rated_at,
            },
            state=state(rater),
        ), 201

    @app.post("/api/r/<token>/undo")
    def api_undo(token: str):
        rater = rater_or_404(token)
        undone = store.undo_last(rater.rater)
        if undone is None:
            return jsonify(error="nothing to undo"), 409
        return jsonify(
            undone={"image": undone.image, "score": undone.score, "position": undone.position},
            state=state(rater),
        )

    @app.post("/api/r/<token>/training-done")
    def api_training_done(token: str):
        rater = rater_or_404(token)
        store.set_training_done(rater.rater)
        return jsonify(state=state(rater_or_404(token)))

    @app.get("/r/<token>/image/<path:rel>")
    def image(token: str, rel: str):
        rater_or_404(token)
        # whitelist first: only paths the study lists are ever looked up on disk
        if rel not in served:
            abort(404, description="no such image in this study")
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            abort(404, description="no such image in this study")
        return send_file(path, max_age=0)

    @app.get("/admin/<token>")
    def admin_page(token: str):
        admin_or_404(token)
        return render_template("admin.html", rows=store.all_progress(), token=token)

    @app.get("/admin/<token>/progress.json")
    def admin_progress(token: str):
        admin_or_404(token)
        return jsonify(
            raters=[
                {
                    "rater": p.rater,
                    "done": p.done,
                    "total": p.total,
                    "simulated": p.simulated,
                    "last_rated_at": p.last_rated_at,
                }
                for p in store.all_progress()
            ]
        )

    @app.get("/admin/<token>/ratings_raw.csv")
    def admin_raw(token: str):
        admin_or_404(token)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        ratings = store.ratings()
        if any(r.simulated for r in ratings):
            buffer.write("# SIMULATED ratings: this study contains simulated raters\n")
        writer.writerow(["image", "rater", "score", "position", "rated_at", "source", "simulated"])
        for r in ratings:
            writer.writerow(
                [
                    r.image,
                    r.rater,
                    r.score,
                    r.position,
                    r.rated_at,
                    r.source,
                    str(r.simulated).lower(),
                ]
            )
        return Response(
            buffer.getvalue(),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=ratings_raw.csv"},
        )

    return app
