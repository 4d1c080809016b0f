"""Benchmarks that print numbers (``tgif bench ...``); speed claims live here, not in tests."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tgif.metrics import METRICS, PAPER_METRICS

if TYPE_CHECKING:
    from tgif.model import TGIFNet


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU a benchmark ran on, e.g. ``"AMD EPYC, AVX2 kernels"``: the model name ``cpuinfo`` gives (Linux; "CPU"
    elsewhere) and the widest vector kernels torch uses on it (:func:`torch.backends.cpu.get_cpu_capability`).

    Timings of one command differ by 1.5x between machines whose torch kernels are AVX2 or AVX-512, so a printed
    benchmark names which it was.
    """
    import torch

    name = "CPU"
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = " ".join(value.split())
                break
    except OSError:
        pass
    return f"{name}, {torch.backends.cpu.get_cpu_capability()} kernels"


def synthetic_gray_pair(width: int = 640, height: int = 480,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deterministic (fused, a, b) triple of grey levels with smooth structure, edges and noise."""
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[0:height, 0:width].astype(np.float64)
    a = 110 + 90 * np.sin(i / 23.0) * np.cos(j / 31.0) + rng.normal(0, 6, (height, width))
    b = 90 + 70 * np.cos(i / 17.0 + j / 41.0) + 40 * ((i // 40 + j // 40) % 2) + rng.normal(0, 4, (height, width))
    a, b = np.clip(np.round(a), 0, 255), np.clip(np.round(b), 0, 255)
    return np.maximum(a, b), a, b


def bench_metrics(width: int = 640, height: int = 480, repeat: int = 5) -> dict[str, float]:
    """Median seconds per metric (all registered metrics) on a synthetic pair of the given size.

    The key ``"paper six"`` holds the median time of one :func:`compute_metrics`-style pass
    over EN, SD, SF, AG, VIF and Qabf together.
    """
    fused, a, b = synthetic_gray_pair(width, height)
    timings: dict[str, float] = {}
    for name, spec in METRICS.items():
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            spec(fused, a, b)
            runs.append(time.perf_counter() - start)
        timings[name] = statistics.median(runs)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for name in PAPER_METRICS:
            METRICS[name](fused, a, b)
        runs.append(time.perf_counter() - start)
    timings["paper six"] = statistics.median(runs)
    return timings


def _bench_image(width: int, height: int) -> np.ndarray:
    """The bundled IVF visible example resized to the size asked (a synthetic image if it is missing)."""
    import cv2

    from tgif.io.image import as_rgb_uint8

    example = Path(__file__).resolve().parents[1] / "assets" / "examples" / "ivf" / "vi.png"
    if example.exists():
        from tgif.io import load_image

        image = as_rgb_uint8(load_image(example).pixels)
    else:
        fused, a, _ = synthetic_gray_pair(width, height)
        image = as_rgb_uint8(np.stack([fused, a, fused], -1).astype(np.uint8))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _random_weight_segmenter(backend: str) -> object:
    """A learned segmenter built with random weights (same architecture and cost; nothing downloaded)."""
    if backend == "sam":
        from segment_anything import sam_model_registry

        from tgif.perception.segmentation.sam import SamSegmenter

        return SamSegmenter(model_type="vit_b", model=sam_model_registry["vit_b"](checkpoint=None).eval())
    from tgif.perception.segmentation.mobile_sam import MobileSamSegmenter, build_mobile_sam

    return MobileSamSegmenter(model=build_mobile_sam().eval())


def bench_perception(width: int = 640, height: int = 480, repeat: int = 3,
                     backends: tuple[str, ...] = ("classic", "mobile_sam", "sam")) -> dict[str, dict[str, float]]:
    """Median seconds per stage of perception and template captioning, per segmentation backend.

    Learned segmenters run with their real checkpoints when ``TGIF_SAM_CHECKPOINT`` /
    ``TGIF_MOBILE_SAM_CHECKPOINT`` point to them, otherwise with randomly initialised weights of
    the same architecture (same cost; the masks are meaningless). SAM runs once (it is slow on CPU).
    """
    import os

    from tgif.captions import CaptionInput, build_captioner
    from tgif.perception import YoloDetector, build_segmenter, draw_detections, draw_segmentation

    image = _bench_image(width, height)
    detector = YoloDetector()
    detector.detect(image)  # load and compile once
    detections = detector.detect(image)
    results: dict[str, dict[str, float]] = {}
    captioner = build_captioner("template")
    for backend in backends:
        env = {"sam": "TGIF_SAM_CHECKPOINT", "mobile_sam": "TGIF_MOBILE_SAM_CHECKPOINT"}.get(backend)
        checkpoint = os.environ.get(env) if env else None
        label = backend if backend == "classic" else f"{backend} ({'checkpoint' if checkpoint else 'random weights'})"
        segmenter = build_segmenter(backend, checkpoint=checkpoint) if checkpoint or backend == "classic" \
            else _random_weight_segmenter(backend)
        start = time.perf_counter()
        segmentation = segmenter.segment(image, detections)  # SAM: this single run is the measurement
        first = time.perf_counter() - start
        seg_time = first if backend == "sam" else _median_time(
            lambda segmenter=segmenter: segmenter.segment(image, detections), repeat)
        stages = {
            "detection": _median_time(lambda: detector.detect(image), repeat),
            "segmentation": seg_time,
            "rendering": _median_time(lambda segmentation=segmentation: (draw_detections(image, detections),
                                                                         draw_segmentation(image, segmentation)),
                                      repeat),
        }
        inputs = CaptionInput(image, "visible", "ivf", detections, segmentation,
                              draw_detections(image, detections), draw_segmentation(image, segmentation))
        stages["caption"] = _median_time(lambda inputs=inputs: captioner.caption(inputs), repeat)
        stages["total"] = sum(stages.values())
        results[label] = stages
    return results


FUSE_SIZES: tuple[tuple[int, int], ...] = ((256, 256), (640, 480), (1024, 768))

def _fuse_in_process(width: int, height: int, repeat: int, weights: str, device: str) -> dict[str, float]:
    """Median latency of the network's forward pass on random inputs (150 random tokens), and its peak memory:
    the growth of the resident set during the passes (CPU, MiB) or the peak allocated GPU memory."""
    import resource

    import torch

    model = _fuse_model(weights or None, device)
    inputs = _fuse_inputs(model, width, height, device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(*inputs)
        runs = [_timed_pass(model, inputs, device) for _ in range(repeat)]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    return {"seconds": statistics.median(runs), "peak_mib": peak}


def _fuse_inputs(model: TGIFNet, width: int, height: int, device: str) -> tuple:
    """Random inputs of one forward pass: two (1, 1, H, W) images and 150 random tokens with their mask (None for
    a network without text)."""
    import torch

    a = torch.rand(1, 1, height, width, device=device)
    b = torch.rand(1, 1, height, width, device=device)
    if not model.config.use_text:
        return a, b, None, None
    return (a, b, torch.randn(1, 150, model.config.text_dim, device=device),
            torch.ones(1, 150, dtype=torch.bool, device=device))


def _timed_pass(model: TGIFNet, inputs: tuple, device: str) -> float:
    """Seconds of one forward pass (the GPU synchronised before and after)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(*inputs)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _fuse_model(weights: str | None, device: str) -> TGIFNet:
    """The network to time: a checkpoint's, or the default configuration with random weights."""
    from tgif.model import build_tgif, load_tgif

    if weights:
        return load_tgif(weights, device=device)[0]
    return build_tgif().to(device).eval()


def bench_fuse(weights: str | None = None, repeat: int = 3,
               sizes: tuple[tuple[int, int], ...] = FUSE_SIZES) -> dict[str, dict[str, dict[str, float]]]:
    """Median network latency and peak memory per input size, on CPU and (when present) CUDA.

    Each size runs in a fresh process, so the CPU peak (growth of the resident set during the
    forward passes, in MiB) is not hidden by an earlier, larger run. Text: 150 random tokens.
    """
    return _per_size_in_child_processes("fuse", weights, repeat, sizes)


def paired_ratio(times: Sequence[float], baseline: Sequence[float]) -> float:
    """The median over rounds of ``times[i] / baseline[i]``: each round's ratio pairs two times taken a moment
    apart, so that the machine's speed drifting between rounds weighs on both (unlike a ratio of medians)."""
    if len(times) != len(baseline) or not times:
        raise ValueError(f"paired_ratio needs rounds of both, got {len(times)} and {len(baseline)}")
    return statistics.median(t / b for t, b in zip(times, baseline))


def _fuse_compare_in_process(width: int, height: int, repeat: int, weights: str, device: str) -> dict[str, list[float]]:
    """Median latency of several checkpoints' forward passes (``weights``: comma-separated paths, an empty one
    for random weights), timed in turn in one process: ``repeat`` rounds, each running every checkpoint once in
    an order rotated by one per round, after one warm-up pass each. Returns per checkpoint the median seconds
    and the median over rounds of its time divided by the first checkpoint's in that round."""
    import torch

    models = [_fuse_model(path or None, device) for path in weights.split(",")]
    inputs = [_fuse_inputs(model, width, height, device) for model in models]
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model, model_inputs in zip(models, inputs):
            model(*model_inputs)
        for round_index in range(repeat):
            for shift in range(len(models)):
                index = (round_index + shift) % len(models)
                times[index].append(_timed_pass(models[index], inputs[index], device))
    return {"seconds": [statistics.median(t) for t in times],
            "ratio": [paired_ratio(t, times[0]) for t in times]}


def bench_fuse_compare(weights: list[str | None], repeat: int = 15,
                       sizes: tuple[tuple[int, int], ...] = FUSE_SIZES) -> list[dict[str, dict[str, dict[str, float]]]]:
    """:func:`bench_fuse` for several checkpoints, timed against each other in one process per device and size
    (:func:`_fuse_compare_in_process`: ``repeat`` interleaved rounds), so that a drift of the machine's speed
    weighs on every checkpoint alike; ``ratio`` is the median over rounds of a checkpoint's time over the first
    one's in the same round. Each checkpoint's peak memory comes from a pass in a fresh process of its own."""
    memory = [bench_fuse(path, 1, sizes) for path in weights]
    timed = _per_size_in_child_processes("fuse_compare", ",".join(path or "" for path in weights), repeat, sizes)
    return [{device: {size: {"seconds": row["seconds"][index], "ratio": row["ratio"][index],
                             "peak_mib": memory[index][device][size]["peak_mib"]}
                      for size, row in by_size.items()}
             for device, by_size in timed.items()}
            for index in range(len(weights))]


def _per_size_in_child_processes(what: str, weights: str | None, repeat: int,
                                 sizes: tuple[tuple[int, int], ...],
                                 devices: tuple[str, ...] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Run benchmark ``what`` of :data:`_CHILDREN` once per device and size, each in a fresh process
    (``python -m tgif.bench``), which prints its result as one JSON line."""
    import json
    import subprocess
    import sys

    import torch

    devices = devices or (("cpu", "cuda") if torch.cuda.is_available() else ("cpu",))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for device in devices:
        results[device] = {}
        for width, height in sizes:
            proc = subprocess.run([sys.executable, "-m", "tgif.bench", what, str(width), str(height), str(repeat),
                                   weights or "", device], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{what} benchmark at {width}x{height} on {device} failed: {proc.stderr[-800:]}")
            results[device][f"{width}x{height}"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


PIPELINE_STAGES: tuple[str, ...] = ("detection", "segmentation", "caption", "text", "network", "metrics")

def _pipeline_in_process(width: int, height: int, repeat: int, weights: str, device: str) -> dict[str, float]:
    """Stage latencies (median seconds) of the whole pipeline on one pair, and the process's peak memory."""
    import resource

    import torch

    from tgif.captions import CaptionInput, build_captioner
    from tgif.io.color import luminance
    from tgif.metrics import compute_metrics
    from tgif.model.checkpoint import read_metadata
    from tgif.perception import Perceiver
    from tgif.pipeline import TGIFFuser, default_weights, text_encoder_for

    visible = _bench_image(width, height)
    infrared = np.repeat((255 - visible.mean(-1, keepdims=True)).astype(np.uint8), 3, axis=-1)
    perceiver = Perceiver(cache=False)
    path = weights or str(default_weights("ivf"))
    encoder = text_encoder_for(read_metadata(path).text_encoder, device=device)
    encoder = getattr(encoder, "encoder", encoder)  # time the encoder itself, not its feature cache
    fuser = TGIFFuser(path, device=device, perceiver=perceiver, captioner="template", text_encoder=encoder)
    captioner = build_captioner("template")
    sources = (infrared, visible)
    perceiver.perceive(infrared)  # warm-up: model load and compilation
    timings: dict[str, list[float]] = {stage: [] for stage in PIPELINE_STAGES}
    for _ in range(repeat):
        captions = []
        start = time.perf_counter()
        detections = [perceiver.detector.detect(s) for s in sources]
        timings["detection"].append(time.perf_counter() - start)
        start = time.perf_counter()
        segmentations = [perceiver.segmenter.segment(s, d) for s, d in zip(sources, detections)]
        timings["segmentation"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for source, det, seg, modality in zip(sources, detections, segmentations, ("infrared", "visible")):
            captions.append(captioner.caption(CaptionInput(source, modality, "ivf", det, seg)).text)
        timings["caption"].append(time.perf_counter() - start)
        start = time.perf_counter()
        text, mask = fuser.encode(*captions)
        timings["text"].append(time.perf_counter() - start)
        y_a, y_b = luminance(infrared.astype(np.float32) / 255), luminance(visible.astype(np.float32) / 255)
        start = time.perf_counter()
        fused, _ = fuser.fuse_luminance(y_a, y_b, text, mask)
        if device == "cuda":
            torch.cuda.synchronize()
        timings["network"].append(time.perf_counter() - start)
        start = time.perf_counter()
        compute_metrics(np.round(fused * 255), np.round(y_a * 255), np.round(y_b * 255))
        timings["metrics"].append(time.perf_counter() - start)
    result = {stage: statistics.median(values) for stage, values in timings.items()}
    result["total"] = sum(result.values())
    result["peak_mib"] = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                          else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def bench_pipeline(weights: str | None = None, repeat: int = 3, sizes: tuple[tuple[int, int], ...] = FUSE_SIZES,
                   devices: tuple[str, ...] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Per-stage latency of the whole pipeline on an IVF pair, per size and device.

    Stages: detection and classic segmentation (both sources), template captions, text encoding
    (no feature cache), the network, and the six metrics. Each size runs in a fresh process; on
    CPU ``peak_mib`` is that process's peak resident memory (models included), on CUDA the peak
    allocated GPU memory. Perception always runs on the CPU (OpenVINO export).
    """
    return _per_size_in_child_processes("pipeline", weights, repeat, sizes, devices)


def bench_session(weights: str | None = None, repeat: int = 15,
                  sizes: tuple[tuple[int, int], ...] = FUSE_SIZES) -> dict[str, dict[str, float]]:
    """What a caption edit costs against a new pair, per size, in one process (models loaded and warm).

    *fresh pair*: a new :class:`tgif.session.PairSession` fused with its captions (text features, both source
    encoders, the trunk, the grounding head and the decoder); *caption edit*: the same session fused again with
    a changed caption (its text features, the head and the decoder, over the trunk of the first captions, which
    stand for the drafts: :meth:`~tgif.session.PairSession.set_scene`; for a region-grounding network only the
    match and the emphasis over the first captions' fused image, as its decoder does not read the caption).
    Perception and drafting are left out of both (the captions are given).
    Each of ``repeat`` rounds times a fresh pair and then its edit, so that ``ratio``, the median over rounds of
    the edit's time over its own round's fresh pair, pairs times taken a moment apart (a slower moment of the
    machine weighs on both); ``fresh_pair`` and ``caption_edit`` are median seconds.
    """
    from tgif.io.image import SourceImage
    from tgif.io.pair import ImagePair
    from tgif.model.checkpoint import read_metadata
    from tgif.pipeline import TGIFFuser, default_weights, text_encoder_for
    from tgif.session import PairSession

    path = weights or str(default_weights("ivf"))
    encoder = text_encoder_for(read_metadata(path).text_encoder)
    encoder = getattr(encoder, "encoder", encoder)  # time the encoder itself, not its feature cache
    fuser = TGIFFuser(path, device="cpu", captioner="template", text_encoder=encoder)
    captions = ("It shows a person on the left. A dark, low-contrast infrared image.",
                "A dim, sharp visible image of a street at night.")
    results: dict[str, dict[str, float]] = {}
    for width, height in sizes:
        visible = _bench_image(width, height).astype(np.float32) / 255
        infrared = 1.0 - visible
        pair = ImagePair(SourceImage(infrared, "ir.png"), SourceImage(visible, "vi.png"), task="ivf")
        PairSession(fuser, pair).fuse(captions)  # warm-up
        fresh, edit = [], []
        for index in range(repeat):
            session = PairSession(fuser, pair)
            session.set_scene(captions)
            start = time.perf_counter()
            session.fuse(captions)
            fresh.append(time.perf_counter() - start)
            edited = (f"{captions[0]} Highlight the person on the left, edit {index}.", captions[1])
            start = time.perf_counter()
            session.fuse(edited)
            edit.append(time.perf_counter() - start)
            trunks = 1 if fuser.steers_late else 2
            decodes = 1 if fuser.grounds_regions else 2  # a region network's decoder does not read the caption
            if (session.calls["encode_sources"] != 1 or session.calls["guide"] != trunks
                    or session.calls["decode"] != decodes):
                raise RuntimeError(f"a caption edit re-ran the source encoders, the trunk or the decoder: "
                                   f"{session.calls}")
        results[f"{width}x{height}"] = {"fresh_pair": statistics.median(fresh),
                                       "caption_edit": statistics.median(edit),
                                       "ratio": paired_ratio(edit, fresh)}
    return results


def bench_tiles(weights: str | None = None, tile: str | None = None, repeat: int = 15,
                sizes: tuple[tuple[int, int], ...] = FUSE_SIZES) -> dict[str, dict[str, float]]:
    """What fusing in tiles costs against fusing whole, per size, in one process (CPU, model warm).

    ``weights``: the checkpoint (default: the MEF model, which names a tile); ``tile``: ``SIZE/OVERLAP`` to time
    instead of the checkpoint's. Each of ``repeat`` rounds fuses the pair both ways (:meth:`TGIFFuser.
    fuse_luminance` under one caption pair, the order alternating), and ``ratio`` is the median over rounds of the
    tiled time over the whole one. Returns per size ``whole``, ``tiled`` (median seconds), ``tiles`` and ``ratio``.

    Raises:
        TgifError: the checkpoint names no tile and none is given.
    """
    from tgif.errors import TgifError
    from tgif.io.color import luminance
    from tgif.pipeline import FusionTile, TGIFFuser, default_weights

    path = weights or str(default_weights("mef"))
    fuser = TGIFFuser(path, device="cpu", captioner="template")
    tiled = FusionTile.parse(tile) if tile is not None else fuser.tile
    if tiled is None:
        raise TgifError(f"{Path(path).name} names no fusion tile; pass --tile SIZE/OVERLAP to time one")
    text, mask = fuser.encode("An under-exposed image of a room with a bright window on the left.",
                              "An over-exposed image of the same room; the window is white.")
    results: dict[str, dict[str, float]] = {}
    for width, height in sizes:
        y_b = luminance(_bench_image(width, height).astype(np.float32) / 255).astype(np.float32)
        y_a = y_b * 0.3
        times: dict[FusionTile | None, list[float]] = {None: [], tiled: []}
        for setting in times:  # warm-up, the same work as fuse_luminance; the tiled setting's tiles counted
            fuser.tile = setting
            encoded = fuser.encode_pair(y_a, y_b)
            fuser.decode_pair(encoded, text, mask)
        tiles = len(encoded.tiles)
        for index in range(repeat):
            for setting in (None, tiled) if index % 2 == 0 else (tiled, None):
                fuser.tile = setting
                start = time.perf_counter()
                fuser.fuse_luminance(y_a, y_b, text, mask)
                times[setting].append(time.perf_counter() - start)
        results[f"{width}x{height}"] = {"whole": statistics.median(times[None]),
                                       "tiled": statistics.median(times[tiled]), "tiles": tiles,
                                       "ratio": paired_ratio(times[tiled], times[None])}
    return results


def _step_seconds(log: Path, warmup: int) -> list[float]:
    """Per-step seconds of a run's ``log.csv`` (differences of its cumulative ``seconds``), after ``warmup``."""
    import csv

    with log.open() as handle:
        elapsed = [float(row["seconds"]) for row in csv.DictReader(handle)]
    if len(elapsed) <= warmup + 1:
        raise ValueError(f"{log}: {len(elapsed)} steps logged, need more than {warmup + 1}")
    return list(np.diff(elapsed)[warmup:])


#: A revision's own training loop, run by :func:`bench_train` in a child process whose ``tgif`` is that revision's.
_REVISION_TRAIN = (
    "import sys\n"
    "# an editable install's finder would serve this checkout's modules that the revision lacks: drop it\n"
    "sys.meta_path = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
    "import tgif\n"
    "assert tgif.__file__.startswith(sys.argv[1]), f'imported {tgif.__file__}, not the revision in {sys.argv[1]}'\n"
    "import tgif.train.loop as loop\n"
    "from tgif.train.loop import TrainSettings, train\n"
    "logged = loop.log_row\n"
    "loop.log_row = lambda *args: {**logged(*args), 'seconds': f'{args[-1]:.4f}'}  # its own log rounds to 0.1 s\n"
    "task, pack, out, steps, batch, crop = sys.argv[2:8]\n"
    "train(TrainSettings(task=task, pack=pack, out_dir=out, steps=int(steps), batch_size=int(batch), crop=int(crop),\n"
    "                    checkpoint_every=int(steps), val_every=int(steps)), progress=False)\n"
)


def _revision_package(revision: str, dest: Path) -> Path:
    """Extract the ``tgif`` package of git ``revision`` of this checkout into ``dest``; returns ``dest``.

    Raises:
        TgifError: no git, not a git checkout, or an unknown revision.
    """
    import io
    import subprocess
    import tarfile

    from tgif.errors import TgifError

    root = Path(__file__).resolve().parent.parent
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", revision, "tgif"], capture_output=True,
                                 check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or str(exc).encode()
        raise TgifError(f"--against {revision}: cannot read that revision of {root} with git "
                        f"({detail.decode(errors='replace').strip()})") from exc
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _revision_run(package: Path, task: str, pack: Path, out: str, steps: int, batch_size: int, crop: int) -> None:
    """Run the training loop of the revision extracted in ``package`` (a child process, this one's threads).

    Raises:
        TgifError: the child failed (e.g. a revision whose loop has no ``log_row``), with its last error line.
    """
    import os
    import subprocess
    import sys

    from tgif.errors import TgifError

    env = {**os.environ, "PYTHONPATH": str(package)}
    done = subprocess.run([sys.executable, "-c", _REVISION_TRAIN, str(package), task, str(pack), out, str(steps),
                           str(batch_size), str(crop)], cwd=package, env=env, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TgifError(f"the training loop of the --against revision failed: {last}")


def bench_train(pack: str | Path, task: str, procs: tuple[int, ...] = (1, 2), steps: int = 40, warmup: int = 5,
                rounds: int = 2, batch_size: int = 2, crop: int = 128,
                against: str | None = None) -> dict[str, dict[str, float]]:
    """Training steps per second of :func:`tgif.train.loop.train` on ``pack``, per number of processes, and of
    an earlier revision's loop.

    Every setting runs ``rounds`` short runs of ``steps`` steps (the paper's batch and crop by default), the
    settings interleaved round by round so that a slower moment of the machine hits them all. A step's time is
    read from the run's log (optimizer step included; the first ``warmup`` steps of a run and its validation
    left out); a setting's ``seconds_per_step`` is the median step over all its runs, and ``ratio`` is its
    speed relative to the first setting: the median over rounds of the ratio of the two runs' median steps
    (:func:`paired_ratio`). One process uses all of torch's threads; K processes share them.

    ``against`` (a git revision of this checkout, e.g. the commit before a change to the loop) adds that
    revision's own ``tgif`` training loop, extracted with ``git archive`` and run in a child process with the
    same pack, batch, crop and threads, as the first setting (``rev <revision>``): the speed-up of the loop as
    it is now over that one, measured in one run (the child's log keeps the seconds to 0.1 ms).

    On a shared 2-core VM the ratio drifts from round to round (three runs of ``--against 856e798`` on one day
    gave one process 1.14x, 1.30x and 1.50x), so the lowest and highest round's ratios come with it.

    Returns:
        ``{label: {"seconds_per_step", "steps_per_second", "ratio", "ratio_low", "ratio_high"}}`` with labels
        ``rev <revision>`` (when ``against``) and ``1 process``, ``2 processes``, ... per ``procs``.
    """
    import tempfile

    from tgif.train.loop import TrainSettings, train

    pack = Path(pack).resolve()
    # (label, process count); the revision's own loop has no count
    settings: list[tuple[str, int | None]] = ([(f"rev {against}", None)] if against else []) + [
        (f"{n} process" + ("es" if n > 1 else ""), n) for n in procs]
    runs: dict[str, list[list[float]]] = {label: [] for label, _ in settings}
    with tempfile.TemporaryDirectory(prefix="tgif-bench-train-") as scratch:
        package = _revision_package(against, Path(scratch) / "revision") if against else None
        for _ in range(rounds):
            for label, count in settings:
                with tempfile.TemporaryDirectory(prefix="run-", dir=scratch) as out:
                    if count is None:
                        _revision_run(package, task, pack, out, steps, batch_size, crop)
                    else:
                        train(TrainSettings(task=task, pack=str(pack), out_dir=out, steps=steps, batch_size=batch_size,
                                            crop=crop, checkpoint_every=steps, val_every=steps, procs=count),
                              progress=False)
                    runs[label].append(_step_seconds(Path(out) / "log.csv", warmup))
    first = [statistics.median(run) for run in runs[settings[0][0]]]
    results = {}
    for label, values in runs.items():
        step = float(statistics.median(t for run in values for t in run))
        medians = [statistics.median(run) for run in values]
        per_round = [f / m for f, m in zip(first, medians)]
        results[label] = {"seconds_per_step": step, "steps_per_second": 1 / step,
                          "ratio": float(paired_ratio(first, medians)),
                          "ratio_low": float(min(per_round)), "ratio_high": float(max(per_round))}
    return results


#: The benchmarks run one size per child process (``python -m tgif.bench <name> W H REPEAT WEIGHTS DEVICE``).
_CHILDREN: dict[str, Callable[[int, int, int, str, str], dict[str, Any]]] = {
    "fuse": _fuse_in_process, "fuse_compare": _fuse_compare_in_process, "pipeline": _pipeline_in_process,
}


if __name__ == "__main__":
    import json
    import sys

    name, width_arg, height_arg, repeat_arg, weights_arg, device_arg = sys.argv[1:7]
    print(json.dumps(_CHILDREN[name](int(width_arg), int(height_arg), int(repeat_arg), weights_arg, device_arg)))
