"""The rating API under hostile input (issue #18 items 5 and 9): odd scores and bodies get a
JSON 4xx naming the problem, state changes need the page's own origin, pages cannot be framed."""

from __future__ import annotations

import pytest

from petctiqa.ratings.study import open_study
from petctiqa.ratings.web import create_app

MAX_BODY_BYTES = 64 * 1024


@pytest.fixture
def env(tiny_dataset):
    study = open_study(tiny_dataset, seed=3)
    (alice,) = study.store.add_raters(["alice"])
    app = create_app(tiny_dataset, study.store, study.scale, study.images)
    client = app.test_client()
    current = client.get(f"/api/r/{alice.token}/state").get_json()["current"]
    return client, study, alice, current


def post_raw(client, token, text, content_type="application/json"):
    return client.post(f"/api/r/{token}/rating", data=text, content_type=content_type)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("NaN", "NaN is not a number JSON allows"),
        ("Infinity", "Infinity is not a number JSON allows"),
        ("-Infinity", "-Infinity is not a number JSON allows"),
        ("1e400", "score must be an integer, got inf"),
        ("2.0", "score must be an integer, got 2.0"),
        ("true", "score must be an integer, got True"),
        ('"3"', "score must be an integer, got '3'"),
        ("[" * 50_000 + "]" * 50_000, None),  # over the body cap: 413
        ("[" * 20_000 + "]" * 20_000, "nested too deeply"),
        ("9" * 5000, "body is not valid JSON"),  # beyond Python's int-parsing digit limit
    ],
)
def test_odd_scores_get_a_json_4xx_naming_the_problem(env, score, expected):
    client, study, alice, cur = env
    text = f'{{"image": "{cur["image"]}", "position": {cur["position"]}, "score": {score}}}'
    r = post_raw(client, alice.token, text)
    assert 400 <= r.status_code < 500 and r.is_json, (r.status_code, r.data[:200])
    error = r.get_json()["error"]
    if expected is None:
        assert r.status_code == 413 and len(text) > MAX_BODY_BYTES
    else:
        assert r.status_code == 400 and expected in error, error
    assert study.store.progress("alice").done == 0


def test_the_body_limit_is_the_servers():
    from petctiqa.ratings.serving import MAX_BODY_BYTES as limit

    assert limit == MAX_BODY_BYTES


def test_a_deeply_nested_body_and_a_huge_body_are_refused_as_json(env):
    client, study, alice, _ = env
    r = post_raw(client, alice.token, "[" * 20_000 + "]" * 20_000)
    assert r.status_code == 400 and "nested too deeply" in r.get_json()["error"]
    r = post_raw(client, alice.token, '{"pad": "' + "x" * (MAX_BODY_BYTES + 1) + '"}')
    assert r.status_code == 413 and r.is_json and r.get_json()["error"]
    r = post_raw(client, alice.token, '{"score": 2}', content_type="text/plain")
    assert r.status_code == 415 and "application/json" in r.get_json()["error"]
    # an unknown route and a wrong method are JSON too
    assert client.get("/nope").is_json and client.get(f"/api/r/{alice.token}/undo").is_json


def test_cross_origin_state_changes_are_refused(env):
    client, study, alice, cur = env
    rating = {"image": cur["image"], "position": cur["position"], "score": 3}
    url = f"/api/r/{alice.token}"
    same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post(url + "/rating", json=rating, headers=same).status_code == 201
    hostile = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:9999"},  # another local service is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    for headers in hostile:
        for path in ("/undo", "/training-done"):
            r = client.post(url + path, json={}, headers=headers)
            assert r.status_code == 403 and "cross-origin" in r.get_json()["error"], headers
    # an HTML form can only send form or text bodies: refused before any state change
    r = client.post(url + "/undo", data="x=1", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415
    assert study.store.progress("alice").done == 1
    assert not study.store.rater("alice").training_done
    assert client.post(url + "/undo", json={}, headers=same).status_code == 200
    assert study.store.progress("alice").done == 0
    # the state after training-done links the current image with the rater's own token
    done = client.post(url + "/training-done", json={}, headers=same).get_json()["state"]
    assert done["training"] == [] and client.get(done["current"]["url"]).status_code == 200


def test_rating_pages_forbid_framing_and_foreign_code(env):
    client, _, alice, cur = env
    for path in (f"/r/{alice.token}", f"/api/r/{alice.token}/state", cur["url"]):
        r = client.get(path)
        assert r.status_code == 200
        assert r.headers.get("X-Frame-Options") == "DENY"
        policy = r.headers.get("Content-Security-Policy", "")
        for part in (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ):
            assert part in policy.split("; "), (part, policy)
    # the page itself uses no inline script or style (the policy would block them)
    page = client.get(f"/r/{alice.token}").get_data(as_text=True)
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert 'src="/static/rate.js"' in page
