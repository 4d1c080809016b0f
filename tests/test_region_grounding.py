"""Region grounding (tgif.model.region_grounding, tgif.train.grounding) and the selectivity benchmark's arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_steering import HashEncoder

from tgif.captions.steering import SELECTIVITY_PHRASINGS, SELECTIVITY_WORDS, read_phrasings, read_words
from tgif.errors import TgifError
from tgif.model import TGIFConfig, TGIFNet, load_tgif, save_tgif
from tgif.model.region_grounding import LabelTable, Region, match_gate, region_tokens
from tgif.session import added_text, pointing_notes
from tgif.steering import selectivity_phrase, selectivity_stats
from tgif.train.grounding import (
    GroundSettings,
    Reference,
    bright_target,
    named_regions,
    train_grounding,
)
from tgif.train.steer import CaptionTokens, Frame

# ---------------------------------------------------------------------------------------------- benchmark arithmetic


def test_selectivity_stats_against_a_hand_computation():
    neutral = np.full((40, 60), 100 / 255)
    named = neutral.copy()
    named[10:20, 5:15] += 20 / 255  # the named box: +20 levels
    named[10:20, 40:50] += 2 / 255  # the other box: +2 levels
    named[35:40, 0:5] += 5 / 255  # outside every box (grown by 50%): 25 pixels of +5
    sources = np.full((40, 60), 200 / 255)
    sources[10:12, 5:15] = 0.2
    named[10:12, 5:15] = 1.0  # 20 of the box's 100 pixels burnt white where the sources are dark
    stats = selectivity_stats(neutral, named, sources, (5, 10, 15, 20), (40, 10, 50, 20),
                              [(5, 10, 15, 20), (40, 10, 50, 20)])
    expected_named = (80 * 20 + 20 * 155) / 100
    assert stats["delta_named"] == pytest.approx(expected_named)
    assert stats["delta_other"] == pytest.approx(2.0)
    assert stats["selectivity"] == pytest.approx(expected_named / 2.0)
    outside = np.ones((40, 60), bool)
    outside[7:23, 2:18] = False  # each box grown by 50% (5 of 10 pixels: 2.5 on each side, floor / ceil)
    outside[7:23, 37:53] = False
    assert stats["delta_outside"] == pytest.approx(25 * 5 / outside.sum())
    assert stats["white_new"] == pytest.approx(0.2) and stats["white_sources"] == pytest.approx(0.2)
    assert stats["gain_other"] == pytest.approx(2.0 / 1.0)  # ring contrast 0 before: relative to 1 grey level


def test_selectivity_phrases_cycle_through_phrasings_and_words():
    phrasings = read_phrasings(SELECTIVITY_PHRASINGS)
    words = read_words(SELECTIVITY_WORDS)
    assert "sedan" in words["car"] and "guy" in words["person"]
    phrases = [selectivity_phrase("car", "on the right", i, phrasings, words) for i in range(6)]
    assert phrases[0] == phrasings[0].format(label="car", position="on the right")
    assert phrases[1] == phrasings[1].format(label="sedan", position="on the right")
    assert phrases[3] == phrasings[3].format(label="car", position="on the right-hand side")
    from tgif.train.grounding import COLUMN_WORDS, CORNER_WORDS, GROUND_TEMPLATES, GROUND_WORDS, ROW_WORDS

    trained = {w for ws in GROUND_WORDS.values() for w in ws}
    trained |= {w for table in (COLUMN_WORDS, ROW_WORDS, CORNER_WORDS) for ws in table.values() for w in ws}
    assert not {w for ws in words.values() for w in ws} & trained  # the benchmark's words are never trained on
    assert not set(phrasings) & {t.replace("{obj}", "{label} {position}") for t in GROUND_TEMPLATES}


def test_read_words_rejects_malformed_lines(tmp_path):
    bad = tmp_path / "words.txt"
    bad.write_text("car sedan\n")
    with pytest.raises(TgifError, match="name = other"):
        read_words(bad)
    with pytest.raises(TgifError, match="not found"):
        read_words(tmp_path / "none.txt")


def test_nothing_matched_note_quotes_the_added_text():
    drafted = ("It shows a person on the left. A dark infrared image.", "A visible image.")
    captions = (drafted[0] + " Make the tree on the left stand out.", drafted[1])
    assert added_text(drafted, captions) == ["Make the tree on the left stand out."]
    notes = pointing_notes(drafted, captions, [("person on the left", (0, 0, 5, 5), 0.03)])
    assert notes == ["Nothing in this pair matched 'Make the tree on the left stand out.', so the fusion is the "
                     "drafted captions' one."]
    named = pointing_notes(drafted, captions, [("person on the left", (0, 0, 5, 5), 0.91),
                                               ("car on the right", (9, 0, 12, 5), 0.2)])
    assert named == ["The captions point at: person on the left (91%)."]
    assert pointing_notes(drafted, drafted, []) == []


# ---------------------------------------------------------------------------------------------- region tokens


def test_region_tokens_place_and_size_objects_as_the_app_names_them():
    table = LabelTable(HashEncoder().encode, ["person", "car"])
    regions = [Region("person", (0, 40, 10, 60)), Region("person", (80, 0, 100, 30)), Region("car", (40, 40, 60, 50))]
    tokens = region_tokens([regions], [(100, 90)], table)
    assert tokens.names[0] == ["person on the left", "person at the top right", "car in the centre"]
    assert tokens.columns[0].tolist() == [0, 2, 1] and tokens.rows[0].tolist() == [1, 0, 1]
    assert tokens.sizes[0].tolist() == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]  # largest / smallest of its class
    assert tokens.labels[0].tolist() == [0, 0, 1]
    assert table.index("dog") == 2 and table.features.shape == (3, HashEncoder.dim)  # a new name is encoded


def test_named_regions_by_class_column_row_and_size():
    frame = (90.0, 90.0)
    regions = [Region("person", (0, 0, 10, 10)), Region("person", (0, 60, 20, 90)), Region("person", (70, 30, 80, 60)),
               Region("car", (40, 40, 50, 50))]
    assert named_regions([Reference("person", column=0)], regions, frame) == [True, True, False, False]
    assert named_regions([Reference("person", column=0, row=2)], regions, frame) == [False, True, False, False]
    assert named_regions([Reference("car", row=1)], regions, frame) == [False, False, False, True]  # the centre
    assert named_regions([Reference("person", row=2)], regions, frame) == [False] * 4  # bottom centre: nobody
    assert named_regions([Reference("person", size=0)], regions, frame) == [False, True, False, False]
    assert named_regions([Reference("car"), Reference("person", column=2)], regions, frame) == [False, False, True,
                                                                                                True]
    assert named_regions([Reference("dog")], regions, frame) == [False] * 4


def test_bright_target_raises_contrast_without_burning_to_white():
    teacher = torch.full((1, 30, 30), 0.2)
    teacher[:, 10:20, 10:20] = 0.7
    teacher[:, 12:14, 12:14] = 0.99  # already white in the frozen output: kept
    target = bright_target(teacher, (10, 10, 20, 20), gain=1.0)
    inside = target[:, 10:20, 10:20]
    assert float(inside.max()) == pytest.approx(0.99)
    grown = inside[teacher[:, 10:20, 10:20] < 0.9]
    assert float(grown.min()) > 0.8 and float(grown.max()) < 0.95  # 0.7 + (0.7 - 0.2) compressed below the knee
    assert torch.equal(target[:, :10], teacher[:, :10])  # outside the box: the frozen output
    dark = 1.0 - teacher  # an object darker than its ring is darkened, and never crushed to black
    target = bright_target(dark, (10, 10, 20, 20), gain=1.0)
    inside = target[:, 10:20, 10:20]
    assert float(inside.min()) == pytest.approx(0.01)  # already black in the frozen output: kept
    darkened = inside[dark[:, 10:20, 10:20] > 0.1]
    assert float(darkened.max()) < 0.2 and float(darkened.min()) > 0.05


def test_match_gate_is_zero_up_to_an_even_chance():
    assert match_gate(torch.tensor([0.0, 0.5, 0.625, 0.75, 1.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------- a tiny model learns


def _two_people(size: int = 48) -> Frame:
    """A person on the left and a person on the right (both warm in infrared), and a car in the centre."""
    y_a = np.full((size, size), 60, np.uint8)
    y_b = np.full((size, size), 70, np.uint8)
    q = size // 6
    y_a[2 * q:4 * q, 2:2 + q] = 150
    y_a[2 * q:4 * q, size - 2 - q:size - 2] = 150
    y_b[2 * q:3 * q, 3 * q - q // 2:3 * q + q // 2] = 170
    objects = [("person", (2.0, 2.0 * q, 2.0 + q, 4.0 * q)),
               ("person", (float(size - 2 - q), 2.0 * q, size - 2.0, 4.0 * q)),
               ("car", (3.0 * q - q // 2, 2.0 * q, 3.0 * q + q // 2, 3.0 * q))]
    return Frame("pair", y_a, y_b, ("An infrared image.", "A visible image."), objects, 1.0)


class WordsEncoder(HashEncoder):
    """The stand-in encoder with every training word of a class (and its plural) mapped to the class's vector, as a
    real encoder puts them close together; 64-d, so that a sentence's mean word tells a request from a description."""

    dim = 64

    def _vector(self, word: str) -> torch.Tensor:
        from tgif.captions.wording import plural
        from tgif.train.grounding import GROUND_WORDS

        same = {w: label for label, words in GROUND_WORDS.items() for base in words for w in (base, plural(base))}
        return super()._vector(same.get(word, word))


