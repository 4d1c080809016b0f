"""The demo's one screen: inputs and maps per source, captions, Fuse, results, run comparison.

Named API endpoints (for ``gradio_client``): ``/analyze_1``, ``/analyze_2`` (maps + drafted
caption of one source), ``/fuse`` (the whole run), ``/compare`` (two runs of this session).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from app.callbacks import (
    MAX_CAPTION_CHARS,
    RUN_PNG_LEVEL,
    TASK_CHOICES,
    TGIF_METHOD,
    FusedImage,
    FusionOutputs,
    add_object_phrase,
    add_to_history,
    analyze_source,
    compare_runs,
    discard_run_files,
    find_run,
    finish_run,
    fuse_image,
    mark_best,
    parse_task,
    run_fusion,
    source_labels,
    user_errors,
    validate_fuse,
)
from app.config import AppConfig
from app.models import ModelHub
from tgif.baselines import BASELINES
from tgif.io.image import save_image
from tgif.visualize import ERROR_MAP_VMAX

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "examples"
#: Bundled example pairs: (task choice, source 1, source 2). IVF: real TNO pairs (assets/examples/tno/LICENCE.md);
#: MIF, MEF and MFF: synthetic, as no real pair of those may be redistributed (assets/README.md).
EXAMPLES: list[tuple[str, str, str]] = [
    ("ivf", "tno/kaptein_1654/ir.png", "tno/kaptein_1654/vi.png"),
    ("ivf", "tno/marne_24/ir.png", "tno/marne_24/vi.png"),
    ("ivf", "tno/bosnia/ir.png", "tno/bosnia/vi.png"),
    ("mif-ct", "mif/mri.png", "mif/ct.png"),
    ("mef", "mef/under.png", "mef/over.png"),
    ("mff", "mff/near.png", "mff/far.png"),
]
#: The fusion queue (TGIF_APP_CONCURRENCY jobs at once) and the drafting queue (maps + captions of an upload,
#: TGIF_APP_DRAFT_CONCURRENCY at once): a slow GPT caption never holds up someone else's Fuse.
MODEL_QUEUE = "models"
DRAFT_QUEUE = "drafting"
SLIDER_CHOICES = ["source 1", "source 2"]
#: ``gr.Blocks(delete_cache=...)``: (how often, how old) in seconds.
GRADIO_CACHE_CLEANUP = (1800, 3600)
#: The page's CSS (``demo.launch(css=CSS)``): a refusal said on the Resize option (gr.validate) is by default an
#: overlay that hides the very option it asks the user to tick; it is shown above the option instead.
CSS = ("#resize > [data-testid='status-tracker'] { position: relative !important; height: auto !important; "
       "overflow: visible !important; }\n"
       "#resize > [data-testid='status-tracker'] .validation-error { position: static !important; }")


class SourceUpload(gr.Image):
    """``gr.Image`` that hands the uploaded file to the handler untouched.

    Gradio's own preprocessing opens the file with PIL (a corrupt file then fails with PIL's message);
    here ``tgif.io.load_image`` decodes it, with its 16-bit, palette and CMYK handling and its errors.
    """

    is_template = True  # rendered by the frontend's Image component

    def preprocess(self, payload: Any) -> str | None:  # noqa: D401 - gradio hook
        """The uploaded file's path (or None)."""
        if payload is None:
            return None
        return str(payload.path)


def _methods(hub: ModelHub, task: str) -> tuple[list[str], str, str]:
    """Method choices, the default, and a notice when the TGIF model is missing."""
    methods = [*BASELINES][::-1]  # laplacian, max, average
    if hub.has_tgif(task):
        return [TGIF_METHOD, *methods], TGIF_METHOD, ""
    notice = (f"⚠️ The TGIF model for {task.upper()} is missing (`weights/{hub.weights(task).name}`): "
              "the classic baselines are offered instead.")
    return methods, "laplacian", notice


def _session_id(request: gr.Request | None) -> str:
    """The browser session of a request (``"default"`` outside one, e.g. in tests)."""
    return getattr(request, "session_hash", None) or "default"


