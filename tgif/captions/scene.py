"""What detections and segmentation regions say about a scene, in words.

Two styles: a sentence for the template caption (``describe_*``) and a compact factual
summary for the GPT prompt (``summarize_*``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from tgif.captions.wording import counted, join_words, number_word, percent, position_phrase
from tgif.perception.types import Detections, Region, Segmentation

#: Most (class, position) groups a caption names; the rest are counted as "other objects".
MAX_DETECTION_GROUPS = 3
#: Most object classes named for the object regions of a segmentation.
MAX_REGION_LABELS = 3
#: Most scene regions whose position and area share are named.
MAX_SCENE_REGIONS = 2
#: Most detections listed one by one, and scene regions listed, in the GPT prompt.
MAX_PROMPT_DETECTIONS = 12
MAX_PROMPT_SCENE_REGIONS = 4


def detection_position(detections: Detections, index: int) -> str:
    """Where the centre of the ``index``-th detection lies in the frame ("on the left", ...)."""
    width, height = detections.image_size
    x, y = detections.items[index].center
    return position_phrase(x, y, width, height)


def describe_detections(detections: Detections) -> str:
    """Detected objects grouped by class and position: "two cars on the left and a person in the centre".

    Classes come most frequent first; at most :data:`MAX_DETECTION_GROUPS` groups are named and the
    remaining objects counted ("and three other objects"). Empty string when nothing was detected.
    """
    groups: Counter[tuple[str, str]] = Counter(
        (item.label, detection_position(detections, index)) for index, item in enumerate(detections.items)
    )
    class_order = list(detections.counts())
    ordered = sorted(groups.items(), key=lambda group: (class_order.index(group[0][0]), -group[1]))
    named = ordered[:MAX_DETECTION_GROUPS]
    phrases = [f"{counted(count, label)} {where}" for (label, where), count in named]
    rest = len(detections) - sum(count for _, count in named)
    if rest:
        phrases.append(counted(rest, "other object"))
    return join_words(phrases)


def summarize_detections(detections: Detections) -> str:
    """One line per detection for the prompt: "car on the left (0.91); person in the centre (0.77); ..."."""
    if not len(detections):
        return "no objects detected"
    shown = [
        f"{item.label} {detection_position(detections, index)} ({item.score:.2f})"
        for index, item in enumerate(detections.items[:MAX_PROMPT_DETECTIONS])
    ]
    more = len(detections) - len(shown)
    return f"{len(detections)} objects: " + "; ".join(shown) + (f"; and {more} more" if more else "")


def region_position(region: Region, image_size: tuple[int, int]) -> str:
    """Where the centroid of a region's mask lies in the frame."""
    ys, xs = np.nonzero(region.mask)
    if len(xs) == 0:
        return "in the centre"
    width, height = image_size
    return position_phrase(float(xs.mean()) + 0.5, float(ys.mean()) + 0.5, width, height)


def describe_regions(segmentation: Segmentation, name_classes: bool = True) -> str:
    """A sentence on the regions: object regions (with their classes) and the largest scene regions.

    "Segmentation shows three object regions (two people and a car) and five scene regions; the largest
    cover 41% of the frame at the bottom and 22% at the top." With ``name_classes=False`` the classes
    (which come from the detector) are left out, so a segmentation-only caption carries no detection.
    """
    objects = segmentation.objects()
    scene = sorted((r for r in segmentation.regions if r.kind != "object"), key=lambda r: r.area, reverse=True)
    if not objects and not scene:
        return "Segmentation finds no distinct regions."
    parts = []
    if objects:
        parts.append(counted(len(objects), "object region") + (_object_classes(objects) if name_classes else ""))
    if scene:
        parts.append(counted(len(scene), "scene region"))
    sentence = "Segmentation shows " + join_words(parts)
    if scene:
        sentence += "; " + _largest_scene_regions(scene, segmentation.image_size)
    return sentence + "."


def summarize_regions(segmentation: Segmentation, name_classes: bool = True) -> str:
    """A compact line for the prompt: object regions (by class when ``name_classes``) and the largest scene
    regions' share and position."""
    objects = segmentation.objects()
    scene = sorted((r for r in segmentation.regions if r.kind != "object"), key=lambda r: r.area, reverse=True)
    classes = Counter(r.label for r in objects)
    object_text = ", ".join(f"{label} x{n}" for label, n in classes.most_common()) if name_classes else ""
    object_text = object_text or ("none" if not objects else "unlabelled")
    total = _frame_area(segmentation.image_size)
    scene_text = "; ".join(
        f"{percent(r.area / total)} {region_position(r, segmentation.image_size)}"
        for r in scene[:MAX_PROMPT_SCENE_REGIONS]
    )
    return f"{len(objects)} object regions ({object_text}); {len(scene)} scene regions" + (
        f", largest: {scene_text}" if scene_text else ""
    )


def _object_classes(objects: list[Region]) -> str:
    """ " (two people and a car)" for labelled object regions; empty when none carry a class."""
    classes = Counter(r.label for r in objects if r.label != "region").most_common()
    if not classes:
        return ""
    named = [counted(n, label) for label, n in classes[:MAX_REGION_LABELS]]
    rest = sum(n for _, n in classes[MAX_REGION_LABELS:])
    if rest:
        named.append(f"{number_word(rest)} more")
    return f" ({join_words(named)})"


def _largest_scene_regions(scene: list[Region], image_size: tuple[int, int]) -> str:
    """ "the largest cover 41% of the frame at the bottom and 22% at the top" (``scene`` sorted by area)."""
    total = _frame_area(image_size)
    largest = scene[:MAX_SCENE_REGIONS]
    phrases = [
        f"{percent(r.area / total)}{' of the frame' if i == 0 else ''} {region_position(r, image_size)}"
        for i, r in enumerate(largest)
    ]
    if len(scene) == 1:
        return f"it covers {phrases[0]}"
    return ("the largest covers " if len(largest) == 1 else "the largest cover ") + join_words(phrases)


def _frame_area(image_size: tuple[int, int]) -> int:
    width, height = image_size
    return max(1, width * height)