def test_a_tiny_model_learns_to_bring_out_the_named_person_and_leave_the_other(tmp_path):
    torch.manual_seed(0)
    config = TGIFConfig(dim=16, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                        text_dim=WordsEncoder.dim, downscale=2)
    init = save_tgif(tmp_path / "base.safetensors", TGIFNet(config), HashEncoder.name, "ivf", 0, {"max_tokens": 64})
    frame = _two_people()
    settings = GroundSettings(init=str(init), out_dir=str(tmp_path / "run"), match_frames=150, match_steps=300,
                              match_batch=24, pool=4, steps=150, batch_size=2, crop=48, lr=1e-2, max_tokens=64)
    checkpoint = train_grounding(settings, progress=False, frames=[frame], text_encoder=WordsEncoder())
    student, meta = load_tgif(checkpoint)
    assert meta.config.region_grounding and not meta.config.grounding and meta.extra["objective"] == "ground"
    assert meta.extra["matcher"]["accuracy"] > 0.9

    encoder = WordsEncoder()
    tokens = CaptionTokens(encoder, 64)
    table = LabelTable(encoder.encode)
    regions = region_tokens([[Region(label, box) for label, box in frame.objects]], [(48, 48)], table)
    y_a, y_b = (torch.from_numpy(p).float().div(255)[None, None] for p in (frame.y_a, frame.y_b))
    features = student.encode_sources(y_a, y_b)
    text, mask = tokens.batch([frame.captions])
    guided = student.guide_sources(features, text, mask)

    def fuse(caption: str) -> tuple[np.ndarray, list[float]]:
        text, mask = tokens.batch([(caption, frame.captions[1])])
        with torch.no_grad():
            out, _ = student.ground_and_decode(features, guided, text, mask, regions)
            chances = student.region_grounding.match(text, mask, regions)[0].tolist()
        return out[0, 0].numpy() * 255, chances

    def box_change(out: np.ndarray, index: int) -> float:
        x1, y1, x2, y2 = (int(v) for v in frame.objects[index][1])
        return float(np.abs(out - neutral)[y1:y2, x1:x2].mean())

    neutral, chances = fuse(frame.captions[0])
    assert max(chances) < 0.5  # the drafts name nothing
    left, chances = fuse(frame.captions[0] + " Highlight the person on the left.")
    assert chances[0] > 0.5 and chances[1] < 0.5 and chances[2] < 0.5
    assert box_change(left, 0) > 5 and box_change(left, 1) == 0.0
    right, chances = fuse(frame.captions[0] + " Bring out the person on the right.")
    assert chances[1] > 0.5 and chances[0] < 0.5
    assert box_change(right, 1) > 5 and box_change(right, 0) == 0.0
    absent, chances = fuse(frame.captions[0] + " Highlight the dog.")
    assert max(chances) < 0.5 and float(np.abs(absent - neutral).max()) == 0.0  # nothing named: nothing changes


