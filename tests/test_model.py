"""Tests of the TGIF fusion network (tgif.model): shapes, text conditioning, masking, checkpoints.

Most tests use a small config so the file runs in seconds on a CPU; the default config is built
once for its parameter count and a forward pass.
"""

from __future__ import annotations

import json

import pytest
import torch

from tgif.errors import CheckpointError, CheckpointMismatchError, TgifError
from tgif.model import TGIFConfig, TGIFNet, build_tgif, load_tgif, read_metadata, save_tgif

SMALL = TGIFConfig(dim=16, heads=4, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=2, text_dim=24)
ENCODER = "minilm:all-MiniLM-L6-v2"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run this module's tiny tensors on one thread: on a busy 2-core machine, OpenMP
    synchronisation between two threads costs far more than these tensors' arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(config: TGIFConfig = SMALL, seed: int = 0) -> TGIFNet:
    """A freshly initialised network, seeded."""
    torch.manual_seed(seed)
    return TGIFNet(config)


def make_pair(batch: int = 1, height: int = 24, width: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random (B, 1, H, W) images in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.rand(batch, 1, height, width, generator=generator),
        torch.rand(batch, 1, height, width, generator=generator),
    )


def make_text(batch: int = 1, length: int = 12, dim: int = SMALL.text_dim, seed: int = 2) -> torch.Tensor:
    """Random (B, L, D) token features."""
    return torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(seed))


def all_real(text: torch.Tensor) -> torch.Tensor:
    """A mask marking every token of ``text`` as real."""
    return torch.ones(text.shape[:2], dtype=torch.bool)


@pytest.mark.parametrize("size", [(8, 8), (37, 53), (24, 32), (33, 9), (2, 3), (1, 1)])
def test_output_has_input_shape(size: tuple[int, int]) -> None:
    model = make_model().eval()
    y_a, y_b = make_pair(2, *size)
    text = make_text(2)
    with torch.inference_mode():
        assert model(y_a, y_b, text, all_real(text)).shape == (2, 1, *size)
        assert model(y_a, y_b).shape == (2, 1, *size)


def test_default_config_forward_and_parameter_count() -> None:
    model = build_tgif().eval()
    count = sum(parameter.numel() for parameter in model.parameters())
    assert 150_000 < count < 600_000
    y_a, y_b = make_pair(1, 37, 45)
    text = make_text(1, 20, dim=384)
    with torch.inference_mode():
        fused = model(y_a, y_b, text, all_real(text))
    assert fused.shape == (1, 1, 37, 45)
    assert torch.isfinite(fused).all()


def test_text_changes_the_output_at_init() -> None:
    model = make_model().eval()
    y_a, y_b = make_pair()
    text = make_text()
    with torch.inference_mode():
        with_text = model(y_a, y_b, text, all_real(text))
        without_text = model(y_a, y_b)
        other_text = model(y_a, y_b, make_text(seed=7), all_real(text))
    assert (with_text - without_text).abs().max() > 1e-4
    assert (with_text - other_text).abs().max() > 1e-4


def test_swapping_one_caption_changes_the_output() -> None:
    model = make_model().eval()
    y_a, y_b = make_pair()
    caption_a, caption_b, caption_c = (
        make_text(length=7, seed=3),
        make_text(length=5, seed=4),
        make_text(length=5, seed=5),
    )
    first = torch.cat([caption_a, caption_b], dim=1)
    second = torch.cat([caption_a, caption_c], dim=1)
    with torch.inference_mode():
        assert (model(y_a, y_b, first, all_real(first)) - model(y_a, y_b, second, all_real(second))).abs().max() > 1e-4


def test_padding_tokens_do_not_change_the_output() -> None:
    model = make_model().eval()
    y_a, y_b = make_pair()
    text = make_text(length=9)
    padded = torch.cat([text, 100 * make_text(length=6, seed=9)], dim=1)
    mask = torch.cat([all_real(text), torch.zeros(1, 6, dtype=torch.bool)], dim=1)
    with torch.inference_mode():
        reference = model(y_a, y_b, text, all_real(text))
        assert torch.allclose(model(y_a, y_b, padded, mask), reference, atol=1e-5)
        assert torch.allclose(model(y_a, y_b, text), reference, atol=1e-6)  # no mask = all real


