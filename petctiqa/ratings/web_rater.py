"""The rater's side of the web app (a Flask blueprint): the rating page, its JSON API and the
study's images. A rater token reaches only its own session."""

from __future__ import annotations

import json

from flask import Blueprint, abort, jsonify, render_template, request, send_file

from petctiqa.ratings.store import Rater, RatingRejected
from petctiqa.ratings.web_context import study_context

STATUS_OF = {"invalid": 400, "unknown": 404, "conflict": 409}
MAX_VIEWING_CHARS = 4096
"""The page sends about 200 characters; the cap keeps a rogue client from bloating the study."""

rater_pages = Blueprint("rater", __name__)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def json_body() -> object:
    """The request's JSON body, parsed strictly: 415 unless ``application/json``, 413 over
    the app's MAX_CONTENT_LENGTH, 400 for invalid JSON, NaN/Infinity or nesting too deep."""
    if request.mimetype != "application/json":
        abort(415, description="send the body as application/json")
    data = request.get_data(cache=False)  # 413 above MAX_CONTENT_LENGTH, before reading
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        abort(400, description="body is not valid JSON (nested too deeply)")
    except ValueError as exc:
        abort(400, description=f"body is not valid JSON ({str(exc)[:120]})")


def viewing_text(body: dict) -> str | None:
    """The rating's optional ``viewing`` record (how the image was viewed) as compact JSON."""
    viewing = body.get("viewing")
    if viewing is None:
        return None
    if not isinstance(viewing, dict):
        abort(400, description="viewing must be a JSON object")
    text = json.dumps(viewing, separators=(",", ":"))
    if len(text) > MAX_VIEWING_CHARS:
        abort(400, description=f"viewing is longer than {MAX_VIEWING_CHARS} characters")
    return text


def rater_or_404(token: str) -> Rater:
    rater = study_context().store.rater_by_token(token)
    if rater is None or rater.simulated:
        abort(404, description="unknown rater link")
    return rater


def image_url(token: str, rel: str) -> str:
    return f"/r/{token}/image/{rel}"


def _current(rater: Rater) -> dict | None:
    nxt = study_context().store.next_item(rater.rater)
    if nxt is None:
        return None
    width, height = study_context().sizes.get(nxt[1], (None, None))
    url = image_url(rater.token, nxt[1])
    return {"position": nxt[0], "image": nxt[1], "url": url, "width": width, "height": height}


def state(rater: Rater) -> dict:
    """What the page shows: progress, the current image, the training block (if due)."""
    ctx = study_context()
    prog = ctx.store.progress(rater.rater)
    show_training = bool(ctx.anchors) and not rater.training_done and prog.done == 0
    training = [
        {"url": image_url(rater.token, rel), "caption": caption, "width": w, "height": h}
        for rel, caption, w, h in ctx.anchors
    ]
    return {
        "rater": rater.rater,
        "done": prog.done,
        "total": prog.total,
        "current": _current(rater),
        "can_undo": prog.done > 0,
        "break_every": ctx.scale.break_every,
        "training": training if show_training else [],
    }


@rater_pages.get("/r/<token>")
def rate_page(token: str):
    rater = rater_or_404(token)
    scale = study_context().scale
    return render_template(
        "rate.html",
        token=rater.token,
        rater=rater.rater,
        scale=scale,
        labels=list(enumerate(scale.labels, start=scale.min)),
    )


@rater_pages.get("/api/r/<token>/state")
def api_state(token: str):
    return jsonify(state(rater_or_404(token)))


@rater_pages.post("/api/r/<token>/rating")
def api_rating(token: str):
    rater = rater_or_404(token)
    body = json_body()
    if not isinstance(body, dict):
        abort(400, description="body must be JSON {image, position, score}")
    image, position, score = body.get("image"), body.get("position"), body.get("score")
    if not isinstance(image, str) or isinstance(position, bool) or not isinstance(position, int):
        abort(400, description="image must be a string and position an integer")
    viewing = viewing_text(body)
    try:
        rating = study_context().store.record_web_rating(
            rater.rater, image, position, score, viewing
        )
    except RatingRejected as exc:
        return jsonify(error=str(exc)), STATUS_OF[exc.kind]
    saved = {
        "image": rating.image,
        "score": rating.score,
        "position": rating.position,
        "rated_at": rating.rated_at,
    }
    return jsonify(saved=saved, state=state(rater)), 201


@rater_pages.post("/api/r/<token>/undo")
def api_undo(token: str):
    rater = rater_or_404(token)
    undone = study_context().store.undo_last(rater.rater)
    if undone is None:
        return jsonify(error="nothing to undo"), 409
    return jsonify(
        undone={"image": undone.image, "score": undone.score, "position": undone.position},
        state=state(rater),
    )


@rater_pages.post("/api/r/<token>/training-done")
def api_training_done(token: str):
    rater = rater_or_404(token)
    study_context().store.set_training_done(rater.rater)
    return jsonify(state=state(rater_or_404(token)))


@rater_pages.get("/r/<token>/image/<path:rel>")
def image(token: str, rel: str):
    rater_or_404(token)
    ctx = study_context()
    # whitelist first: only paths the study lists are ever looked up on disk
    if rel not in ctx.served:
        abort(404, description="no such image in this study")
    path = (ctx.root / rel).resolve()
    if not path.is_relative_to(ctx.root) or not path.is_file():
        abort(404, description="no such image in this study")
    return send_file(path, max_age=0)
