"""The study admin's side of the web app (a Flask blueprint): progress table,
``progress.json`` and the raw ratings as CSV, all behind the admin token."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, abort, jsonify, render_template

from petctiqa.dataset.folder import SIMULATED_BANNER
from petctiqa.ratings.web_context import study_context

admin_pages = Blueprint("admin", __name__)

RAW_COLUMNS = ("image", "rater", "score", "position", "rated_at", "source", "simulated")


def admin_or_404(token: str) -> None:
    if not study_context().store.check_admin(token):
        abort(404, description="unknown admin link")


@admin_pages.get("/admin/<token>")
def admin_page(token: str):
    admin_or_404(token)
    return render_template("admin.html", rows=study_context().store.all_progress(), token=token)


@admin_pages.get("/admin/<token>/progress.json")
def admin_progress(token: str):
    admin_or_404(token)
    rows = [
        {
            "rater": p.rater,
            "done": p.done,
            "total": p.total,
            "simulated": p.simulated,
            "last_rated_at": p.last_rated_at,
        }
        for p in study_context().store.all_progress()
    ]
    return jsonify(raters=rows)


@admin_pages.get("/admin/<token>/ratings_raw.csv")
def admin_raw(token: str):
    admin_or_404(token)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    ratings = study_context().store.ratings()
    if any(r.simulated for r in ratings):
        buffer.write(SIMULATED_BANNER + "\n")
    writer.writerow(RAW_COLUMNS)
    for r in ratings:
        writer.writerow(
            [r.image, r.rater, r.score, r.position, r.rated_at, r.source, str(r.simulated).lower()]
        )
    return Response(
        buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=ratings_raw.csv"},
    )
