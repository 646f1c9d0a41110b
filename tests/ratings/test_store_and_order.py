"""SQLite store (WAL, per-rating commits, replay/undo rules) and presentation order."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from petctiqa.errors import RatingError
from petctiqa.ratings.order import presentation_order
from petctiqa.ratings.store import RatingRejected, RatingStore
from petctiqa.ratings.study import open_study


def test_order_never_repeats_a_slice_and_is_seeded():
    groups = [f"s{i // 27}" for i in range(27 * 20)]
    a = presentation_order(groups, 11, "r1")
    assert sorted(a) == list(range(len(groups)))
    labels = np.array(groups)[a]
    assert not (labels[1:] == labels[:-1]).any()
    assert np.array_equal(a, presentation_order(groups, 11, "r1"))
    assert not np.array_equal(a, presentation_order(groups, 11, "r2"))
    assert not np.array_equal(a, presentation_order(groups, 12, "r1"))


def test_order_handles_the_tightest_case_and_refuses_the_impossible():
    groups = ["a"] * 5 + ["b"] * 4
    labels = np.array(groups)[presentation_order(groups, 0, "x")]
    assert "".join(labels) == "ababababa"
    with pytest.raises(RatingError, match="more than half"):
        presentation_order(["a"] * 3 + ["b"], 0, "x")


def test_ratings_are_committed_at_once_and_survive_a_restart(tiny_dataset):
    study = open_study(tiny_dataset, seed=5)
    store = study.store
    (rater,) = store.add_raters(["alice"])
    pos, image = store.next_item("alice")
    assert pos == 0
    store.record_web_rating("alice", image, pos, 3)
    # another connection (a restarted server) sees it immediately
    conn = sqlite3.connect(tiny_dataset / "ratings.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = conn.execute(
        "SELECT rater, image, score, position, source, simulated FROM ratings"
    ).fetchone()
    assert row == ("alice", image, 3, 0, "web", 0)
    conn.close()
    store.close()
    again = open_study(tiny_dataset)
    assert again.seed == 5
    assert again.store.rater("alice").token == rater.token
    assert again.store.next_item("alice")[0] == 1
    assert again.store.progress("alice").done == 1


def test_replays_bad_scores_unknown_images_and_stale_positions_are_rejected(tiny_dataset):
    store = open_study(tiny_dataset, seed=1).store
    store.add_raters(["bob"])
    pos, image = store.next_item("bob")
    for bad in (5, -1, 2.5, "3", None, True):
        with pytest.raises(RatingRejected) as info:
            store.record_web_rating("bob", image, pos, bad)
        assert info.value.kind == "invalid"
    with pytest.raises(RatingRejected) as info:
        store.record_web_rating("bob", "images/nope.jpg", pos, 2)
    assert info.value.kind == "unknown"
    with pytest.raises(RatingRejected) as info:
        store.record_web_rating("bob", image, pos + 1, 2)
    assert info.value.kind == "conflict"
    store.record_web_rating("bob", image, pos, 4)
    with pytest.raises(RatingRejected) as info:
        store.record_web_rating("bob", image, pos, 4)
    assert info.value.kind == "conflict" and "already rated" in str(info.value)
    undone = store.undo_last("bob")
    assert (undone.image, undone.score) == (image, 4)
    assert store.next_item("bob") == (pos, image)
    assert store.undo_last("bob") is None
    conn = sqlite3.connect(tiny_dataset / "ratings.sqlite")
    assert conn.execute("SELECT image, score FROM retracted").fetchall() == [(image, 4)]


def test_study_refuses_a_changed_dataset(tiny_dataset):
    open_study(tiny_dataset).store.close()
    lines = (tiny_dataset / "manifest.csv").read_text().splitlines()
    (tiny_dataset / "manifest.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(RatingError, match="differ"):
        open_study(tiny_dataset)


def test_admin_token_is_stored_only_as_a_hash(tiny_dataset):
    store = RatingStore(tiny_dataset / "x.sqlite")
    token = store.new_admin_token()
    assert store.check_admin(token) and not store.check_admin(token + "x")
    conn = sqlite3.connect(tiny_dataset / "x.sqlite")
    assert token not in str(conn.execute("SELECT * FROM meta").fetchall())
