"""The ratings database: one SQLite file (WAL journal) per study.

Every rating is committed in its own transaction before the call returns, and (WAL +
``synchronous=FULL``, the default) fsynced: an acknowledged rating survives a killed server, an OS
crash and a power loss. ``synchronous="NORMAL"`` skips the fsync (survives a killed process only).
The tables (study meta, images, raters with token hashes, presentation orders, ratings,
retracted ratings, viewing records, per-rater progress) are described with their SQL in
:mod:`petctiqa.ratings.store_schema`.

Timestamps are UTC ISO 8601 with milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import numbers
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from petctiqa.errors import RatingError
from petctiqa.ratings.order import presentation_order
from petctiqa.ratings.store_schema import FILL_PROGRESS, SCHEMA

RATER_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class RatingRejected(RatingError):
    """A rating the store refuses; ``kind`` is ``invalid``, ``unknown`` or ``conflict``."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class StudyMismatch(RatingError):
    """The database belongs to another study (other images or another seed)."""


@dataclass(frozen=True)
class Rater:
    """``token`` is the private link token: known only where it was just made (or given by the
    caller, as in :meth:`RatingStore.rater_by_token`); the database keeps its SHA-256 only."""

    rater: str
    token: str | None
    simulated: bool
    training_done: bool


@dataclass(frozen=True)
class Rating:
    rater: str
    image: str
    score: int
    position: int | None
    rated_at: str
    source: str
    simulated: bool


@dataclass(frozen=True)
class Progress:
    rater: str
    done: int
    total: int
    simulated: bool
    last_rated_at: str | None


