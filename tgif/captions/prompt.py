"""The fixed caption prompt (the paper's "artificial prompts") and the chat messages sent to the model.

The user message holds the prompt text, then the images the mode allows, in this order: the
source image, its detection map, its segmentation map. Each image is a PNG data URL, downscaled
to :data:`~tgif.captions.encoding.MAX_SIDE` pixels on its longer side, with ``detail: "low"``.
"""

from __future__ import annotations

import logging

import numpy as np

from tgif.captions.base import CaptionInput
from tgif.captions.encoding import png_data_url
from tgif.captions.modes import mode_inputs, task_name
from tgif.captions.scene import summarize_detections, summarize_regions
from tgif.perception.types import NO_DETECTOR

logger = logging.getLogger(__name__)

PROMPT_VERSION = "tgif-caption-v1"

SYSTEM_PROMPT = (
    "You write short, factual captions that guide an image-fusion network. You describe one source image "
    "at a time, using only what is visible in the images you are given."
)

#: The fixed prompt; filled with the modality, the task name and a task-specific hint.
PROMPT = (
    "This is the {modality} image of a pair for {task}; it will be fused with the other source image, "
    "and your caption tells the fusion network what this image contributes. Describe THIS {modality} image: "
    "the objects in it and their positions in the frame, its salient regions, and its quality (lighting, "
    "focus and exposure). {hint} Write one paragraph of at most 60 words. Do not speculate beyond what is "
    "visible; no lists, no preamble."
)

#: What to look for, per task.
TASK_HINTS: dict[str, str] = {
    "ivf": "Say which targets stand out by their intensity and where texture and detail are visible.",
    "mif": "Name the view and the anatomical structures, and where intensity is high or low; do not diagnose.",
    "mef": "Say which areas are under- or over-exposed and which keep their detail.",
    "mff": "Say which parts are in focus and which are blurred.",
}

_IMAGE_NAMES = {
    "source": "the source image",
    "detection": "its object-detection map (boxes and class labels drawn over the image)",
    "segmentation": "its segmentation map (the segmented regions coloured over the image)",
}


def prompt_text(inputs: CaptionInput, mode: str) -> str:
    """The user prompt for ``inputs`` under ``mode``: the fixed prompt, the list of attached images and,
    where the mode allows them, summaries of the detections and regions.

    Raises UnknownNameError for an unknown mode or task.
    """
    allowed = mode_inputs(mode)
    modality = inputs.modality.strip() or "source"
    lines = [PROMPT.format(modality=modality, task=task_name(inputs.task), hint=TASK_HINTS[inputs.task])]
    names = [_IMAGE_NAMES[kind] for kind, image in _images(inputs, mode) if image is not None]
    if names:
        lines.append("Attached, in order: " + "; ".join(names) + ".")
    if allowed.detection and inputs.detections is not None:
        caveat = (" (a COCO detector for everyday scenes: ignore these classes in a medical scan)"
                  if inputs.task == "mif" else "")
        found = ("unavailable (no detector could run; say nothing about which objects are or are not there)"
                 if inputs.detections.model == NO_DETECTOR else summarize_detections(inputs.detections))
        lines.append("Detector output" + caveat + ": " + found + ".")
    if allowed.segmentation and inputs.segmentation is not None:
        regions = summarize_regions(inputs.segmentation, name_classes=allowed.detection)
        lines.append(f"Segmenter output: {regions}.")
    return "\n".join(lines)


def build_messages(inputs: CaptionInput, mode: str) -> list[dict]:
    """OpenAI chat messages (system + user) asking for a caption of one source image.

    The user content is a list: the :func:`prompt_text`, then one ``image_url`` part per image the
    mode allows (source; + detection map for "full"/"image+detection"; + segmentation map for
    "full"/"image+segmentation"). A map the mode asks for but ``inputs`` lacks is left out (with a
    warning). Mode "none" sends no image: captioners do not call the model for it.

    Raises UnknownNameError for an unknown mode or task.
    """
    content: list[dict] = [{"type": "text", "text": prompt_text(inputs, mode)}]
    for kind, image in _images(inputs, mode):
        if image is None:
            logger.warning("caption mode %r uses the %s map, but none was given; asking without it", mode, kind)
            continue
        content.append({"type": "image_url", "image_url": {"url": png_data_url(image), "detail": "low"}})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def _images(inputs: CaptionInput, mode: str) -> list[tuple[str, np.ndarray | None]]:
    """(kind, image) for each image ``mode`` uses, in order; the image is None where ``inputs`` lacks it."""
    allowed = mode_inputs(mode)
    wanted = [
        ("source", allowed.image, inputs.image),
        ("detection", allowed.detection, inputs.detection_map),
        ("segmentation", allowed.segmentation, inputs.segmentation_map),
    ]
    return [(kind, image) for kind, used, image in wanted if used]
