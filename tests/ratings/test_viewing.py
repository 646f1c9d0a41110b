"""The rating POST's optional ``viewing`` record: validated, stored beside the rating, kept
through undo and re-rating (SQLite reuses a deleted last row's id, so it is not keyed by id)."""

from __future__ import annotations

import json
import sqlite3

from petctiqa.ratings.study import open_study
from petctiqa.ratings.web import MAX_VIEWING_CHARS, create_app

VIEW_A = {"view_ms": 5120, "zooms": [1, 2, 1], "final_zoom": 1, "magnifier": True}
VIEW_B = {"view_ms": 900, "zooms": [0.5], "final_zoom": 0.5, "resampled": True}


def test_viewing_is_stored_with_the_rating_and_survives_undo(tiny_dataset):
    study = open_study(tiny_dataset, seed=3)
    (alice,) = study.store.add_raters(["alice"])
    client = create_app(tiny_dataset, study.store, study.scale, study.images).test_client()
    url = f"/api/r/{alice.token}/rating"
    cur = client.get(f"/api/r/{alice.token}/state").get_json()["current"]
    item = {"image": cur["image"], "position": cur["position"], "score": 3}
    r = client.post(url, json={**item, "viewing": [1, 2]})
    assert r.status_code == 400 and "viewing must be a JSON object" in r.get_json()["error"]
    big = {"zooms": [1] * MAX_VIEWING_CHARS}
    r = client.post(url, json={**item, "viewing": big})
    assert r.status_code == 400 and "viewing is longer than" in r.get_json()["error"]
    assert client.post(url, json={**item, "viewing": VIEW_A}).status_code == 201
    assert client.post(f"/api/r/{alice.token}/undo", json={}).status_code == 200
    # the same image rated again (the reused row id) with another viewing record
    assert client.post(url, json={**item, "score": 1, "viewing": VIEW_B}).status_code == 201
    nxt = client.get(f"/api/r/{alice.token}/state").get_json()["current"]
    # without a viewing record (an older page, a script): accepted, nothing stored
    r = client.post(url, json={"image": nxt["image"], "position": nxt["position"], "score": 2})
    assert r.status_code == 201
    study.store.close()
    conn = sqlite3.connect(tiny_dataset / "ratings.sqlite")
    kept = conn.execute(
        "SELECT r.score, v.viewing FROM ratings r LEFT JOIN viewing v "
        "ON v.rater = r.rater AND v.image = r.image AND v.rated_at = r.rated_at ORDER BY r.id"
    ).fetchall()
    assert [(score, json.loads(v) if v else None) for score, v in kept] == [
        (1, VIEW_B),
        (2, None),
    ]
    retracted = conn.execute(
        "SELECT t.score, v.viewing FROM retracted t JOIN viewing v "
        "ON v.rater = t.rater AND v.image = t.image AND v.rated_at = t.rated_at"
    ).fetchall()
    assert [(score, json.loads(v)) for score, v in retracted] == [(3, VIEW_A)]