# ---------------------------------------------------------------------------------------------- the shipped model


def test_the_shipped_ivf_model_grounds_regions_and_its_config_made_it():
    import yaml

    from tgif.model import read_metadata

    root = Path(__file__).resolve().parents[1]
    meta = read_metadata(root / "weights" / "tgif_ivf.safetensors")
    assert meta.config.region_grounding and meta.extra["objective"] == "ground"
    values = yaml.safe_load((root / "configs" / "ivf_ground.yaml").read_text())
    recorded = meta.extra["ground_settings"]
    for key, value in values.items():
        assert recorded[key] == value, key
    assert (root / values["init"]).is_file()  # the checkpoint whose trunk it keeps is committed


def test_a_caption_naming_something_absent_changes_nothing_and_says_so(tmp_path, monkeypatch, capsys):
    from tgif.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path / "cache"))
    example = Path(__file__).resolve().parents[1] / "assets" / "examples" / "tno" / "kaptein_1654"
    drafted = tmp_path / "drafted.png"
    assert main(["fuse", str(example / "ir.png"), str(example / "vi.png"), "-o", str(drafted)]) == 0
    captions = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines()
                if line.startswith("caption ")]
    edited = tmp_path / "edited.png"
    assert main(["fuse", str(example / "ir.png"), str(example / "vi.png"), "-o", str(edited),
                 "--caption1", captions[0] + " Make the tree on the left stand out.", "--caption2", captions[1]]) == 0
    printed = capsys.readouterr().out
    assert "note: Nothing in this pair matched 'Make the tree on the left stand out.'" in printed
    from tgif.io import load_image

    assert np.array_equal(load_image(drafted).pixels, load_image(edited).pixels)


