"""A captioner that asks a GPT vision model (OpenAI chat completions API) for the caption.

Any failure (no key, no ``openai`` package, connection error, timeout, HTTP error, empty answer)
is logged as a warning and answered by the fallback captioner (the template one by default),
with ``fallback_reason`` saying why. The API key never appears in logs, messages or reprs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from types import ModuleType
from typing import Any

from tgif import settings
from tgif.captions.base import Caption, Captioner, CaptionInput
from tgif.captions.modes import mode_inputs, task_name
from tgif.captions.prompt import PROMPT_VERSION, build_messages
from tgif.captions.redact import scrub
from tgif.captions.template import TemplateCaptioner

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
MAX_TOKENS = 150
TEMPERATURE = 0.2
#: Longest caption kept from the model's answer, in words.
MAX_ANSWER_WORDS = 120
#: Longest server error message quoted in a fallback reason.
MAX_ERROR_CHARS = 160

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


#: Seconds a GPT caption may take, retries included, before the offline drafter writes it (``TGIF_GPT_TIMEOUT``).
DEFAULT_DEADLINE = 10.0


def _deadline_from_env() -> float:
    return settings.positive_number("TGIF_GPT_TIMEOUT", DEFAULT_DEADLINE, "seconds")


class CaptionRequestError(Exception):
    """Why a GPT request gave no caption (message already free of the API key)."""


class GPTCaptioner:
    """Drafts captions with a GPT vision model, falling back to another captioner on any failure.

    Args:
        model: model name; default ``$TGIF_CAPTION_MODEL`` or ``"gpt-4o-mini"``.
        base_url: API base URL (e.g. ``http://127.0.0.1:8000/v1``); default ``$OPENAI_BASE_URL`` or OpenAI's.
        api_key: API key; default ``$OPENAI_API_KEY``. Without one, no request is made.
        timeout: the deadline in seconds for the request and its retries together (default
            ``$TGIF_GPT_TIMEOUT`` or :data:`DEFAULT_DEADLINE`): each attempt may take
            ``timeout / (max_retries + 1)``, so a server that never answers costs about ``timeout``.
        max_retries: retries the client makes on timeouts, connection errors, 429 and 5xx answers (at most one
            is sensible inside a short deadline).
        fallback: captioner used on failure; default :class:`TemplateCaptioner`.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int = 1,
        fallback: Captioner | None = None,
    ) -> None:
        self.model = model or os.environ.get("TGIF_CAPTION_MODEL") or DEFAULT_MODEL
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        self.timeout = float(timeout) if timeout is not None else _deadline_from_env()
        self.max_retries = int(max_retries)
        if self.timeout <= 0 or self.max_retries < 0:
            raise ValueError(f"timeout must be positive and max_retries >= 0, got {self.timeout}, {self.max_retries}")
        self.fallback = fallback if fallback is not None else TemplateCaptioner()
        self.name = f"gpt:{self.model}"
        self.prompt_version = PROMPT_VERSION
        self._client = None

    @property
    def has_key(self) -> bool:
        """Whether an API key is configured."""
        return self._api_key is not None

    def __repr__(self) -> str:
        key = "'***'" if self.has_key else "None"
        return (
            f"GPTCaptioner(model={self.model!r}, base_url={self.base_url!r}, api_key={key},"
            f" timeout={self.timeout:g}, max_retries={self.max_retries}, fallback={self.fallback.name!r})"
        )

    def caption(self, inputs: CaptionInput, mode: str = "full") -> Caption:
        """Draft a caption with the model, or with the fallback captioner when the request fails.

        Mode ``"none"`` gives an empty caption without any request. Raises UnknownNameError for an
        unknown mode or task (before any request).
        """
        allowed = mode_inputs(mode)
        task_name(inputs.task)
        if not allowed.image:
            return Caption(text="", captioner=self.name, prompt_version=self.prompt_version, mode=mode)
        try:
            text = self._ask(inputs, mode)
        except CaptionRequestError as exc:
            return self._fall_back(inputs, mode, str(exc))
        return Caption(text=text, captioner=self.name, prompt_version=self.prompt_version, mode=mode)

    def _ask(self, inputs: CaptionInput, mode: str) -> str:
        """Send the request and return the normalised answer; raise CaptionRequestError on any failure."""
        if not self.has_key:
            raise CaptionRequestError("no OpenAI API key (set OPENAI_API_KEY)")
        try:
            import openai
        except ImportError:
            raise CaptionRequestError("the openai package is not installed (pip install openai)") from None
        try:
            response = self._get_client(openai).chat.completions.create(
                model=self.model,
                messages=build_messages(inputs, mode),
                max_tokens=MAX_TOKENS,
                temperature=TEMPERATURE,
            )
        except openai.APITimeoutError:
            tries = self.max_retries + 1
            raise CaptionRequestError(f"GPT request failed: no answer within {self.timeout:g} s "
                                      f"({tries} attempt{'s' if tries > 1 else ''})") from None
        except openai.APIConnectionError:
            raise CaptionRequestError(f"GPT request failed: cannot connect to {self._where()}") from None
        except openai.APIStatusError as exc:
            detail = self._clean(_error_message(exc))
            raise CaptionRequestError(f"GPT request failed: HTTP {exc.status_code} ({detail})") from None
        except Exception as exc:  # noqa: BLE001 - any other failure of the client must also fall back
            detail = self._clean(f"{type(exc).__name__}: {exc}")
            raise CaptionRequestError(f"GPT request failed: {detail}") from None
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message is not None else None
        text = normalize_answer(content or "")
        if not text:
            raise CaptionRequestError("GPT returned an empty caption")
        return scrub(text, self._api_key, key_patterns=False)

    def _get_client(self, openai_module: ModuleType) -> Any:
        """The ``openai.OpenAI`` client, created on first use."""
        if self._client is None:
            self._client = openai_module.OpenAI(
                api_key=self._api_key, base_url=self.base_url, timeout=self.timeout / (self.max_retries + 1),
                max_retries=self.max_retries
            )
        return self._client

    def _fall_back(self, inputs: CaptionInput, mode: str, why: str) -> Caption:
        reason = f"{why}; used the {self.fallback.name} captioner"
        logger.warning("%s caption: %s", self.name, reason)
        return dataclasses.replace(self.fallback.caption(inputs, mode), fallback_reason=reason)

    def _where(self) -> str:
        return self._clean(self.base_url) if self.base_url else "the OpenAI API"

    def _clean(self, text: str) -> str:
        """An error text without the API key (or anything that looks like a key), at most MAX_ERROR_CHARS long."""
        text = scrub(" ".join(text.split()), self._api_key)
        return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3].rstrip() + "..."


def normalize_answer(text: str, max_words: int = MAX_ANSWER_WORDS) -> str:
    """Collapse whitespace and cap the answer at ``max_words`` words (cut back to the last full sentence when one ends
    in the kept words)."""
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words)
    kept = " ".join(words[:max_words])
    ends = list(_SENTENCE_END.finditer(kept))
    return kept[: ends[-1].end()] if ends else kept


def _error_message(exc: Exception) -> str:
    """The server's own error message when the body carries one, else the exception text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return str(exc)
