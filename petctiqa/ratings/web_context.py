"""What the rating web app's blueprints share: the study being served (one per app)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import current_app

from petctiqa.ratings.scale import RatingScale
from petctiqa.ratings.store import RatingStore

EXTENSION_KEY = "petctiqa.ratings.study"


@dataclass(frozen=True)
class StudyContext:
    """The study an app serves.

    ``root``: the dataset folder, resolved. ``sizes``: {image: (width, height)} from the
    database. ``anchors``: the training block, (path, caption, width, height) each (empty
    when training is off). ``served``: every path the image route may serve (study images and
    training anchors); nothing else is ever looked up on disk.
    """

    root: Path
    store: RatingStore
    scale: RatingScale
    sizes: dict[str, tuple[int | None, int | None]]
    anchors: tuple[tuple[str, str, int | None, int | None], ...]
    served: frozenset[str]


def study_context() -> StudyContext:
    """The :class:`StudyContext` of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]
