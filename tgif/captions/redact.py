"""Keep an API key out of text: redact it (and long fragments of it) from error messages."""

from __future__ import annotations

import re

#: Shortest run of a secret's characters that is scrubbed when it shows up on its own.
MIN_FRAGMENT = 8
MASK = "***"

_KEY_LIKE = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-*.]{6,}")
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")


def scrub(text: str, secret: str | None, key_patterns: bool = True) -> str:
    """Return ``text`` with ``secret`` and any run of :data:`MIN_FRAGMENT` or more of its characters replaced by
    ``***``; with ``key_patterns``, also bearer tokens and ``sk-...``-style keys (for error messages)."""
    if secret:
        text = text.replace(secret, MASK)
        for start in range(max(0, len(secret) - MIN_FRAGMENT + 1)):
            fragment = secret[start : start + MIN_FRAGMENT]
            if fragment in text:
                text = _mask_runs(text, secret, fragment)
    if not key_patterns:
        return text
    text = _BEARER.sub(f"Bearer {MASK}", text)
    return _KEY_LIKE.sub(lambda match: f"{match.group(1)}-{MASK}", text)


def _mask_runs(text: str, secret: str, fragment: str) -> str:
    """Mask each occurrence of ``fragment`` together with the longest stretch around it that is still in ``secret``."""
    out, position = [], 0
    while (found := text.find(fragment, position)) != -1:
        start, end = found, found + len(fragment)
        while end < len(text) and text[start : end + 1] in secret:
            end += 1
        while start > position and text[start - 1 : end] in secret:
            start -= 1
        out.append(text[position:start] + MASK)
        position = end
    out.append(text[position:])
    return "".join(out)
