"""Event handlers of the demo: analyse a source, fuse the pair, compare two runs.

Handlers take and return plain values for the components of :mod:`app.layout`. Every problem a
user can cause (missing or corrupt image, differing sizes, empty or overlong caption, GPT failure)
is reported with ``gr.Warning`` / ``gr.Info`` or raised as ``gr.Error`` with a specific message;
a result already computed is never thrown away because a later step failed.
"""

from __future__ import annotations

import functools
import inspect
import io
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from app.models import LoadedPair, ModelHub
from tgif import __version__
from tgif.baselines import BASELINES
from tgif.captions.base import Caption, Captioner
from tgif.captions.dataset import CaptionedSource, caption_image
from tgif.captions.redact import scrub
from tgif.captions.steering import add_phrase, box_position, highlight_phrase
from tgif.captions.user_text import clean_caption, markdown_literal
from tgif.errors import PairSizeError, TgifError
from tgif.io.image import (
    SourceImage,
    as_rgb_uint8,
    describe_size,
    fit_within,
    load_image,
    read_size,
    save_image,
    to_uint8,
)
from tgif.io.pair import ImagePair, load_pair
from tgif.metrics import METRICS, PAPER_METRICS, best_value, compute_metrics, gray_levels_of
from tgif.perception import Perception
from tgif.pipeline import FusionResult
from tgif.report import metric_deltas, write_record
from tgif.session import PERCEPTION_MAX_SIDE
from tgif.tasks import TASK_SPECS
from tgif.visualize import ERROR_MAP_VMAX, difference_map, error_map, metrics_chart_html, pointing_map

logger = logging.getLogger(__name__)

#: (label, value) of the task selector, from the one task table (:mod:`tgif.tasks`).
TASK_CHOICES: list[tuple[str, str]] = [(spec.label, key) for key, spec in TASK_SPECS.items()]
TGIF_METHOD = "TGIF"
#: Longest caption accepted from the text box; longer ones are cut with a warning.
MAX_CAPTION_CHARS = 2000
#: Most regions listed in the segmentation view.
MAX_REGIONS_SHOWN = 16


def parse_task(value: str) -> tuple[str, tuple[str, str]]:
    """``"mif-pet"`` -> (``"mif"``, (``"mri"``, ``"pet"``)); raises gr.Error for an unknown value."""
    if value not in TASK_SPECS:
        raise gr.Error(f"Unknown task {value!r}; choose one of: {', '.join(TASK_SPECS)}")
    return TASK_SPECS[value].task, TASK_SPECS[value].folders


def source_labels(task_value: str) -> tuple[str, str]:
    """Readable names of the two sources of a task (``("infrared", "visible")``)."""
    spec = TASK_SPECS.get(task_value)
    return spec.modalities if spec is not None else ("source 1", "source 2")


