"""Perception: YOLO detection, classic segmentation, rendered maps and the per-image cache."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers.threads import at_once

from tgif.errors import UnknownNameError
from tgif.io import load_image
from tgif.perception import (
    Detection,
    Detections,
    Perceiver,
    YoloDetector,
    as_rgb_uint8,
    build_segmenter,
    draw_detections,
    draw_segmentation,
)
from tgif.perception.cache import PerceptionCache
from tgif.perception.detection import DetectorError
from tgif.perception.segmentation.classic import ClassicSegmenter, grabcut_box


def scene_with_object(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """A textured two-tone background with a bright elliptical object; returns image, true mask, box."""
    h, w = 120, 160
    img = np.zeros((h, w, 3), np.float32)
    img[: h // 2] = (0.25, 0.35, 0.6)  # "sky"
    img[h // 2 :] = (0.35, 0.3, 0.25)  # "ground"
    img += rng.normal(0, 0.03, img.shape)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((xx - 100) / 18) ** 2 + ((yy - 70) / 30) ** 2 < 1
    img[mask] = (0.95, 0.9, 0.2)
    return as_rgb_uint8(np.clip(img, 0, 1)), mask, (78.0, 36.0, 122.0, 104.0)


class FixedDetector:
    """A detector double returning a fixed box (keeps the segmenter/cache tests fast and exact)."""

    model_name = "fixed"
    conf = 0.25
    imgsz = 640

    def __init__(self, box: tuple[float, float, float, float]) -> None:
        self.box = box
        self.calls = 0

    def detect(self, image: np.ndarray) -> Detections:
        self.calls += 1
        return Detections([Detection(self.box, "person", 0.9, 0)], (image.shape[1], image.shape[0]), "fixed")


# --- detection -------------------------------------------------------------------------------------

def test_yolo_detector_on_tiny_random_model() -> None:
    detector = YoloDetector("yolo11n.yaml", conf=1e-4, imgsz=128)
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    result = detector.detect(image)
    assert result.image_size == (128, 96) and result.model == "yolo11n.yaml"
    assert len(result) > 0
    scores = [d.score for d in result.items]
    assert scores == sorted(scores, reverse=True)
    for det in result.items:
        x1, y1, x2, y2 = det.box
        assert 0 <= x1 <= x2 <= 128 and 0 <= y1 <= y2 <= 96
        assert isinstance(det.label, str) and det.class_id >= 0


def test_yolo_detector_shared_by_threads_gives_each_its_own_boxes() -> None:
    """The app's users share one detector; Ultralytics' model is not thread-safe on its own (its
    predictor is built and configured on a call)."""
    rng = np.random.default_rng(1)
    images = [(rng.random(shape) * 255).astype(np.uint8) for shape in ((96, 128, 3), (128, 64, 3), (64, 64, 3))]
    reference = YoloDetector("yolo11n.yaml", conf=1e-4, imgsz=128)
    expected = [[(d.box, d.label) for d in reference.detect(image).items] for image in images]
    shared = YoloDetector("yolo11n.yaml", conf=1e-4, imgsz=128)
    shared._load().model.load_state_dict(reference._model.model.state_dict())  # the reference's random weights;
    # its predictor is not built yet, so the threads' first calls race to build it as two uploads do

    def detect_repeatedly(index: int) -> None:
        for _ in range(4):
            got = [(d.box, d.label) for d in shared.detect(images[index]).items]
            assert got == expected[index], f"image {index} got other boxes"

    errors = at_once(detect_repeatedly, len(images))
    assert not errors, errors[:2]


def test_detection_leaves_torch_thread_count_alone() -> None:
    # Ultralytics' device selection sets torch's threads to cpu_count - 1 for the whole process
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        YoloDetector("yolo11n.yaml", imgsz=64).detect(np.zeros((48, 64, 3), np.uint8))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_detection_never_lowers_torch_thread_count_even_for_a_moment(monkeypatch) -> None:
    # a lowered count, even during a detection, is picked up by any worker thread whose pool starts then
    import torch

    before = torch.get_num_threads()
    calls: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or real(n))
    YoloDetector("yolo11n.yaml", imgsz=64).detect(np.zeros((48, 64, 3), np.uint8))  # the first: the predictor is set up
    assert len(calls) >= 2 and min(calls) == before  # Ultralytics' select_device ran, and set the count we had


def test_detector_rejects_bad_input_and_missing_weights(tmp_path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        YoloDetector("yolo11n.yaml").detect(np.zeros((8, 8), np.float32))
    with pytest.raises(DetectorError, match="not found"):
        YoloDetector(str(tmp_path / "nope_openvino_model")).detect(np.zeros((8, 8, 3), np.uint8))


def test_shared_yolo11n_finds_the_car_and_the_person(data_root) -> None:
    detector = YoloDetector(str(data_root.parent / "weights" / "yolo11n_int8_openvino_model"))
    visible = as_rgb_uint8(load_image(data_root / "msrs_test" / "vi" / "00008N.png").pixels)
    infrared = as_rgb_uint8(load_image(data_root / "msrs_test" / "ir" / "00004N.png").pixels)
    assert "car" in detector.detect(visible).counts()
    people = [d for d in detector.detect(infrared).items if d.label == "person"]
    assert people and 480 < people[0].center[0] < 600  # the pedestrian on the right


def test_detection_makes_no_network_attempt(data_root) -> None:
    weights = data_root.parent / "weights" / "yolo11n_int8_openvino_model"
    script = textwrap.dedent(f"""
        import json, socket
        attempts = []
        def guard(*args, **kwargs):
            attempts.append(repr(args[:2]))
            raise OSError("network blocked by test")
        socket.socket.connect = guard
        socket.getaddrinfo = guard
        import numpy as np
        from tgif.perception import YoloDetector
        det = YoloDetector({str(weights)!r}).detect(np.zeros((64, 64, 3), np.uint8))
        print(json.dumps(attempts))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# --- segmentation ----------------------------------------------------------------------------------

