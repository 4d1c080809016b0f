"""Phrases that name an object and ask for it to stand out: "highlight the person on the left".

Used in three places: the steering objective writes them into training captions
(:mod:`tgif.train.steer`), the steering benchmark appends them to drafted captions
(:mod:`tgif.steering`), and the app adds one to a caption when a detected object is clicked.

Training wording (:data:`TRAIN_TEMPLATES`, :data:`LABEL_SYNONYMS`, :data:`POSITION_SYNONYMS`) is
kept apart from the benchmark's hand-written phrasings (:data:`HELD_OUT_TEMPLATES`), so the
benchmark measures how the network reads wording it was never shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tgif.captions.wording import position_phrase
from tgif.errors import TgifError

#: Object classes the steering objective trains on, with the words a user may call them by.
LABEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("person", "pedestrian", "man", "woman", "human", "figure", "walker"),
    "car": ("car", "vehicle", "automobile"),
    "truck": ("truck", "lorry"),
    "bus": ("bus",),
    "bicycle": ("bicycle", "bike", "cyclist"),
    "motorcycle": ("motorcycle", "motorbike"),
}
#: Classes named in training captions as absent ones (nothing of them is in the crop).
ABSENT_LABELS: tuple[str, ...] = ("dog", "horse", "boat", "traffic light", "bench", "cat", "stop sign", "bird",
                                  "umbrella", "train", "cow", "chair")
#: Other ways to say each phrase of :func:`tgif.captions.wording.position_phrase`.
POSITION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "in the centre": ("in the centre", "in the middle", "in the center"),
    "on the left": ("on the left", "on the left side", "to the left"),
    "on the right": ("on the right", "on the right side", "to the right"),
    "at the top": ("at the top", "at the top of the frame", "in the upper part"),
    "at the bottom": ("at the bottom", "at the bottom of the frame", "in the lower part"),
    "at the top left": ("at the top left", "in the upper left"),
    "at the top right": ("at the top right", "in the upper right"),
    "at the bottom left": ("at the bottom left", "in the lower left"),
    "at the bottom right": ("at the bottom right", "in the lower right"),
}
#: Training phrasings; ``{obj}`` is the object (with its position when one is given).
TRAIN_TEMPLATES: tuple[str, ...] = (
    "Highlight the {obj}.",
    "Make the {obj} stand out.",
    "The important target is the {obj}.",
    "Emphasise the {obj}.",
    "Bring out the {obj}.",
    "Focus on the {obj} and make it brighter.",
    "The {obj} should be clearly visible.",
    "Please enhance the {obj}.",
    "Emphasize the thermal target: the {obj}.",
    "Keep the {obj} bright and salient.",
)
#: Hand-written phrasings for the benchmark, none of them used in training.
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "The {label} {position} is what matters.",
    "I want to see the {label} {position} clearly.",
    "Pay attention to the {label} {position}.",
    "Show the {label} {position} with more contrast.",
)
#: The hand-written phrasings and words of the selectivity benchmark (``tgif steer --selectivity``), never trained on.
SELECTIVITY_PHRASINGS = Path(__file__).resolve().parents[2] / "assets" / "steering" / "phrasings.txt"
SELECTIVITY_WORDS = Path(__file__).resolve().parents[2] / "assets" / "steering" / "words.txt"
#: The phrase the app adds when a detected object is clicked.
APP_TEMPLATE = "Highlight the {label} {position}."


def box_position(box: tuple[float, float, float, float], width: float, height: float) -> str:
    """Where a box's centre lies in a width x height frame ("on the left", "at the top right", ...)."""
    x1, y1, x2, y2 = box
    return position_phrase((x1 + x2) / 2.0, (y1 + y2) / 2.0, width, height)


def object_phrase(label: str, position: str | None, rng: np.random.Generator) -> str:
    """A training phrase for one object: a random synonym of ``label`` and of ``position`` in a random template."""
    words = LABEL_SYNONYMS.get(label, (label,))
    obj = str(rng.choice(words))
    if position:
        obj = f"{obj} {rng.choice(POSITION_SYNONYMS.get(position, (position,)))}"
    return str(rng.choice(TRAIN_TEMPLATES)).format(obj=obj)


def highlight_phrase(label: str, position: str, template: str = APP_TEMPLATE) -> str:
    """Fill a ``{label}`` / ``{position}`` template: ``highlight_phrase("person", "on the left")``."""
    return template.format(label=label, position=position).strip()


def add_phrase(caption: str, phrase: str) -> str:
    """Append ``phrase`` to ``caption`` as its own sentence (no duplicate when it is already there)."""
    caption = caption.strip()
    if phrase in caption:
        return caption
    if caption and caption[-1] not in ".!?;:":
        caption += "."
    return f"{caption} {phrase}".strip()


def read_phrasings(path: str | Path) -> tuple[str, ...]:
    """Read a phrasing file: one template per line with ``{label}`` and ``{position}``; ``#`` starts a comment.

    Raises:
        TgifError: the file is missing, empty, or a line lacks ``{label}``.
    """
    file = Path(path)
    if not file.is_file():
        raise TgifError(f"phrasing file {file} not found")
    lines = [line.split("#", 1)[0].strip() for line in file.read_text(encoding="utf-8").splitlines()]
    templates = tuple(line for line in lines if line)
    if not templates:
        raise TgifError(f"phrasing file {file} holds no phrasing")
    for line in templates:
        if "{label}" not in line:
            raise TgifError(f"{file}: every phrasing needs {{label}} (and usually {{position}}); got {line!r}")
        try:
            line.format(label="x", position="y")
        except (KeyError, IndexError, ValueError) as exc:
            raise TgifError(f"{file}: phrasing {line!r} is not a valid template ({exc})") from None
    return templates


def read_words(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Read a words file: lines ``name = other, words`` (a class name or a position phrase, then what a user might
    say instead); ``#`` starts a comment.

    Raises:
        TgifError: the file is missing, or a line has no ``=`` or nothing on one side.
    """
    file = Path(path)
    if not file.is_file():
        raise TgifError(f"words file {file} not found")
    words: dict[str, tuple[str, ...]] = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, equals, others = line.partition("=")
        alternatives = tuple(w.strip() for w in others.split(",") if w.strip())
        if not equals or not name.strip() or not alternatives:
            raise TgifError(f"{file}: write 'name = other, words'; got {line!r}")
        words[name.strip()] = alternatives
    return words
