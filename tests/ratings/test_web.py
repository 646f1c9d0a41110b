"""The rating web app through Flask's test client: token isolation, rating rules, traversal."""

from __future__ import annotations

import pytest

from petctiqa.ratings.study import open_study
from petctiqa.ratings.web import bind_warning, create_app, is_loopback, training_anchors


@pytest.fixture
def app_env(tiny_dataset):
    study = open_study(tiny_dataset, seed=3)
    alice, bob = study.store.add_raters(["alice", "bob"])
    admin = study.store.new_admin_token()
    app = create_app(tiny_dataset, study.store, study.scale, study.images)
    return app.test_client(), study, alice, bob, admin


def test_state_rating_undo_and_json_errors(app_env):
    client, study, alice, _, _ = app_env
    state = client.get(f"/api/r/{alice.token}/state").get_json()
    assert state["done"] == 0 and state["total"] == 108
    assert len(state["training"]) == 4  # 2 slices x (reference, worst)
    cur = state["current"]
    assert (cur["width"], cur["height"]) == (24, 20)
    url = f"/api/r/{alice.token}/rating"
    r = client.post(url, json={"image": cur["image"], "position": cur["position"], "score": 7})
    assert r.status_code == 400 and "outside the scale" in r.get_json()["error"]
    r = client.post(url, json={"image": "images/none.jpg", "position": 0, "score": 2})
    assert r.status_code == 404 and "not in this study" in r.get_json()["error"]
    r = client.post(url, data="nonsense", content_type="application/json")
    assert r.status_code == 400
    r = client.post(url, json={"image": cur["image"], "position": cur["position"], "score": 2})
    assert r.status_code == 201
    assert r.get_json()["state"]["done"] == 1
    r = client.post(url, json={"image": cur["image"], "position": cur["position"], "score": 2})
    assert r.status_code == 409 and "already rated" in r.get_json()["error"]
    r = client.post(f"/api/r/{alice.token}/undo", json={})
    assert r.status_code == 200 and r.get_json()["state"]["current"]["image"] == cur["image"]
    assert client.post(f"/api/r/{alice.token}/undo", json={}).status_code == 409
    assert (
        client.post(f"/api/r/{alice.token}/training-done", json={}).get_json()["state"]["training"]
        == []
    )


def test_a_token_reaches_only_its_own_session(app_env):
    client, study, alice, bob, _ = app_env
    a = client.get(f"/api/r/{alice.token}/state").get_json()
    b = client.get(f"/api/r/{bob.token}/state").get_json()
    assert a["rater"] == "alice" and b["rater"] == "bob"
    assert a["current"]["image"] != b["current"]["image"] or a["current"]["position"] == 0
    # bob cannot rate alice's image at alice's position with his token: it is not his current one
    r = client.post(
        f"/api/r/{bob.token}/rating",
        json={**{k: a["current"][k] for k in ("image", "position")}, "score": 1},
    )
    assert r.status_code in (201, 409)
    assert study.store.progress("alice").done == 0
    assert client.get("/api/r/not-a-token/state").status_code == 404
    assert client.get("/r/not-a-token").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "../manifest.csv",
        "..%2fmanifest.csv",
        "%2e%2e/%2e%2e/etc/passwd",
        "images/..%2f..%2fmanifest.csv",
        "/etc/passwd",
        "%2fetc%2fpasswd",
        "manifest.csv",
        "ratings.sqlite",
        "images/../manifest.csv",
        "images/%2e%2e/split.csv",
        "C:%5cWindows%5cwin.ini",
    ],
)
def test_image_route_serves_nothing_outside_the_study(app_env, path):
    client, _, alice, _, _ = app_env
    # (a doubled slash is first redirected by werkzeug to the merged path, which then 404s)
    r = client.get(f"/r/{alice.token}/image/{path}", follow_redirects=True)
    assert r.status_code == 404
    assert b"root:" not in r.data and b"image_id" not in r.data


def test_image_route_serves_study_images_and_training_anchors(app_env, tiny_dataset):
    client, study, alice, _, _ = app_env
    cur = client.get(f"/api/r/{alice.token}/state").get_json()["current"]
    r = client.get(cur["url"])
    assert r.status_code == 200 and r.data == (tiny_dataset / cur["image"]).read_bytes()
    anchors = training_anchors(study.images, study.seed, 2)
    ref = anchors[0][0]
    assert ref.startswith("references/")
    assert client.get(f"/r/{alice.token}/image/{ref}").status_code == 200
    assert client.get(f"/r/not-a-token/image/{cur['image']}").status_code == 404


def test_admin_views_need_the_admin_token(app_env):
    client, _, alice, _, admin = app_env
    assert client.get(f"/admin/{alice.token}").status_code == 404
    assert client.get("/admin/wrong/progress.json").status_code == 404
    prog = client.get(f"/admin/{admin}/progress.json").get_json()
    assert [p["rater"] for p in prog["raters"]] == ["alice", "bob"]
    page = client.get(f"/admin/{admin}")
    assert page.status_code == 200 and b"alice" in page.data
    csv_text = client.get(f"/admin/{admin}/ratings_raw.csv").data.decode()
    assert csv_text.startswith("image,rater,score")


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_bind_warning_only_for_non_loopback_hosts():
    for host in ("127.0.0.1", "127.0.0.53", "::1", "localhost"):
        assert bind_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "ratings.example.org"):
        text = bind_warning(host)
        assert text.startswith(f"warning: serving on {host}, reachable from other machines")
        assert "links" in text and "TLS" in text