def build_demo(config: AppConfig | None = None, hub: ModelHub | None = None) -> gr.Blocks:
    """Build the Blocks app (not launched). ``config`` defaults to the environment's settings."""
    config = config or AppConfig.from_env()
    hub = hub or ModelHub(config)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    first_methods, first_method, first_notice = _methods(hub, "ivf")
    labels = source_labels("ivf")

    # Gradio's own upload/output cache: every 30 min, files older than an hour go (and all of it at shutdown)
    with gr.Blocks(title="TGIF · Text-Guided Image Fusion", analytics_enabled=False,
                   delete_cache=GRADIO_CACHE_CLEANUP) as demo:
        gr.Markdown(
            "# TGIF · Text-Guided Image Fusion\n"
            "Upload two images of one scene (or pick an example right under the Fuse button), check the maps and "
            "the drafted captions, edit them (click a detected object to ask for it to stand out), and press **Fuse**. "
            "Fuse again with another caption to see how text steers the result."
        )
        device = f"**Network device:** {hub.device_label}" + (f" · {hub.device_note}" if hub.device_note else "")
        gr.Markdown(device, elem_id="device")
        # when gradio drops a closed session's state (an hour after the tab closed), its runs' files go too
        runs = gr.State([], delete_callback=lambda history: [discard_run_files(run, config.output_dir)
                                                             for run in history or []])
        drafts = gr.State({})
        with gr.Row():
            task = gr.Dropdown(TASK_CHOICES, value="ivf", label="Task", elem_id="task")
            method = gr.Dropdown(first_methods, value=first_method, label="Method", elem_id="method")
        notice = gr.Markdown(first_notice, elem_id="notice")

        sources: list[dict[str, Any]] = []
        with gr.Row():
            for which in (1, 2):
                with gr.Column():
                    parts = {
                        "image": SourceUpload(label=f"Source {which} · {labels[which - 1]}", type="filepath",
                                              sources=["upload", "clipboard"], height=200,
                                              elem_id=f"source_{which}"),
                    }
                    with gr.Row():  # the two maps side by side: the captions and Fuse stay near the top
                        parts["detection"] = gr.AnnotatedImage(label=f"Detections {which}", height=160,
                                                               elem_id=f"detections_{which}")
                        parts["segmentation"] = gr.AnnotatedImage(label=f"Segmentation {which}", height=160,
                                                                  elem_id=f"segmentation_{which}")
                    parts |= {
                        "classes": gr.Markdown(elem_id=f"classes_{which}"),
                        "caption": gr.Textbox(label=f"Caption {which}", lines=2, max_length=MAX_CAPTION_CHARS,
                                              info="Edit freely; leave empty to have one drafted at Fuse.",
                                              elem_id=f"caption_{which}"),
                        "note": gr.Markdown(elem_id=f"caption_note_{which}"),
                        "reset": gr.Button(f"Reset caption {which} to the draft", size="sm",
                                           elem_id=f"reset_{which}"),
                        "objects": gr.State([]),
                    }
                    sources.append(parts)

        with gr.Row(equal_height=True):
            use_text = gr.Checkbox(True, label="Text guidance", elem_id="use_text",
                                   info="Off: the network's no-text path (ablation).")
            resize = gr.Checkbox(False, label="Resize source 2 to source 1", elem_id="resize",
                                 info="Needed when the sizes differ.")
            slider_with = gr.Radio(SLIDER_CHOICES, value="source 2", label="Slider compares the result with",
                                   elem_id="slider_with")
            fuse = gr.Button("Fuse", variant="primary", elem_id="fuse_btn", scale=0, min_width=160)
        examples = gr.Examples(
            examples=[[t, str(ASSETS / a), str(ASSETS / b)] for t, a, b in EXAMPLES],
            inputs=[task, sources[0]["image"], sources[1]["image"]],
            label="Examples: click one to load it. IVF: TNO Image Fusion Dataset (A. Toet, TNO Soesterberg, The "
                  "Netherlands), doi:10.6084/m9.figshare.1008029; MIF, MEF, MFF: synthetic (CC0 / public domain). "
                  "Sources and licences: assets/README.md",
        )
        # the table lists every task's pairs: the uploads' labels name the first task's modalities (infrared,
        # visible), which would head the exposure and focus rows too
        examples.dataset.headers = ["Task", "Source 1", "Source 2"]
        summary = gr.Markdown(elem_id="summary")

        with gr.Row():
            view_1 = gr.Image(label="Source 1", format="png", interactive=False, elem_id="view_1")
            fused = gr.Image(label="Fused (full resolution PNG)", format="png", interactive=False, elem_id="fused")
            view_2 = gr.Image(label="Source 2", format="png", interactive=False, elem_id="view_2")
        slider = gr.ImageSlider(label="Before / after: drag to compare", format="png", elem_id="slider",
                                interactive=False)
        with gr.Row():
            error_1 = gr.Image(label=f"|F − source 1| (scale 0 to {ERROR_MAP_VMAX:g})", format="png",
                               interactive=False, elem_id="error_1")
            error_2 = gr.Image(label=f"|F − source 2| (scale 0 to {ERROR_MAP_VMAX:g})", format="png",
                               interactive=False, elem_id="error_2")
            text_effect = gr.Image(label="Text effect: this run − the drafted captions' run (red: brighter, "
                                         "blue: darker; scale in grey levels)", format="png", interactive=False,
                                   elem_id="text_effect")
            pointing = gr.Image(label="Where the captions point: the detected objects, those the network matched "
                                      "to the edited captions in amber, with how sure it is", format="png",
                                interactive=False, elem_id="pointing")
        with gr.Row():
            table = gr.Dataframe(label="Metrics on this pair (higher is better; the best of each in bold)",
                                 interactive=False,
                                 elem_id="metrics")
            # HTML bars, not a matplotlib figure: nothing to draw and encode per run (that took ~0.25 s of a
            # caption edit's click-to-result), and the text stays at the page's size
            plot = gr.HTML(label="Metrics chart", show_label=True, elem_id="metrics_plot")
        files = gr.File(label="Downloads: fused PNG, run record (JSON, CSV)", file_count="multiple",
                        interactive=False, elem_id="downloads")
        pending = gr.State(None)  # a run between its fused image and its maps and metrics (FusedImage)
        api_fuse = gr.Button(visible=False)  # its click is the API's /fuse (the whole run in one call)

        with gr.Accordion("Compare two runs (caption A vs caption B)", open=True):
            with gr.Row():
                run_a = gr.Dropdown([], label="Run A", elem_id="run_a")
                run_b = gr.Dropdown([], label="Run B", elem_id="run_b")
            compare_text = gr.Markdown(elem_id="compare_text")
            with gr.Row():
                compare_a = gr.Image(label="Run A", format="png", interactive=False, elem_id="compare_a")
                compare_b = gr.Image(label="Run B", format="png", interactive=False, elem_id="compare_b")
                compare_diff = gr.Image(label="Difference B − A (blue: darker, red: brighter)", format="png",
                                        interactive=False, elem_id="compare_diff")
            compare_table = gr.Dataframe(label="Metric deltas", interactive=False, elem_id="compare_table")


        # ----------------------------------------------------------------------------- events
        def make_analyze(which: int):
            @user_errors
            def analyze(path: str | None, task_value: str, known: dict, request: gr.Request) -> tuple:
                result = analyze_source(hub, path, task_value, which, _session_id(request))
                known = {**known}
                if result is None:
                    known.pop(str(which), None)
                    return None, None, "", "", "", known, []
                known[str(which)] = result.caption
                return (result.detection, result.segmentation, result.classes, result.caption,
                        result.caption_note, known, result.objects)

            analyze.__name__ = f"analyze_{which}"
            return analyze

        analyses = []
        for which, parts in zip((1, 2), sources):
            analyses.append((make_analyze(which), [parts["image"], task, drafts],
                             [parts["detection"], parts["segmentation"], parts["classes"], parts["caption"],
                              parts["note"], drafts, parts["objects"]]))
            # progress and a failure show on the detection map only, not on every panel of the source
            parts["image"].change(analyses[-1][0], analyses[-1][1], analyses[-1][2], api_name=f"analyze_{which}",
                                  concurrency_id=DRAFT_QUEUE, concurrency_limit=config.draft_concurrency,
                                  show_progress_on=[parts["detection"]])
            parts["reset"].click(lambda known, w=which: known.get(str(w), ""), [drafts], [parts["caption"]],
                                 api_name=f"reset_caption_{which}")

            def highlight(caption: str, objects: list, evt: gr.SelectData) -> str:
                return add_object_phrase(caption, objects, evt.index)

            parts["detection"].select(highlight, [parts["caption"], parts["objects"]], [parts["caption"]],
                                      api_name=False)

        def on_task(task_value: str) -> tuple:
            base, _ = parse_task(task_value)
            names = source_labels(task_value)
            methods, default, message = _methods(hub, base)
            return (gr.update(label=f"Source 1 · {names[0]}"), gr.update(label=f"Source 2 · {names[1]}"),
                    gr.update(choices=methods, value=default), message)

        task.change(on_task, [task], [sources[0]["image"], sources[1]["image"], method, notice],
                    api_name=False).then(
            *analyses[0], api_name=False, concurrency_id=DRAFT_QUEUE, show_progress_on=[sources[0]["detection"]]).then(
            *analyses[1], api_name=False, concurrency_id=DRAFT_QUEUE, show_progress_on=[sources[1]["detection"]])

        def run_outputs(out: FusionOutputs, history: list, slider_source: str) -> tuple:
            """The panels of a finished run (from its files: the run's PNGs already hold the pixels, so gradio is
            given paths, not arrays to encode again, ~100 ms per 640x480 map at its zlib level 6)."""
            history = add_to_history(history, out.run, config.history, config.output_dir)
            choices = [run["label"] for run in history]
            fused_png, (view_1_png, view_2_png) = out.run["png"], out.run["sources"]
            before = view_1_png if slider_source == SLIDER_CHOICES[0] else view_2_png
            previous = choices[-2] if len(choices) > 1 else None
            maps = out.map_files
            return (fused_png, view_1_png, view_2_png, (before, fused_png), maps["error_1"], maps["error_2"],
                    maps.get("text_effect"), mark_best(out.table), out.chart, out.summary, out.files, history,
                    gr.update(choices=choices, value=previous), gr.update(choices=choices, value=choices[-1]),
                    maps.get("pointing"))

        @user_errors
        def fuse_pair(path_1, path_2, task_value, caption_1, caption_2, text_on, method_name, resize_on,
                      slider_source, history, request: gr.Request, progress=gr.Progress()) -> tuple:  # noqa: B008
            """The whole run in one call (the API's ``/fuse``)."""
            number = (history[-1]["number"] + 1) if history else 1
            out = run_fusion(hub, path_1, path_2, task_value, caption_1, caption_2, text_on, method_name,
                             resize_on, number, progress=progress, session_id=_session_id(request))
            return run_outputs(out, history, slider_source)

        @user_errors
        def fuse_first(path_1, path_2, task_value, caption_1, caption_2, text_on, method_name, resize_on,
                       slider_source, history, request: gr.Request, progress=gr.Progress()):  # noqa: B008
            """The page's first half of a run: the button says it is busy (at once, in the same event), then the
            fused image, the source views and the slider."""
            yield gr.update(interactive=False, value="Fusing…"), *[gr.skip()] * 6
            number = (history[-1]["number"] + 1) if history else 1
            first = fuse_image(hub, path_1, path_2, task_value, caption_1, caption_2, text_on, method_name,
                               resize_on, number, progress=progress, session_id=_session_id(request))
            views = [str(path) for path in first.views]
            before = views[0] if slider_source == SLIDER_CHOICES[0] else views[1]
            yield gr.skip(), str(first.png), views[0], views[1], (before, str(first.png)), first.summary, first

        @user_errors
        def fuse_rest(first: FusedImage, slider_source: str, history: list,
                      progress=gr.Progress()) -> tuple:  # noqa: B008
            """The page's second half of a run: maps, metrics, chart, downloads and the run history."""
            out = finish_run(hub, first, progress=progress)
            return run_outputs(out, history, slider_source)[4:] + (None,)

        @user_errors
        def compare(label_a: str | None, label_b: str | None, history: list) -> tuple:
            run_a, run_b = find_run(history, label_a), find_run(history, label_b)
            result = compare_runs(run_a, run_b)
            if run_a is None or run_b is None:
                return None, None, None, result.table, result.text
            # files, not arrays: the runs' own PNGs, and the difference map written beside run B's
            difference = None if result.difference is None else str(save_image(
                Path(run_b["png"]).parent / f"difference_from_run{run_a['number']}.png", result.difference,
                png_level=RUN_PNG_LEVEL))
            return run_a["png"], run_b["png"], difference, result.table, result.text

        def restack_slider(slider_source: str, history: list) -> Any:
            if not history:
                return None
            run = history[-1]
            before = run["sources"][0] if slider_source == SLIDER_CHOICES[0] else run["sources"][1]
            return (before, run["png"])

        compare_outputs = [compare_a, compare_b, compare_diff, compare_table, compare_text]
        fuse_inputs = [sources[0]["image"], sources[1]["image"], task, sources[0]["caption"], sources[1]["caption"],
                       use_text, method, resize, slider_with, runs]
        first_outputs = [fused, view_1, view_2, slider, summary]
        rest_outputs = [error_1, error_2, text_effect, table, plot, summary, files, runs, run_a, run_b, pointing]
        # the API's /fuse: the whole run in one call (a button the page does not show)
        api_fuse.click(fuse_pair, fuse_inputs, first_outputs[:4] + rest_outputs, api_name="fuse",
                       concurrency_id=MODEL_QUEUE, concurrency_limit=config.concurrency + config.draft_concurrency)
        # the page's Fuse: checked before anything is queued (a failed check is shown on its input, the button and
        # panels stay as they are); then the button says it is busy while the job runs, the fused image and slider
        # come as soon as the network returns, and the maps, metrics and chart follow, each panel with its progress
        first = fuse.click(
            fuse_first, fuse_inputs, [fuse, *first_outputs, pending], validator=validate_fuse, api_name=False,
            # a job drafts its missing captions before it takes a network slot (ModelHub.network_slot), so the
            # queue lets drafting jobs in beside the fusing ones
            concurrency_id=MODEL_QUEUE, concurrency_limit=config.concurrency + config.draft_concurrency,
            scroll_to_output=True,
            show_progress_on=[fused],  # progress (and a failure) shows on the result, not on every panel
        )
        rest = first.success(fuse_rest, [pending, slider_with, runs], [*rest_outputs, pending], api_name=False,
                             concurrency_id=MODEL_QUEUE,
                             show_progress_on=[error_1, error_2, text_effect, pointing, table, plot])

        # a failed Fuse leaves the panels as they were, says so in the summary and gives the button back
        def after_failure(history: list) -> tuple:
            last = f"; the results below are from run {history[-1]['number']}" if history else ""
            return f"**The last Fuse failed** (the message says why){last}.", gr.update(interactive=True, value="Fuse")

        for step in (first, rest):
            step.failure(after_failure, [runs], [summary, fuse], queue=False, api_name=False)
        rest.then(lambda: gr.update(interactive=True, value="Fuse"), None, fuse, queue=False, api_name=False)
        rest.success(compare, [run_a, run_b, runs], compare_outputs, api_name=False)
        run_a.input(compare, [run_a, run_b, runs], compare_outputs, api_name="compare")
        run_b.input(compare, [run_a, run_b, runs], compare_outputs, api_name=False)
        slider_with.input(restack_slider, [slider_with, runs], [slider], api_name=False)

    if config.preload:
        threading.Thread(target=hub.preload, name="tgif-preload", daemon=True).start()
    return demo