def user_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into a ``gr.Error`` with their message; anything else into a short, key-free one.

    A user's error (a ``gr.Error`` or a library error) is logged as one line and gradio is told not to print its
    traceback; only an unexpected error writes a traceback to the server log. A generator handler (one that
    yields partial results) is wrapped as a generator, its errors translated wherever it raises them.
    """
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def wrapped_generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with _as_user_error(handler.__name__):
                yield from handler(*args, **kwargs)

        return wrapped_generator

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _as_user_error(handler.__name__):
            return handler(*args, **kwargs)

    return wrapped


@contextmanager
def _as_user_error(name: str) -> Iterator[None]:
    """The error translation of :func:`user_errors` for the handler called ``name``."""
    try:
        yield
    except gr.Error as exc:
        logger.info("%s: user error: %s", name, exc)
        exc.print_exception = False
        raise
    except TgifError as exc:
        message = _clean(str(exc))
        logger.info("%s: user error: %s", name, message)
        raise gr.Error(message, print_exception=False) from None
    except Exception as exc:  # noqa: BLE001 - the page must get a message, never a stack trace
        logger.exception("%s failed", name)
        raise gr.Error(f"Unexpected error in {name}: {_clean(f'{type(exc).__name__}: {exc}')}"
                       " (details in the server log)", print_exception=False) from None


def _clean(message: str) -> str:
    return scrub(message, os.environ.get("OPENAI_API_KEY"))


def warn_once(hub: ModelHub, session_id: str, message: str) -> None:
    """Show ``message`` as a warning toast unless this browser session has already been shown it."""
    if hub.first_time(session_id, message):
        gr.Warning(message)


def _load_source(path: str | None, which: int, task_value: str, hub: ModelHub, session_id: str) -> SourceImage:
    if not path:
        raise gr.Error(f"Source {which} ({source_labels(task_value)[which - 1]}) is missing: upload an image.")
    source = load_image(path, name=Path(path).name, max_pixels=hub.config.max_pixels, on_large="downscale")
    for note in source.notes:
        if "downscal" in note:
            warn_once(hub, session_id, f"{source.name}: {note}")
    return source


# ---------------------------------------------------------------------------------------------- analysis


@dataclass
class Analysis:
    """Maps and caption of one source, shaped for the UI."""

    detection: tuple[np.ndarray, list[tuple[tuple[int, int, int, int], str]]]
    segmentation: tuple[np.ndarray, list[tuple[np.ndarray, str]]]
    classes: str
    caption: str
    caption_note: str
    objects: list[tuple[str, str]]  # (class, position) of each detection, in the order of the detection chips


def describe_caption_source(caption: Caption) -> str:
    """One line for the UI saying who wrote a caption (and why a fallback was used)."""
    if caption.fallback_reason:
        return (f"⚠️ GPT could not caption this image ({_clean(caption.fallback_reason)}); "
                f"the offline drafter ({caption.captioner}) wrote it instead.")
    if caption.captioner.startswith("gpt"):
        model = caption.captioner.partition(":")[2] or caption.captioner
        return f"Drafted by GPT ({model}, prompt {caption.prompt_version})."
    return f"Drafted offline by the template drafter ({caption.prompt_version}); set OPENAI_API_KEY for GPT captions."


def detected_objects(perception: Perception) -> list[tuple[str, str]]:
    """(class, position in the frame) of each detection: what a click on its chip names in the caption."""
    width, height = perception.detections.image_size
    return [(d.label, box_position(d.box, width, height)) for d in perception.detections.items]


def _annotations(rgb: np.ndarray, perception: Perception) -> tuple[tuple, tuple]:
    # chips read "person on the left": clicking one adds a phrase naming that object to the caption
    boxes = [((int(round(d.box[0])), int(round(d.box[1])), int(round(d.box[2])), int(round(d.box[3]))),
              f"{label} {position}")
             for d, (label, position) in zip(perception.detections.items, detected_objects(perception))]
    regions, scene = [], 0
    for region in perception.segmentation.regions[:MAX_REGIONS_SHOWN]:
        if region.kind == "object":
            label = region.label
        else:
            scene += 1
            label = f"region {scene}"
        regions.append((region.mask.astype(np.float32), label))
    return (rgb, boxes), (rgb, regions)


def _draft(hub: ModelHub, pixels: np.ndarray, modality: str, task: str, session_id: str,
           captioner: Captioner | None = None) -> tuple[np.ndarray, CaptionedSource]:
    """Perceive a source (at most PERCEPTION_MAX_SIDE) and draft its caption (by ``captioner``, default the hub's);
    what perception lacked is a warning (once per browser session)."""
    rgb = fit_within(as_rgb_uint8(pixels), PERCEPTION_MAX_SIDE)
    drafted = caption_image(rgb, modality=modality, task=task, perceiver=hub.perceiver(),
                            captioner=captioner or hub.captioner())
    for note in drafted.perception.notes:
        warn_once(hub, session_id, _clean(note))
    return rgb, drafted


def analyze_source(hub: ModelHub, path: str | None, task_value: str, which: int,
                   session_id: str = "default") -> Analysis | None:
    """Detect, segment and draft a caption for one uploaded source; None when no image is given.

    Whether the two sources fit together (sizes) is checked when Fuse is pressed, not here: while a user
    replaces a pair one image at a time, or switches the task, the sources differ for a moment by design.
    """
    if not path:
        return None
    task, _ = parse_task(task_value)
    source = _load_source(path, which, task_value, hub, session_id)
    rgb, drafted = _draft(hub, source.pixels, source_labels(task_value)[which - 1], task, session_id)
    hub.remember_draft((path, task_value, which), drafted)
    if drafted.caption.fallback_reason:  # also written under the caption; the toast once per cause
        warn_once(hub, session_id, describe_caption_source(drafted.caption))
    counts = drafted.perception.detections.counts()
    found = ", ".join(f"{n} × {label}" for label, n in counts.items()) if counts else "no objects"
    classes = (f"**Detected:** {found} · {len(drafted.perception.segmentation.regions)} regions "
               f"({drafted.perception.segmentation.backend}, {drafted.perception.detections.model})")
    detection, segmentation = _annotations(rgb, drafted.perception)
    if drafted.perception.detections.items:
        classes += " · click a detected object to ask for it to stand out"
    return Analysis(detection, segmentation, classes, drafted.caption.text, describe_caption_source(drafted.caption),
                    detected_objects(drafted.perception))


def add_object_phrase(caption: str, objects: list[tuple[str, str]] | list[list[str]], index: Any) -> str:
    """The caption with a phrase that names and highlights detection ``index`` ("Highlight the person on the
    left."); unchanged when the index is not one of ``objects`` or the phrase is already there."""
    if not isinstance(index, int) or not 0 <= index < len(objects):
        return caption
    label, position = objects[index]
    return add_phrase(caption or "", highlight_phrase(label, position))


# ---------------------------------------------------------------------------------------------- fusion


@dataclass
class FusionOutputs:
    """Everything one Fuse click shows."""

    fused: np.ndarray  # 8-bit; the same pixels as ``run["png"]`` (source views: ``run["sources"]``)
    error_1: np.ndarray
    error_2: np.ndarray
    table: pd.DataFrame
    chart: str  # the metric chart as HTML (tgif.visualize.metrics_chart_html)
    summary: str
    files: list[str]
    run: dict[str, Any]
    text_effect: np.ndarray | None = None  # this run minus the drafted captions' run (grey-level colour scale)
    #: the maps above as PNG files in the run's folder ("error_1", "error_2" and, when there are, "text_effect" and
    #: "pointing"), which the page is given instead of the arrays (gradio would encode them again, 5x slower)
    map_files: dict[str, str] = field(default_factory=dict)
    #: where the edited captions point: the objects over the fused image, the matched ones in amber with how sure
    #: the network is (a region-grounding model and captions that edit the drafts; None otherwise)
    pointing: np.ndarray | None = None


def metric_table(scores: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Rows = methods, columns = metrics (rounded for display)."""
    rows = [{"Method": method, **{k: round(v, 3) for k, v in values.items()}} for method, values in scores.items()]
    return pd.DataFrame(rows)


#: How the best value of each metric column is marked in the metric table.
BEST_CELL_STYLE = "font-weight: bold; background-color: #fde2c8"


def mark_best(table: pd.DataFrame) -> Any:
    """``table`` styled for display: the best value of each metric column (in the metric's direction) in bold on
    an orange tint; the values themselves are unchanged (what the API returns)."""
    def column(values: pd.Series) -> list[str]:
        if values.name not in METRICS:
            return [""] * len(values)
        best = best_value(str(values.name), values.astype(float))
        return [BEST_CELL_STYLE if value == best else "" for value in values]

    return table.style.apply(column, axis=0).format(precision=3)


def validate_fuse(path_1: str | None, path_2: str | None, task_value: str, *settings: Any) -> list[dict[str, Any]]:
    """Gradio validator of Fuse, run before the job is queued: both sources are there, readable and, unless
    “Resize” is ticked, of one size (read from the files' headers). It takes the Fuse event's inputs (sources,
    task, then caption 1, caption 2, text, method, resize, slider choice, history) and gives one ``gr.validate``
    per input; a failed check is shown once, on its input, and no output changes.
    """
    resize = bool(settings[4])
    names = source_labels(task_value)
    checks = [gr.validate(bool(path), f"Source {which} ({names[which - 1]}) is missing: upload an image.")
              for which, path in ((1, path_1), (2, path_2))]
    sizes = [read_size(path) if path else None for path in (path_1, path_2)]
    for index, path in enumerate((path_1, path_2)):
        if path and sizes[index] is None:
            checks[index] = gr.validate(False, f"{Path(path).name}: not a readable image file (unknown or corrupt "
                                               "format); upload another image.")
    others = [gr.validate(True, "") for _ in (task_value, *settings)]
    if not resize and None not in sizes and sizes[0] != sizes[1]:
        # said on the Resize option (the remedy), not on source 2: a source's own analysis, still running when
        # Fuse is clicked right after an upload, clears the messages shown on that source when it ends
        others[5] = gr.validate(False, f"The sources differ in size ({describe_size(sizes[0])} vs "
                                       f"{describe_size(sizes[1])}): tick “Resize source 2 to source 1” to fuse them.")
    return [*checks, *others]


def _clean_captions(captions: list[str]) -> list[str]:
    """Clean both captions (control characters out; unencodable text is an error) and cut overlong ones; an empty
    result stays empty (it is drafted: :func:`_run_drafts`)."""
    cleaned = []
    for index in range(2):
        text = clean_caption(captions[index] or "", f"Caption {index + 1}")
        if len(text) > MAX_CAPTION_CHARS:
            gr.Warning(f"Caption {index + 1} is {len(text)} characters long; "
                       f"only its first {MAX_CAPTION_CHARS} are used.")
            text = text[:MAX_CAPTION_CHARS]
        cleaned.append(text)
    return cleaned


#: How a run's record names where each draft it used came from (``run["drafts"]``).
DRAFT_ORIGINS = {
    "analysis": "the upload's analysis",
    "empty": "drafted at Fuse for an empty caption",
    "typed": "drafted offline at Fuse (caption typed: no caption-server request)",
}


def _run_drafts(hub: ModelHub, pair: ImagePair, paths: tuple[str | None, str | None], task_value: str,
                captions: list[str], session_id: str) -> tuple[list[CaptionedSource], list[str]]:
    """The drafts a TGIF run reads (the text-effect reference, the network trunk's scene, empty captions) and where
    each came from (a key of :data:`DRAFT_ORIGINS`).

    An upload's analysis already drafted its source: that draft is used. Otherwise only an empty caption is
    drafted by the configured captioner (GPT when set up); for a typed caption, whose draft no one reads, the
    offline template drafter writes it, so a script that sends its own captions never pays for a GPT call.
    """
    drafts: list[CaptionedSource] = []
    origins: list[str] = []
    for which, (path, caption, source) in enumerate(zip(paths, captions, (pair.a, pair.b)), start=1):
        key = (path, task_value, which)
        draft, origin = hub.draft(key), "analysis"
        if draft is None:
            origin = "typed" if caption else "empty"
            offline = (*key, "template")  # kept apart: an emptied caption later still gets the captioner's draft
            draft = hub.draft(offline) if caption else None
            if draft is None:
                draft = _draft(hub, source.pixels, source_labels(task_value)[which - 1], pair.task or "ivf",
                               session_id, captioner=hub.offline_captioner() if caption else None)[1]
                hub.remember_draft(offline if caption else key, draft)
        drafts.append(draft)
        origins.append(origin)
    return drafts, origins


def _load_pair(hub: ModelHub, path_1: str | None, path_2: str | None, task_value: str, task: str,
               resize: bool, session_id: str) -> tuple[ImagePair, list[str]]:
    """Decode both uploads into a pair (source 2 resized to source 1 when asked); returns the pair and notes."""
    source_a = _load_source(path_1, 1, task_value, hub, session_id)
    source_b = _load_source(path_2, 2, task_value, hub, session_id)
    try:
        return ImagePair(source_a, source_b, id=Path(path_1 or "pair").stem, task=task), []
    except PairSizeError as exc:
        if not resize:
            raise gr.Error(f"{exc}. Tick “Resize source 2 to source 1” to fuse them anyway.") from None
        pair = load_pair(path_1, path_2, resize=True, max_pixels=hub.config.max_pixels, on_large="downscale",
                         names=(source_a.name, source_b.name), task=task)
        note = f"{source_b.name} was resized to {describe_size(pair.size)} to match {source_a.name}."
        gr.Info(note)
        return pair, [note]


@contextmanager
def _network(hub: ModelHub, progress: Callable[..., Any]) -> Iterator[None]:
    """A network slot for this job, its wait shown in the progress bar and bounded by ``TGIF_APP_JOB_TIMEOUT``."""
    with ExitStack() as stack:
        try:
            stack.enter_context(hub.network_slot(lambda ahead: progress(0.3, desc=_waiting_text(ahead)),
                                                 timeout=hub.config.job_timeout))
        except TimeoutError:
            raise gr.Error(f"The server is busy: this job waited {hub.config.job_timeout} s for the network without "
                           "getting its turn. Try again in a minute.") from None
        yield


def _waiting_text(ahead: int) -> str:
    """What a job waiting for a network slot shows in its progress bar."""
    if not ahead:
        return "Waiting for the network: the job before this one is finishing"
    return f"Waiting for the network: {ahead} job{'s' if ahead > 1 else ''} ahead of this one"


@dataclass
class FusedImage:
    """The first result of a Fuse click (:func:`fuse_image`): the fused image, already on disk with the source views
    (what the page shows first), and what :func:`finish_run` needs to score, map and record the run."""

    number: int
    run_id: str
    folder: Path
    stem: str
    task: str
    task_value: str
    method: str  # the method chosen (TGIF_METHOD or a baseline)
    label: str  # the run's label ("TGIF", "TGIF (no text)", a baseline)
    use_text: bool
    entry: LoadedPair
    fused: np.ndarray  # float in [0, 1], the pixels of ``png``
    png: Path
    views: list[Path]
    captions: list[str]
    authors: list[str]
    scene: list[str] | None
    drafts: list[dict[str, str]] | None  # the drafts a TGIF run with text read, and their origin
    notes: list[str]
    seconds: dict[str, float]
    started: float  # time.perf_counter() at the click
    result: FusionResult | None = None  # the TGIF run's result (None for a baseline)

    @property
    def summary(self) -> str:
        """What the page says while the rest of the run is computed."""
        return (f"**Run {self.number}: {self.label}** · fused in {time.perf_counter() - self.started:.2f} s; "
                "maps, metrics and downloads follow…")


def run_fusion(hub: ModelHub, path_1: str | None, path_2: str | None, task_value: str, caption_1: str,
               caption_2: str, use_text: bool, method: str, resize: bool, run_number: int,
               progress: Callable[..., Any] = lambda *a, **k: None, session_id: str = "default") -> FusionOutputs:
    """Fuse, score and render one run of the browser session ``session_id`` (:func:`fuse_image`, then
    :func:`finish_run`); writes its PNG, JSON and CSV."""
    return finish_run(hub, fuse_image(hub, path_1, path_2, task_value, caption_1, caption_2, use_text, method,
                                      resize, run_number, progress, session_id), progress)


def fuse_image(hub: ModelHub, path_1: str | None, path_2: str | None, task_value: str, caption_1: str,
               caption_2: str, use_text: bool, method: str, resize: bool, run_number: int,
               progress: Callable[..., Any] = lambda *a, **k: None, session_id: str = "default") -> FusedImage:
    """The first half of a run: load the pair, fuse it, write the fused PNG and the source views.

    The pair is decoded once per browser session and pair (:meth:`ModelHub.loaded_pair`) and fused through
    its :class:`~tgif.session.PairSession`: a caption edit re-runs only the text features and the decoder.
    Captions are drafted (when empty, and for the text-effect reference) before the job takes a network slot
    (:meth:`ModelHub.network_slot`); only the fusion itself holds one.
    With TGIF and text on, the pair is also decoded under the drafted captions (the uploads' analyses, or drafted
    now: by the configured captioner for an empty caption, offline for a typed one, see :func:`_run_drafts`; the
    record's ``drafts`` says which): the run's text-effect map (:func:`finish_run`) is this run minus that one,
    i.e. what the caption edits changed.
    """
    started = time.perf_counter()
    task, _ = parse_task(task_value)
    progress(0.02, desc="Loading images")
    for which, path in ((1, path_1), (2, path_2)):
        if not path:
            _load_source(path, which, task_value, hub, session_id)  # the "source is missing" error
    entry, _ = hub.loaded_pair((session_id, path_1, path_2, task_value, bool(resize)),
                               lambda: _load_pair(hub, path_1, path_2, task_value, task, resize, session_id))
    pair = entry.pair
    seconds: dict[str, float] = {"load": time.perf_counter() - started}
    notes: list[str] = list(entry.notes)
    captions, authors, scene = ["", ""], ["", ""], None
    record_drafts: list[dict[str, str]] | None = None  # the drafts a TGIF run with text read, and their origin
    result = None
    if method == TGIF_METHOD:
        if not hub.has_tgif(task):
            raise gr.Error(f"The TGIF model for {task.upper()} is missing ({hub.weights(task).name}); "
                           "pick a classic method or add the weights.")
        progress(0.1, desc="Loading the TGIF model")
        start = time.perf_counter()
        session = hub.pair_session(entry, task_value)
        fuser = session.fuser
        seconds["model"] = time.perf_counter() - start
        use_text = bool(use_text) and fuser.uses_text
        reference = None
        if use_text:
            progress(0.2, desc="Checking captions")
            start = time.perf_counter()
            captions = _clean_captions([caption_1, caption_2])
            drafts, draft_origins = _run_drafts(hub, pair, (path_1, path_2), task_value, captions, session_id)
            session.use_drafts((drafts[0], drafts[1]))
            for index, draft in enumerate(drafts):
                if not captions[index]:
                    captions[index] = draft.caption.text
                    gr.Info(f"Caption {index + 1} was empty, so one was drafted: “{captions[index][:80]}…”")
            record_drafts = [{"captioner": draft.caption.captioner, "from": DRAFT_ORIGINS[origin]}
                             for draft, origin in zip(drafts, draft_origins)]
            offline = [str(index + 1) for index, origin in enumerate(draft_origins) if origin == "typed"]
            if offline and hub.captioner().name != hub.offline_captioner().name:
                notes.append(f"Caption {' and '.join(offline)} typed: the draft{'s' if len(offline) > 1 else ''} "
                             "the text-effect map compares with came from the offline template drafter, not GPT "
                             "(no caption-server request).")
            if fuser.max_tokens:
                for index, text in enumerate(captions):
                    count = fuser.text_encoder.token_count(text)
                    if count > fuser.max_tokens:  # as in training, so a note rather than a warning
                        gr.Info(f"Caption {index + 1} has {count} tokens; the model reads its first "
                                f"{fuser.max_tokens} (the length it was trained with).")
            reference = session.drafted_captions()
            seconds["captions"] = time.perf_counter() - start
            if tuple(captions) == reference:
                reference = None
                notes.append("The captions are the drafts, so the text-effect map is empty: add a phrase (or click a "
                             "detected object) and fuse again to see what it changes.")
        with _network(hub, progress):
            progress(0.35, desc="Encoding captions and running the network" if use_text else "Running the network")
            result = session.fuse(tuple(captions) if use_text else None, use_text=use_text,
                                  reference_captions=reference)
        authors = list(result.caption_sources)
        scene = list(result.scene_captions) if result.scene_captions is not None else None
        fused = result.image
        for key, value in result.seconds.items():
            seconds[key] = seconds.get(key, 0.0) + value
        notes.extend(result.notes)
        label = "TGIF" if use_text else "TGIF (no text)"
    else:
        with _network(hub, progress):
            progress(0.35, desc=f"Fusing with {method}")
            start = time.perf_counter()
            fused = BASELINES[method].fuse(pair)
            seconds["network"] = time.perf_counter() - start
        label, use_text = method, False
    run_id = f"run{run_number:02d}-{secrets.token_hex(8)}"  # 64 random bits: run-file URLs are not guessable
    folder = hub.config.output_dir / run_id
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"tgif_{task}_{run_id}"
    png = save_image(folder / f"{stem}.png", fused, png_level=RUN_PNG_LEVEL)
    views = []
    for index, data in enumerate(_source_view_pngs(entry)):
        views.append(folder / f"source_{index + 1}.png")
        views[-1].write_bytes(data)
    return FusedImage(run_number, run_id, folder, stem, task, task_value, method, label, use_text, entry, fused, png,
                      views, captions, authors, scene, record_drafts, notes, seconds, started, result)


def finish_run(hub: ModelHub, run: FusedImage,
               progress: Callable[..., Any] = lambda *a, **k: None) -> FusionOutputs:
    """The second half of a run: the text-effect map (TGIF with text), the metrics against the classic baselines,
    the error maps and chart, and the run's record (JSON, CSV)."""
    pair, fused, label, seconds, notes = run.entry.pair, run.fused, run.label, run.seconds, run.notes
    text_effect, text_stats = None, None
    result = run.result
    if result is not None and result.reference_luminance is not None:
        text_effect, vmax = difference_map(result.reference_luminance, result.luminance,
                                           vmax=max(TEXT_EFFECT_MIN_SCALE, _effect_scale(result)))
        change = np.abs(result.luminance - result.reference_luminance) * 255.0
        text_stats = {"mean_abs": float(change.mean()), "max_abs": float(change.max()),
                      "changed_3_levels": float((change >= 3).mean()), "scale": vmax * 255.0}
        notes.append(f"Text effect (this run − drafted captions): mean |Δ| {text_stats['mean_abs']:.2f} grey "
                     f"levels, max {text_stats['max_abs']:.0f}; "
                     f"{100 * text_stats['changed_3_levels']:.1f}% of pixels "
                     "changed by 3 levels or more.")
    progress(0.1, desc="Scoring against the classic baselines")
    start = time.perf_counter()
    source_levels = gray_levels_of(pair.a.pixels), gray_levels_of(pair.b.pixels)
    scores = {label: compute_metrics(gray_levels_of(fused), *source_levels)}
    for name, values in hub.baselines(pair, entry=run.entry).items():
        if name != label:
            scores[name] = values
    seconds["metrics"] = time.perf_counter() - start
    progress(0.7, desc="Drawing maps and saving files")
    start = time.perf_counter()
    errors = [error_map(fused, source.pixels) for source in (pair.a, pair.b)]
    chart = metrics_chart_html(scores, highlight=label, metrics=PAPER_METRICS,
                               title=f"{label} vs classic baselines on this pair")
    names = source_labels(run.task_value)
    tgif = run.method == TGIF_METHOD
    record = {
        "run": run.run_id, "tgif_version": __version__, "task": run.task, "task_choice": run.task_value,
        "sources": [{"name": s.name, "modality": n, "size": list(s.size), "original_size": list(s.original_size),
                     "notes": s.notes} for s, n in zip((pair.a, pair.b), names)],
        "method": label, "use_text": run.use_text, "captions": run.captions, "caption_authors": run.authors,
        "scene_captions": run.scene, "drafts": run.drafts,
        "weights": hub.weights(run.task).name if tgif else None,
        "device": hub.device_label if tgif else "CPU", "seconds": seconds, "notes": notes,
        "metrics": scores, "text_effect": text_stats,
        "pointed": [{"object": name, "box": [round(float(v), 1) for v in box], "probability": round(chance, 4)}
                    for name, box, chance in result.pointed] if result is not None else [],
    }
    files = {"png": run.png, **write_record(run.folder, run.stem, record)}
    pointing = pointing_map(fused, result.pointed) if result is not None and result.pointed else None
    maps = {"error_1": errors[0], "error_2": errors[1], "text_effect": text_effect, "pointing": pointing}
    map_files = {name: str(save_image(run.folder / f"{name}.png", pixels, png_level=RUN_PNG_LEVEL))
                 for name, pixels in maps.items() if pixels is not None}
    seconds["render"] = time.perf_counter() - start
    total = time.perf_counter() - run.started
    stage_text = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in seconds.items())
    summary = (f"**Run {run.number}: {label}** on {hub.device_label if tgif else 'CPU'} · "
               f"{describe_size(pair.size)} · {total:.2f} s ({stage_text})")
    if notes:
        summary += "\n\n" + "\n".join(f"- {n}" for n in notes)
    progress(1.0, desc="Done")
    history_entry = {
        "number": run.number, "label": f"Run {run.number} · {label}", "png": str(run.png),
        "captions": run.captions, "use_text": run.use_text, "method": label, "metrics": scores[label],
        "sources": [str(path) for path in run.views],
    }
    return FusionOutputs(to_uint8(fused), errors[0], errors[1], metric_table(scores), chart, summary,
                         [str(p) for p in files.values()], history_entry, text_effect, map_files, pointing)


#: zlib level of the PNG files a run writes (fused image, source views, maps): the same pixels as Pillow's
#: default level 6, written about 5x faster (20 ms instead of 100 ms for a 640x480 colour image), ~15% larger.
RUN_PNG_LEVEL = 1


def _source_view_pngs(entry: LoadedPair) -> list[bytes]:
    """Both sources of a loaded pair as 8-bit PNG files' bytes, encoded once per pair (every run writes them)."""
    with entry.lock:
        if entry.view_pngs is None:
            encoded = []
            for source in (entry.pair.a, entry.pair.b):
                with io.BytesIO() as buffer:
                    Image.fromarray(to_uint8(source.pixels)).save(buffer, format="png", compress_level=RUN_PNG_LEVEL)
                    encoded.append(buffer.getvalue())
            entry.view_pngs = encoded
        return entry.view_pngs


#: Smallest half-width of the text-effect colour scale (in [0, 1] units: 2 grey levels), so that noise-level
#: changes do not fill the map with colour.
TEXT_EFFECT_MIN_SCALE = 2.0 / 255.0


def _effect_scale(result: FusionResult) -> float:
    """The text-effect map's half-width: the 99.9th percentile of |Δ| (a few strong pixels set it)."""
    return float(np.percentile(np.abs(result.luminance - result.reference_luminance), 99.9))


def add_to_history(history: list[dict[str, Any]], run: dict[str, Any], limit: int,
                   output_dir: Path) -> list[dict[str, Any]]:
    """The session's history with ``run`` appended, cut to its ``limit`` newest runs; the files of the runs cut
    are deleted (:func:`discard_run_files`), so the output folder holds only runs someone can still compare."""
    history = [*history, run]
    for old in history[:-limit]:
        discard_run_files(old, output_dir)
    return history[-limit:]


def discard_run_files(run: dict[str, Any], output_dir: Path) -> None:
    """Delete a run's folder (PNG, JSON, CSV, source views) once it leaves the session's history; only a folder
    inside ``output_dir`` is ever deleted."""
    folder = Path(run["png"]).parent.resolve()
    root = Path(output_dir).resolve()
    if folder.parent == root and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    """Run A against run B."""

    image_a: np.ndarray | None
    image_b: np.ndarray | None
    difference: np.ndarray | None
    table: pd.DataFrame
    text: str


def find_run(runs: list[dict[str, Any]], label: str | None) -> dict[str, Any] | None:
    """The run whose label is ``label`` (None when absent)."""
    return next((run for run in runs if run["label"] == label), None)


def compare_runs(run_a: dict[str, Any] | None, run_b: dict[str, Any] | None) -> Comparison:
    """Images, difference map (B − A), metric deltas and both captions of two runs."""
    empty = pd.DataFrame(columns=["Metric", "Run A", "Run B", "B − A"])
    if run_a is None or run_b is None:
        return Comparison(None, None, None, empty, "Fuse twice (e.g. after editing a caption) to compare two runs.")
    image_a = load_image(run_a["png"]).pixels
    image_b = load_image(run_b["png"]).pixels
    deltas = metric_deltas(run_a["metrics"], run_b["metrics"])
    table = pd.DataFrame([{"Metric": name, "Run A": round(run_a["metrics"][name], 4),
                           "Run B": round(run_b["metrics"][name], 4), "B − A": round(delta, 4)}
                          for name, delta in deltas.items()])
    lines = [f"**A = {run_a['label']}** · captions: " + _caption_line(run_a),
             f"**B = {run_b['label']}** · captions: " + _caption_line(run_b)]
    difference = None
    if image_a.shape[:2] != image_b.shape[:2]:
        lines.append("The two runs are of different pairs or sizes: no difference map.")
    else:
        difference, vmax = difference_map(image_a, image_b)
        change = np.abs(gray_levels_of(image_b) - gray_levels_of(image_a))
        lines.append(f"Difference B − A: mean |Δ| {change.mean():.2f} grey levels, max {change.max():.0f}; "
                     f"{(change > 0).mean() * 100:.1f}% of pixels changed (colour scale ±{vmax * 255:.1f} levels).")
    return Comparison(to_uint8(image_a), to_uint8(image_b), difference, table, "\n\n".join(lines))


def _caption_line(run: dict[str, Any]) -> str:
    if not run["use_text"]:
        return "*(text guidance off)*"
    return " | ".join(f"“{markdown_literal(c)}”" for c in run["captions"])


__all__ = [
    "ERROR_MAP_VMAX",
    "MAX_CAPTION_CHARS",
    "TASK_CHOICES",
    "TGIF_METHOD",
    "TEXT_EFFECT_MIN_SCALE",
    "Analysis",
    "Comparison",
    "FusedImage",
    "FusionOutputs",
    "add_object_phrase",
    "analyze_source",
    "add_to_history",
    "compare_runs",
    "discard_run_files",
    "find_run",
    "finish_run",
    "fuse_image",
    "mark_best",
    "metric_table",
    "parse_task",
    "run_fusion",
    "source_labels",
    "user_errors",
]
