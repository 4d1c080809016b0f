"""One pair from upload to fused image: the spine of the pipeline.

Like Segment Anything's ``SamPredictor`` (``set_image`` computes an image's embedding once, every
prompt is answered from it), a :class:`PairSession` holds one pair and computes each stage once:

pair (task and modalities from :mod:`tgif.tasks`) -> perception maps per source -> drafted captions
and who wrote them -> text features per caption pair -> the sources' network features -> a fused
image per caption pair.

A caption edit re-runs only the text features, the grounding head and the decoder (for a region-grounding
network only the match and the emphasis, over the scene's fused image, as its decoder reads no caption): the
network's trunk (text blocks and cross-source block) reads the pair's *scene* captions, its drafts, and is
computed once per scene (:meth:`PairSession.scene_captions`); perception and the source encoders
never run twice for a session. The app keeps one session per browser session and
pair; ``tgif fuse``, ``tgif eval``, ``tgif steer`` and ``tgif bench session`` go through it too. The
stages stay importable on their own: :mod:`tgif.perception`, :mod:`tgif.captions`, :mod:`tgif.text`
and :mod:`tgif.model`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import torch

from tgif.captions.dataset import CaptionedSource, caption_image
from tgif.io.image import as_rgb_uint8, fit_within
from tgif.io.pair import ImagePair
from tgif.tasks import TaskSpec, task_spec

if TYPE_CHECKING:
    from tgif.model.region_grounding import Region, RegionTokens
    from tgif.model.tgif_net import GuidedFeatures
    from tgif.pipeline import EncodedPair, FusionResult, TGIFFuser

logger = logging.getLogger(__name__)

#: Perception runs on a copy whose longer side is at most this (maps are for reading, not for fusing).
PERCEPTION_MAX_SIDE = 1280
#: Caption pairs whose text features and fused planes a session remembers (least recently used dropped).
CAPTION_CACHE_SIZE = 8
#: Scenes whose trunk output a session remembers (one is the rule: the drafts; least recently used dropped).
SCENE_CACHE_SIZE = 2


def caption_author(caption_text: str, draft: CaptionedSource | None) -> str:
    """Who wrote a caption: ``draft:<captioner>`` when it is the draft as drafted, else ``user``."""
    if draft is not None and caption_text.strip() == draft.caption.text.strip():
        return f"draft:{draft.caption.captioner}"
    return "user"


def draft_notes(drafts: tuple[CaptionedSource | None, CaptionedSource | None]) -> list[str]:
    """What the drafts lacked: degraded perception (e.g. no detector; said once when both sources share it) and
    GPT fallbacks with their reasons."""
    per_source = [list(d.perception.notes) if d is not None else [] for d in drafts]
    notes: list[str] = [note for note in per_source[0] if note in per_source[1]]
    for index, source_notes in enumerate(per_source, 1):
        notes.extend(f"source {index}: {note}" for note in source_notes if note not in notes)
    for index, draft in enumerate(drafts, 1):
        if draft is not None and draft.caption.fallback_reason:
            notes.append(f"caption {index}: GPT failed ({draft.caption.fallback_reason}); "
                         f"drafted by {draft.caption.captioner} instead")
    return notes


def added_text(drafted: tuple[str, str], captions: tuple[str, str]) -> list[str]:
    """The sentences of ``captions`` that their drafts do not have, in order ("Highlight the car on the left.")."""
    import re

    added = []
    for draft, caption in zip(drafted, captions):
        known = {s.strip() for s in re.split(r"(?<=[.!?])\s+", draft) if s.strip()}
        added.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", caption) if s.strip() and s.strip() not in known)
    return added


def pointing_notes(drafted: tuple[str, str], captions: tuple[str, str],
                   pointed: list[tuple[str, tuple[float, float, float, float], float]]) -> list[str]:
    """What a run summary says of where edited captions point: the objects matched (probability >= 0.5), or, when
    the edit names nothing in the pair, that nothing matched it (quoting the added text)."""
    from tgif.model.region_grounding import MATCH_THRESHOLD

    matched = [f"{name} ({100 * chance:.0f}%)" for name, _, chance in pointed if chance >= MATCH_THRESHOLD]
    if matched:
        return [f"The captions point at: {', '.join(matched)}."]
    added = " ".join(added_text(drafted, captions))
    if not added:
        return []
    quoted = added if len(added) <= 120 else added[:117] + "..."
    return [f"Nothing in this pair matched '{quoted}', so the fusion is the drafted captions' one."]


class PairSession:
    """A loaded pair with every stage's result cached (module docstring).

    Args:
        fuser: the TGIF model (with its text encoder, perceiver and captioner).
        pair: the two registered sources.
        task: the task choice (name or :class:`~tgif.tasks.TaskSpec`; default: ``pair.task``, else IVF); its
            modalities name the sources in the drafted captions.

    Thread-safe: one lock serialises a session's stages (two clicks of one user), never two sessions.
    """

    def __init__(self, fuser: TGIFFuser, pair: ImagePair, task: str | TaskSpec | None = None) -> None:
        self.fuser = fuser
        self.pair = pair
        self.spec = task if isinstance(task, TaskSpec) else task_spec(task or pair.task or "ivf")
        if pair.task is not None and pair.task != self.spec.task:
            raise ValueError(f"the pair is {pair.task} but the task is {self.spec.key}")
        self._lock = threading.RLock()
        self._drafts: dict[str, tuple[CaptionedSource, CaptionedSource]] = {}
        self._given_drafts: tuple[CaptionedSource | None, CaptionedSource | None] = (None, None)
        self._encoded: EncodedPair | None = None
        self._texts: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._guided: OrderedDict[tuple[str, str] | None, list[GuidedFeatures]] = OrderedDict()
        self._planes: OrderedDict[tuple[tuple[str, str] | None, tuple[str, str] | None], np.ndarray] = OrderedDict()
        self._luminances: tuple[np.ndarray, np.ndarray] | None = None
        self._scene: tuple[str, str] | None = None
        self._regions: list[Region] | None = None
        self._region_tokens: RegionTokens | None = None
        #: Stage counters (for tests and benchmarks): how often each stage really ran (``guide``: the trunk).
        self.calls = {"perception": 0, "encode_sources": 0, "text": 0, "guide": 0, "decode": 0}

    # ------------------------------------------------------------------------------------------ captions

    def use_drafts(self, drafts: tuple[CaptionedSource | None, CaptionedSource | None]) -> None:
        """Take drafts made elsewhere (the app drafts each source when it is uploaded) instead of drafting again."""
        with self._lock:
            self._given_drafts = drafts

    def drafts(self, mode: str = "full") -> tuple[CaptionedSource, CaptionedSource]:
        """Both sources perceived and captioned (once per mode), each on a copy at most
        :data:`PERCEPTION_MAX_SIDE` on its longer side."""
        with self._lock:
            if mode == "full" and all(d is not None for d in self._given_drafts):
                return self._given_drafts  # type: ignore[return-value]
            if mode not in self._drafts:
                drafted = []
                for index, (source, modality) in enumerate(zip((self.pair.a, self.pair.b), self.spec.modalities)):
                    given = self._given_drafts[index]
                    if mode == "full" and given is not None:
                        drafted.append(given)
                        continue
                    self.calls["perception"] += 1
                    rgb = fit_within(as_rgb_uint8(source.pixels), PERCEPTION_MAX_SIDE)
                    drafted.append(caption_image(rgb, modality=modality, task=self.spec.task,
                                                 perceiver=self.fuser.perceiver, captioner=self.fuser.captioner,
                                                 mode=mode))
                self._drafts[mode] = (drafted[0], drafted[1])
            return self._drafts[mode]

    def drafted_captions(self, mode: str = "full") -> tuple[str, str]:
        """The drafted captions' text."""
        a, b = self.drafts(mode)
        return a.caption.text, b.caption.text

    def set_scene(self, captions: tuple[str, str] | None) -> None:
        """Name the captions the trunk reads for every caption pair this session fuses (None: back to the default,
        see :meth:`scene_captions`), e.g. a dataset's stored drafts; like the drafts, they should describe the pair."""
        with self._lock:
            self._scene = (captions[0], captions[1]) if captions is not None else None

    def scene_captions(self, captions: tuple[str, str]) -> tuple[str, str]:
        """The captions the network's trunk (text blocks, cross-source block) reads when the pair is fused under
        ``captions``; the grounding head and the decoder always read ``captions`` themselves.

        With a grounding head (:attr:`~tgif.pipeline.TGIFFuser.steers_late`) they are the scene: the captions given
        to :meth:`set_scene`, else the pair's drafts (drafted here or given to :meth:`use_drafts`), else
        ``captions``. So a caption edit runs only the head and the decoder over the trunk of the drafts, and the
        drafts themselves, or captions fused in a session that has no drafts, get exactly ``forward``'s output.
        Steering lives in the head: against the trunk reading the edited captions too, ``tgif steer`` on the
        committed model goes from locality 22x to 30x and contrast gain +32% to +29%, and its controls (an absent
        object, a sentence naming nothing) from 0.1 to 0.00 grey levels (weights/README.md). Without a head the
        trunk is all that reads text: ``captions``.
        """
        with self._lock:
            if not self.fuser.steers_late:
                return captions
            if self._scene is not None:
                return self._scene
            drafts = self._drafts.get("full") or (self._given_drafts if all(self._given_drafts) else None)
            if drafts is not None:
                return drafts[0].caption.text, drafts[1].caption.text  # type: ignore[union-attr]
            return captions

    # ------------------------------------------------------------------------------------------ regions

    def set_regions(self, objects: list[tuple[str, tuple[float, float, float, float]]] | None) -> None:
        """Name the objects a caption can point at, (label, box in the pair's pixels) each, e.g. a dataset's stored
        detections (None: back to the drafts' detections, see :meth:`regions`)."""
        from tgif.model.region_grounding import Region

        with self._lock:
            self._regions = [Region(label, tuple(float(v) for v in box)) for label, box in objects] \
                if objects is not None else None
            self._region_tokens = None
            self._planes.clear()

    def regions(self) -> list[Region]:
        """The objects a caption can point at: those given to :meth:`set_regions`, else both drafts' detections
        (drafting the pair when needed) in the pair's pixels, merged over the sources by class and overlap."""
        from tgif.model.region_grounding import Region
        from tgif.train.steer import merge_detections

        with self._lock:
            if self._regions is None:
                height, width = self.pair.a.pixels.shape[:2]
                lists = []
                for draft in self.drafts():
                    found = draft.perception.detections
                    sx, sy = width / max(1, found.image_size[0]), height / max(1, found.image_size[1])
                    lists.append([{"label": d.label, "score": d.score,
                                   "box": (d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy)}
                                  for d in found.items])
                self._regions = [Region(label, tuple(box)) for label, box in merge_detections(*lists)]  # type: ignore[arg-type]
            return self._regions

    def region_tokens(self) -> RegionTokens | None:
        """The network's region input (None for a network that does not ground regions), computed once."""
        if not self.fuser.grounds_regions:
            return None
        with self._lock:
            if self._region_tokens is None:
                height, width = self.pair.a.pixels.shape[:2]
                self._region_tokens = self.fuser.region_tokens(self.regions(), (width, height))
            return self._region_tokens

    def pointed(self, captions: tuple[str, str]) -> list[tuple[str, tuple[float, float, float, float], float]]:
        """Where ``captions`` point: each object's description ("person on the left"), its box in the pair's pixels
        and the probability that the captions name it, most likely first ([] for a network that does not ground
        regions)."""
        tokens = self.region_tokens()
        if tokens is None or not tokens.names[0]:
            return []
        text, mask = self.text_features(captions)
        chances = self.fuser.match_regions(text, mask, tokens)
        found = [(name, region.box, chance) for name, region, chance in zip(tokens.names[0], self.regions(), chances)]
        return sorted(found, key=lambda item: -item[2])

    # ------------------------------------------------------------------------------------------ network

    def luminances(self) -> tuple[np.ndarray, np.ndarray]:
        """The sources' luminance planes (computed once)."""
        with self._lock:
            if self._luminances is None:
                self._luminances = self.pair.luminances()
            return self._luminances

    @functools.cached_property
    def colour(self) -> np.ndarray | None:
        """What the pair's chroma adds to a fused luminance (:meth:`tgif.io.pair.ImagePair.colour`), computed once."""
        return self.pair.colour()

    def colorize(self, plane: np.ndarray) -> np.ndarray:
        """A fused luminance with the pair's colour (:meth:`tgif.io.pair.ImagePair.colorize`)."""
        return self.pair.colorize(plane, self.colour)

    def encoded(self) -> EncodedPair:
        """The sources' network features (stage 1, per tile when tiled), computed once."""
        with self._lock:
            if self._encoded is None:
                self.calls["encode_sources"] += 1
                self._encoded = self.fuser.encode_pair(*self.luminances())
            return self._encoded

    def text_features(self, captions: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features of a caption pair, as the model reads them: cached per caption, so that an edit of one
        caption encodes only that one (the captions missing are encoded in one batch)."""
        from tgif.pipeline import join_captions

        with self._lock:
            misses = [text for text in dict.fromkeys(captions) if text not in self._texts]
            if misses:
                self.calls["text"] += 1
                self._texts.update(zip(misses, self.fuser.encode_captions(misses)))
            for text in captions:
                self._texts.move_to_end(text)
            while len(self._texts) > 2 * CAPTION_CACHE_SIZE:
                self._texts.popitem(last=False)
            return join_captions([self._texts[text] for text in captions])

    def guided(self, scene: tuple[str, str] | None) -> list[GuidedFeatures]:
        """The trunk's output per tile under ``scene`` (None: the no-text path), cached per scene
        (:data:`SCENE_CACHE_SIZE`)."""
        key = (scene[0], scene[1]) if scene is not None else None
        with self._lock:
            if key in self._guided:
                self._guided.move_to_end(key)
                return self._guided[key]
            text, mask = self.text_features(key) if key is not None else (None, None)
            self.calls["guide"] += 1
            guided = self.fuser.guide_pair(self.encoded(), text, mask)
            self._guided[key] = guided
            while len(self._guided) > SCENE_CACHE_SIZE:
                self._guided.popitem(last=False)
            return guided

    def decode(self, captions: tuple[str, str] | None, scene: tuple[str, str] | None = None) -> np.ndarray:
        """The fused (H, W) luminance under ``captions`` (None: the no-text path) over the trunk of ``scene``
        (None: :meth:`scene_captions`), cached per caption pair and scene."""
        key = (captions[0], captions[1]) if captions is not None else None
        if key is not None and scene is None:
            scene = self.scene_captions(key)
        scene = (scene[0], scene[1]) if key is not None and scene is not None else None
        with self._lock:
            if (key, scene) in self._planes:
                self._planes.move_to_end((key, scene))
                return self._planes[(key, scene)]
            text, mask = self.text_features(key) if key is not None else (None, None)
            # the scene's own captions describe the pair and point nowhere: only an edit of them is matched to regions
            regions = self.region_tokens() if key is not None and key != scene else None
            if regions is not None:
                # a region-grounding network's decoder does not read the caption (only its last step, the
                # emphasis of the named objects, does): the edit starts from the scene's own fused plane
                plane = self.fuser.emphasise(self.decode(scene, scene), text, mask, regions)
            else:
                self.calls["decode"] += 1
                plane = self.fuser.decode_pair(self.encoded(), text, mask, guided=self.guided(scene))
            self._planes[(key, scene)] = plane
            while len(self._planes) > CAPTION_CACHE_SIZE:
                self._planes.popitem(last=False)
            return plane

    def fuse(self, captions: tuple[str, str] | None = None, use_text: bool = True,
             reference_captions: tuple[str, str] | None = None, mode: str = "full",
             draft_scene: bool = False) -> FusionResult:
        """Fuse the pair; drafted captions when ``captions`` is None. ``use_text=False`` (or a model trained
        without text) runs the no-text path.

        ``draft_scene``: with a grounding head, draft the pair first (when it has no drafts), so that given
        ``captions`` steer over the drafts' trunk, as the app fuses them (:meth:`scene_captions`); the drafting
        time counts under ``captions``.

        ``reference_captions`` (with text on) also gives the pair fused under them
        (:attr:`~tgif.pipeline.FusionResult.reference_luminance`, one more decoder pass unless cached), e.g. the
        drafted captions, so that the difference is what a caption edit changed.
        """
        from tgif.pipeline import FusionResult

        seconds: dict[str, float] = {}
        use_text = use_text and self.fuser.uses_text
        notes: list[str] = []
        authors = ("", "")
        scene = None
        with self._lock:
            if use_text:
                start = time.perf_counter()
                drafts: tuple[CaptionedSource | None, CaptionedSource | None] = self._given_drafts
                if captions is None:
                    drafts = self.drafts(mode)
                    captions = scene = (drafts[0].caption.text, drafts[1].caption.text)
                elif draft_scene and self.fuser.steers_late:
                    drafts = self.drafts()
                elif mode in self._drafts:
                    drafts = self._drafts[mode]
                authors = (caption_author(captions[0], drafts[0]), caption_author(captions[1], drafts[1]))
                notes.extend(draft_notes(drafts))
                seconds["captions"] = time.perf_counter() - start
                scene = scene or self.scene_captions(captions)
                start = time.perf_counter()
                for texts in (captions, scene, reference_captions):
                    if texts is not None:
                        self.text_features(texts)
                seconds["text"] = time.perf_counter() - start
            start = time.perf_counter()
            plane = self.decode(captions if use_text else None, scene)
            reference = None
            if use_text and reference_captions is not None:
                reference = self.decode(reference_captions)
            seconds["network"] = time.perf_counter() - start
            notes.extend(self.encoded().notes)
            pointed = []
            if use_text and captions is not None and self.fuser.grounds_regions and scene is not None \
                    and tuple(captions) != tuple(scene):
                pointed = self.pointed(captions)
                notes.extend(pointing_notes(scene, captions, pointed))
        used = captions if use_text and captions is not None else ("", "")
        return FusionResult(self.colorize(plane), plane, used, authors, seconds, notes, reference,
                            reference_captions if reference is not None else None, scene, pointed)

    def fuse_texts(self, captions: list[tuple[str, str]]) -> list[np.ndarray]:
        """The fused (H, W) luminance under each caption pair (the sources encoded once, the trunk once per scene:
        :meth:`scene_captions`)."""
        return [self.decode(c) for c in captions]
