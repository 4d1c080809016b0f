"""SAM and MobileSAM backends and checkpoint handling, offline.

No real checkpoint can be had here, so the real code paths run on tiny randomly initialised
models built from the same modules (segment-anything's ``Sam``, Ultralytics' ``build_mobile_sam``
at a small input size). Random weights give arbitrary masks: the tests check structure (types,
shapes, order, labels, backend names, caching), not quality. Downloads are served locally
(``file://`` and a ``http.server`` on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.threads import at_once
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from tgif.errors import CheckpointError, TgifError, UnknownNameError
from tgif.perception.segmentation import checkpoints
from tgif.perception.segmentation.checkpoints import (
    CHECKPOINTS,
    CheckpointSpec,
    download_checkpoint,
    load_weights,
    resolve_checkpoint,
)
from tgif.perception.segmentation.mobile_sam import MobileSamSegmenter  # configures Ultralytics offline first
from tgif.perception.segmentation.regions import EmbeddingCache, scene_regions
from tgif.perception.segmentation.sam import SamSegmenter
from tgif.perception.types import Detection, Detections, Segmentation

from ultralytics.models.sam.build import build_mobile_sam  # isort: skip (after mobile_sam configured Ultralytics)

# ---------------------------------------------------------------- helpers


def _confident(decoder: torch.nn.Module) -> None:
    """Scale the mask logits of a random decoder so that masks are stable under SAM's filters."""
    with torch.no_grad():
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(100.0)


def tiny_sam(checkpoint: str | None = None, embed_dim: int = 32) -> Sam:
    """A segment-anything ``Sam`` with a 64-pixel, one-block image encoder (same signature as the registry)."""
    assert checkpoint is None
    img, prompt_dim = 64, 32
    model = Sam(
        image_encoder=ImageEncoderViT(img_size=img, patch_size=16, embed_dim=embed_dim, depth=1, num_heads=2,
                                      mlp_ratio=2.0, out_chans=prompt_dim, qkv_bias=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                      window_size=0, global_attn_indexes=()),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(img // 16, img // 16),
                                     input_image_size=(img, img), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=prompt_dim, iou_head_depth=2,
                                 iou_head_hidden_dim=16,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64,
                                                               num_heads=2)),
    )
    _confident(model.mask_decoder)
    return model.eval()


