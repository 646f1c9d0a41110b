"""The SQL of the ratings database (:mod:`petctiqa.ratings.store`): tables, indexes and the
triggers that keep ``rater_progress`` exact.

Tables:

- ``meta`` (key, value): study seed, scale, admin-token hash, creation time.
- ``images`` (image, image_id, slice_id, width, height): the study's images (relative paths).
- ``raters`` (rater, token_sha256, simulated, training_done, created_at): a rater's private token
  is returned once, when it is made; only its SHA-256 is stored (databases made before that kept
  the token itself and are migrated on open).
- ``presentation`` (rater, position, image): each rater's stored order (0-based positions).
- ``ratings`` (id, rater, image, score, position, rated_at, source, simulated), unique per
  (rater, image); ``source`` is ``web``, ``import`` or ``simulate``.
- ``retracted``: ratings withdrawn by "undo", kept for the audit trail.
- ``viewing`` (rater, image, rated_at, viewing): the rating page's JSON record of how each web
  rating's image was viewed (zoom levels, time, magnifier), when the page sent one.
- ``rater_progress`` (rater, done, next_position): per-rater count of ratings and first unrated
  position, kept exact by triggers on ``ratings`` so the web app's per-rating queries are O(1)
  however late in the study (rebuilt on open for databases created before it existed).

"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    image TEXT PRIMARY KEY, image_id TEXT NOT NULL, slice_id TEXT NOT NULL,
    width INTEGER, height INTEGER);
CREATE TABLE IF NOT EXISTS raters (
    rater TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, simulated INTEGER NOT NULL DEFAULT 0,
    training_done INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presentation (
    rater TEXT NOT NULL REFERENCES raters(rater), position INTEGER NOT NULL,
    image TEXT NOT NULL REFERENCES images(image),
    PRIMARY KEY (rater, position), UNIQUE (rater, image));
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY, rater TEXT NOT NULL REFERENCES raters(rater),
    image TEXT NOT NULL REFERENCES images(image), score INTEGER NOT NULL,
    position INTEGER, rated_at TEXT NOT NULL, source TEXT NOT NULL,
    simulated INTEGER NOT NULL DEFAULT 0, UNIQUE (rater, image));
CREATE TABLE IF NOT EXISTS retracted (
    id INTEGER PRIMARY KEY, rating_id INTEGER NOT NULL, rater TEXT NOT NULL, image TEXT NOT NULL,
    score INTEGER NOT NULL, position INTEGER, rated_at TEXT NOT NULL, source TEXT NOT NULL,
    retracted_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ratings_rater_time ON ratings(rater, rated_at);
CREATE INDEX IF NOT EXISTS ratings_rater_source ON ratings(rater, source);
CREATE TABLE IF NOT EXISTS viewing (
    rater TEXT NOT NULL, image TEXT NOT NULL, rated_at TEXT NOT NULL, viewing TEXT NOT NULL,
    PRIMARY KEY (rater, image, rated_at));
CREATE TABLE IF NOT EXISTS rater_progress (
    rater TEXT PRIMARY KEY REFERENCES raters(rater), done INTEGER NOT NULL,
    next_position INTEGER);
CREATE TRIGGER IF NOT EXISTS rater_progress_on_rating AFTER INSERT ON ratings BEGIN
    UPDATE rater_progress SET
        done = done + 1,
        next_position = CASE
            WHEN next_position = (SELECT position FROM presentation
                                  WHERE rater = NEW.rater AND image = NEW.image)
            THEN (SELECT p.position FROM presentation p
                  WHERE p.rater = NEW.rater AND p.position > rater_progress.next_position
                    AND NOT EXISTS (SELECT 1 FROM ratings r
                                    WHERE r.rater = p.rater AND r.image = p.image)
                  ORDER BY p.position LIMIT 1)
            ELSE next_position END
    WHERE rater = NEW.rater;
END;
CREATE TRIGGER IF NOT EXISTS rater_progress_on_delete AFTER DELETE ON ratings BEGIN
    UPDATE rater_progress SET
        done = done - 1,
        next_position = COALESCE(
            (SELECT CASE WHEN rater_progress.next_position IS NULL
                           OR p.position < rater_progress.next_position
                         THEN p.position ELSE rater_progress.next_position END
             FROM presentation p WHERE p.rater = OLD.rater AND p.image = OLD.image),
            next_position)
    WHERE rater = OLD.rater;
END;
"""
# rater_progress caches, per rater, the number of ratings and the first unrated position of the
# presentation order, so the web app's next-image and progress queries cost O(1) however far a
# rater is into a 2,700-image study. The triggers keep it exact on every insert/delete of a
# rating, whichever code path writes; _fill_progress builds it for databases made before it.
FILL_PROGRESS = """
INSERT INTO rater_progress(rater, done, next_position)
SELECT r.rater,
       (SELECT COUNT(*) FROM ratings x WHERE x.rater = r.rater),
       (SELECT p.position FROM presentation p
        WHERE p.rater = r.rater
          AND NOT EXISTS (SELECT 1 FROM ratings x WHERE x.rater = p.rater AND x.image = p.image)
        ORDER BY p.position LIMIT 1)
FROM raters r WHERE r.rater NOT IN (SELECT rater FROM rater_progress)
"""
