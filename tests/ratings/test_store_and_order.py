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
    assert again.store.rater_by_token(rater.token).rater == "alice"
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


SLOW_NEXT = (
    "SELECT p.position, p.image FROM presentation p LEFT JOIN ratings r "
    "ON r.rater = p.rater AND r.image = p.image "
    "WHERE p.rater = ? AND r.id IS NULL ORDER BY p.position LIMIT 1"
)


def reference_state(path, rater):
    """next item and done count by the full (O(ratings)) queries."""
    conn = sqlite3.connect(path)
    row = conn.execute(SLOW_NEXT, (rater,)).fetchone()
    done = conn.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (rater,)).fetchone()[0]
    conn.close()
    return (None if row is None else (row[0], row[1])), done


def test_cached_progress_matches_the_full_queries_through_rate_undo_and_import(tiny_dataset):
    from petctiqa.ratings.store import Rating, utc_now

    study = open_study(tiny_dataset, seed=4)
    store = study.store
    store.add_raters(["amy", "ben"])
    db = tiny_dataset / "ratings.sqlite"
    rng = np.random.default_rng(0)
    # ben gets a partial sheet first (holes in his order), then rates in the web app
    conn = sqlite3.connect(db)
    order = [r[1] for r in conn.execute(SLOW_NEXT.replace("LIMIT 1", ""), ("ben",))]
    conn.close()
    picked = [order[i] for i in (1, 2, 5, 40, 107)]
    store.insert_ratings([Rating("ben", im, 1, None, utc_now(), "import", False) for im in picked])
    for step in range(160):
        rater = ("amy", "ben")[step % 2]
        if rng.random() < 0.2:
            store.undo_last(rater)
        else:
            item = store.next_item(rater)
            if item is not None:
                store.record_web_rating(rater, item[1], item[0], int(rng.integers(0, 5)))
        expected_next, expected_done = reference_state(db, rater)
        assert store.next_item(rater) == expected_next
        assert store.progress(rater).done == expected_done
    # the imported ratings were skipped, never re-served
    ben_web = {r.image for r in store.ratings() if r.rater == "ben" and r.source == "web"}
    assert not ben_web & set(picked)
    # rating everything leaves no next item
    while (item := store.next_item("amy")) is not None:
        store.record_web_rating("amy", item[1], item[0], 2)
    assert store.progress("amy").done == 108 and reference_state(db, "amy") == (None, 108)


def test_progress_cache_is_rebuilt_for_databases_made_before_it(tiny_dataset):
    study = open_study(tiny_dataset, seed=4)
    study.store.add_raters(["amy"])
    for _ in range(7):
        pos, image = study.store.next_item("amy")
        study.store.record_web_rating("amy", image, pos, 3)
    study.store.close()
    conn = sqlite3.connect(tiny_dataset / "ratings.sqlite")
    conn.executescript(
        "DROP TRIGGER rater_progress_on_rating; DROP TRIGGER rater_progress_on_delete; "
        "DROP TABLE rater_progress;"
    )
    conn.close()
    again = open_study(tiny_dataset)
    assert again.store.progress("amy").done == 7
    assert (
        again.store.next_item("amy") == reference_state(tiny_dataset / "ratings.sqlite", "amy")[0]
    )
    assert again.store.next_item("amy")[0] == 7


def test_next_item_and_progress_are_index_lookups(tiny_dataset):
    # the web app runs these on every rating: no scan over the rater's ratings
    store = open_study(tiny_dataset, seed=4).store
    store.add_raters(["amy"])
    plans = []
    original = store._connect

    def spy():
        tx = original()
        real = tx.execute

        def execute(sql, params=()):
            if sql.lstrip().upper().startswith("SELECT"):
                plans.extend(row[3] for row in real("EXPLAIN QUERY PLAN " + sql, params))
            return real(sql, params)

        tx.execute = execute
        return tx

    store._connect = spy
    store.next_item("amy")
    store.progress("amy")
    scans = [p for p in plans if p.startswith("SCAN") and "images" not in p]
    assert plans and not scans, plans
    assert any("ratings_rater_time" in p for p in plans)


def _database_bytes(path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_rater_tokens_are_stored_only_as_hashes(tiny_dataset):
    db = tiny_dataset / "ratings.sqlite"
    study = open_study(tiny_dataset, seed=2)
    alice, bob = study.store.add_raters(["alice", "bob"])
    assert alice.token and study.store.rater_by_token(alice.token).rater == "alice"
    assert study.store.rater_by_token(alice.token + "x") is None
    assert study.store.rater("alice").token is None  # the store cannot tell it again
    study.store.close()
    data = _database_bytes(db)
    assert alice.token.encode() not in data and bob.token.encode() not in data
    # a new link replaces the old one
    again = open_study(tiny_dataset)
    fresh = again.store.new_rater_token("bob")
    assert again.store.rater_by_token(bob.token) is None
    assert again.store.rater_by_token(fresh.token).rater == "bob"


def test_a_database_with_plain_text_tokens_is_migrated_and_its_links_still_work(tiny_dataset):
    db = tiny_dataset / "ratings.sqlite"
    study = open_study(tiny_dataset, seed=2)
    study.store.add_raters(["alice"])
    study.store.close()
    # the layout of databases made before tokens were hashed
    plain = "plain-token-of-alice-0123456789"
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE raters RENAME COLUMN token_sha256 TO token")
    conn.execute("UPDATE raters SET token = ? WHERE rater = 'alice'", (plain,))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert plain.encode() in _database_bytes(db)
    again = open_study(tiny_dataset)
    assert again.store.rater_by_token(plain).rater == "alice"
    again.store.close()
    assert plain.encode() not in _database_bytes(db)


def test_ratings_are_fsynced_before_they_are_acknowledged(tiny_dataset):
    store = open_study(tiny_dataset, seed=1).store
    store.add_raters(["amy"])
    pos, image = store.next_item("amy")
    store.record_web_rating("amy", image, pos, 2)
    with store._connect() as conn:
        # 2 = FULL: in WAL mode every commit fsyncs the WAL before it returns
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
