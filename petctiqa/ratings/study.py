"""A reader study = a dataset folder + its rating database + a rating scale.

:func:`open_study` is the one entry point the CLI uses for ``serve``, ``import``, ``export`` and
``simulate``: it reads the manifest, opens (and on first use creates) ``<dataset>/ratings.sqlite``
and records each image's natural size for the web page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from petctiqa.dataset.folder import DatasetFolder
from petctiqa.errors import DatasetError
from petctiqa.ratings.latent_model import (
    LatentQualityModel,
    check_simulation_design,
    latent_from_model,
    read_parameters,
)
from petctiqa.ratings.scale import DEFAULT_SCALE, RatingScale, load_rating_scale
from petctiqa.ratings.simulate import ObserverModel, draw_raters, rate_latent, simulate_scores
from petctiqa.ratings.store import Rating, RatingStore, utc_now
from petctiqa.ratings.study_images import StudyImage, read_study_images


@dataclass(frozen=True)
class Study:
    dataset: Path
    store: RatingStore
    images: tuple[StudyImage, ...]
    scale: RatingScale
    seed: int
    created: bool = False
    """True when this call made the database (it did not exist before)."""


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, read from the file header only."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: image listed in manifest.csv does not exist") from None
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from None


def open_study(
    dataset: Path,
    db: Path | None = None,
    scale: str | Path = DEFAULT_SCALE,
    seed: int | None = None,
    check_files: bool = True,
    synchronous: str = "FULL",
) -> Study:
    """Open (creating on first use) the study of ``dataset``; the DB defaults to
    ``<dataset>/ratings.sqlite``. ``seed`` fixes the presentation-order seed of a new study;
    ``synchronous`` is :class:`RatingStore`'s (FULL: every rating fsynced before it returns)."""
    dataset = Path(dataset)
    images = read_study_images(dataset)
    rating_scale = load_rating_scale(scale)
    path = Path(db or DatasetFolder(dataset).ratings_db)
    created = not path.exists()
    store = RatingStore(path, rating_scale.min, rating_scale.max, synchronous)
    if store.meta("seed") is None:
        rows = []
        for im in images:
            width, height = image_size(dataset / im.image) if check_files else (None, None)
            rows.append((im.image, im.image_id, im.slice_id, width, height))
    else:
        rows = [(im.image, im.image_id, im.slice_id, None, None) for im in images]
    try:
        study_seed = store.init_study(rows, seed, rating_scale.name)
    except BaseException:
        if created:
            remove_database(store)
        raise
    return Study(dataset, store, images, rating_scale, study_seed, created)


def remove_database(store: RatingStore) -> None:
    """Close ``store`` and delete its file with the WAL and shared-memory files."""
    store.close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{store.path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def opened_study(
    dataset: Path,
    db: Path | None = None,
    scale: str | Path = DEFAULT_SCALE,
    seed: int | None = None,
) -> Iterator[Study]:
    """:func:`open_study` for one command: a database this call created is deleted again when
    the block raises (a failed import, an export with nothing rated, a server without raters),
    so a failed command leaves no empty ``ratings.sqlite`` behind."""
    study = open_study(dataset, db, scale, seed)
    try:
        yield study
    except BaseException:
        if study.created:
            remove_database(study.store)
        raise


def simulate_study(
    study: Study,
    raters: int | Sequence[str],
    seed: int = 0,
    model: ObserverModel | None = None,
    latent_model: LatentQualityModel | None = None,
    dataset: Path | None = None,
) -> int:
    """Add simulated raters (``sim01``, ...) who rate every image; stored with simulated = 1.
    With ``latent_model``, latent quality comes from the parameters in the manifest of
    ``dataset`` (default: the study's) instead of the published MOS table, which describes the
    classic grid alone: any other design needs a model (:mod:`petctiqa.ratings.latent_model`).

    Returns the number of ratings stored (one transaction)."""
    dataset = Path(dataset or study.dataset)
    check_simulation_design(dataset, latent_model)
    names = [f"sim{i + 1:02d}" for i in range(raters)] if isinstance(raters, int) else list(raters)
    model = model or ObserverModel(scale_min=study.scale.min, scale_max=study.scale.max)
    study.store.add_raters(names, simulated=True)
    params = draw_raters(names, seed, model)
    keys = [im.image_id for im in study.images]
    if latent_model is not None:
        by_image = read_parameters(dataset, latent_model)
        parameters = [by_image[im.image] for im in study.images]
        latent = latent_from_model(latent_model, keys, parameters, seed, model.image_sd)
        scores = rate_latent(latent, params, seed, model)
    else:
        scores = simulate_scores(keys, [im.cell for im in study.images], params, seed, model)
    now = utc_now()
    ratings = []
    for j, name in enumerate(names):
        done = study.store.rated_images(name)
        for i, im in enumerate(study.images):
            if im.image not in done:
                ratings.append(
                    Rating(name, im.image, int(scores[i, j]), None, now, "simulate", True)
                )
    return study.store.insert_ratings(ratings)