def test_fully_masked_text_is_finite_and_acts_like_no_text() -> None:
    model = make_model().eval()
    y_a, y_b = make_pair()
    text = make_text()
    with torch.inference_mode():
        fused = model(y_a, y_b, text, torch.zeros(1, text.shape[1], dtype=torch.bool))
        assert torch.isfinite(fused).all()
        assert torch.allclose(fused, model(y_a, y_b), atol=1e-6)
        assert torch.allclose(model(y_a, y_b, text[:, :0]), model(y_a, y_b), atol=1e-6)


def test_batch_items_are_independent() -> None:
    model = make_model().eval()
    y_a, y_b = make_pair(2)
    long_text, short_text = make_text(length=10, seed=3), make_text(length=4, seed=4)
    text = torch.cat([long_text, torch.cat([short_text, torch.zeros(1, 6, SMALL.text_dim)], dim=1)])
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.inference_mode():
        batched = model(y_a, y_b, text, mask)
        first = model(y_a[:1], y_b[:1], long_text)
        second = model(y_a[1:], y_b[1:], short_text)
    assert torch.allclose(batched[:1], first, atol=1e-5)
    assert torch.allclose(batched[1:], second, atol=1e-5)


def test_output_is_clamped_in_eval_mode_only() -> None:
    model = make_model()
    with torch.no_grad():
        model.decoder.output.bias.fill_(2.0)  # push the residual well above 1
    y_a, y_b = make_pair()
    text = make_text()
    train_out = model.train()(y_a, y_b, text)
    assert train_out.max() > 1.0
    assert train_out.requires_grad
    eval_out = model.eval()(y_a, y_b, text)
    assert eval_out.min() >= 0.0 and eval_out.max() <= 1.0


def test_output_is_mean_plus_residual() -> None:
    model = make_model()
    with torch.no_grad():
        model.decoder.output.weight.zero_()
        model.decoder.output.bias.zero_()
    y_a, y_b = make_pair()
    assert torch.allclose(model(y_a, y_b, make_text()), (y_a + y_b) / 2, atol=1e-6)


def test_every_parameter_gets_a_gradient_with_text() -> None:
    model = make_model().train()
    y_a, y_b = make_pair(2)
    text = make_text(2)
    model(y_a, y_b, text, all_real(text)).square().mean().backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing
    assert model.text_adapter.body[1].weight.grad.abs().sum() > 0
    assert all(torch.isfinite(parameter.grad).all() for parameter in model.parameters())


def test_no_text_path_leaves_text_parameters_unused() -> None:
    model = make_model().train()
    y_a, y_b = make_pair()
    model(y_a, y_b).mean().backward()
    for name, parameter in model.named_parameters():
        uses_text = name.startswith(("text_adapter.", "text_a.", "text_b."))
        assert (parameter.grad is None) == uses_text, name


