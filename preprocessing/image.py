"""Image bytes to the model's uint8 RGB input: one implementation, shared by training and gateway.

Pure: Pillow and NumPy only, no TensorFlow, Flask or gRPC. The MobileNetV2 scaling to [-1, 1] is
*not* done here; it lives inside the exported graph (``x / 127.5 - 1``, the rule of
``keras.applications.mobilenet_v2.preprocess_input``), so no caller can apply it twice or forget it.

Steps, in order (see :data:`SPEC`):
1. refuse empty bytes, non-images, formats outside :data:`FORMATS` (named in the error when
   recognised), and images whose *header* declares more than ``max_pixels`` pixels (checked before
   any pixel is decoded);
2. JPEG only: let libjpeg decode at a reduced DCT scale when the image is at least twice the
   target size on both sides (``Image.draft``), so a 24-megapixel upload costs a fraction of a full
   decode; smaller images are decoded at full size;
3. first frame of animated images; EXIF orientation applied (``ImageOps.exif_transpose``);
4. any mode to RGB: 16/32-bit integer images scaled to 8 bits, alpha (and palette transparency)
   composited on white, CMYK/grayscale/palette converted;
5. resize to exactly ``(width, height)`` with bilinear filtering (aspect ratio not kept: the model
   was trained on squashed full frames).
"""

from __future__ import annotations

import io
import warnings
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from preprocessing.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedFormatError,
)

RESAMPLE: Final = Image.Resampling.BILINEAR
"""The one resize filter used everywhere (training, export warm-up, gateway)."""

BACKGROUND: Final = (255, 255, 255)
"""Colour transparent areas are composited on."""

DEFAULT_MAX_PIXELS: Final = 40_000_000
"""Default decoded-size limit in pixels (width * height); Pillow's own bomb error is at ~179 MP."""

SPEC: Final = {
    "decoder": "Pillow",
    "frames": "first",
    "exif_orientation": "applied",
    "color": "RGB; alpha composited on white; 16-bit scaled to 8-bit",
    "jpeg_draft": "DCT-domain downscale when both sides >= 2x target",
    "resize": "bilinear, to exact (height, width), aspect ratio not kept",
    "dtype": "uint8",
    "layout": "HWC",
    "scaling": "inside the SavedModel graph: x / 127.5 - 1 (MobileNetV2)",
}
"""Machine-readable description of this module's contract, recorded in the model card."""

FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Pillow format ids :func:`open_image` opens: the six formats its errors name (the JPEG plugin
also opens the multi-picture JPEG phone cameras write, format MPO). No other Pillow plugin parses
an upload: EPS (which would run Ghostscript), ICO, TGA, PCX, PPM, SGI and the rest are refused as
unsupported formats."""

# Formats Pillow cannot decode, recognised by their magic bytes so a caller learns what it sent.
# Offsets and values are the formats' published file signatures.
_KNOWN_UNREADABLE: Final = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftyphevc", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"%PDF", "PDF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "SVG/XML"),
    (0, b"8BPS", "PSD"),
)


def _sniff_unreadable(data: bytes) -> str | None:
    for offset, magic, name in _KNOWN_UNREADABLE:
        if data[offset : offset + len(magic)] == magic:
            return name
    return None


def _other_pillow_format(data: bytes) -> str | None:
    """The format id of a file some Pillow plugin outside :data:`FORMATS` identifies, else None.

    Only the plugins' header parsers run (``Image.open`` is lazy; no pixel is decoded and no
    external program such as Ghostscript is started).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return image.format
    except Exception:  # no plugin reads it, or its header is broken: not an image we can name
        return None


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open image bytes lazily and check them against the limits, decoding no pixel.

    Args:
        data: the encoded file, one of :data:`FORMATS`.
        max_pixels: largest accepted ``width * height`` declared by the header.

    Returns:
        A lazily loaded :class:`PIL.Image.Image` (header parsed, pixels not yet decoded).

    Raises:
        EmptyImageError: ``data`` is empty.
        UnsupportedFormatError: a known image format outside :data:`FORMATS`, whether Pillow
            cannot decode it (HEIC, AVIF, ...) or is not allowed to (EPS, ICO, TGA, ...).
        NotAnImageError: not an image at all.
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels.
    """
    if not data:
        raise EmptyImageError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above Image.MAX_IMAGE_PIXELS (~89 MP); ``max_pixels`` below is the
            # limit that counts, so a caller may set it higher. Pillow's hard error (~179 MP)
            # stays a ceiling.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise _over_pillows_ceiling(data, max_pixels) from exc
    except UnidentifiedImageError as exc:
        fmt = _sniff_unreadable(data) or _other_pillow_format(data)
        if fmt:
            raise UnsupportedFormatError(fmt) from exc
        raise NotAnImageError("the file is not an image Pillow can identify") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # header parse errors of individual plugins
        raise CorruptImageError(f"the image header is corrupt: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"the image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels",
            size=(width, height),
            limit=max_pixels,
        )
    return image


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` an image header declares, read without ``Image.open``'s bomb check.

    Only called after that check refused the file, to tell the caller how large it is: the
    plugin of :data:`FORMATS` that accepts the first 16 bytes (as ``Image.open`` picks it) parses
    the header alone.
    None if no plugin reads it.
    """
    prefix = data[:16]
    for name in FORMATS:  # all registered: Image.open(formats=FORMATS) looked each one up
        factory, accept = Image.OPEN[name]
        accepted = not accept or accept(prefix)
        if isinstance(accepted, str) or not accepted:
            continue
        try:
            return factory(io.BytesIO(data)).size
        except Exception:  # a header this plugin cannot parse: the size stays unknown
            continue
    return None