def utc_now() -> str:
    """Current UTC time as ISO 8601 with milliseconds (``2025-01-31T12:00:00.123Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_rater_id(rater: str) -> str:
    """Rater IDs: 1-64 characters from letters, digits, ``-``, ``_``, ``.``."""
    if not rater or len(rater) > 64 or not set(rater) <= RATER_ID_CHARS:
        raise RatingError(
            f"rater ID {rater!r} is invalid: use 1-64 letters, digits, '-', '_' or '.'"
        )
    return rater


class RatingStore:
    """Thread-safe access to one study database (one SQLite connection per thread)."""

    def __init__(
        self,
        path: str | Path,
        scale_min: int = 0,
        scale_max: int = 4,
        synchronous: str = "FULL",
    ) -> None:
        """``synchronous``: SQLite's setting. ``FULL`` (default) fsyncs the WAL on every
        commit, so a rating is on disk before it is acknowledged (survives power loss and OS
        crashes; the latency cost is in docs/ratings.md). ``NORMAL`` only hands each commit
        to the OS: a killed server loses nothing, a power loss can lose the last ratings."""
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.synchronous = synchronous
        self.path = Path(path)
        self.scale_min = scale_min
        self.scale_max = scale_max
        self._local = threading.local()
        # Writers in this process queue on a lock instead of on SQLite's busy handler, whose
        # back-off sleeps (up to 100 ms) would dominate the tail latency of the web app.
        self._write_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(raters)")}
        if "token" in columns:
            self._hash_plain_tokens()
        with self._connect() as conn:
            stale = conn.execute(
                "SELECT 1 FROM raters WHERE rater NOT IN (SELECT rater FROM rater_progress)"
            ).fetchone()
        if stale:
            with self._write_lock, self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(FILL_PROGRESS)

    def _hash_plain_tokens(self) -> None:
        """Migrate a database made when rater tokens were stored in plain text: keep only each
        token's SHA-256 (the links keep working). ``secure_delete`` zeroes the replaced text in
        the file and the checkpoint removes it from the WAL."""
        with self._write_lock, self._connect() as conn:
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ALTER TABLE raters RENAME COLUMN token TO token_sha256")
            rows = conn.execute("SELECT rater, token_sha256 FROM raters").fetchall()
            conn.executemany(
                "UPDATE raters SET token_sha256 = ? WHERE rater = ?",
                [(token_hash(token), rater) for rater, token in rows],
            )
        with self._connect() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA secure_delete=OFF")

    # ------------------------------------------------------------------ connections

    def _connect(self) -> _Tx:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            except sqlite3.Error as exc:
                raise RatingError(f"{self.path}: cannot open rating database ({exc})") from None
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return _Tx(conn)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------ study

    def meta(self, key: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def init_study(
        self,
        images: Sequence[tuple[str, str, str, int | None, int | None]],
        seed: int | None = None,
        scale_name: str = "likert-0-4",
    ) -> int:
        """Create the study (idempotent). ``images``: (image, image_id, slice_id, width, height).

        The first call stores the image list and the seed (random when None); later calls
        check that the dataset still lists the same images and return the stored seed.
        """
        stored = self.meta("seed")
        with self._connect() as conn:
            known = {r[0] for r in conn.execute("SELECT image FROM images")}
        wanted = {row[0] for row in images}
        if stored is not None:
            if known != wanted:
                extra = sorted(wanted - known)[:1] or sorted(known - wanted)[:1]
                raise StudyMismatch(
                    f"{self.path}: the dataset's images differ from the study's "
                    f"({len(wanted)} vs {len(known)}, e.g. {extra[0]!r})"
                )
            if seed is not None and int(stored) != seed:
                raise StudyMismatch(f"{self.path}: study seed is {stored}, not {seed}")
            return int(stored)
        seed = secrets.randbits(32) if seed is None else int(seed)
        with self._write_lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR REPLACE INTO images(image, image_id, slice_id, width, height) "
                "VALUES (?, ?, ?, ?, ?)",
                images,
            )
            conn.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [("seed", str(seed)), ("scale", scale_name), ("created_at", utc_now())],
            )
        return seed

    def images(self) -> list[tuple[str, str, str, int | None, int | None]]:
        with self._connect() as conn:
            return list(
                conn.execute(
                    "SELECT image, image_id, slice_id, width, height FROM images ORDER BY image"
                )
            )

    def image_info(self, image: str) -> tuple[str, str, str, int | None, int | None] | None:
        with self._connect() as conn:
            return conn.execute(
                "SELECT image, image_id, slice_id, width, height FROM images WHERE image = ?",
                (image,),
            ).fetchone()

    # ------------------------------------------------------------------ raters

    def add_raters(self, raters: Iterable[str], simulated: bool = False) -> list[Rater]:
        """Register raters (existing ones are returned unchanged) with their token and order."""
        out = []
        for rater in raters:
            check_rater_id(rater)
            existing = self.rater(rater)
            if existing is not None:
                if existing.simulated != simulated:
                    kind = "simulated" if existing.simulated else "real"
                    raise RatingError(f"rater {rater!r} already exists as a {kind} rater")
                out.append(existing)
                continue
            new = self._new_rater(rater, simulated)
            with self._write_lock, self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                self._insert_rater(conn, new)
            out.append(new[0])
        return out

    def add_raters_with_ratings(self, raters: Sequence[str], ratings: Sequence[Rating]) -> int:
        """Register new real raters and insert ratings in ONE transaction (all or nothing);
        returns the number of ratings inserted."""
        fresh = []
        for rater in raters:
            check_rater_id(rater)
            if self.rater(rater) is not None:
                raise RatingError(f"rater {rater!r} already exists")
            fresh.append(self._new_rater(rater, False))
        with self._write_lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for new in fresh:
                    self._insert_rater(conn, new)
                self._insert_ratings(conn, ratings)
            except sqlite3.IntegrityError as exc:
                conn.rollback_quietly()
                raise RatingError(f"{self.path}: ratings not stored ({exc})") from None
            except BaseException:
                conn.rollback_quietly()
                raise
        return len(ratings)

    def _new_rater(self, rater: str, simulated: bool) -> tuple[Rater, list[tuple[str, int, str]]]:
        seed_text = self.meta("seed")
        if seed_text is None:
            raise RatingError(f"{self.path}: study not initialised")
        rows = self.images()
        order = presentation_order([r[2] for r in rows], int(seed_text), rater)
        token = secrets.token_urlsafe(18)
        return (
            Rater(rater, token, simulated, False),
            [(rater, pos, rows[i][0]) for pos, i in enumerate(order)],
        )

    @staticmethod
    def _insert_rater(conn: _Tx, new: tuple[Rater, list[tuple[str, int, str]]]) -> None:
        rater, presentation = new
        conn.execute(
            "INSERT INTO raters(rater, token_sha256, simulated, created_at) VALUES (?, ?, ?, ?)",
            (rater.rater, token_hash(rater.token), int(rater.simulated), utc_now()),
        )
        conn.executemany(
            "INSERT INTO presentation(rater, position, image) VALUES (?, ?, ?)", presentation
        )
        conn.execute(
            "INSERT INTO rater_progress(rater, done, next_position) VALUES (?, 0, ?)",
            (rater.rater, 0 if presentation else None),
        )

    def rater(self, rater: str) -> Rater | None:
        """The rater (``token`` None: only its hash is stored), or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT rater, simulated, training_done FROM raters WHERE rater = ?", (rater,)
            ).fetchone()
        return None if row is None else Rater(row[0], None, bool(row[1]), bool(row[2]))

    def rater_by_token(self, token: str) -> Rater | None:
        """The rater whose token this is (looked up by its SHA-256), with ``token`` set."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT rater, simulated, training_done FROM raters WHERE token_sha256 = ?",
                (token_hash(token),),
            ).fetchone()
        return None if row is None else Rater(row[0], token, bool(row[1]), bool(row[2]))

    def new_rater_token(self, rater: str) -> Rater:
        """Give an existing rater a new private token (the old link stops working)."""
        token = secrets.token_urlsafe(18)
        with self._write_lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            updated = conn.execute(
                "UPDATE raters SET token_sha256 = ? WHERE rater = ?", (token_hash(token), rater)
            ).rowcount
        if not updated:
            raise RatingError(f"{self.path}: no rater {rater!r} in this study")
        return replace(self.rater(rater), token=token)

    def raters(self) -> list[Rater]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT rater, simulated, training_done FROM raters ORDER BY rater"
            ).fetchall()
        return [Rater(r[0], None, bool(r[1]), bool(r[2])) for r in rows]

    def set_training_done(self, rater: str) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE raters SET training_done = 1 WHERE rater = ?", (rater,))

    # ------------------------------------------------------------------ admin token

    def new_admin_token(self) -> str:
        """Create (or replace) the admin token; only its SHA-256 is stored."""
        token = secrets.token_urlsafe(24)
        self.set_meta("admin_token_sha256", token_hash(token))
        return token

    def has_admin_token(self) -> bool:
        return self.meta("admin_token_sha256") is not None

    def check_admin(self, token: str) -> bool:
        stored = self.meta("admin_token_sha256")
        return stored is not None and hmac.compare_digest(stored, token_hash(token))

    # ------------------------------------------------------------------ rating flow

    def next_item(self, rater: str) -> tuple[int, str] | None:
        """(position, image) of the first image in the rater's order not yet rated (O(1): the
        position is kept in ``rater_progress``)."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT p.position, p.image FROM rater_progress g JOIN presentation p "
                "ON p.rater = g.rater AND p.position = g.next_position WHERE g.rater = ?",
                (rater,),
            ).fetchone()
        return None if row is None else (int(row[0]), row[1])

    def progress(self, rater: str) -> Progress:
        """Ratings done / images in the study, O(1) (cached count; indexed latest time)."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT (SELECT COUNT(*) FROM images), r.simulated, g.done, "
                "(SELECT MAX(rated_at) FROM ratings WHERE rater = r.rater) "
                "FROM raters r JOIN rater_progress g ON g.rater = r.rater WHERE r.rater = ?",
                (rater,),
            ).fetchone()
        if row is None:
            raise RatingError(f"unknown rater {rater!r}")
        total, simulated, done, last = row
        return Progress(rater, int(done), int(total), bool(simulated), last)

    def check_score(self, score: object) -> int:
        """The score as an int; only integers are accepted (not 2.0, NaN, 1e400 or True)."""
        if isinstance(score, bool) or not isinstance(score, numbers.Integral):
            shown = repr(score) if len(repr(score)) <= 40 else repr(score)[:40] + "..."
            raise RatingRejected(f"score must be an integer, got {shown}", "invalid")
        value = int(score)
        if not self.scale_min <= value <= self.scale_max:
            raise RatingRejected(
                f"score {value} is outside the scale {self.scale_min}..{self.scale_max}",
                "invalid",
            )
        return value

    def record_web_rating(
        self, rater: str, image: str, position: int, score: object, viewing: str | None = None
    ) -> Rating:
        """Commit one rating given in the web app (``viewing``: the page's JSON record of how
        the image was viewed, kept in ``viewing`` by (rater, image, rated_at), which joins
        ``ratings`` and, after an undo, ``retracted``; keyed so because SQLite reuses the id of a
        deleted last row).

        The image must be the rater's current one (``position`` and ``image`` as served);
        otherwise :class:`RatingRejected` with kind ``unknown`` (not in the study),
        ``conflict`` (already rated / not the current image) or ``invalid`` (bad score).
        """
        value = self.check_score(score)
        now = utc_now()
        with self._write_lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if (
                    conn.execute("SELECT 1 FROM images WHERE image = ?", (image,)).fetchone()
                    is None
                ):
                    raise RatingRejected(f"image {image!r} is not in this study", "unknown")
                if conn.execute(
                    "SELECT 1 FROM ratings WHERE rater = ? AND image = ?", (rater, image)
                ).fetchone():
                    raise RatingRejected(
                        f"rater {rater!r} already rated {image!r}; undo it first", "conflict"
                    )
                row = conn.execute(
                    "SELECT p.position, p.image FROM rater_progress g JOIN presentation p "
                    "ON p.rater = g.rater AND p.position = g.next_position WHERE g.rater = ?",
                    (rater,),
                ).fetchone()
                if row is None or row[0] != position or row[1] != image:
                    raise RatingRejected(
                        f"{image!r} at position {position} is not rater {rater!r}'s current "
                        "image (another tab or a stale page?); reload",
                        "conflict",
                    )
                conn.execute(
                    "INSERT INTO ratings(rater, image, score, position, rated_at, source, "
                    "simulated) VALUES (?, ?, ?, ?, ?, 'web', 0)",
                    (rater, image, value, position, now),
                )
                if viewing is not None:
                    conn.execute(
                        "INSERT INTO viewing(rater, image, rated_at, viewing) VALUES (?, ?, ?, ?)",
                        (rater, image, now, viewing),
                    )
            except BaseException:
                conn.rollback_quietly()
                raise
        return Rating(rater, image, value, position, now, "web", False)

    def undo_last(self, rater: str) -> Rating | None:
        """Withdraw the rater's most recent web rating (moved to ``retracted``)."""
        now = utc_now()
        with self._write_lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT id, image, score, position, rated_at FROM ratings "
                "WHERE rater = ? AND source = 'web' ORDER BY id DESC LIMIT 1",
                (rater,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "INSERT INTO retracted(rating_id, rater, image, score, position, rated_at, "
                "source, retracted_at) VALUES (?, ?, ?, ?, ?, ?, 'web', ?)",
                (row[0], rater, row[1], row[2], row[3], row[4], now),
            )
            conn.execute("DELETE FROM ratings WHERE id = ?", (row[0],))
        return Rating(rater, row[1], int(row[2]), row[3], row[4], "web", False)

    def insert_ratings(self, ratings: Sequence[Rating]) -> int:
        """Insert many ratings in ONE transaction (all or nothing); returns the count."""
        return self.add_raters_with_ratings((), ratings)

    def _insert_ratings(self, conn: _Tx, ratings: Sequence[Rating]) -> None:
        conn.executemany(
            "INSERT INTO ratings(rater, image, score, position, rated_at, source, "
            "simulated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.rater,
                    r.image,
                    self.check_score(r.score),
                    r.position,
                    r.rated_at,
                    r.source,
                    int(r.simulated),
                )
                for r in ratings
            ],
        )

    # ------------------------------------------------------------------ reading

    def ratings(self) -> list[Rating]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT rater, image, score, position, rated_at, source, simulated "
                "FROM ratings ORDER BY rater, rated_at, id"
            ).fetchall()
        return [Rating(r[0], r[1], int(r[2]), r[3], r[4], r[5], bool(r[6])) for r in rows]

    def rated_images(self, rater: str) -> set[str]:
        with self._connect() as conn:
            return {
                r[0] for r in conn.execute("SELECT image FROM ratings WHERE rater = ?", (rater,))
            }

    def any_simulated(self) -> bool:
        with self._connect() as conn:
            return (
                conn.execute("SELECT 1 FROM ratings WHERE simulated = 1 LIMIT 1").fetchone()
                is not None
            )

    def all_progress(self) -> list[Progress]:
        return [self.progress(r.rater) for r in self.raters()]


class _Tx:
    """Context manager over a connection in autocommit mode: commits an open transaction on a
    clean exit, rolls it back on an exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> _Tx:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._conn.in_transaction:
            if exc_type is None:
                self._conn.execute("COMMIT")
            else:
                self._conn.execute("ROLLBACK")

    def execute(self, sql: str, params: Sequence = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)

    def executescript(self, sql: str) -> sqlite3.Cursor:
        return self._conn.executescript(sql)

    def rollback_quietly(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction
