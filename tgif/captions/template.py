"""An offline, deterministic captioner that writes a caption from templates.

The caption opens with what the detector found, with positions ("It shows a person on the left
and two cars at the bottom."), as the mode allows; then the image's quality and modality ("A dim,
high-contrast, sharp infrared image."), what the segmenter found, and a task-specific remark (MEF:
clipped areas; MFF: the sharper part; MIF: the share of the frame the scan fills). It stays under
:data:`MAX_WORDS` words by leaving out the least important sentences first, so that the network,
which reads the first :data:`tgif.text.CAPTION_TOKENS` tokens of a caption, reads the objects
first and a phrase a user appends too. When no detector could run, the caption says nothing about
objects (it never claims that none were found).
"""

from __future__ import annotations

import logging
import re

from tgif.captions.base import Caption, CaptionInput
from tgif.captions.modes import ModeInputs, mode_inputs, task_name
from tgif.captions.quality import CLIP_MENTION, ImageQuality, measure
from tgif.captions.scene import describe_detections, describe_regions
from tgif.captions.wording import percent
from tgif.perception.types import NO_DETECTOR

logger = logging.getLogger(__name__)

TEMPLATE_VERSION = "tgif-template-v3"
MAX_WORDS = 50

# Sentence priorities: lower is kept longer when the caption must be shortened.
_DETECTIONS, _OPENING, _TASK_REMARK, _REGIONS = range(4)


class TemplateCaptioner:
    """Writes a caption from the image statistics, detections and regions, without any model."""

    name = "template"
    prompt_version = TEMPLATE_VERSION

    def caption(self, inputs: CaptionInput, mode: str = "full") -> Caption:
        """Draft a caption using only what ``mode`` allows; mode ``"none"`` gives an empty caption.

        Raises UnknownNameError for an unknown mode or task.
        """
        allowed = mode_inputs(mode)
        task_name(inputs.task)  # raises UnknownNameError for an unknown task
        text = _compose(inputs, allowed) if allowed.image else ""
        return Caption(text=text, captioner=self.name, prompt_version=self.prompt_version, mode=mode)

    def __repr__(self) -> str:
        return "TemplateCaptioner()"


def _compose(inputs: CaptionInput, allowed: ModeInputs) -> str:
    quality = measure(inputs.image, ignore_black_background=inputs.task == "mif")
    modality = inputs.modality.strip() or "source"
    adjectives = f"{quality.brightness_word}, {quality.contrast_word}, {quality.sharpness_word}"
    sentences = []
    # a COCO detector names nothing real in a medical scan ("zebra", "frisbee"): MIF captions skip its classes
    use_detections = allowed.detection and inputs.task != "mif"
    if use_detections and inputs.detections is not None and inputs.detections.model != NO_DETECTOR:
        found = describe_detections(inputs.detections)
        sentences.append((_DETECTIONS, f"It shows {found}." if found else "No objects are detected."))
    sentences.append((_OPENING, f"A {adjectives} {modality} image."))
    if allowed.segmentation and inputs.segmentation is not None:
        sentences.append((_REGIONS, describe_regions(inputs.segmentation, name_classes=use_detections)))
    remark = _task_remark(inputs.task, quality)
    if remark:
        sentences.append((_TASK_REMARK, remark))
    return _fit(sentences, MAX_WORDS)


def _task_remark(task: str, quality: ImageQuality) -> str:
    """The task-specific sentence (empty for IVF, and for MIF without a black background)."""
    if task == "mef":
        clipped = [
            (clipping, what)
            for clipping, what in (
                (quality.under, "near-black (under-exposed)"),
                (quality.over, "near-white (over-exposed)"),
            )
            if clipping.share >= CLIP_MENTION
        ]
        if not clipped:
            return "Few pixels are clipped to black or white."
        clauses = [
            f"{percent(clipping.share)}{' of the frame' if i == 0 else ''} is {what}"
            + (f", mostly {clipping.where}" if clipping.where else "")
            for i, (clipping, what) in enumerate(clipped)
        ]
        return "; ".join(clauses) + "."
    if task == "mff":
        focus = quality.focus
        if focus is None:
            return "Focus is similar across the frame."
        return f"The {focus.sharper} is in sharper focus than the {focus.blurrier}."
    if task == "mif" and quality.foreground_only:
        return f"The scan fills {percent(quality.foreground_share)} of the frame on a black background."
    return ""


def _fit(sentences: list[tuple[int, str]], max_words: int) -> str:
    """Join sentences in order, dropping the lowest-priority ones until the text has at most ``max_words`` words."""
    kept = list(sentences)
    while len(kept) > 1 and sum(len(text.split()) for _, text in kept) > max_words:
        dropped = max(kept, key=lambda sentence: sentence[0])
        logger.debug("template caption too long; leaving out: %s", dropped[1])
        kept.remove(dropped)
    words = " ".join(text for _, text in kept).split()
    return " ".join(words[:max_words])


_SENTENCE_END = re.compile(r"(?<=\.)\s+")
_CLASSES = re.compile(r" \([^)]*\)")


def restrict_caption(text: str, mode: str) -> str:
    """The caption this captioner drafts in ``mode`` for the inputs a full-mode caption ``text`` was drafted from.

    Template captions are built from sentences of known kinds, so a narrower mode is the full caption less the
    sentences (and, without detection, the class names in the segmentation sentence) that mode may not use:
    "It shows a person on the right. A dark infrared image. Segmentation shows an object region (a person) and
    six scene regions." in ``image+segmentation`` is "A dark infrared image. Segmentation shows an object
    region and six scene regions." The steering ablation (:mod:`tgif.train.steer`) drafts its variants so.
    Exact unless the full caption was cut to :data:`MAX_WORDS`: a sentence it left out for length (the
    segmentation sentence goes first) cannot come back, though the narrower mode might have kept it.

    Raises:
        UnknownNameError: an unknown mode.
    """
    allowed = mode_inputs(mode)
    if not allowed.image:
        return ""
    if allowed.detection and allowed.segmentation:
        return text
    kept = []
    for sentence in _SENTENCE_END.split(text.strip()):
        is_detection = sentence.startswith(("It shows ", "No objects are detected"))
        is_regions = sentence.startswith(("Segmentation shows ", "Segmentation finds "))
        if (is_detection and not allowed.detection) or (is_regions and not allowed.segmentation):
            continue
        if is_regions and not allowed.detection:
            sentence = _CLASSES.sub("", sentence)
        kept.append(sentence)
    return " ".join(kept)
