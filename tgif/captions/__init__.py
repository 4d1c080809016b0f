"""Captions for source images: a GPT vision captioner and an offline template captioner.

Per source image, a detector and a segmenter produce maps; a captioner turns the image (and, as
the mode allows, both maps) into one short paragraph that guides the fusion network.
:func:`build_captioner` picks one by name.
"""

from __future__ import annotations

import logging
import os

from tgif.captions.base import CAPTION_MODES, MODALITY_NAMES, Caption, Captioner, CaptionInput
from tgif.captions.gpt import DEFAULT_MODEL, GPTCaptioner
from tgif.captions.modes import TASK_NAMES, mode_inputs
from tgif.captions.prompt import PROMPT_VERSION, build_messages, prompt_text
from tgif.captions.template import TEMPLATE_VERSION, TemplateCaptioner
from tgif.errors import UnknownNameError

logger = logging.getLogger(__name__)

#: Names :func:`build_captioner` accepts (plus ``"gpt:<model>"``).
CAPTIONER_NAMES: tuple[str, ...] = ("auto", "template", "gpt")

__all__ = [
    "CAPTIONER_NAMES",
    "CAPTION_MODES",
    "DEFAULT_MODEL",
    "MODALITY_NAMES",
    "PROMPT_VERSION",
    "TASK_NAMES",
    "TEMPLATE_VERSION",
    "Caption",
    "CaptionInput",
    "Captioner",
    "GPTCaptioner",
    "TemplateCaptioner",
    "build_captioner",
    "build_messages",
    "mode_inputs",
    "prompt_text",
]


def build_captioner(name: str = "auto", **kw) -> Captioner:
    """Make a captioner by name.

    - ``"template"``: :class:`TemplateCaptioner` (no options).
    - ``"gpt"``: :class:`GPTCaptioner` with ``kw`` (model, base_url, api_key, timeout, max_retries, fallback);
      ``"gpt:<model>"`` sets the model too.
    - ``"auto"``: GPT when an API key is given in ``kw`` or ``OPENAI_API_KEY`` is set, else the template
      captioner (the GPT options in ``kw`` are then unused).

    Raises UnknownNameError for any other name.
    """
    key = name.strip().lower()
    if key == "auto":
        if kw.get("api_key") or os.environ.get("OPENAI_API_KEY"):
            return GPTCaptioner(**kw)
        logger.info("no OpenAI API key set; captions come from the template captioner")
        return TemplateCaptioner()
    if key == "template":
        return TemplateCaptioner(**kw)
    if key == "gpt":
        return GPTCaptioner(**kw)
    if key.startswith("gpt:") and name.strip()[4:]:
        return GPTCaptioner(**{**kw, "model": name.strip()[4:]})
    raise UnknownNameError(f"unknown captioner {name!r}; choose from {', '.join(CAPTIONER_NAMES)} or gpt:<model>")