def _over_pillows_ceiling(data: bytes, max_pixels: int) -> ImageTooLargeError:
    """The error for an image Pillow refused as a decompression bomb (over ~179 MP).

    The caller's ``max_pixels`` is the limit quoted when it is lower than Pillow's ceiling (the
    usual case); Pillow's ceiling only when the caller allowed more than Pillow does.
    """
    ceiling = 2 * Image.MAX_IMAGE_PIXELS
    size = _declared_size(data)
    declared = f"is {size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size else None
    if max_pixels < ceiling:
        declared = declared or f"declares more than {ceiling} pixels"
        return ImageTooLargeError(
            f"image {declared}, over the limit of {max_pixels} pixels", size=size, limit=max_pixels
        )
    declared = f"{declared}, over" if declared else "declares more pixels than"
    return ImageTooLargeError(
        f"image {declared} Pillow's hard limit of {ceiling} pixels", size=size
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        array = np.asarray(image)
        if mode == "F":
            array8 = np.clip(array, 0, 255).astype(np.uint8)
        else:
            top = 65535 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255
            scaled = np.clip(array, 0, top).astype(np.float64) * (255.0 / top) + 0.5
            array8 = scaled.astype(np.uint8)
        return Image.fromarray(array8, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def decode(
    data: bytes, size: tuple[int, int], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode image bytes into the model input: an upright RGB array of the given size.

    Args:
        data: the encoded image file.
        size: target ``(height, width)`` in pixels, e.g. ``(224, 224)``.
        max_pixels: largest accepted ``width * height`` declared by the header.

    Returns:
        ``np.ndarray`` of dtype ``uint8``, shape ``(height, width, 3)``, RGB, values 0..255.

    Raises:
        EmptyImageError, NotAnImageError, UnsupportedFormatError, ImageTooLargeError: see
            :func:`open_image`.
        CorruptImageError: the pixel data is truncated or corrupt.
    """
    height, width = size
    image = open_image(data, max_pixels=max_pixels)
    try:
        if image.format == "JPEG" and image.width >= 2 * width and image.height >= 2 * height:
            image.draft("RGB", (2 * width, 2 * height))
        image.load()  # first frame only; raises on truncated data
        image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
        if image.size != (width, height):
            image = image.resize((width, height), RESAMPLE)
        array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        if "not available" in str(exc):  # Pillow's message for a codec it was built without
            raise UnsupportedFormatError(image.format or "unknown") from exc
        raise CorruptImageError(f"the image data is corrupt or truncated: {exc}") from exc
    return array
