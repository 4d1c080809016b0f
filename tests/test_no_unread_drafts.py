"""No draft that nobody reads: with both captions typed, ``/fuse`` asks no caption server (a local server that
never answers counts the requests), and takes no longer than with no GPT configured at all; only an empty caption
is drafted by GPT. The drafts a run read, and where they came from, are in its record."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from PIL import Image, ImageOps

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from helpers.caption_server import SilentCaptionServer  # noqa: E402

from app.config import AppConfig  # noqa: E402
from app.layout import CSS, build_demo  # noqa: E402
from app.models import ModelHub  # noqa: E402
from tgif.perception.detection import default_detector_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IR = ROOT / "assets" / "examples" / "ivf" / "ir.png"
VI = ROOT / "assets" / "examples" / "ivf" / "vi.png"
TYPED = ("A warm person walks on the left.", "A dark street with a lit shop window.")


def _pair(folder: Path, mirror: bool) -> tuple[Path, Path]:
    """A 640x480 pair no hub has seen (``mirror``: a second one, so neither finds the other's cached maps)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in (IR, VI):
        image = Image.open(source).resize((640, 480), Image.Resampling.BICUBIC)
        path = folder / source.name
        (ImageOps.mirror(image) if mirror else image).save(path)
        paths.append(path)
    return paths[0], paths[1]


def _fuse(url: str, pair: tuple[Path, Path], captions: tuple[str, str]) -> tuple[float, tuple]:
    client = Client(url, verbose=False)
    started = time.perf_counter()
    outputs = client.predict(handle_file(str(pair[0])), handle_file(str(pair[1])), "ivf", *captions, True, "TGIF",
                             False, "source 2", api_name="/fuse")
    return time.perf_counter() - started, outputs


def test_typed_captions_send_no_request_to_the_caption_server(tmp_path, monkeypatch):
    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path / "cache"))
    if not Path(default_detector_weights()).exists():
        monkeypatch.setenv("TGIF_YOLO_WEIGHTS", "yolo11n.yaml")
    monkeypatch.setenv("TGIF_GPT_TIMEOUT", "2")
    seconds: dict[str, float] = {}
    with SilentCaptionServer() as server:
        for name, mirror in (("gpt", False), ("no_gpt", True)):
            if name == "gpt":
                monkeypatch.setenv("OPENAI_API_KEY", "sk-test-silent-0000000000")
                monkeypatch.setenv("OPENAI_BASE_URL", server.url)
            else:
                monkeypatch.delenv("OPENAI_API_KEY", raising=False)
                monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
            config = AppConfig(output_dir=tmp_path / f"out-{name}", device="cpu")  # captioner "auto"
            demo = build_demo(config, ModelHub(config))
            _, url, _ = demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, css=CSS)
            try:
                _fuse(url, (IR, VI), ("a person", "a street"))  # warm-up: the models are loaded
                seconds[name], outputs = _fuse(url, _pair(tmp_path / name, mirror), TYPED)
                record = json.loads(Path(outputs[10][1]).read_text())
                assert record["captions"] == list(TYPED) and record["caption_authors"] == ["user", "user"]
                assert [d["captioner"] for d in record["drafts"]] == ["template", "template"]
                assert all("caption typed" in d["from"] for d in record["drafts"])
                assert Path(outputs[6]).is_file()  # the text-effect map, against those offline drafts
                assert ("no caption-server request" in outputs[9]) == (name == "gpt")
                assert server.requests == 0, f"{name}: typed captions sent {server.requests} caption requests"
                if name == "gpt":
                    # the counter does count: an empty caption is drafted by the (silent) server, then offline
                    _, drafted = _fuse(url, (IR, VI), ("", "a street"))
                    assert server.requests >= 1
                    record = json.loads(Path(drafted[10][1]).read_text())
                    assert record["drafts"][0]["from"] == "drafted at Fuse for an empty caption"
                    assert record["drafts"][0]["captioner"] == "template"  # GPT gave no answer: the fallback
                    assert "GPT failed" in drafted[9]
                    server.requests = 0
            finally:
                demo.close()
    print(f"\n/fuse of a new 640x480 pair, both captions typed: {seconds}")
    assert seconds["gpt"] <= seconds["no_gpt"] + 1.0, seconds


def test_cli_fuse_with_both_captions_sends_no_request_to_the_caption_server(tmp_path, monkeypatch, capsys):
    from tgif.cli import main

    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path / "cache"))
    if not Path(default_detector_weights()).exists():
        monkeypatch.setenv("TGIF_YOLO_WEIGHTS", "yolo11n.yaml")
    monkeypatch.setenv("TGIF_GPT_TIMEOUT", "2")
    with SilentCaptionServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-silent-0000000000")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        assert main(["fuse", str(IR), str(VI), "-o", str(tmp_path / "typed.png"), "--caption1", TYPED[0],
                     "--caption2", TYPED[1]]) == 0
        printed = capsys.readouterr().out
        assert server.requests == 0 and "caption 1 (user): " + TYPED[0] in printed
        assert "offline template drafter (no caption-server request)" in printed
        # without captions the configured captioner drafts them: the silent server is asked, then the fallback
        assert main(["fuse", str(IR), str(VI), "-o", str(tmp_path / "drafted.png")]) == 0
        assert server.requests >= 1 and "GPT failed" in capsys.readouterr().out