class EncoderCalls:
    """Counts forward calls of a module."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.count = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.count += 1


def scene_image(h: int, w: int) -> np.ndarray:
    """uint8 RGB image: a dark background, a bright rectangle and a mid-grey disc."""
    img = np.full((h, w, 3), 30, np.uint8)
    img[h // 4 : h // 2, w // 8 : w // 2] = (220, 200, 40)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 2 * h // 3) ** 2 + (xx - 3 * w // 4) ** 2 < (h // 6) ** 2] = (120, 120, 200)
    return img


def detections_for(h: int, w: int) -> Detections:
    items = [
        Detection((w / 8, h / 4, w / 2, h / 2), "car", 0.9, 2),
        Detection((3 * w / 4 - h / 6, 2 * h / 3 - h / 6, 3 * w / 4 + h / 6 + 50, 2 * h / 3 + h / 6), "person", 0.6, 0),
    ]
    return Detections(items, (w, h), "test")


def check_structure(seg: Segmentation, h: int, w: int, labels: list[str], backend: str) -> None:
    assert isinstance(seg, Segmentation)
    assert seg.backend == backend
    assert seg.image_size == (w, h)
    for region in seg.regions:
        assert region.mask.dtype == bool and region.mask.shape == (h, w)
        assert region.area > 0
        assert isinstance(region.score, float)
    kinds = [r.kind for r in seg.regions]
    assert kinds == sorted(kinds, key=lambda k: k != "object"), "object regions come first"
    objects = seg.objects()
    assert [r.label for r in objects] == labels[: len(objects)]
    scene = [r for r in seg.regions if r.kind == "scene"]
    assert all(r.label == "region" for r in scene)
    assert [r.area for r in scene] == sorted((r.area for r in scene), reverse=True)
    if scene:  # scene regions do not overlap each other
        stack = np.stack([r.mask for r in scene])
        assert stack.sum(axis=0).max() <= 1
    labels_map = seg.label_map()
    assert labels_map.shape == (h, w)


# ---------------------------------------------------------------- checkpoints: table and downloads


def test_checkpoint_table_is_consistent():
    assert set(CHECKPOINTS) == {"sam_vit_h", "sam_vit_l", "sam_vit_b", "mobile_sam"}
    for name, spec in CHECKPOINTS.items():
        assert spec.url.startswith("https://")
        if name.startswith("sam_"):  # the 6 hex digits of the file name are the MD5 prefix
            assert spec.filename == f"{name}_{spec.md5_prefix}.pth"
    mobile = CHECKPOINTS["mobile_sam"]
    assert mobile.filename == "mobile_sam.pt"
    assert mobile.size == 40_728_226 and mobile.sha256_prefix == "6dbb9052"
    assert checkpoints.find_spec("sam_vit_b_01ec64.pth") is CHECKPOINTS["sam_vit_b"]
    assert checkpoints.find_spec("MOBILE_SAM") is CHECKPOINTS["mobile_sam"]
    assert checkpoints.find_spec("nope") is None


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, bytes]:
    """A fake checkpoint file of 3 MiB and a bit (several chunks)."""
    data = np.random.default_rng(0).integers(0, 256, 3 * (1 << 20) + 123, dtype=np.uint8).tobytes()
    source = tmp_path / "served" / "fake_ckpt.pth"
    source.parent.mkdir()
    source.write_bytes(data)
    return source, data


def _digests(data: bytes) -> dict:
    return {"expected_md5_prefix": hashlib.md5(data).hexdigest()[:6],
            "expected_sha256_prefix": hashlib.sha256(data).hexdigest()[:8], "expected_size": len(data)}


@pytest.fixture
def http_server(payload):
    """Serves the payload's folder on 127.0.0.1; yields (base URL, list of requested paths)."""
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(payload[0].parent)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_over_http_verifies_and_shows_progress(payload, http_server, tmp_path, capsys):
    base, requests = http_server
    dest = tmp_path / "cache" / "ckpt.pth"
    got = download_checkpoint(f"{base}/fake_ckpt.pth", dest, **_digests(payload[1]))
    assert got == dest and dest.read_bytes() == payload[1]
    assert not dest.with_name("ckpt.pth.part").exists()
    assert requests == ["/fake_ckpt.pth"]
    err = capsys.readouterr().err
    assert "ckpt.pth" in err and "100%" in err


def test_download_file_url_without_expectations(payload, tmp_path):
    dest = download_checkpoint(payload[0].as_uri(), tmp_path / "a" / "b.pth", progress=False)
    assert dest.read_bytes() == payload[1]


@pytest.mark.parametrize("wrong", ["expected_md5_prefix", "expected_sha256_prefix", "expected_size"])
def test_download_mismatch_leaves_nothing(payload, tmp_path, wrong):
    expected = _digests(payload[1])
    expected[wrong] = 1 if wrong == "expected_size" else "000000"
    dest = tmp_path / "ckpt.pth"
    with pytest.raises(CheckpointError, match="corrupt or not the expected one"):
        download_checkpoint(payload[0].as_uri(), dest, progress=False, **expected)
    assert list(tmp_path.iterdir()) == [payload[0].parent]


def test_existing_valid_file_is_not_downloaded_again(payload, http_server, tmp_path):
    base, requests = http_server
    dest = tmp_path / "ckpt.pth"
    dest.write_bytes(payload[1])
    assert download_checkpoint(f"{base}/fake_ckpt.pth", dest, progress=False, **_digests(payload[1])) == dest
    assert requests == []


def test_existing_corrupt_file_is_replaced(payload, http_server, tmp_path):
    base, requests = http_server
    dest = tmp_path / "ckpt.pth"
    dest.write_bytes(b"truncated")
    download_checkpoint(f"{base}/fake_ckpt.pth", dest, progress=False, **_digests(payload[1]))
    assert dest.read_bytes() == payload[1] and len(requests) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_url_raises_checkpoint_error(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/sam.pth"
    with pytest.raises(CheckpointError) as info:
        download_checkpoint(url, tmp_path / "sam.pth", timeout=5, progress=False)
    message = str(info.value)
    assert url in message and "pass the file's path" in message
    assert info.value.__suppress_context__ and info.value.__cause__ is None  # no chained traceback
    assert list(tmp_path.iterdir()) == []


def test_http_error_raises_checkpoint_error(http_server, tmp_path):
    base, _ = http_server
    with pytest.raises(CheckpointError, match="missing.pth"):
        download_checkpoint(f"{base}/missing.pth", tmp_path / "x.pth", progress=False)
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "x.pth.part").exists()


