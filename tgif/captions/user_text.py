"""Captions typed by a user: cleaned before the text encoder reads them, escaped wherever they are shown.

A caption box accepts anything a browser or a script can send. :func:`clean_caption` keeps what a
caption can mean (letters, digits, punctuation, spaces and line breaks), drops control characters
such as NUL, and refuses text that is not encodable at all (a lone UTF-16 surrogate) with one clear
message. :func:`markdown_literal` shows a caption in Markdown as the characters typed: no link, image,
HTML or emphasis is ever rendered from a caption.
"""

from __future__ import annotations

import re
import unicodedata

from tgif.errors import TgifError


class CaptionTextError(TgifError):
    """A caption that is not text the encoder can read."""


#: Characters with a meaning in Markdown or HTML; :func:`markdown_literal` escapes each of them.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>&:\"'])")


def clean_caption(text: str, label: str = "the caption") -> str:
    """``text`` without control characters (line breaks and tabs become spaces), stripped.

    Raises:
        CaptionTextError: ``text`` holds a lone surrogate (not valid Unicode text), named by ``label``.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CaptionTextError(f"{label} contains characters that are not valid text (a lone surrogate); "
                               "retype it or paste it again") from None
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\n\r\t":
            kept.append(" ")
        elif category[0] != "C" or char == "\u200d":  # drop control, format, private-use (keep emoji joiners)
            kept.append(char)
    return " ".join("".join(kept).split())


def markdown_literal(text: str) -> str:
    """``text`` escaped for Markdown (and the HTML it may contain), so it renders as the characters typed."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
