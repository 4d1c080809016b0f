"""Tests for :func:`tgif.io.load_image` and :func:`tgif.io.save_image`.

Every image is built inside the test (small, odd sizes) and written to ``tmp_path``, so
these tests need no shared data. Pixel values are checked exactly: ``v / 255`` for 8-bit
data and ``v / 65535`` for 16-bit data.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from tgif.errors import ImageLoadError, ImageTooLargeError, TgifError
from tgif.io import SourceImage, load_image, save_image

H, W = 17, 23


@pytest.fixture
def rgb8(rng) -> np.ndarray:
    """A random (H, W, 3) uint8 colour image (channels differ almost everywhere)."""
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def grey8(rng) -> np.ndarray:
    """A random (H, W) uint8 grey image."""
    return rng.integers(0, 256, (H, W), dtype=np.uint8)


def _u8(arr: np.ndarray) -> np.ndarray:
    """What load_image must return for 8-bit data."""
    return arr.astype(np.float32) / 255.0


def _write(tmp_path: Path, name: str, array: np.ndarray, **save_kw) -> Path:
    path = tmp_path / name
    Image.fromarray(array).save(path, **save_kw)
    return path


# --- formats --------------------------------------------------------------------------------

LOSSLESS = [("png", {}), ("bmp", {}), ("tif", {}), ("webp", {"lossless": True})]


@pytest.mark.parametrize(("ext", "save_kw"), LOSSLESS, ids=[e for e, _ in LOSSLESS])
def test_lossless_grey_round_trip_is_exact(tmp_path, grey8, ext, save_kw):
    image = load_image(_write(tmp_path, f"grey.{ext}", grey8, **save_kw))
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (H, W)
    assert not image.is_color
    np.testing.assert_array_equal(image.pixels, _u8(grey8))
    assert image.size == (W, H)
    assert image.name == f"grey.{ext}"


@pytest.mark.parametrize(("ext", "save_kw"), LOSSLESS, ids=[e for e, _ in LOSSLESS])
def test_lossless_rgb_round_trip_is_exact(tmp_path, rgb8, ext, save_kw):
    image = load_image(_write(tmp_path, f"rgb.{ext}", rgb8, **save_kw))
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (H, W, 3)
    assert image.is_color
    np.testing.assert_array_equal(image.pixels, _u8(rgb8))


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_jpeg_gives_the_decoded_values(tmp_path, grey8, rgb8, kind):
    # smooth content so that the JPEG stays close to the original
    base = cv2.GaussianBlur(grey8 if kind == "grey" else rgb8, (7, 7), 2)
    path = _write(tmp_path, f"{kind}.jpg", base, quality=95)
    image = load_image(path)
    decoded = np.asarray(Image.open(path))
    assert image.pixels.shape == base.shape
    np.testing.assert_array_equal(image.pixels, _u8(decoded))
    assert np.abs(image.pixels * 255 - base).mean() < 3.0


def test_pixels_lie_in_unit_range(tmp_path, rgb8):
    rgb8[0, 0] = 0
    rgb8[0, 1] = 255
    pixels = load_image(_write(tmp_path, "x.png", rgb8)).pixels
    assert pixels.min() == 0.0
    assert pixels.max() == 1.0


# --- 16-bit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_grey_keeps_full_precision(tmp_path, rng, ext):
    data = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    data[0, 0], data[0, 1] = 0, 65535
    path = tmp_path / f"g16.{ext}"
    Image.fromarray(data).save(path)
    assert Image.open(path).mode == "I;16"
    image = load_image(path)
    assert image.pixels.shape == (H, W)
    assert image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels, data / 65535.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(np.round(image.pixels.astype(np.float64) * 65535), data)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_colour_keeps_channel_order_and_precision(tmp_path, rng, ext):
    rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    rgb16[0, 0] = (65535, 0, 0)  # pure red must stay red
    path = tmp_path / f"c16.{ext}"
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb16[..., ::-1]))  # cv2 writes BGR
    image = load_image(path)
    assert image.pixels.shape == (H, W, 3)
    assert image.mode.endswith(";16")
    np.testing.assert_allclose(image.pixels, rgb16 / 65535.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(image.pixels[0, 0], [1.0, 0.0, 0.0])
    # more than 8 bits survive: the 16-bit values come back exactly
    np.testing.assert_array_equal(np.round(image.pixels.astype(np.float64) * 65535), rgb16)


# --- modes ----------------------------------------------------------------------------------


def test_opaque_rgba_equals_rgb(tmp_path, rgb8):
    rgba = np.dstack([rgb8, np.full((H, W), 255, np.uint8)])
    image = load_image(_write(tmp_path, "opaque.png", rgba))
    assert image.mode == "RGBA"
    np.testing.assert_array_equal(image.pixels, _u8(rgb8))
    assert image.notes == ["opaque alpha channel dropped"]


def test_partial_alpha_is_composited_over_black(tmp_path, rng, rgb8):
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    image = load_image(_write(tmp_path, "alpha.png", np.dstack([rgb8, alpha])))
    assert image.pixels.shape == (H, W, 3)
    np.testing.assert_allclose(image.pixels, _u8(rgb8) * _u8(alpha)[..., None], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(image.pixels[0, 0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(image.pixels[0, 1], _u8(rgb8[0, 1]))
    assert any("composited over black" in note for note in image.notes)


def test_la_mode_is_grey_times_alpha(tmp_path, rng, grey8):
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([grey8, alpha]), "LA").save(path)
    image = load_image(path)
    assert image.mode == "LA"
    assert image.pixels.shape == (H, W)
    np.testing.assert_allclose(image.pixels, _u8(grey8) * _u8(alpha), rtol=0, atol=1e-7)
    assert any("composited over black" in note for note in image.notes)


def _palette_image(rng) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    palette = np.array([[255, 0, 0], [0, 200, 10], [30, 40, 250], [90, 90, 90]], np.uint8)
    index = rng.integers(0, 4, (H, W), dtype=np.uint8)
    index[0, :4] = [0, 1, 2, 3]
    im = Image.new("P", (W, H))
    im.putdata(index.ravel().tolist())
    im.putpalette(palette.ravel().tolist())
    return im, index, palette


def test_palette_without_transparency(tmp_path, rng):
    im, index, palette = _palette_image(rng)
    path = tmp_path / "pal.png"
    im.save(path)
    image = load_image(path)
    assert image.mode == "P"
    assert image.pixels.shape == (H, W, 3)
    np.testing.assert_array_equal(image.pixels, _u8(palette[index]))


def test_palette_with_transparency_composites_transparent_index_to_black(tmp_path, rng):
    im, index, palette = _palette_image(rng)
    path = tmp_path / "pal_t.png"
    im.save(path, transparency=1)
    image = load_image(path)
    expected = _u8(palette[index])
    expected[index == 1] = 0.0
    np.testing.assert_array_equal(image.pixels, expected)
    assert any("composited over black" in note for note in image.notes)


def test_mode_1_gives_zero_and_one(tmp_path, rng):
    bits = rng.random((H, W)) > 0.5
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == "1"
    image = load_image(path)
    assert image.pixels.shape == (H, W)
    np.testing.assert_array_equal(image.pixels, bits.astype(np.float32))


@pytest.mark.parametrize("ext", ["jpg", "tif"])
def test_cmyk_converts_like_pil(tmp_path, rgb8, ext):
    path = tmp_path / f"cmyk.{ext}"
    Image.fromarray(rgb8).convert("CMYK").save(path)
    stored = Image.open(path)
    assert stored.mode == "CMYK"
    image = load_image(path)
    assert image.mode == "CMYK"
    assert image.pixels.shape == (H, W, 3)
    np.testing.assert_array_equal(image.pixels, _u8(np.asarray(stored.convert("RGB"))))
    assert "CMYK converted to RGB" in image.notes


@pytest.mark.parametrize("mode", ["YCbCr", "LAB"])
def test_ycbcr_and_lab_tiff_convert_like_pil(tmp_path, rgb8, mode):
    path = tmp_path / f"{mode}.tif"
    Image.fromarray(rgb8).convert(mode).save(path)
    stored = Image.open(path)
    try:
        stored.load()
    except OSError as exc:  # Pillow 12 (the version gradio allows) writes YCbCr TIFFs it cannot read back
        pytest.skip(f"Pillow {Image.__version__} cannot read back its own {mode} TIFF ({exc})")
    assert stored.mode == mode
    image = load_image(path)
    assert image.pixels.shape == (H, W, 3)
    np.testing.assert_array_equal(image.pixels, _u8(np.asarray(stored.convert("RGB"))))
    assert f"{mode} converted to RGB" in image.notes


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "HSV", "CMYK"])
def test_pil_image_in_other_modes_converts_to_rgb(rgb8, mode):
    im = Image.fromarray(rgb8).convert(mode)
    image = load_image(im)
    assert image.mode == mode
    np.testing.assert_array_equal(image.pixels, _u8(np.asarray(im.convert("RGB"))))


def test_multi_frame_gif_gives_first_frame(tmp_path, grey8):
    frames = [Image.fromarray(grey8).convert("P"), Image.fromarray(255 - grey8).convert("P")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image = load_image(path)
    first = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(image.pixels, _u8(first[..., 0]))
    assert "first of 2 frames used" in image.notes


# --- EXIF orientation -----------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_exif_orientation_is_applied(tmp_path, rgb8, ext):
    path = tmp_path / f"rotated.{ext}"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb8).save(path, exif=exif)
    image = load_image(path)
    assert image.pixels.shape == (W, H, 3)
    assert image.size == (H, W)
    assert image.original_size == (W, H)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(image.pixels, _u8(expected))
    if ext == "png":  # lossless: orientation 6 means "rotate 90 degrees clockwise to view"
        np.testing.assert_array_equal(image.pixels, _u8(np.rot90(rgb8, k=-1)))


# --- grey stored as colour ------------------------------------------------------------------


def test_grey_stored_as_rgb_is_returned_as_grey(tmp_path, grey8):
    image = load_image(_write(tmp_path, "grey_rgb.png", np.dstack([grey8] * 3)))
    assert image.mode == "RGB"
    assert image.pixels.shape == (H, W)
    assert image.pixels.flags.c_contiguous
    np.testing.assert_array_equal(image.pixels, _u8(grey8))


def test_almost_grey_rgb_stays_colour(tmp_path, grey8):
    rgb = np.dstack([grey8] * 3)
    rgb[5, 7, 2] ^= 1
    image = load_image(_write(tmp_path, "almost.png", rgb))
    assert image.pixels.shape == (H, W, 3)


# --- input kinds ----------------------------------------------------------------------------


def test_inputs_from_path_bytes_and_file_objects(tmp_path, rgb8):
    path = _write(tmp_path, "scene.png", rgb8)
    expected = _u8(rgb8)
    data = path.read_bytes()
    with path.open("rb") as handle:
        from_open_file = load_image(handle)
    results = {
        "str": load_image(str(path)),
        "path": load_image(path),
        "bytes": load_image(data),
        "bytearray": load_image(bytearray(data)),
        "bytesio": load_image(io.BytesIO(data)),
        "open file": from_open_file,
    }
    for kind, image in results.items():
        np.testing.assert_array_equal(image.pixels, expected, err_msg=kind)
    assert results["str"].name == results["path"].name == "scene.png"
    assert from_open_file.name == "scene.png"
    assert results["bytes"].name == results["bytesio"].name == "image"
    assert load_image(data, name="visible").name == "visible"


def test_pil_image_input(rgb8, grey8):
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb8)).pixels, _u8(rgb8))
    image = load_image(Image.fromarray(grey8))
    assert image.mode == "L"
    np.testing.assert_array_equal(image.pixels, _u8(grey8))


def test_source_image_passes_through(rgb8):
    image = load_image(rgb8)
    assert load_image(image) is image


def test_numpy_uint8_inputs(rgb8, grey8):
    np.testing.assert_array_equal(load_image(grey8).pixels, _u8(grey8))
    np.testing.assert_array_equal(load_image(rgb8).pixels, _u8(rgb8))
    np.testing.assert_array_equal(load_image(grey8[..., None]).pixels, _u8(grey8))
    image = load_image(rgb8)
    assert image.mode == "uint8[17, 23, 3]"
    assert image.original_size == (W, H)


def test_numpy_uint16_bool_and_float_inputs(rng):
    u16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    np.testing.assert_allclose(load_image(u16).pixels, u16 / 65535.0, rtol=0, atol=1e-7)
    mask = rng.random((H, W)) > 0.5
    np.testing.assert_array_equal(load_image(mask).pixels, mask.astype(np.float32))
    floats = rng.random((H, W, 3))
    floats[0, 0] = (0.0, 1.0, 0.5)
    image = load_image(floats)
    assert image.pixels.dtype == np.float32
    np.testing.assert_array_equal(image.pixels, floats.astype(np.float32))


def test_numpy_rgba_input(rng, rgb8):
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    image = load_image(np.dstack([rgb8, alpha]))
    np.testing.assert_allclose(image.pixels, _u8(rgb8) * _u8(alpha)[..., None], rtol=0, atol=1e-7)
    opaque = load_image(np.dstack([rgb8, np.full((H, W), 255, np.uint8)]))
    np.testing.assert_array_equal(opaque.pixels, _u8(rgb8))


# --- errors ---------------------------------------------------------------------------------


def _load_error(path: Path, match: str) -> str:
    with pytest.raises(ImageLoadError, match=match) as info:
        load_image(path)
    message = str(info.value)
    assert path.name in message
    assert isinstance(info.value, TgifError)
    return message


def test_missing_file(tmp_path):
    _load_error(tmp_path / "no_such_image.png", "file not found")


def test_directory(tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    _load_error(folder, "is a folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _load_error(path, r"empty \(0 bytes\)")


def test_corrupt_file(tmp_path, rng):
    path = tmp_path / "noise.png"
    path.write_bytes(rng.bytes(500))
    _load_error(path, "not a readable image file")


def test_truncated_png(tmp_path, rgb8):
    data = _write(tmp_path, "full.png", rgb8).read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    _load_error(path, "corrupt or truncated")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    _load_error(path, "not a readable image file")


def test_empty_bytes_and_text_mode_file_object():
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match="did not return bytes"):
        load_image(io.StringIO("text"))


def test_numpy_channels_first_is_refused_with_a_hint():
    with pytest.raises(ImageLoadError, match="channels-first") as info:
        load_image(np.zeros((3, H, W), np.uint8), name="thermal")
    assert "thermal" in str(info.value)
    assert "(3, 17, 23)" in str(info.value)


def test_numpy_float_out_of_range():
    arr = np.linspace(-0.5, 1.5, H * W).reshape(H, W)
    with pytest.raises(ImageLoadError, match=r"must lie in \[0, 1\], got \[-0.5, 1.5\]"):
        load_image(arr)


def test_numpy_nan():
    arr = np.full((H, W), 0.5)
    arr[3, 4] = np.nan
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(arr)


def test_numpy_int64_dtype():
    with pytest.raises(ImageLoadError, match="unsupported array dtype int64"):
        load_image(np.zeros((H, W), np.int64))


@pytest.mark.parametrize("shape", [(0, W), (H, 0, 3)])
def test_numpy_zero_size(shape):
    with pytest.raises(ImageLoadError, match="no pixels"):
        load_image(np.zeros(shape, np.uint8))


def test_numpy_wrong_rank():
    with pytest.raises(ImageLoadError, match=r"expected an \(H, W\)"):
        load_image(np.zeros(W, np.uint8))


# --- pixel limit ----------------------------------------------------------------------------


def test_too_large_is_refused_with_size_and_limit(tmp_path, rgb8):
    path = _write(tmp_path, "big.png", rgb8)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(path, max_pixels=100)
    message = str(info.value)
    assert "big.png" in message
    assert "23x17" in message
    assert "391 pixels" in message
    assert "limit of 100 pixels" in message
    assert load_image(path, max_pixels=W * H).pixels.shape == (H, W, 3)  # the limit is inclusive


@pytest.mark.parametrize("kind", ["png", "jpg", "array", "pil"])
def test_downscale_fits_the_limit(tmp_path, rgb8, kind):
    sources = {
        "png": lambda: _write(tmp_path, "big.png", rgb8),
        "jpg": lambda: _write(tmp_path, "big.jpg", rgb8, quality=95),
        "array": lambda: rgb8,
        "pil": lambda: Image.fromarray(rgb8),
    }
    image = load_image(sources[kind](), max_pixels=100, on_large="downscale")
    h, w = image.pixels.shape[:2]
    assert h * w <= 100
    assert abs(w / h - W / H) < 0.15
    assert image.original_size == (W, H)
    assert any(note.startswith("downscaled from 23x17 to") for note in image.notes)
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0


def test_env_max_pixels_is_honoured(monkeypatch, rgb8):
    monkeypatch.setenv("TGIF_MAX_PIXELS", "300")
    with pytest.raises(ImageTooLargeError, match="limit of 300 pixels"):
        load_image(rgb8)
    assert load_image(rgb8, max_pixels=W * H).size == (W, H)  # an explicit limit wins
    monkeypatch.setenv("TGIF_MAX_PIXELS", str(W * H))
    assert load_image(rgb8).size == (W, H)


@pytest.mark.parametrize(("value", "match"), [("lots", "whole number"), ("0", "positive"), ("-5", "positive")])
def test_env_max_pixels_bad_value(monkeypatch, rgb8, value, match):
    monkeypatch.setenv("TGIF_MAX_PIXELS", value)
    with pytest.raises(TgifError, match=f"TGIF_MAX_PIXELS must be .*{match}") as info:
        load_image(rgb8)
    assert value in str(info.value)


def test_bad_on_large_value(rgb8):
    with pytest.raises(ValueError, match="on_large"):
        load_image(rgb8, on_large="shrink")


# --- save -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_save_then_load_is_exact(tmp_path, rng, grey8, rgb8, ext):
    for name, u8 in (("grey", grey8), ("rgb", rgb8)):
        # float values off the 8-bit grid by less than half a step round back to it
        noisy = (u8.astype(np.float64) + rng.uniform(-0.45, 0.45, u8.shape)) / 255.0
        noisy = np.clip(noisy, 0.0, 1.0)
        written = save_image(tmp_path / "out" / f"{name}.{ext}", noisy)
        assert written == tmp_path / "out" / f"{name}.{ext}"
        loaded = load_image(written)
        assert loaded.pixels.shape == u8.shape
        np.testing.assert_array_equal(loaded.pixels, _u8(u8))


def test_save_uint8_as_is_and_png_level_changes_only_the_size(tmp_path, rgb8):
    from PIL import Image

    tiled = np.tile(rgb8, (8, 8, 1))  # large enough for zlib levels to differ
    fast = save_image(tmp_path / "fast.png", tiled, png_level=1)
    small = save_image(tmp_path / "small.png", tiled)  # Pillow's default, level 6
    for path in (fast, small):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), tiled)  # uint8 written as it is, not rescaled
    assert fast.stat().st_size > small.stat().st_size
    assert save_image(tmp_path / "same.bmp", tiled, png_level=1).stat().st_size > 0  # ignored for other formats


def test_save_clips_out_of_range_values(tmp_path):
    image = np.array([[-0.3, 0.0, 0.5, 1.0, 1.7]])
    loaded = load_image(save_image(tmp_path / "clip.png", image))
    np.testing.assert_array_equal(loaded.pixels, _u8(np.array([[0, 0, 128, 255, 255]])))


def test_save_unknown_suffix(tmp_path, grey8):
    with pytest.raises(TgifError, match=r"fused\.xyz: unknown image format '\.xyz'"):
        save_image(tmp_path / "fused.xyz", _u8(grey8))


def test_save_wrong_rank(tmp_path):
    with pytest.raises(ValueError, match="cannot save"):
        save_image(tmp_path / "x.png", np.zeros(5))


def test_source_image_properties(rgb8):
    image = SourceImage(_u8(rgb8), name="x")
    assert image.is_color
    assert image.size == (W, H)


def test_an_oversized_png_is_shrunk_before_it_becomes_float(tmp_path):
    """Downscaling a 12 MP RGB PNG to 1 MP never holds it as float32 at full size (144 MB): the decoded image
    is reduced in 8 bits first (PIL's own buffers are not traced; numpy's are)."""
    import tracemalloc

    yy, xx = np.mgrid[0:3000, 0:4000]
    rgb = np.stack([(xx // 16) % 256, (yy // 16) % 256, ((xx + yy) // 32) % 256], -1).astype(np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(rgb).save(path)
    del rgb, yy, xx
    tracemalloc.start()
    image = load_image(path, max_pixels=1_000_000, on_large="downscale")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    width, height = image.size
    assert width * height <= 1_000_000 and abs(width / height - 4 / 3) < 0.01 and image.original_size == (4000, 3000)
    assert any("downscaled from 4000x3000" in note for note in image.notes)
    assert peak < 60 * 2**20, f"peak {peak / 2**20:.0f} MiB"
