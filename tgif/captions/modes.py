"""Which inputs each caption mode (the paper's Table 5 ablation) may use, and the task names."""

from __future__ import annotations

from dataclasses import dataclass

from tgif.captions.base import CAPTION_MODES
from tgif.errors import UnknownNameError
from tgif.io.pair import TASKS

#: How each fusion task is named in captions and prompts.
TASK_NAMES: dict[str, str] = {
    "ivf": "infrared-visible image fusion",
    "mif": "medical image fusion",
    "mef": "multi-exposure image fusion",
    "mff": "multi-focus image fusion",
}


@dataclass(frozen=True)
class ModeInputs:
    """What a caption mode lets a captioner look at.

    Attributes:
        image: the source image itself (its content and statistics).
        detection: the detections and the detection map.
        segmentation: the segmentation regions and the segmentation map.
    """

    image: bool
    detection: bool
    segmentation: bool


_MODE_INPUTS: dict[str, ModeInputs] = {
    "full": ModeInputs(image=True, detection=True, segmentation=True),
    "image+detection": ModeInputs(image=True, detection=True, segmentation=False),
    "image+segmentation": ModeInputs(image=True, detection=False, segmentation=True),
    "image": ModeInputs(image=True, detection=False, segmentation=False),
    "none": ModeInputs(image=False, detection=False, segmentation=False),
}


def mode_inputs(mode: str) -> ModeInputs:
    """Return what ``mode`` may use; raise UnknownNameError for a mode not in CAPTION_MODES."""
    try:
        return _MODE_INPUTS[mode]
    except KeyError:
        raise UnknownNameError(f"unknown caption mode {mode!r}; choose from {', '.join(CAPTION_MODES)}") from None


def task_name(task: str) -> str:
    """Return the readable name of a fusion task; raise UnknownNameError for a task not in TASKS."""
    try:
        return TASK_NAMES[task]
    except KeyError:
        raise UnknownNameError(f"unknown task {task!r}; choose from {', '.join(TASKS)}") from None