def test_grounding_settings_reject_unknown_keys():
    from tgif.train.grounding import load_ground_settings

    assert load_ground_settings({"init": "a", "out_dir": "b", "gain": 0.5}).gain == 0.5
    with pytest.raises(ValueError, match="unknown grounding settings"):
        load_ground_settings({"init": "a", "out_dir": "b", "gains": 2})


def test_selectivity_medians_split_same_class_from_other_class_cases():
    from tgif.steering import SelectivityReport, format_selectivity

    report = SelectivityReport("w.safetensors", ("msrs_test",))
    for same, value in ((True, 1.0), (True, 3.0), (False, 10.0)):
        report.rows.append({"dataset": "msrs_test", "pair": "p", "named": "person on the left",
                            "other": "person on the right", "same_class": same, "phrase": "x",
                            **{key: value for key in SelectivityReport.KEYS}})
    report.controls = [{"absent": 0.5, "nothing": 0.0}, {"absent": 1.5, "nothing": 0.0}]
    assert report.medians()["selectivity"] == 3.0 and report.medians()["cases"] == 3
    assert report.medians(True)["selectivity"] == 2.0 and report.medians(False)["delta_named"] == 10.0
    assert report.medians()["absent"] == 1.0
    table = format_selectivity(report)
    assert "| same class, left vs right | 2 | 2.00 | 2.00 | 2.0x | +200.0% |" in table