def test_grabcut_recovers_the_object_inside_its_box(rng) -> None:
    image, truth, box = scene_with_object(rng)
    mask = grabcut_box(image, box)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.8


def test_classic_segmenter_regions(rng) -> None:
    image, truth, box = scene_with_object(rng)
    detections = Detections([Detection(box, "person", 0.9, 0)], (160, 120))
    seg = ClassicSegmenter().segment(image, detections)
    assert seg.backend == "classic" and seg.image_size == (160, 120)
    assert seg.regions[0].kind == "object" and seg.regions[0].label == "person"
    scene = [r for r in seg.regions if r.kind == "scene"]
    assert len(scene) >= 2  # sky and ground at least
    assert [r.area for r in scene] == sorted((r.area for r in scene), reverse=True)
    for region in seg.regions:
        assert region.mask.dtype == bool and region.mask.shape == (120, 160)
    labels = seg.label_map()
    assert labels.shape == (120, 160) and labels.max() == len(seg.regions)
    assert np.all(labels[seg.regions[0].mask] == 1)  # objects are painted over scene regions
    # scene regions never overlap the object
    assert not any((r.mask & seg.regions[0].mask).any() for r in scene)


def test_classic_segmenter_without_detections_splits_the_scene(rng) -> None:
    image, _, _ = scene_with_object(rng)
    seg = ClassicSegmenter().segment(image)
    assert seg.regions and all(r.kind == "scene" for r in seg.regions)
    with pytest.raises(ValueError, match="uint8"):
        ClassicSegmenter().segment(image.astype(np.float32))


def test_build_segmenter_names() -> None:
    assert build_segmenter("classic").name == "classic"
    with pytest.raises(UnknownNameError, match="choose from classic, mobile_sam, sam"):
        build_segmenter("watershed")


# --- rendering -------------------------------------------------------------------------------------

def test_detection_map_draws_box_and_label(rng) -> None:
    image, _, box = scene_with_object(rng)
    det = Detections([Detection(box, "person", 0.9, 0)], (160, 120))
    out = draw_detections(image, det)
    assert out.shape == image.shape and out.dtype == np.uint8
    x1, y1, x2, y2 = (int(v) for v in box)
    changed = np.any(out != image, axis=-1)
    assert changed[y1 + 5 : y2 - 5, x1].all() and changed[y1 + 5 : y2 - 5, x2].all()  # vertical box edges
    assert changed[: y1 + 1, x1 : x1 + 20].any()  # the label tag above the box
    assert not changed[y2 + 3 :, :x1 - 3].any()  # nothing far from the box