def test_resolve_existing_path_unknown_name_and_missing_file(payload, tmp_path):
    assert resolve_checkpoint(payload[0]) == payload[0]
    assert resolve_checkpoint(str(payload[0])) == payload[0]
    with pytest.raises(CheckpointError, match="(?i)no internet.*download it elsewhere"):
        resolve_checkpoint("sam_vit_x", cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="neither an existing file"):
        resolve_checkpoint(tmp_path / "nowhere" / "sam.pth", cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="not a file"):
        resolve_checkpoint(tmp_path)


def test_resolve_known_name_downloads_into_cache(payload, tmp_path, monkeypatch):
    url = payload[0].as_uri()
    spec = CheckpointSpec(url, md5_prefix=hashlib.md5(payload[1]).hexdigest()[:6], size=len(payload[1]))
    monkeypatch.setitem(CHECKPOINTS, "sam_vit_b", spec)
    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path / "env-cache"))
    got = resolve_checkpoint("sam_vit_b", progress=False)
    assert got == tmp_path / "env-cache" / "checkpoints" / "fake_ckpt.pth"
    assert got.read_bytes() == payload[1]
    explicit = resolve_checkpoint("fake_ckpt.pth", cache_dir=tmp_path / "mine", progress=False)  # by file name
    assert explicit == tmp_path / "mine" / "fake_ckpt.pth"
    monkeypatch.setitem(CHECKPOINTS, "sam_vit_b", CheckpointSpec(url, md5_prefix="ffffff"))
    with pytest.raises(CheckpointError, match="MD5"):
        resolve_checkpoint("sam_vit_b", cache_dir=tmp_path / "other", progress=False)


def test_checkpoint_error_is_a_tgif_error():
    assert issubclass(CheckpointError, TgifError)


# ---------------------------------------------------------------- checkpoints: loading weights


def test_load_weights_reads_plain_and_wrapped_state_dicts(tmp_path):
    source = torch.nn.Linear(3, 2)
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": source.state_dict()}, tmp_path / "wrapped.pt")
    for name in ("plain.pt", "wrapped.pt"):
        target = load_weights(torch.nn.Linear(3, 2), tmp_path / name, "a linear layer")
        assert torch.equal(target.weight, source.weight)


def test_load_weights_rejects_bad_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "junk.pt", "x")
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not fit a linear layer"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "other.pt", "a linear layer")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "list.pt", "x")


# ---------------------------------------------------------------- shared region logic


def test_scene_regions_skip_object_masks_remove_overlaps_and_sort():
    h, w = 20, 30
    objects = np.zeros((h, w), bool)
    objects[:10, :10] = True
    whole = np.ones((h, w), bool)  # the whole image: keeps what its parts and the object leave
    on_object = np.zeros((h, w), bool)
    on_object[2:9, 2:12] = True  # 70 % on the object: skipped
    part = np.zeros((h, w), bool)
    part[12:, 15:] = True
    tiny = np.zeros((h, w), bool)
    tiny[0, 29] = True
    regions = scene_regions([whole, on_object, part, tiny], [0.5, 0.6, 0.7, 0.8], objects, 0.5, min_area=2)
    assert [r.score for r in regions] == [0.5, 0.7]
    assert regions[0].area == h * w - 100 - part.sum() and not (regions[0].mask & objects).any()
    assert np.array_equal(regions[1].mask, part)
    assert all(r.kind == "scene" and r.label == "region" for r in regions)
    assert scene_regions([], [], objects) == []


def test_embedding_cache_is_lru():
    cache = EmbeddingCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # drops b, the least recently used
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2
    with pytest.raises(ValueError):
        EmbeddingCache(0)


# ---------------------------------------------------------------- SAM (segment-anything)

SAM_KW = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "min_region": 0.0}


