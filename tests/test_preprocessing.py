"""Golden tests of the shared preprocessing (``preprocessing.decode``) on generated images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import preprocessing
from preprocessing import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedFormatError,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def solid(color, mode="RGB", size=(64, 48)) -> Image.Image:
    return Image.new(mode, size, color)


def assert_all(array: np.ndarray, rgb) -> None:
    assert array.dtype == np.uint8
    assert (array.reshape(-1, 3) == np.array(rgb, dtype=np.uint8)).all(), array.reshape(-1, 3)[:3]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR declaring ``width`` x ``height`` 8-bit RGB, and IEND (no pixels)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_jpeg_gives_uint8_224_square_rgb():
    out = preprocessing.decode(encode(solid(RED, size=(400, 533)), "JPEG"), (224, 224))
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8


def test_non_square_size_is_height_then_width():
    out = preprocessing.decode(encode(solid(RED), "PNG"), (30, 50))
    assert out.shape == (30, 50, 3)


def test_pure_red_stays_red_in_channel_0():
    out = preprocessing.decode(encode(solid(RED), "PNG"), (224, 224))
    assert_all(out, RED)


def marked_jpeg(orientation: int) -> bytes:
    """A 40x20 (w x h) blue JPEG with a red 10x10 mark in its stored top-left corner."""
    image = solid(BLUE, size=(40, 20))
    image.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation tag, EXIF 2.32 section 4.6.4
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def is_red(pixel) -> bool:
    return pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def is_blue(pixel) -> bool:
    return pixel[0] < 60 and pixel[1] < 60 and pixel[2] > 200


def test_exif_orientation_3_is_turned_upright():
    # Orientation 3: stored image is upside down, so the stored top-left is shown bottom-right.
    out = preprocessing.decode(marked_jpeg(3), (20, 40))
    assert is_red(out[16, 36]) and is_blue(out[3, 3]) and is_blue(out[3, 36])


def test_exif_orientation_6_is_turned_upright():
    # Orientation 6: row 0 is the visual right side, so the image is 20 wide, 40 high upright and
    # the stored top-left corner is shown top-right.
    out = preprocessing.decode(marked_jpeg(6), (40, 20))
    assert out.shape == (40, 20, 3)
    assert is_red(out[3, 16]) and is_blue(out[3, 3]) and is_blue(out[36, 16])


def test_cmyk_is_converted_to_rgb():
    out = preprocessing.decode(encode(solid((0, 255, 255, 0), "CMYK"), "TIFF"), (8, 8))
    assert_all(out, RED)


def test_grayscale_is_replicated_to_three_channels():
    out = preprocessing.decode(encode(solid(100, "L"), "PNG"), (8, 8))
    assert_all(out, (100, 100, 100))


def palette_image() -> Image.Image:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)  # index 0 green, index 1 red
    image.paste(1, (10, 0, 20, 10))
    return image


def test_palette_without_transparency():
    out = preprocessing.decode(encode(palette_image(), "PNG"), (10, 20))
    assert_all(out[:, :8], GREEN)
    assert_all(out[:, 12:], RED)


def test_palette_transparency_becomes_white():
    out = preprocessing.decode(encode(palette_image(), "PNG", transparency=0), (10, 20))
    assert_all(out[:, :8], WHITE)
    assert_all(out[:, 12:], RED)


def test_rgba_transparent_is_white_and_opaque_kept():
    image = solid((255, 0, 0, 0), "RGBA", size=(20, 10))
    image.paste((0, 0, 255, 255), (10, 0, 20, 10))
    out = preprocessing.decode(encode(image, "PNG"), (10, 20))
    assert_all(out[:, :8], WHITE)
    assert_all(out[:, 12:], BLUE)


def test_la_alpha_is_composited_on_white():
    image = solid((0, 0), "LA", size=(20, 10))
    image.paste((0, 255), (10, 0, 20, 10))
    out = preprocessing.decode(encode(image, "PNG"), (10, 20))
    assert_all(out[:, :8], WHITE)
    assert_all(out[:, 12:], (0, 0, 0))


def test_16_bit_grayscale_is_scaled_to_8_bits():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0).repeat(4, axis=1)
    image = Image.fromarray(values)
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = preprocessing.decode(data, (4, 12))
    # 32768 * 255 / 65535 = 127.502, rounded to 128.
    assert_all(out[:, :4], (0, 0, 0))
    assert_all(out[:, 4:8], (128, 128, 128))
    assert_all(out[:, 8:], WHITE)


def test_animated_gif_gives_first_frame():
    frames = [solid(RED, size=(16, 16)), solid(BLUE, size=(16, 16))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert_all(preprocessing.decode(data, (16, 16)), RED)


def test_bilinear_downscale_of_four_blocks():
    image = Image.new("RGB", (20, 20))
    for (x, y), color in {(0, 0): RED, (10, 0): GREEN, (0, 10): BLUE, (10, 10): WHITE}.items():
        image.paste(color, (x, y, x + 10, y + 10))
    out = preprocessing.decode(encode(image, "PNG"), (10, 10))
    assert out.shape == (10, 10, 3)
    assert tuple(out[2, 2]) == RED
    assert tuple(out[2, 7]) == GREEN
    assert tuple(out[7, 2]) == BLUE
    assert tuple(out[7, 7]) == WHITE
    # Pixel (row 2, column 4) straddles red and green: a blend, neither pure colour.
    assert 0 < out[2, 4, 0] < 255 and 0 < out[2, 4, 1] < 255


def test_upscale_keeps_uniform_blocks():
    image = Image.new("RGB", (2, 2))
    image.putdata([RED, GREEN, BLUE, WHITE])
    out = preprocessing.decode(encode(image, "PNG"), (40, 40))
    assert tuple(out[0, 0]) == RED
    assert tuple(out[0, 39]) == GREEN
    assert tuple(out[39, 0]) == BLUE
    assert tuple(out[39, 39]) == WHITE


def test_truncated_jpeg_is_corrupt():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noise, "JPEG")
    with pytest.raises(CorruptImageError) as info:
        preprocessing.decode(data[: len(data) // 2], (32, 32))
    assert info.value.code == "corrupt_image"


def test_empty_bytes():
    with pytest.raises(EmptyImageError) as info:
        preprocessing.decode(b"", (32, 32))
    assert info.value.code == "empty_file"


def test_text_is_not_an_image():
    with pytest.raises(NotAnImageError) as info:
        preprocessing.decode(b"name,label\nshirt.jpg,shirt\n", (32, 32))
    assert info.value.code == "not_an_image"


@pytest.mark.parametrize(
    ("brand", "name"), [(b"heic", "HEIC"), (b"heix", "HEIC"), (b"avif", "AVIF")]
)
def test_heic_and_avif_magic_is_unsupported_format(brand, name):
    data = struct.pack(">I", 24) + b"ftyp" + brand + b"\x00" * 40
    with pytest.raises(UnsupportedFormatError) as info:
        preprocessing.decode(data, (32, 32))
    assert info.value.code == "unsupported_format"
    assert info.value.format_name == name


def test_huge_declared_png_is_refused_before_decoding():
    # 100000 x 100000 declared, no pixel data at all: decoding would fail as corrupt instead.
    with pytest.raises(ImageTooLargeError) as info:
        preprocessing.decode(png_header_only(100_000, 100_000), (32, 32))
    assert info.value.code == "image_too_large"


def test_over_default_limit_below_pillow_bomb_limit_is_refused():
    # 7000 x 7000 = 49 MP: over DEFAULT_MAX_PIXELS (40 MP), under Pillow's 89 MP warning.
    assert preprocessing.DEFAULT_MAX_PIXELS < 7000 * 7000
    with pytest.raises(ImageTooLargeError):
        preprocessing.decode(png_header_only(7000, 7000), (32, 32))


def test_max_pixels_above_pillow_warning_threshold_is_honoured():
    # 10000 x 9500 = 95 MP: above Pillow's 89 MP warning, below its 179 MP hard error.
    header = png_header_only(10_000, 9_500)
    assert preprocessing.open_image(header, max_pixels=100_000_000).size == (10_000, 9_500)
    with pytest.raises(ImageTooLargeError, match="95000000 pixels, over the limit of 40000000"):
        preprocessing.open_image(header)
    with pytest.raises(ImageTooLargeError, match="hard limit"):
        preprocessing.open_image(png_header_only(20_000, 20_000), max_pixels=10**9)


@pytest.mark.parametrize(
    ("width", "height", "max_pixels", "message", "limit"),
    [
        # over Pillow's ~179 MP bomb ceiling too: the caller's limit is still the one quoted
        (
            50_000,
            50_000,
            40_000_000,
            "image is 50000x50000 = 2500000000 pixels, over the limit of 40000000 pixels",
            40_000_000,
        ),
        (
            7000,
            7000,
            40_000_000,
            "image is 7000x7000 = 49000000 pixels, over the limit of 40000000 pixels",
            40_000_000,
        ),
        # the caller allows more than Pillow does: Pillow's ceiling is the limit met
        (
            20_000,
            20_000,
            10**9,
            "image is 20000x20000 = 400000000 pixels, over Pillow's hard limit of 178956970 pixels",
            None,
        ),
    ],
)
def test_image_too_large_states_its_size_and_the_limit_met(
    width, height, max_pixels, message, limit
):
    with pytest.raises(ImageTooLargeError) as info:
        preprocessing.open_image(png_header_only(width, height), max_pixels=max_pixels)
    assert str(info.value) == message
    assert (info.value.size, info.value.limit) == ((width, height), limit)


def test_max_pixels_argument_applies():
    data = encode(solid(RED, size=(20, 10)), "PNG")
    with pytest.raises(ImageTooLargeError):
        preprocessing.decode(data, (8, 8), max_pixels=199)
    assert preprocessing.decode(data, (8, 8), max_pixels=200).shape == (8, 8, 3)


def test_all_errors_are_image_errors_and_value_errors():
    for cls in (EmptyImageError, NotAnImageError, CorruptImageError, ImageTooLargeError):
        assert issubclass(cls, preprocessing.ImageError)
        assert issubclass(cls, ValueError)
    assert issubclass(UnsupportedFormatError, preprocessing.ImageError)


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PCX", "PPM", "SGI", "EPS"])
def test_pillow_formats_outside_the_six_are_refused_by_name(fmt, monkeypatch):
    from PIL import EpsImagePlugin

    def no_ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was started")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    data = encode(solid((200, 10, 10), size=(32, 32)), fmt)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == fmt  # Pillow itself reads it
    with pytest.raises(UnsupportedFormatError) as info:
        preprocessing.decode(data, (32, 32))
    assert (info.value.code, info.value.format_name) == ("unsupported_format", fmt)
    assert str(info.value) == (
        f"image format {fmt} is not supported; send JPEG, PNG, WebP, BMP, GIF or TIFF"
    )


def test_a_phone_cameras_multi_picture_jpeg_decodes_its_first_picture():
    first, second = solid((255, 0, 0)), solid((0, 0, 255))
    out = io.BytesIO()
    first.save(out, "MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(out.getvalue())) as image:
        assert (image.format, image.n_frames) == ("MPO", 2)
    array = preprocessing.decode(out.getvalue(), (16, 16))
    assert array.shape == (16, 16, 3)
    assert array[..., 0].min() > 240 and array[..., 2].max() < 15  # red, the first picture


def test_the_accepted_formats_are_the_six_the_error_names():
    assert preprocessing.FORMATS == ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        assert preprocessing.decode(encode(solid((0, 128, 0)), fmt), (8, 8)).shape == (8, 8, 3)
