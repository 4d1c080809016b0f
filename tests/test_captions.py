"""Tests for :mod:`tgif.captions`: the prompt, the template captioner and the GPT captioner.

Everything runs offline. The GPT captioner talks to a fake OpenAI-compatible server (stdlib
``http.server`` on 127.0.0.1, port 0, daemon thread) that records each request and answers as
the test tells it to. Images, detections and regions are built inside the tests.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from PIL import Image

from tgif.captions import (
    CAPTION_MODES,
    PROMPT_VERSION,
    TASK_NAMES,
    TEMPLATE_VERSION,
    Caption,
    CaptionInput,
    GPTCaptioner,
    TemplateCaptioner,
    build_captioner,
    build_messages,
    mode_inputs,
    prompt_text,
)
from tgif.captions.gpt import normalize_answer
from tgif.captions.redact import scrub
from tgif.captions.scene import describe_regions
from tgif.captions.template import MAX_WORDS
from tgif.captions.wording import counted, plural, position_phrase
from tgif.errors import TgifError, UnknownNameError
from tgif.io.pair import TASKS
from tgif.perception.types import Detection, Detections, Region, Segmentation

KEY = "sk-test-Zq8vN3xK41pLm77Qwerty0987"
W, H = 120, 90
EXPECTED_IMAGES = {"full": 3, "image+detection": 2, "image+segmentation": 2, "image": 1}
# Flat colours tell the three images apart once decoded: source grey, detection map red, segmentation map green.
SOURCE_RGB, DETECTION_RGB, SEGMENTATION_RGB = (100, 100, 100), (200, 0, 0), (0, 200, 0)


# --------------------------------------------------------------------------- fake OpenAI server


@dataclass
class Reply:
    """How the fake server answers the next requests."""

    status: int = 200
    content: str = "Fake caption from the server."
    delay: float = 0.0
    error: dict | None = None


@dataclass
class FakeOpenAI:
    """A recording OpenAI-compatible server; ``url`` is its base URL (``.../v1``)."""

    url: str = ""
    reply: Reply = field(default_factory=Reply)
    requests: list[dict] = field(default_factory=list)


def _make_handler(state: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "body": json.loads(raw or b"{}"),
                }
            )
            reply = state.reply
            time.sleep(reply.delay)
            if reply.status == 200:
                payload = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "fake",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "logprobs": None,
                            "message": {"role": "assistant", "content": reply.content},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            else:
                payload = {"error": reply.error or {"message": "fake failure", "type": "server_error"}}
            data = json.dumps(payload).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timeout test)
                pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


@pytest.fixture
def fake_openai():
    state = FakeOpenAI()
    server = _QuietServer(("127.0.0.1", 0), _make_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TGIF_CAPTION_MODEL"):
        monkeypatch.delenv(name, raising=False)


def _gpt(server: FakeOpenAI, **kw) -> GPTCaptioner:
    options = {"base_url": server.url, "api_key": KEY, "model": "test-model", "timeout": 5.0, "max_retries": 0}
    return GPTCaptioner(**{**options, **kw})


# --------------------------------------------------------------------------- inputs


def _detections(width: int = W, height: int = H) -> Detections:
    """Two cars on the left, a person in the centre, a traffic light at the top right (boxes scaled to the frame)."""
    sx, sy = width / W, height / H
    boxes = [
        ((4, 35, 26, 55), "car", 0.91),
        ((8, 38, 30, 52), "car", 0.85),
        ((54, 30, 66, 60), "person", 0.77),
        ((100, 4, 108, 20), "traffic light", 0.6),
    ]
    items = [Detection((x1 * sx, y1 * sy, x2 * sx, y2 * sy), label, score) for (x1, y1, x2, y2), label, score in boxes]
    return Detections(items, (width, height), model="hand-made")


def _segmentation() -> Segmentation:
    """Object regions for the two cars and the person; scene regions: bottom band (1/3), top band (2/9), the rest."""

    def mask(rows: slice, cols: slice) -> np.ndarray:
        m = np.zeros((H, W), bool)
        m[rows, cols] = True
        return m

    bottom, top = mask(slice(60, 90), slice(None)), mask(slice(0, 20), slice(None))
    middle = ~(bottom | top)
    regions = [
        Region(mask(slice(35, 55), slice(4, 26)), "car", "object"),
        Region(mask(slice(38, 52), slice(8, 30)), "car", "object"),
        Region(mask(slice(30, 60), slice(54, 66)), "person", "object"),
        Region(middle, "region", "scene"),
        Region(bottom, "region", "scene"),
        Region(top, "region", "scene"),
    ]
    return Segmentation(regions, (W, H), backend="hand-made")


def _flat(rgb: tuple[int, int, int], width: int = W, height: int = H) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


def _inputs(image: np.ndarray | None = None, task: str = "ivf", modality: str = "infrared", **kw) -> CaptionInput:
    image = _flat(SOURCE_RGB) if image is None else image
    height, width = image.shape[:2]
    options = {
        "detections": _detections(width, height),
        "segmentation": _segmentation(),
        "detection_map": _flat(DETECTION_RGB, width, height),
        "segmentation_map": _flat(SEGMENTATION_RGB, width, height),
    }
    return CaptionInput(image=image, modality=modality, task=task, **{**options, **kw})


def _texture(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A sharp random texture (uint8 RGB grey)."""
    grey = rng.integers(0, 256, (size // 4, size // 4), dtype=np.uint8)
    grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_NEAREST)
    return np.repeat(grey[..., None], 3, axis=-1)


def _user_content(request: dict) -> list[dict]:
    messages = request["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages[1]["content"]


def _decode(part: dict) -> np.ndarray:
    assert part["type"] == "image_url" and part["image_url"]["detail"] == "low"
    url = part["image_url"]["url"]
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def _words(text: str) -> int:
    return len(text.split())


# --------------------------------------------------------------------------- modes, wording, redaction


def test_every_mode_and_task_is_defined():
    assert [mode for mode in CAPTION_MODES if mode_inputs(mode).image] == list(EXPECTED_IMAGES)
    assert not mode_inputs("none").image
    assert set(TASK_NAMES) == set(TASKS)
    with pytest.raises(UnknownNameError, match="caption mode"):
        mode_inputs("everything")


def test_wording_helpers():
    assert plural("person") == "people"
    assert plural("bus") == "buses"
    assert plural("traffic light") == "traffic lights"
    assert plural("wine glass") == "wine glasses"
    assert counted(1, "umbrella") == "an umbrella"
    assert counted(1, "car") == "a car"
    assert counted(3, "person") == "three people"
    assert counted(12, "car") == "12 cars"
    assert position_phrase(60, 45, W, H) == "in the centre"
    assert position_phrase(10, 45, W, H) == "on the left"
    assert position_phrase(110, 5, W, H) == "at the top right"
    assert position_phrase(60, 85, W, H) == "at the bottom"


def test_scrub_removes_key_and_its_fragments_only():
    text = f"bad key {KEY}; partial {KEY[-12:]}; header Authorization: Bearer abc.def; other sk-live-ABCDEFGH12; ok"
    cleaned = scrub(text, KEY)
    assert KEY not in cleaned and KEY[-12:] not in cleaned
    assert "abc.def" not in cleaned and "ABCDEFGH12" not in cleaned
    assert cleaned.startswith("bad key ***;") and cleaned.endswith("; ok")
    assert scrub("a flag bearer walks", None, key_patterns=False) == "a flag bearer walks"


# --------------------------------------------------------------------------- prompt


@pytest.mark.parametrize("mode", list(EXPECTED_IMAGES))
def test_build_messages_images_per_mode(mode):
    messages = build_messages(_inputs(), mode)
    content = messages[1]["content"]
    assert content[0]["type"] == "text"
    images = [_decode(part) for part in content[1:]]
    assert len(images) == EXPECTED_IMAGES[mode]
    expected = [SOURCE_RGB]
    if mode_inputs(mode).detection:
        expected.append(DETECTION_RGB)
    if mode_inputs(mode).segmentation:
        expected.append(SEGMENTATION_RGB)
    assert [tuple(int(v) for v in image[H // 2, W // 2]) for image in images] == expected
    assert all(image.shape == (H, W, 3) for image in images)


def test_prompt_says_the_detector_was_unavailable_rather_than_that_nothing_was_found():
    text = prompt_text(_inputs(detections=Detections([], (W, H), model="none")), "full")
    assert "Detector output: unavailable" in text and "no objects detected" not in text


def test_prompt_text_names_modality_task_and_asks_for_the_right_things():
    text = prompt_text(_inputs(modality="infrared", task="ivf"), "full")
    for phrase in (
        "infrared",
        "infrared-visible image fusion",
        "objects",
        "positions",
        "salient regions",
        "lighting",
        "focus",
        "exposure",
        "60 words",
        "Do not speculate",
    ):
        assert phrase in text
    assert "car on the left (0.91)" in text and "person in the centre" in text
    assert "3 object regions (car x2, person x1)" in text
    only_image = prompt_text(_inputs(), "image")
    assert "car" not in only_image and "Segmenter" not in only_image
    assert "segmentation map" not in prompt_text(_inputs(), "image+detection")
    assert "Detector output" not in prompt_text(_inputs(), "image+segmentation")


def test_large_images_are_downscaled_before_encoding():
    image = _flat(SOURCE_RGB, 1000, 500)
    content = build_messages(_inputs(image), "full")[1]["content"]
    assert [_decode(part).shape for part in content[1:]] == [(384, 768, 3)] * 3


def test_missing_map_is_left_out_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        content = build_messages(_inputs(detection_map=None), "full")[1]["content"]
    assert len(content) == 3
    assert "detection map" in caplog.text
    assert "detection map" not in content[0]["text"]


def test_unknown_mode_or_task_raises():
    with pytest.raises(UnknownNameError):
        build_messages(_inputs(), "bogus")
    with pytest.raises(UnknownNameError, match="task"):
        build_messages(_inputs(task="xyz"), "full")


# --------------------------------------------------------------------------- template captioner


def test_template_is_deterministic_and_versioned():
    inputs = _inputs(_texture(np.random.default_rng(0)))
    first = TemplateCaptioner().caption(inputs, "full")
    assert first == TemplateCaptioner().caption(inputs, "full")
    assert first.captioner == "template" and first.prompt_version == TEMPLATE_VERSION
    assert first.mode == "full" and first.fallback_reason is None


def test_template_names_classes_counts_and_positions():
    text = TemplateCaptioner().caption(_inputs(), "image+detection").text
    assert "two cars on the left" in text
    assert "a person in the centre" in text
    assert "a traffic light at the top right" in text
    # objects with positions come first, so the network (which reads a caption's first tokens) reads them
    assert text.startswith("It shows two cars on the left") and text.endswith("infrared image.")
    assert "Segmentation" not in text


def test_template_describes_regions():
    text = TemplateCaptioner().caption(_inputs(), "image+segmentation").text
    assert "three object regions and three scene regions" in text  # classes come from the detector
    assert "three object regions (two cars and a person)" in describe_regions(_segmentation(), name_classes=True)
    full = TemplateCaptioner().caption(_inputs(), "full").text
    assert full.startswith("It shows") and "Segmentation" not in full  # 50 words: the regions sentence goes first
    assert "44% of the frame in the centre and 33% at the bottom" in text
    assert "traffic light" not in text


def test_template_mode_image_uses_statistics_only():
    text = TemplateCaptioner().caption(_inputs(), "image").text
    for word in ("car", "person", "traffic", "Segmentation", "object"):
        assert word not in text
    assert "infrared image" in text


def test_template_mode_none_is_empty():
    caption = TemplateCaptioner().caption(_inputs(), "none")
    assert caption.text == "" and caption.mode == "none"


def test_template_reports_no_detections():
    empty = Detections([], (W, H))
    assert "No objects are detected." in TemplateCaptioner().caption(_inputs(detections=empty), "full").text


def test_template_claims_nothing_about_objects_without_a_detector():
    unavailable = Detections([], (W, H), model="none")  # what a Perceiver(detector_optional=True) gives offline
    text = TemplateCaptioner().caption(_inputs(detections=unavailable), "full").text
    assert "No objects" not in text and "It shows" not in text
    assert text.startswith("A ") and "Segmentation shows" in text


def test_template_captions_fit_the_token_budget_with_room_for_a_phrase():
    from tgif.text import CAPTION_TOKENS, build_text_encoder

    labels = ["car", "person", "bicycle", "dog", "traffic light", "bus", "truck", "umbrella"]
    items = [Detection((x, y, x + 10, y + 10), labels[i % 8], 0.9 - i / 100)
             for i, (x, y) in enumerate(np.random.default_rng(1).integers(0, 100, (24, 2)).tolist())]
    scene = [Region(np.random.default_rng(i).random((H, W)) < 0.1) for i in range(12)]
    inputs = _inputs(detections=Detections(items, (W, H)), segmentation=Segmentation(scene, (W, H)))
    text = TemplateCaptioner().caption(inputs, "full").text
    phrase = " Highlight the person at the bottom left."
    assert build_text_encoder("minilm").token_count(text + phrase) <= CAPTION_TOKENS


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("mode", list(EXPECTED_IMAGES))
def test_template_word_limit(task, mode, rng):
    labels = ["car", "person", "bicycle", "dog", "traffic light", "bus", "truck", "umbrella"]
    items = [
        Detection((x, y, x + 10, y + 10), labels[i % len(labels)], 0.9 - i / 100)
        for i, (x, y) in enumerate(rng.integers(0, 100, (24, 2)).tolist())
    ]
    scene = [Region(rng.random((H, W)) < 0.1) for _ in range(12)]
    objects = [Region(rng.random((H, W)) < 0.02, labels[i % 8], "object") for i in range(9)]
    image = _texture(rng)
    image[:40] = 0  # some clipping for MEF
    inputs = _inputs(
        image, task=task, detections=Detections(items, (W, H)), segmentation=Segmentation(objects + scene, (W, H))
    )
    text = TemplateCaptioner().caption(inputs, mode).text
    assert 5 < _words(text) <= MAX_WORDS
    if mode_inputs(mode).detection and task != "mif":  # MIF captions never name COCO classes
        assert "It shows" in text  # the detections outrank the regions when words run out


def test_template_brightness_contrast_sharpness_words(rng):
    dark = np.clip(_texture(rng).astype(int) // 12, 0, 255).astype(np.uint8)  # mean ~10
    bright = (_texture(rng) // 8 + 225).astype(np.uint8)
    flat = _flat((128, 128, 128), 128, 128)
    captioner = TemplateCaptioner()
    dark_text = captioner.caption(_inputs(dark), "image").text
    bright_text = captioner.caption(_inputs(bright), "image").text
    flat_text = captioner.caption(_inputs(flat), "image").text
    assert dark_text.startswith("A dark,") and "bright" not in dark_text
    assert bright_text.startswith("A bright,") and "dark" not in bright_text
    assert "high-contrast, sharp" in captioner.caption(_inputs(_texture(rng)), "image").text
    assert flat_text == "A moderately lit, low-contrast, blurry infrared image."


@pytest.mark.parametrize(
    ("blurred", "expected"),
    [
        ((slice(None), slice(64, None)), "The left half is in sharper focus than the right half."),
        ((slice(None), slice(0, 64)), "The right half is in sharper focus than the left half."),
        ((slice(0, 64), slice(None)), "The bottom half is in sharper focus than the top half."),
    ],
)
def test_template_mff_names_the_sharper_part(blurred, expected, rng):
    image = _texture(rng)
    image[blurred] = cv2.GaussianBlur(image, (0, 0), 4)[blurred]
    text = TemplateCaptioner().caption(_inputs(image, task="mff", modality="near-focus"), "image").text
    assert text.endswith(expected)
    assert "near-focus image." in text


def test_template_mff_even_focus(rng):
    text = TemplateCaptioner().caption(_inputs(_texture(rng), task="mff", modality="far-focus"), "image").text
    assert text.endswith("Focus is similar across the frame.")


def test_template_mef_reports_clipped_areas(rng):
    under = (_texture(rng) // 2 + 64).astype(np.uint8)  # no clipping outside the black half
    under[64:] = 0
    over = (_texture(rng) // 2 + 64).astype(np.uint8)
    over[:, :40] = 255
    captioner = TemplateCaptioner()
    under_text = captioner.caption(_inputs(under, task="mef", modality="under-exposed"), "image").text
    over_text = captioner.caption(_inputs(over, task="mef", modality="over-exposed"), "image").text
    assert under_text.endswith("50% of the frame is near-black (under-exposed), mostly at the bottom.")
    assert over_text.endswith("31% of the frame is near-white (over-exposed), mostly on the left.")
    both = (_texture(rng) // 2 + 64).astype(np.uint8)
    both[:, :64] = 0
    both[:64, 64:] = 255
    assert (
        TemplateCaptioner()
        .caption(_inputs(both, task="mef"), "image")
        .text.endswith(
            "50% of the frame is near-black (under-exposed), mostly on the left;"
            " 25% is near-white (over-exposed), mostly at the top right."
        )
    )
    assert "Few pixels are clipped" in captioner.caption(_inputs(_flat((128,) * 3), task="mef"), "image").text


def test_template_mif_ignores_the_black_background():
    image = np.zeros((100, 100, 3), np.uint8)
    cv2.circle(image, (50, 50), 30, (210, 210, 210), -1)
    text = TemplateCaptioner().caption(_inputs(image, task="mif", modality="MRI"), "image").text
    assert text.startswith("A bright,")  # the disk is bright although the frame's mean is dim
    assert "The scan fills 28% of the frame on a black background." in text


def test_template_unknown_mode_raises():
    with pytest.raises(UnknownNameError):
        TemplateCaptioner().caption(_inputs(), "images")


# --------------------------------------------------------------------------- GPT captioner, happy path


@pytest.mark.parametrize("mode", list(EXPECTED_IMAGES))
def test_gpt_request_carries_prompt_and_images(fake_openai, mode):
    fake_openai.reply = Reply(content="  Two cars wait\n on the left;  a person   crosses. ")
    inputs = _inputs()
    caption = _gpt(fake_openai).caption(inputs, mode)

    assert caption.text == "Two cars wait on the left; a person crosses."
    assert caption.captioner == "gpt:test-model" and caption.prompt_version == PROMPT_VERSION
    assert caption.mode == mode and caption.fallback_reason is None
    (request,) = fake_openai.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "test-model" and body["max_tokens"] == 150 and body["temperature"] == 0.2
    content = _user_content(request)
    assert content[0] == {"type": "text", "text": prompt_text(inputs, mode)}
    assert "infrared" in content[0]["text"] and "salient regions" in content[0]["text"]
    images = [_decode(part) for part in content[1:]]
    assert len(images) == EXPECTED_IMAGES[mode]
    assert all(image.shape == (H, W, 3) for image in images)


def test_gpt_uses_environment_settings(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("TGIF_CAPTION_MODEL", "env-model")
    captioner = GPTCaptioner(max_retries=0, timeout=5)
    assert captioner.name == "gpt:env-model"
    assert captioner.caption(_inputs(), "image").text == "Fake caption from the server."
    assert fake_openai.requests[0]["body"]["model"] == "env-model"


def test_gpt_caps_long_answers(fake_openai):
    fake_openai.reply = Reply(content=" ".join(["Many words in a sentence here."] * 40))
    text = _gpt(fake_openai).caption(_inputs(), "full").text
    assert _words(text) <= 120 and text.endswith(".")
    assert _words(text) >= 100
    assert normalize_answer("a  b\n\tc") == "a b c"


def test_gpt_mode_none_makes_no_request(fake_openai):
    caption = _gpt(fake_openai).caption(_inputs(), "none")
    assert caption.text == "" and caption.captioner == "gpt:test-model" and caption.fallback_reason is None
    assert fake_openai.requests == []


def test_gpt_unknown_mode_raises_without_request(fake_openai):
    with pytest.raises(UnknownNameError):
        _gpt(fake_openai).caption(_inputs(), "detection")
    assert fake_openai.requests == []


# --------------------------------------------------------------------------- GPT captioner, fallbacks


def _assert_template_fallback(caption, inputs, mode, reason_part):
    assert caption.captioner == "template"
    assert caption.text == TemplateCaptioner().caption(inputs, mode).text
    assert caption.fallback_reason is not None and reason_part in caption.fallback_reason
    assert caption.fallback_reason.endswith("used the template captioner")


def test_gpt_http_error_falls_back(fake_openai, caplog):
    fake_openai.reply = Reply(status=500, error={"message": "the model is overloaded", "type": "server_error"})
    inputs = _inputs()
    with caplog.at_level(logging.WARNING, logger="tgif.captions"):
        caption = _gpt(fake_openai).caption(inputs, "full")
    _assert_template_fallback(caption, inputs, "full", "HTTP 500 (the model is overloaded)")
    assert len(fake_openai.requests) == 1
    assert "HTTP 500" in caplog.text


def test_gpt_timeout_falls_back(fake_openai):
    fake_openai.reply = Reply(delay=3.0)
    inputs = _inputs()
    start = time.perf_counter()
    caption = _gpt(fake_openai, timeout=0.5, max_retries=0).caption(inputs, "image")
    assert time.perf_counter() - start < 2.5
    _assert_template_fallback(caption, inputs, "image", "no answer within 0.5 s (1 attempt)")


def test_gpt_deadline_covers_the_retry_too(fake_openai, monkeypatch):
    """A server that never answers: the deadline (TGIF_GPT_TIMEOUT) holds for both attempts together."""
    fake_openai.reply = Reply(delay=5.0)
    monkeypatch.setenv("TGIF_GPT_TIMEOUT", "1.2")
    inputs = _inputs()
    start = time.perf_counter()
    caption = _gpt(fake_openai, timeout=None, max_retries=1).caption(inputs, "image")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.2 + 2.0  # two attempts of 0.6 s, plus the client's short back-off
    assert len(fake_openai.requests) == 2
    _assert_template_fallback(caption, inputs, "image", "no answer within 1.2 s (2 attempts)")
    monkeypatch.setenv("TGIF_GPT_TIMEOUT", "soon")
    with pytest.raises(TgifError, match="TGIF_GPT_TIMEOUT must be a number"):
        GPTCaptioner()


def test_gpt_unreachable_server_falls_back():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inputs = _inputs()
    captioner = GPTCaptioner(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=2, max_retries=0)
    _assert_template_fallback(captioner.caption(inputs, "full"), inputs, "full", "cannot connect to http://127.0.0.1")


def test_gpt_empty_answer_falls_back(fake_openai):
    fake_openai.reply = Reply(content=" \n ")
    inputs = _inputs()
    _assert_template_fallback(_gpt(fake_openai).caption(inputs, "full"), inputs, "full", "empty caption")


def test_gpt_rejected_key_never_leaks(fake_openai, caplog):
    fake_openai.reply = Reply(
        status=401,
        error={
            "message": f"Incorrect API key provided: {KEY}. Key tail {KEY[-10:]}.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        },
    )
    inputs = _inputs()
    captioner = _gpt(fake_openai)
    caplog.set_level(logging.DEBUG)  # openai's and httpx's own logs too
    caption = captioner.caption(inputs, "full")
    _assert_template_fallback(caption, inputs, "full", "HTTP 401")
    assert fake_openai.requests[0]["authorization"] == f"Bearer {KEY}"  # the key was really sent
    for text in (caplog.text, caption.fallback_reason, repr(captioner), str(captioner), repr(caption)):
        assert KEY not in text and KEY[-10:] not in text and KEY[3:15] not in text
    assert "Incorrect API key provided: ***" in caption.fallback_reason


def test_gpt_without_key_makes_no_request(fake_openai):
    inputs = _inputs()
    captioner = GPTCaptioner(base_url=fake_openai.url, max_retries=0)
    _assert_template_fallback(captioner.caption(inputs, "full"), inputs, "full", "no OpenAI API key")
    assert fake_openai.requests == []
    assert "api_key=None" in repr(captioner)


def test_gpt_custom_fallback(fake_openai):
    class Fixed:
        name = "fixed"

        def caption(self, inputs, mode="full"):
            return Caption("fixed text", "fixed", "v0", mode)

    fake_openai.reply = Reply(status=503)
    caption = _gpt(fake_openai, fallback=Fixed()).caption(_inputs(), "image")
    assert caption.text == "fixed text" and caption.fallback_reason.endswith("used the fixed captioner")


# --------------------------------------------------------------------------- build_captioner


def test_build_captioner(monkeypatch):
    assert isinstance(build_captioner(), TemplateCaptioner)
    assert isinstance(build_captioner("template"), TemplateCaptioner)
    gpt = build_captioner("gpt", model="m1")
    assert isinstance(gpt, GPTCaptioner) and gpt.name == "gpt:m1" and not gpt.has_key
    assert build_captioner("gpt:gpt-4.1-mini").name == "gpt:gpt-4.1-mini"
    assert isinstance(build_captioner("auto", api_key=KEY), GPTCaptioner)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    auto = build_captioner("AUTO")
    assert isinstance(auto, GPTCaptioner) and auto.has_key and KEY not in repr(auto)
    with pytest.raises(UnknownNameError, match="captioner"):
        build_captioner("blip")


def test_segmentation_only_mode_does_not_leak_detected_classes() -> None:
    from tgif.captions import TemplateCaptioner, prompt_text

    image = np.full((60, 80, 3), 120, np.uint8)
    box = (10.0, 10.0, 30.0, 40.0)
    mask = np.zeros((60, 80), bool)
    mask[10:40, 10:30] = True
    inputs = CaptionInput(
        image, "visible", "ivf",
        detections=Detections([Detection(box, "giraffe", 0.9, 23)], (80, 60)),
        segmentation=Segmentation([Region(mask, "giraffe", "object", 0.9), Region(~mask, "region", "scene")], (80, 60)),
        detection_map=image, segmentation_map=image,
    )
    assert "giraffe" in TemplateCaptioner().caption(inputs, mode="full").text
    assert "giraffe" not in TemplateCaptioner().caption(inputs, mode="image+segmentation").text
    assert "object region" in TemplateCaptioner().caption(inputs, mode="image+segmentation").text
    assert "giraffe" not in prompt_text(inputs, "image+segmentation")
    assert "giraffe" in prompt_text(inputs, "image+detection")


def test_mif_template_ignores_coco_classes_and_wording_of_single_leftover() -> None:
    from tgif.captions import TemplateCaptioner
    from tgif.captions.wording import counted

    scan = np.zeros((64, 64, 3), np.uint8)
    scan[16:48, 16:48] = 180
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    inputs = CaptionInput(
        scan, "MRI", "mif",
        detections=Detections([Detection((16.0, 16.0, 48.0, 48.0), "zebra", 0.4, 22)], (64, 64)),
        segmentation=Segmentation([Region(mask, "zebra", "object", 0.4), Region(~mask, "region", "scene")], (64, 64)),
        detection_map=scan, segmentation_map=scan,
    )
    text = TemplateCaptioner().caption(inputs, "full").text
    assert "zebra" not in text and "MRI" in text
    assert counted(1, "other object") == "another object"


def test_restrict_caption_drops_what_a_mode_may_not_use():
    from tgif.captions.template import restrict_caption

    full = ("It shows a person on the right. A dark, blurry infrared image. Segmentation shows an object region "
            "(a person) and six scene regions; the largest cover 84% of the frame in the centre.")
    assert restrict_caption(full, "full") == full
    assert restrict_caption(full, "image+detection") == "It shows a person on the right. A dark, blurry infrared image."
    assert restrict_caption(full, "image+segmentation") == (
        "A dark, blurry infrared image. Segmentation shows an object region and six scene regions; the largest "
        "cover 84% of the frame in the centre.")
    assert restrict_caption("No objects are detected. A dim visible image.", "image") == "A dim visible image."
    assert restrict_caption(full, "none") == ""
    with pytest.raises(UnknownNameError):
        restrict_caption(full, "everything")


@pytest.mark.parametrize("mode", ["image+detection", "image+segmentation", "image"])
def test_restrict_caption_gives_what_the_template_drafts_in_that_mode(mode):
    from tgif.captions.template import restrict_caption

    captioner = TemplateCaptioner()
    detections = _detections()
    one_person = Detections([d for d in detections.items if d.label == "person"], detections.image_size, "hand-made")
    full = captioner.caption(_inputs(detections=one_person), "full").text
    assert restrict_caption(full, mode) == captioner.caption(_inputs(detections=one_person), mode).text
    # a full caption cut to MAX_WORDS has lost its lowest-priority sentences, which a narrower mode keeps
    crowded = captioner.caption(_inputs(), "full").text
    assert "Segmentation" not in crowded and "Segmentation" in captioner.caption(_inputs(), "image+segmentation").text


def test_clean_caption_drops_control_characters_and_refuses_unencodable_text():
    from tgif.captions.user_text import CaptionTextError, clean_caption

    assert clean_caption("  a person\x00 on the\nleft\t ") == "a person on the left"
    assert clean_caption("\x00\x00") == ""  # a NUL-only caption is no caption: it gets drafted
    assert clean_caption("café 👩‍🚀 «ok»") == "café 👩‍🚀 «ok»"
    with pytest.raises(CaptionTextError, match="Caption 1 contains characters that are not valid text"):
        clean_caption("bad \ud800 text", "Caption 1")


def test_markdown_literal_renders_as_typed():
    from markdown_it import MarkdownIt

    from tgif.captions.user_text import markdown_literal

    hostile = ('<img src=x onerror=alert(1)> [click](javascript:alert(1)) ![x](http://evil.example/p.png) '
               '**bold** `code` # heading')
    html = MarkdownIt().render(markdown_literal(hostile))
    assert "<img" not in html and "<a " not in html and "<strong>" not in html and "<code>" not in html
    assert "<h1>" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