def test_segmentation_map_colours_regions_and_boundaries(rng) -> None:
    image, _, box = scene_with_object(rng)
    seg = ClassicSegmenter().segment(image, Detections([Detection(box, "person", 0.9, 0)], (160, 120)))
    out = draw_segmentation(image, seg)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.mean(np.any(out != image, axis=-1)) > 0.9  # regions are tinted
    white = np.all(out == 255, axis=-1)
    assert white.sum() > 50  # boundaries drawn


# --- perceiver and cache ---------------------------------------------------------------------------

def test_perceiver_caches_results_on_disk(tmp_path, rng) -> None:
    image, _, box = scene_with_object(rng)
    detector = FixedDetector(box)
    perceiver = Perceiver(detector, "classic", cache=tmp_path)
    first = perceiver.perceive(image)
    assert not first.cached and set(first.seconds) == {"detection", "segmentation", "rendering"}
    second = Perceiver(detector, "classic", cache=tmp_path).perceive(image)
    assert second.cached and detector.calls == 1
    np.testing.assert_array_equal(second.detection_map, first.detection_map)
    np.testing.assert_array_equal(second.segmentation_map, first.segmentation_map)
    assert [r.label for r in second.segmentation.regions] == [r.label for r in first.segmentation.regions]
    for a, b in zip(first.segmentation.regions, second.segmentation.regions):
        np.testing.assert_array_equal(a.mask, b.mask)
    assert second.detections.items == first.detections.items


def test_cache_key_depends_on_pixels_and_corrupt_entries_are_recomputed(tmp_path, rng) -> None:
    image, _, box = scene_with_object(rng)
    detector = FixedDetector(box)
    perceiver = Perceiver(detector, "classic", cache=tmp_path)
    perceiver.perceive(image)
    other = image.copy()
    other[0, 0] ^= 1
    assert not perceiver.perceive(other).cached
    for meta in tmp_path.rglob("meta.json"):
        meta.write_text("{broken")
    assert not perceiver.perceive(image).cached
    assert detector.calls == 3


def test_optional_detector_failure_gives_segmentation_only_and_a_note(tmp_path, rng) -> None:
    image, _, box = scene_with_object(rng)
    missing = YoloDetector(str(tmp_path / "nope_openvino_model"))
    with pytest.raises(DetectorError, match="not found"):
        Perceiver(missing, "classic", cache=False).perceive(image)
    cache = tmp_path / "cache"
    result = Perceiver(missing, "classic", cache=cache, detector_optional=True).perceive(image)
    assert len(result.detections) == 0 and result.detections.model == "none"
    assert len(result.notes) == 1 and "not found" in result.notes[0] and "segmentation only" in result.notes[0]
    assert result.segmentation.regions and result.segmentation_map.shape == (120, 160, 3)
    assert not list(cache.rglob("meta.json"))  # a degraded result is not cached
    detector = FixedDetector(box)  # with a working detector the same call has no note and is cached
    healthy = Perceiver(detector, "classic", cache=cache, detector_optional=True).perceive(image)
    assert healthy.notes == [] and len(healthy.detections) == 1 and list(cache.rglob("meta.json"))


def test_perceiver_accepts_grey_and_float_images(tmp_path, rng) -> None:
    image, _, box = scene_with_object(rng)
    grey = image.mean(axis=-1) / 255.0
    result = Perceiver(FixedDetector(box), "classic", cache=False).perceive(grey)
    assert result.detection_map.shape == (120, 160, 3)
    assert PerceptionCache(tmp_path).load("0" * 64) is None


def test_corrupt_files_stay_clear_errors_after_ultralytics_patched_pil(tmp_path) -> None:
    from tgif.errors import ImageLoadError

    YoloDetector("yolo11n.yaml").detect(np.zeros((32, 32, 3), np.uint8))  # imports ultralytics (patches PIL)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageLoadError, match="bad.png: not a readable image"):
        load_image(bad)