@pytest.fixture
def sam_segmenter() -> SamSegmenter:
    torch.manual_seed(0)
    return SamSegmenter(model=tiny_sam(), **SAM_KW)


def test_sam_segments_objects_then_scene(sam_segmenter):
    h, w = 48, 80
    seg = sam_segmenter.segment(scene_image(h, w), detections_for(h, w))
    check_structure(seg, h, w, ["car", "person"], "sam:vit_b")
    assert seg.regions and seg.regions[0].kind == "object"


def test_sam_without_detections_gives_scene_regions_only(sam_segmenter):
    seg = sam_segmenter.segment(scene_image(40, 40))
    assert seg.objects() == [] and seg.regions
    check_structure(seg, 40, 40, [], "sam:vit_b")


def test_sam_encodes_each_image_once(sam_segmenter):
    calls = EncoderCalls(sam_segmenter.model.image_encoder)
    image, other = scene_image(48, 80), scene_image(48, 80)[::-1].copy()
    first = sam_segmenter.segment(image, detections_for(48, 80))
    second = sam_segmenter.segment(image.copy(), detections_for(48, 80))
    assert calls.count == 1  # box prompts and the automatic generator share one embedding
    assert [r.label for r in first.regions] == [r.label for r in second.regions]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first.regions, second.regions))
    sam_segmenter.segment(other)
    assert calls.count == 2


def regions_of(seg: Segmentation) -> list[tuple[str, str, bytes]]:
    return [(r.label, r.kind, np.packbits(r.mask).tobytes()) for r in seg.regions]


def segment_at_once(segmenter, jobs: list[tuple[np.ndarray, Detections]], rounds: int) -> list[BaseException]:
    """Segment each job ``rounds`` times, one thread per job, all at once; return what went wrong."""
    expected = [regions_of(segmenter.segment(image, dets)) for image, dets in jobs]

    def segment_repeatedly(index: int) -> None:
        for _ in range(rounds):
            assert regions_of(segmenter.segment(*jobs[index])) == expected[index], f"job {index} got other masks"

    return at_once(segment_repeatedly, len(jobs))


def test_sam_two_users_at_once_get_their_own_masks(sam_segmenter):
    """The predictor holds one image between set_image and its prompts: concurrent calls must not mix."""
    jobs = [(scene_image(48, 80), detections_for(48, 80)), (scene_image(64, 40)[::-1].copy(), detections_for(64, 40))]
    errors = segment_at_once(sam_segmenter, jobs, rounds=15)
    assert not errors, errors[:2]


def test_sam_cache_size_bounds_the_embeddings():
    torch.manual_seed(0)
    segmenter = SamSegmenter(model=tiny_sam(), cache_size=1, **SAM_KW)
    calls = EncoderCalls(segmenter.model.image_encoder)
    a, b = scene_image(32, 32), scene_image(32, 48)
    for image in (a, b, a):
        segmenter.segment(image)
    assert calls.count == 3


