"""Small English helpers for captions: number words, plurals, list joins, positions in the frame."""

from __future__ import annotations

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

#: Plurals that the regular rules get wrong (COCO class names included).
_IRREGULAR_PLURALS = {
    "person": "people",
    "mouse": "mice",
    "knife": "knives",
    "sheep": "sheep",
    "skis": "skis",
    "scissors": "scissors",
}

_ROWS = ("top", "middle", "bottom")
_COLUMNS = ("left", "centre", "right")


def number_word(n: int) -> str:
    """Spell 0-10 as words ("three"); larger numbers stay digits."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def plural(noun: str) -> str:
    """Plural of a noun, multi-word ones included: "person" -> "people", "traffic light" -> "traffic lights"."""
    head, _, last = noun.rpartition(" ")
    prefix = f"{head} " if head else ""
    if last in _IRREGULAR_PLURALS:
        return prefix + _IRREGULAR_PLURALS[last]
    if last.endswith(("s", "x", "z", "ch", "sh")):
        return f"{prefix}{last}es"
    if len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        return f"{prefix}{last[:-1]}ies"
    return f"{prefix}{last}s"


def counted(n: int, noun: str) -> str:
    """ "a car", "an umbrella", "two people", "another object"."""
    if n == 1:
        if noun.startswith("other "):
            return f"another {noun[6:]}"
        return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
    return f"{number_word(n)} {plural(noun)}"


def join_words(items: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def percent(share: float) -> str:
    """A share in [0, 1] as a whole percentage ("41%"); "<1%" for small non-zero shares."""
    if 0 < share < 0.005:
        return "<1%"
    return f"{round(100 * share)}%"


def part_phrase(row: str, column: str) -> str:
    """Name a part of the frame: row in top/middle/bottom, column in left/centre/right.

    ("middle", "centre") -> "in the centre", ("middle", "left") -> "on the left", ("top", "centre") -> "at the top",
    ("bottom", "right") -> "at the bottom right".
    """
    if row == "middle":
        return "in the centre" if column == "centre" else f"on the {column}"
    return f"at the {row}" if column == "centre" else f"at the {row} {column}"


def position_phrase(x: float, y: float, width: float, height: float) -> str:
    """Where the point (x, y) lies on a 3x3 grid over a width x height frame, as :func:`part_phrase` names it."""
    column = _COLUMNS[min(2, max(0, int(3 * x / width)))] if width > 0 else "centre"
    row = _ROWS[min(2, max(0, int(3 * y / height)))] if height > 0 else "middle"
    return part_phrase(row, column)