def test_a_few_training_steps_reduce_the_loss() -> None:
    model = make_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    y_a, y_b = make_pair(2, 32, 32)
    text = make_text(2)
    target = torch.maximum(y_a, y_b)
    losses = []
    for _ in range(8):
        loss = (model(y_a, y_b, text) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_use_text_false_builds_an_image_only_network() -> None:
    config = TGIFConfig.from_dict({**SMALL.to_dict(), "use_text": False})
    model = make_model(config).eval()
    assert not any(name.startswith("text") for name, _ in model.named_parameters())
    y_a, y_b = make_pair()
    text = make_text()
    with torch.inference_mode():
        assert torch.equal(model(y_a, y_b, text), model(y_a, y_b))


def test_bad_inputs_raise_value_error() -> None:
    model = make_model().eval()
    y_a, y_b = make_pair()
    with pytest.raises(ValueError, match="y_a and y_b"):
        model(y_a, y_b[..., :-1])
    with pytest.raises(ValueError, match="text must be"):
        model(y_a, y_b, make_text(dim=SMALL.text_dim + 1))
    with pytest.raises(ValueError, match="text_mask"):
        model(y_a, y_b, make_text(), torch.ones(1, 3, dtype=torch.bool))


def test_config_round_trips_through_json() -> None:
    config = TGIFConfig(dim=48, heads=6, text_heads=3, text_dim=768, ffn_expansion=2.0, downscale=2, use_text=False)
    assert TGIFConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TGIFConfig.from_dict({}) == TGIFConfig()
    assert build_tgif({"dim": 16, "heads": 4}).config == TGIFConfig(dim=16, heads=4)


@pytest.mark.parametrize(
    "values",
    [
        {"depth": 3},
        {"dim": 30},
        {"dim": 32, "heads": 5},
        {"downscale": 3},
        {"dim": 24, "downscale": 8},
        {"use_text": 1},
        {"dim": 32.0},
        {"ffn_expansion": 0},
        {"text_blocks": -1},
    ],
)
def test_bad_config_values_are_rejected(values: dict) -> None:
    with pytest.raises(ValueError):
        TGIFConfig.from_dict(values)


@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip(tmp_path, half: bool) -> None:
    model = make_model().eval()
    path = save_tgif(
        tmp_path / "sub" / "ivf.safetensors", model, ENCODER, task="IVF", steps=1234, extra={"loss": 0.25}, half=half
    )
    loaded, metadata = load_tgif(path, expected_text_encoder=ENCODER)
    assert not loaded.training
    assert metadata.config == SMALL and metadata.text_encoder == ENCODER
    assert (metadata.task, metadata.steps, metadata.extra) == ("IVF", 1234, {"loss": 0.25})
    assert metadata.dtype == ("float16" if half else "float32")
    assert read_metadata(path) == metadata
    assert all(parameter.dtype == torch.float32 for parameter in loaded.parameters())
    y_a, y_b = make_pair()
    text = make_text()
    if half:
        model = model.half().float()  # the weights as stored
    with torch.inference_mode():
        assert torch.allclose(loaded(y_a, y_b, text), model(y_a, y_b, text), atol=1e-6)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left


def test_checkpoint_text_encoder_mismatch(tmp_path) -> None:
    path = save_tgif(tmp_path / "m.safetensors", make_model(), ENCODER)
    with pytest.raises(CheckpointMismatchError) as info:
        load_tgif(path, expected_text_encoder="blip2:Salesforce/blip2-itm-vit-g")
    assert ENCODER in str(info.value) and "blip2:Salesforce/blip2-itm-vit-g" in str(info.value)
    assert isinstance(info.value, TgifError)
    no_text = TGIFNet(TGIFConfig.from_dict({**SMALL.to_dict(), "use_text": False}))
    path = save_tgif(tmp_path / "no_text.safetensors", no_text, "")
    assert load_tgif(path, expected_text_encoder=ENCODER)[1].text_encoder == ""


def test_missing_or_corrupt_checkpoint(tmp_path) -> None:
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        load_tgif(missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(TgifError, match="corrupt.safetensors"):
        load_tgif(corrupt)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(save_tgif(tmp_path / "full.safetensors", make_model(), ENCODER).read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_tgif(truncated)


def test_checkpoint_whose_weights_do_not_fit_its_config(tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_tgif(tmp_path / "m.safetensors", make_model(), ENCODER)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    tensors.pop("merge.bias")
    save_file(tensors, tmp_path / "pruned.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match="pruned.safetensors"):
        load_tgif(tmp_path / "pruned.safetensors")
    save_file(tensors, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not a TGIF fusion checkpoint"):
        load_tgif(tmp_path / "plain.safetensors")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model = make_model().eval()
    y_a, y_b = make_pair(2, 37, 53)
    text = make_text(2)
    mask = all_real(text)
    mask[1, 5:] = False
    with torch.inference_mode():
        expected = model(y_a, y_b, text, mask)
        fused = model.cuda()(y_a.cuda(), y_b.cuda(), text.cuda(), mask.cuda())
    assert torch.allclose(fused.cpu(), expected, atol=1e-2)


def test_soft_max_over_tokens_is_logsumexp_with_deep_and_masked_scores() -> None:
    from tgif.model.text_grounding import soft_max_over_tokens

    scores = torch.randn(3, 20, 50, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 60
    scores[1, :, :5] = float("-inf")  # five columns with no real token
    scores[2, :7] = float("-inf")  # seven padding tokens
    expected = torch.logsumexp(scores, dim=1)
    got = soft_max_over_tokens(scores.clone())  # a copy: it is overwritten
    assert torch.equal(torch.isneginf(got), torch.isneginf(expected)) and torch.isneginf(got).sum() == 5
    finite = torch.isfinite(expected)
    assert torch.allclose(got[finite], expected[finite], rtol=0, atol=1e-12)
    # its gradient is the softmax over the tokens, and zero (not NaN) where a column has no real token
    leaf = scores.clone().requires_grad_(True)
    soft_max_over_tokens(leaf).masked_fill(~finite, 0).sum().backward()
    softmax = torch.softmax(scores, dim=1).nan_to_num(0.0)
    assert torch.isfinite(leaf.grad).all() and torch.allclose(leaf.grad, softmax, atol=1e-12)


def test_grounding_relevance_ignores_padding_per_sample_and_in_blocks(monkeypatch) -> None:
    import tgif.model.text_grounding as grounding

    torch.manual_seed(0)
    head = grounding.TextGrounding(dim=16, text_dim=24).eval()
    x = torch.randn(2, 16, 6, 10)
    tokens = make_text(batch=2, length=9, dim=24)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.inference_mode():
        alone = [head.relevance(x[i:i + 1], tokens[i:i + 1, :n], mask[i:i + 1, :n]) for i, n in ((0, 9), (1, 5))]
        padded_one = head.relevance(x[1:], tokens[1:], mask[1:])  # one sample: its padding is dropped
        batched = head.relevance(x, tokens, mask)  # two samples: padding is masked out of the scores
        monkeypatch.setattr(grounding, "SCORE_BLOCK", 9 * 7)  # 7 pixels a block: 9 blocks for 60 pixels
        blocked = head.relevance(x, tokens, mask)
        none = head.relevance(x[:1], tokens[:1], torch.zeros(1, 9, dtype=torch.bool))
    assert torch.allclose(padded_one, alone[1], atol=1e-6)
    assert torch.allclose(batched, torch.cat(alone), atol=1e-6)
    assert torch.allclose(blocked, batched, atol=1e-6)
    assert none.shape == (1, 1, 6, 10) and not none.any()


def reference_channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                                temperature: torch.Tensor) -> torch.Tensor:
    """Restormer's attention as its reference code writes it, on (B, C, H, W) maps: per head, q and k
    L2-normalised over the pixels, softmax(q k^T * temperature) mixing v's channels."""
    b, c, h, w = q.shape
    q = torch.nn.functional.normalize(q.reshape(b, heads, c // heads, h * w), dim=-1)
    k = torch.nn.functional.normalize(k.reshape(b, heads, c // heads, h * w), dim=-1)
    attn = torch.softmax(q @ k.transpose(-2, -1) * temperature, dim=-1)
    return (attn @ v.reshape(b, heads, c // heads, h * w)).reshape(b, c, h, w)


def test_channel_attention_on_tokens_matches_the_per_head_reference() -> None:
    from tgif.model.restormer import MDTA, channel_attention, pixel_tokens, token_map

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 12, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last)
               .requires_grad_(True) for _ in range(3))
    temperature = torch.rand(3, 1, 1, generator=gen) + 0.5
    ours = token_map(channel_attention(*(pixel_tokens(t) for t in (q, k, v)), 3, temperature), 5, 7)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    theirs = reference_channel_attention(q, k, v, 3, temperature)
    torch.testing.assert_close(ours, theirs)
    weights = torch.randn(ours.shape, generator=gen)
    grads_ours = torch.autograd.grad((ours * weights).sum(), (q, k, v))
    grads_theirs = torch.autograd.grad((theirs * weights).sum(), (q, k, v))
    for mine, ref in zip(grads_ours, grads_theirs):
        torch.testing.assert_close(mine, ref)
    with pytest.raises(ValueError, match="multiple of heads"):
        channel_attention(pixel_tokens(q), pixel_tokens(k), pixel_tokens(v), 5, torch.ones(5, 1, 1))

    mdta = MDTA(12, 3)
    x = torch.randn(1, 12, 6, 4, generator=gen).contiguous(memory_format=torch.channels_last)
    q2, k2, v2 = mdta.qkv_dwconv(mdta.qkv(x)).chunk(3, dim=1)
    expected = mdta.project_out(reference_channel_attention(q2, k2, v2, 3, mdta.temperature))
    torch.testing.assert_close(mdta(x), expected)