def test_sam_rejects_wrong_inputs(sam_segmenter):
    with pytest.raises(ValueError, match="uint8"):
        sam_segmenter.segment(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        sam_segmenter.segment(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="detections are for a 80x48 image"):
        sam_segmenter.segment(scene_image(40, 40), detections_for(48, 80))
    with pytest.raises(UnknownNameError, match="vit_x"):
        SamSegmenter(model_type="vit_x", model=tiny_sam())
    with pytest.raises(ValueError, match="either"):
        SamSegmenter(checkpoint="sam_vit_b", model=tiny_sam())
    with pytest.raises(ValueError, match="points_per_side"):
        SamSegmenter(model=tiny_sam(), points_per_side=0)


def test_sam_loads_a_checkpoint_through_the_registry(tmp_path, monkeypatch):
    monkeypatch.setitem(sam_model_registry, "vit_b", tiny_sam)  # the registry's builder, made tiny
    torch.manual_seed(1)
    source = tiny_sam()
    torch.save(source.state_dict(), tmp_path / "tiny_sam.pth")
    segmenter = SamSegmenter(checkpoint=str(tmp_path / "tiny_sam.pth"), **SAM_KW)
    for name, tensor in source.state_dict().items():
        assert torch.equal(segmenter.model.state_dict()[name], tensor), name
    check_structure(segmenter.segment(scene_image(48, 80), detections_for(48, 80)), 48, 80, ["car", "person"],
                    "sam:vit_b")
    torch.save(tiny_sam(embed_dim=16).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not fit SAM vit_b"):
        SamSegmenter(checkpoint=str(tmp_path / "other.pth"))


def test_sam_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing file"):
        SamSegmenter(checkpoint=str(tmp_path / "sam_vit_b.pth"))


# ---------------------------------------------------------------- MobileSAM (Ultralytics)

MOBILE_KW = {"imgsz": 256, "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
             "min_region": 0.0}


@pytest.fixture(scope="module")
def mobile_state() -> dict:
    """State dict of a random MobileSAM (Ultralytics' builder, full architecture, confident masks)."""
    torch.manual_seed(0)
    model = build_mobile_sam()
    _confident(model.mask_decoder)
    return model.state_dict()


@pytest.fixture
def mobile_model(mobile_state):
    model = build_mobile_sam()
    model.load_state_dict(mobile_state)
    return model


def test_mobile_sam_segments_objects_then_scene(mobile_model):
    h, w = 96, 128
    segmenter = MobileSamSegmenter(model=mobile_model, **MOBILE_KW)
    seg = segmenter.segment(scene_image(h, w), detections_for(h, w))
    check_structure(seg, h, w, ["car", "person"], "mobile_sam")
    assert [r.label for r in seg.objects()] == ["car", "person"]
    scene_only = segmenter.segment(scene_image(h, w))
    assert scene_only.regions and all(r.kind == "scene" for r in scene_only.regions)
    check_structure(scene_only, h, w, [], "mobile_sam")


def test_mobile_sam_encodes_each_image_once(mobile_model):
    segmenter = MobileSamSegmenter(model=mobile_model, **MOBILE_KW)
    calls = EncoderCalls(segmenter.model.image_encoder)
    image = scene_image(96, 128)
    first = segmenter.segment(image, detections_for(96, 128))
    second = segmenter.segment(image.copy(), detections_for(96, 128))
    assert calls.count == 1  # box prompts and the automatic mode share one encoding
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first.regions, second.regions))
    segmenter.segment(image[::-1].copy())
    assert calls.count == 2


def test_mobile_sam_two_users_at_once_get_their_own_masks(mobile_model):
    segmenter = MobileSamSegmenter(model=mobile_model, cache_size=1, **MOBILE_KW)
    jobs = [(scene_image(96, 128), detections_for(96, 128)), (scene_image(64, 64)[::-1].copy(), None)]
    errors = segment_at_once(segmenter, jobs, rounds=3)
    assert not errors, errors[:2]


def test_mobile_sam_loads_a_checkpoint_file(mobile_state, tmp_path):
    path = tmp_path / "mobile_sam.pt"
    torch.save(mobile_state, path)
    segmenter = MobileSamSegmenter(checkpoint=str(path), **MOBILE_KW)
    assert torch.equal(segmenter.model.state_dict()["mask_decoder.iou_token.weight"],
                       mobile_state["mask_decoder.iou_token.weight"])
    seg = segmenter.segment(scene_image(64, 64))
    check_structure(seg, 64, 64, [], "mobile_sam")
    torch.save(tiny_sam().state_dict(), tmp_path / "sam_tiny.pt")
    with pytest.raises(CheckpointError, match="does not fit MobileSAM"):
        MobileSamSegmenter(checkpoint=str(tmp_path / "sam_tiny.pt"))


def test_mobile_sam_rejects_wrong_inputs(mobile_model):
    segmenter = MobileSamSegmenter(model=mobile_model, **MOBILE_KW)
    with pytest.raises(ValueError, match="uint8"):
        segmenter.segment(np.zeros((16, 16, 4), np.uint8))
    with pytest.raises(ValueError, match="detections are for"):
        segmenter.segment(scene_image(50, 50), detections_for(96, 128))
    with pytest.raises(ValueError, match="either"):
        MobileSamSegmenter(checkpoint="mobile_sam", model=mobile_model)
    with pytest.raises(CheckpointError, match="neither an existing file"):
        MobileSamSegmenter(checkpoint="mobile_sam_v9")