def test_the_shipped_region_head_acts_on_the_named_boxes_only_and_burns_nothing():
    from tgif.model import load_tgif
    from tgif.model.region_grounding import WHITE_KNEE

    model, _ = load_tgif(Path(__file__).resolve().parents[1] / "weights" / "tgif_ivf.safetensors")
    rng = torch.Generator().manual_seed(0)
    y_a, y_b = torch.rand(1, 1, 96, 128, generator=rng), torch.rand(1, 1, 96, 128, generator=rng)
    y_a[..., 40:88, 8:40] = 0.6 + 0.4 * y_a[..., 40:88, 8:40]  # a warm object on the left
    text = torch.randn(1, 20, model.config.text_dim, generator=rng)
    table = LabelTable(lambda names: (torch.randn(len(names), 3, model.config.text_dim, generator=rng),
                                      torch.ones(len(names), 3, dtype=torch.bool)), ["person"])
    regions = region_tokens([[Region("person", (8, 40, 40, 88)), Region("person", (88, 40, 120, 88))]], [(128, 96)],
                            table)
    with torch.no_grad():
        features = model.encode_sources(y_a, y_b)
        guided = model.guide_sources(features, text)
        plain = model.ground_and_decode(features, guided, text)[0]  # no regions: nothing can be named
        named, relevance = model.ground_and_decode(features, guided, text, None, regions, torch.tensor([[1.0, 0.0]]))
    assert torch.equal(plain, model(y_a, y_b, text))
    change = (named - plain)[0, 0] * 255
    outside = torch.ones(96, 128, dtype=torch.bool)
    outside[40:88, 8:40] = False
    assert float(change[outside].abs().max()) == 0.0  # the other object and the background are untouched
    assert float(change[40:88, 8:40].abs().mean()) > 3.0
    assert torch.equal(relevance[0, 0] > 0, ~outside)
    past = (named > WHITE_KNEE) & ~(plain > WHITE_KNEE)
    assert not bool(past.any())  # nothing is brightened past the knee that was not already


def test_region_emphasis_is_bounded_feathered_and_starts_at_no_change():
    from tgif.model.region_grounding import BLACK_KNEE, WHITE_KNEE, RegionEmphasis, ring_mean

    torch.manual_seed(0)
    emphasis = RegionEmphasis(feather=4)
    image = torch.rand(2, 1, 40, 50)
    boxes = torch.tensor([[[10.0, 5.0, 30.0, 25.0], [0, 0, 0, 0]], [[2.0, 2.0, 12.0, 12.0], [30, 20, 45, 38]]])
    gates = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    with torch.no_grad():
        assert torch.equal(emphasis(image, boxes, gates), image)  # a new head changes nothing
        emphasis.net[-1].bias.fill_(0.5)  # every pixel asks for +0.5 times its gate and mask
        out = emphasis(image, boxes, gates)
    weight = emphasis.mask(20, 20, image.device, image.dtype)
    assert float(weight[0, 0]) == pytest.approx(0.125 * 0.125) and float(weight[10, 10]) == 1.0
    patch = image[0, :, 5:25, 10:30]
    expected = torch.minimum(patch + 0.5 * weight, patch.clamp(min=WHITE_KNEE))
    assert torch.allclose(out[0, :, 5:25, 10:30], expected, atol=1e-6)
    outside = torch.ones(40, 50, dtype=torch.bool)
    outside[5:25, 10:30] = False
    assert torch.equal(out[0, 0][outside], image[0, 0][outside])
    assert bool((out <= torch.clamp(image, min=WHITE_KNEE)).all())
    with torch.no_grad():
        emphasis.net[-1].bias.fill_(-0.5)  # and now -0.5: nothing is crushed below the black knee
        darker = emphasis(image, boxes, gates)
    assert bool((darker >= torch.clamp(image, max=BLACK_KNEE)).all()) and float(darker.min()) >= 0.0
    assert float((darker - image).min()) < -0.4
    ring = torch.zeros(40, 50, dtype=torch.bool)
    ring[0:30, 5:35] = True  # grown by half the box's size: 5 pixels each side
    ring[5:25, 10:30] = False
    assert float(ring_mean(image[0, 0], (10, 5, 30, 25))) == pytest.approx(float(image[0, 0][ring].mean()), rel=1e-5)
