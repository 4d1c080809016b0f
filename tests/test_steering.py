"""The steering objective (tgif.train.steer), its phrases, and the steering benchmark's arithmetic (tgif.steering)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tgif.captions.steering import (
    HELD_OUT_TEMPLATES,
    LABEL_SYNONYMS,
    TRAIN_TEMPLATES,
    add_phrase,
    box_position,
    highlight_phrase,
    read_phrasings,
)
from tgif.errors import TgifError
from tgif.model import TGIFConfig, TGIFNet, load_tgif, save_tgif
from tgif.steering import box_regions, steer_stats
from tgif.train.steer import (
    CaptionTokens,
    Frame,
    SteerSettings,
    crop_objects,
    make_example,
    merge_detections,
    mix_weights,
    region_masks,
    steer_target,
    student_from_teacher,
    train_steering,
)

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- benchmark arithmetic


def test_box_regions_split_the_frame_into_box_ring_and_outside():
    inside, ring, outside = box_regions((10, 20, 30, 60), (100, 80))  # box 20 wide, 40 tall
    assert inside.sum() == 20 * 40 and inside[20:60, 10:30].all()
    grown = inside | ring
    assert grown.sum() == 30 * 60 and grown[10:70, 5:35].all()  # 50% larger, centred
    assert not (inside & ring).any() and (inside | ring | outside).all() and not (grown & outside).any()


def test_steer_stats_against_a_hand_computation():
    neutral = np.full((100, 80), 0.4)
    neutral[20:60, 10:30] = 0.6  # the object: +0.2 over its surroundings
    named = neutral.copy()
    named[20:60, 10:30] += 20 / 255  # 20 grey levels brighter inside the box
    named[80:, :] += 1 / 255  # 1 grey level brighter in a 20-row band outside
    stats = steer_stats(neutral, named, (10, 20, 30, 60))
    outside_pixels = 100 * 80 - 30 * 60
    assert stats["delta_in"] == pytest.approx(20.0)
    assert stats["delta_out"] == pytest.approx(20 * 80 / outside_pixels)
    assert stats["locality"] == pytest.approx(20.0 / (1600 / outside_pixels))
    contrast = 0.2 * 255
    assert stats["contrast_neutral"] == pytest.approx(contrast)
    assert stats["contrast_named"] == pytest.approx(contrast + 20)
    assert stats["contrast_gain"] == pytest.approx(20 / contrast)


def test_steer_stats_counts_a_darker_object_made_darker_as_a_gain():
    neutral = np.full((50, 50), 0.5)
    neutral[10:20, 10:20] = 0.3
    named = neutral.copy()
    named[10:20, 10:20] = 0.2
    assert steer_stats(neutral, named, (10, 10, 20, 20))["contrast_gain"] == pytest.approx(0.5)


def test_steer_stats_rejects_mismatched_images():
    with pytest.raises(ValueError, match="one shape"):
        steer_stats(np.zeros((4, 4)), np.zeros((4, 5)), (0, 0, 2, 2))


# ---------------------------------------------------------------------------------------------- phrases


def test_phrases_and_positions():
    assert box_position((0, 0, 20, 20), 300, 300) == "at the top left"
    assert box_position((140, 140, 160, 160), 300, 300) == "in the centre"
    assert highlight_phrase("person", "on the left") == "Highlight the person on the left."
    assert add_phrase("It shows a car", "Highlight the car.") == "It shows a car. Highlight the car."
    assert add_phrase("A car. Highlight the car.", "Highlight the car.") == "A car. Highlight the car."
    assert add_phrase("", "Highlight the car.") == "Highlight the car."
    # the benchmark's wording is never used in training
    train_words = {t.format(obj="X").lower() for t in TRAIN_TEMPLATES}
    assert not any(t.format(label="X", position="").strip().lower() in train_words for t in HELD_OUT_TEMPLATES)


def test_read_phrasings(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("# mine\nthe {label} {position} matters\n\nshow the {label}\n")
    assert read_phrasings(good) == ("the {label} {position} matters", "show the {label}")
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder here\n")
    with pytest.raises(TgifError, match="needs {label}"):
        read_phrasings(bad)
    with pytest.raises(TgifError, match="not found"):
        read_phrasings(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------------------------- examples and targets


def test_merge_detections_keeps_the_best_of_overlapping_boxes_per_class():
    ir = [{"label": "person", "score": 0.9, "box": [10, 10, 20, 40]}]
    vi = [{"label": "person", "score": 0.6, "box": [11, 10, 21, 40]},
          {"label": "car", "score": 0.5, "box": [10, 10, 20, 40]}]
    assert merge_detections(ir, vi) == [("person", (10.0, 10.0, 20.0, 40.0)), ("car", (10.0, 10.0, 20.0, 40.0))]


def test_crop_objects_keeps_mostly_visible_boxes_in_crop_coordinates():
    objects = [("person", (50, 50, 60, 70)), ("car", (95, 0, 140, 10))]
    assert crop_objects(objects, 40, 40, (64, 64)) == [("person", (10, 10, 20, 30))]


def test_steer_target_raises_the_box_contrast_by_the_gain():
    teacher = torch.full((1, 40, 40), 0.3)
    teacher[:, 10:20, 10:20] = 0.5
    target = steer_target(teacher, [(10, 10, 20, 20)], gain=1.0)
    assert torch.allclose(target[:, 10:20, 10:20], torch.tensor(0.7))  # 0.5 + (0.5 - 0.3)
    assert torch.equal(target[:, :10], teacher[:, :10]) and torch.equal(target[:, 20:], teacher[:, 20:])
    inside, ring, outside = region_masks([(10, 10, 20, 20)], (40, 40))
    # 2.5 px a side, rounded out to 3 on each side
    assert inside.sum() == 100 and ring.sum() == 16 * 16 - 100 and outside.sum() == 1600 - 256


def _frame(key: str, rng: np.random.Generator, size: int = 48) -> Frame:
    """A synthetic pair: a person (hot in infrared) and a car (bright in visible) as squares at random places."""
    y_a = np.full((size, size), 60, np.uint8)
    y_b = np.full((size, size), 70, np.uint8)
    objects = []
    spots = rng.permutation(4)[:2]
    for label, spot, plane in (("person", spots[0], y_a), ("car", spots[1], y_b)):
        x, y = 4 + 24 * (spot % 2) + int(rng.integers(0, 6)), 4 + 24 * (spot // 2) + int(rng.integers(0, 6))
        plane[y:y + 12, x:x + 12] = 150
        objects.append((label, (float(x), float(y), float(x + 12), float(y + 12))))
    return Frame(key, y_a, y_b, ("An infrared image.", "A visible image."), objects, 1.0)


def test_loss_schedule_switches_weights_at_its_steps_and_rejects_unknown_ones():
    from tgif.train.steer import load_steer_settings, loss_settings

    settings = load_steer_settings({"init": "x", "out_dir": "y", "w_in": 3.0,
                                    "loss_schedule": {"100": {"w_in": 8.0}, 50: {"margin": 0.5}}})
    assert (loss_settings(settings, 49).w_in, loss_settings(settings, 49).margin) == (3.0, 0.3)
    assert (loss_settings(settings, 50).w_in, loss_settings(settings, 50).margin) == (3.0, 0.5)
    assert (loss_settings(settings, 100).w_in, loss_settings(settings, 100).margin) == (8.0, 0.5)
    with pytest.raises(ValueError, match="cannot be scheduled"):
        load_steer_settings({"init": "x", "out_dir": "y", "loss_schedule": {10: {"lr": 1.0}}})


def test_make_example_names_only_what_its_boxes_hold():
    rng = np.random.default_rng(0)
    frame = _frame("a", rng)
    settings = SteerSettings(init="unused", out_dir="unused", crop=48)
    named_some = absent = 0
    for _ in range(200):
        example = make_example(frame, settings, rng)
        assert example.neutral[0].startswith("An infrared image.") and example.drafted == frame.captions
        phrase = " ".join(example.named).lower()
        if example.boxes:
            named_some += 1
            labels = {label for label, box in frame.objects if tuple(int(v) for v in box) in example.boxes}
            assert labels and all(any(word in phrase for word in LABEL_SYNONYMS[lab]) for lab in labels)
        else:
            absent += 1
    assert named_some > 100 and absent > 10  # mostly named, sometimes absent (p_absent = 0.2)


# ---------------------------------------------------------------------------------------------- a tiny model learns


#: Synonyms the stand-in encoder maps to one vector (a real encoder puts them close together).
_SAME = {word: label for label, words in LABEL_SYNONYMS.items() for word in words}


class HashEncoder:
    """A stand-in text encoder: each lower-cased word maps to a fixed random 16-d vector (synonyms of a class
    to the same one)."""

    name = "hash:test"
    dim = 16
    max_tokens = 64

    def _vector(self, word: str) -> torch.Tensor:
        seed = int(hashlib.sha256(_SAME.get(word, word).encode()).hexdigest()[:8], 16)
        return torch.from_numpy(np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32))

    def encode(self, captions):
        rows = [[self._vector(w.strip(".,;:")) for w in c.lower().split()] or [torch.zeros(self.dim)]
                for c in captions]
        length = max(len(r) for r in rows)
        features = torch.zeros(len(rows), length, self.dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            features[i, : len(row)] = torch.stack(row)
            mask[i, : len(row)] = True
        return features, mask

    def token_count(self, caption: str) -> int:
        return len(caption.split())

    def token_pieces(self, caption: str) -> list[str]:
        return caption.lower().split() or [""]


def _two_square_pair(size: int = 32) -> Frame:
    """One synthetic pair: a person on the left (hot in infrared) and a car on the right (bright in visible)."""
    y_a = np.full((size, size), 60, np.uint8)
    y_b = np.full((size, size), 70, np.uint8)
    q = size // 4
    y_a[q:2 * q, 2:2 + q] = 160
    y_b[q:2 * q, size - 2 - q:size - 2] = 160
    objects = [("person", (2.0, float(q), 2.0 + q, 2.0 * q)),
               ("car", (float(size - 2 - q), float(q), size - 2.0, 2.0 * q))]
    return Frame("pair", y_a, y_b, ("An infrared image.", "A visible image."), objects, 1.0)


def test_a_tiny_model_learns_to_brighten_the_named_square_only(tmp_path):
    torch.manual_seed(0)
    config = TGIFConfig(dim=16, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                        text_dim=HashEncoder.dim, downscale=2)
    init = save_tgif(tmp_path / "teacher.safetensors", TGIFNet(config), HashEncoder.name, "ivf", 0,
                     {"max_tokens": 64})
    frame = _two_square_pair()
    settings = SteerSettings(init=str(init), out_dir=str(tmp_path / "run"), steps=300, batch_size=4, crop=32,
                             lr=3e-3, head_lr=1e-2, warmup=10, checkpoint_every=300, p_absent=0.4,
                             p_phrase_only=0.0, p_neutral_extra=0.0)
    checkpoint = train_steering(settings, progress=False, frames=[frame], text_encoder=HashEncoder())
    student, meta = load_tgif(checkpoint)
    assert meta.config.grounding and meta.extra["objective"] == "steer" and meta.extra["max_tokens"] == 96
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 301

    tokens = CaptionTokens(HashEncoder(), 64)
    y_a, y_b = (torch.from_numpy(p).float().div(255)[None, None] for p in (frame.y_a, frame.y_b))
    boxes = {label: tuple(int(v) for v in box) for label, box in frame.objects}

    def fuse(caption: str) -> np.ndarray:
        text, mask = tokens.batch([(caption, frame.captions[1])])
        with torch.no_grad():
            return student(y_a, y_b, text, mask)[0, 0].numpy() * 255

    def box_change(out: np.ndarray, label: str) -> float:
        x1, y1, x2, y2 = boxes[label]
        return float((out - neutral)[y1:y2, x1:x2].mean())

    neutral = fuse(frame.captions[0])
    person = fuse(frame.captions[0] + " Highlight the person.")
    car = fuse(frame.captions[0] + " Make the car stand out.")
    absent = fuse(frame.captions[0] + " Highlight the dog.")
    assert box_change(person, "person") > 10 and abs(box_change(person, "car")) < 2  # the named square only
    assert box_change(car, "car") > 10 and abs(box_change(car, "person")) < 2
    assert np.abs(absent - neutral).mean() < 1.0  # naming an absent class changes (almost) nothing


def test_an_interrupted_steering_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = TGIFConfig(dim=16, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                        text_dim=HashEncoder.dim, downscale=2)
    init = save_tgif(tmp_path / "teacher.safetensors", TGIFNet(config), HashEncoder.name, "ivf", 0)
    frames = [_two_square_pair()]

    def run(folder: str, resume: bool = False) -> Path:
        settings = SteerSettings(init=str(init), out_dir=str(tmp_path / folder), steps=6, batch_size=2, crop=32,
                                 warmup=2, checkpoint_every=3)
        return train_steering(settings, resume=resume, progress=False, frames=frames, text_encoder=HashEncoder())

    whole, _ = load_tgif(run("whole"))
    import tgif.train.steer as steer

    calls = {"n": 0}
    real = steer.make_example

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 8:  # the 5th step's examples (batch 2): the run dies after its step-3 checkpoint
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(steer, "make_example", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run("parts")
    monkeypatch.setattr(steer, "make_example", real)
    parts, meta = load_tgif(run("parts", resume=True))
    assert meta.steps == 6 and len((tmp_path / "parts" / "log.csv").read_text().splitlines()) == 7
    for name, value in whole.state_dict().items():
        assert torch.equal(parts.state_dict()[name], value), name


def test_student_starts_from_the_teacher_weights_with_frozen_encoders():
    teacher = TGIFNet(TGIFConfig(dim=16, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                                 text_dim=16, downscale=2))
    student = student_from_teacher(teacher)
    assert student.config.grounding
    for name, value in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[name], value), name
    assert not any(p.requires_grad for p in student.encoder_a.parameters())
    assert all(p.requires_grad for p in student.text_a.parameters())


def test_head_only_training_leaves_every_trunk_weight_and_an_ungrounded_caption_as_the_teacher(tmp_path):
    torch.manual_seed(0)
    config = TGIFConfig(dim=16, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                        text_dim=HashEncoder.dim, downscale=2)
    teacher = TGIFNet(config)
    init = save_tgif(tmp_path / "teacher.safetensors", teacher, HashEncoder.name, "ivf", 0)
    teacher, _ = load_tgif(init)
    settings = SteerSettings(init=str(init), out_dir=str(tmp_path / "run"), steps=40, batch_size=2, crop=32,
                             lr=0.0, head_lr=1e-2, warmup=2, checkpoint_every=40, freeze_trunk=True)
    student, _ = load_tgif(train_steering(settings, progress=False, frames=[_two_square_pair()],
                                          text_encoder=HashEncoder()))
    trained = student.state_dict()
    for name, value in teacher.state_dict().items():
        assert torch.equal(trained[name], value), name  # the trunk is the teacher's, bit for bit
    assert not torch.equal(trained["grounding.emphasis.weight"], torch.zeros_like(trained["grounding.emphasis.weight"]))
    # a caption the head does not ground (relevance below the gate everywhere) gives the teacher's fusion exactly
    student.grounding.bias.data.fill_(-50.0)
    tokens = CaptionTokens(HashEncoder(), 64)
    text, mask = tokens.batch([("Highlight the person.", "A visible image.")])
    y = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(student(y, y.flip(-1), text, mask), teacher(y, y.flip(-1), text, mask))


def test_mix_weights_moves_each_layer_part_of_the_way_to_the_other_network():
    config = TGIFConfig(dim=16, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                        text_dim=16, downscale=2)
    torch.manual_seed(0)
    a, b = TGIFNet(config), student_from_teacher(TGIFNet(config))  # b's extra grounding head is ignored
    before = {k: v.clone() for k, v in a.state_dict().items()}
    mix_weights(a, b, 0.25)
    for name, value in a.state_dict().items():
        assert torch.allclose(value, 0.75 * before[name] + 0.25 * b.state_dict()[name], atol=1e-6), name
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mix_weights(a, b, 1.5)
    with pytest.raises(ValueError, match="missing"):
        mix_weights(b, a, 0.5)


def test_head_init_takes_another_checkpoints_grounding_head(tmp_path):
    torch.manual_seed(0)
    config = TGIFConfig(dim=16, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                        text_dim=16, downscale=2)
    teacher = TGIFNet(config)
    donor = student_from_teacher(TGIFNet(config))
    torch.nn.init.normal_(donor.grounding.emphasis.weight)
    path = save_tgif(tmp_path / "donor.safetensors", donor, "hash", "ivf", 0)
    student = student_from_teacher(teacher, freeze_trunk=True, head_init=str(path))
    assert torch.equal(student.grounding.emphasis.weight, donor.grounding.emphasis.weight)
    for name, value in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[name], value), name
    assert [n for n, p in student.named_parameters() if p.requires_grad] == \
        [n for n, _ in student.named_parameters() if n.startswith("grounding.")]
    with pytest.raises(ValueError, match="no grounding head"):
        student_from_teacher(teacher, head_init=str(save_tgif(tmp_path / "plain.safetensors", teacher, "hash",
                                                                 "ivf", 0)))


# ---------------------------------------------------------------------------------------------- the committed weights


WEIGHTS = REPO / "weights" / "tgif_ivf_steer.safetensors"  # the steering model with the pixel grounding head


@pytest.mark.skipif(not WEIGHTS.exists(), reason="no committed IVF weights")
def test_two_stage_network_equals_forward_on_the_committed_weights():
    from tgif.model.tgif_net import GuidedFeatures

    model, _ = load_tgif(WEIGHTS)
    rng = torch.Generator().manual_seed(0)
    y_a, y_b = torch.rand(1, 1, 90, 122, generator=rng), torch.rand(1, 1, 90, 122, generator=rng)
    text = torch.randn(1, 30, model.config.text_dim, generator=rng)
    other = torch.randn(1, 12, model.config.text_dim, generator=rng)
    with torch.no_grad():
        whole = model(y_a, y_b, text)
        features = model.encode_sources(y_a, y_b)
        staged = model.guide_and_decode(features, text)
        guided = model.guide_sources(features, text)
        three = model.ground_and_decode(features, guided, text)[0]
        assert guided.pixel_side is not None  # the head's caption-independent half, kept for the next caption
        again = model.ground_and_decode(features, guided, text)[0]
        # another caption over the same trunk: with the kept half, the same as with the head computed afresh
        kept = model.ground_and_decode(features, guided, other)[0]
        fresh = model.ground_and_decode(features, GuidedFeatures(guided.merged), other)[0]
    assert torch.equal(whole, staged) and torch.equal(whole, three) and torch.equal(whole, again)
    assert torch.equal(kept, fresh) and not torch.equal(kept, whole)


def test_steer_command_prints_per_pair_rows_and_medians(data_root, capsys, tmp_path):
    from tgif.cli import main

    assert main(["steer", "--limit", "1", "--no-progress", "--csv", str(tmp_path / "steer.csv")]) == 0
    out = capsys.readouterr().out
    assert "| pair | object | phrase |" in out and "Medians over 1 pairs x 4 phrasings" in out
    rows = (tmp_path / "steer_tgif_ivf.csv").read_text().splitlines()
    assert rows[0].startswith("pair,label,position,phrase,delta_in") and len(rows) == 1 + len(HELD_OUT_TEMPLATES)
