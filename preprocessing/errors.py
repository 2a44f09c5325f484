"""Why an upload could not become a model input. Each error carries a stable machine ``code``.

The gateway maps these to HTTP statuses in one place (``gateway/errors.py``); the batch job uses
the codes to decide quarantine. Nothing here knows about HTTP.
"""

from __future__ import annotations


class ImageError(ValueError):
    """Base class: the bytes cannot be turned into a model input.

    Attributes:
        code: stable snake_case identifier, part of the gateway's public error contract.
    """

    code = "invalid_image"


class EmptyImageError(ImageError):
    """The upload has zero bytes."""

    code = "empty_file"


class NotAnImageError(ImageError):
    """The bytes are not an image Pillow can identify (text, HTML, random data)."""

    code = "not_an_image"


class CorruptImageError(ImageError):
    """An image whose header or pixel data is corrupt or truncated."""

    code = "corrupt_image"


class UnsupportedFormatError(ImageError):
    """A recognised image format outside the six accepted (``preprocessing.FORMATS``): one Pillow
    cannot decode (HEIC, AVIF, PDF, ...) or one it could but is not allowed to (EPS, ICO, TGA, ...).

    Attributes:
        format_name: the format recognised, e.g. ``"HEIC"``.
    """

    code = "unsupported_format"

    def __init__(self, format_name: str) -> None:
        super().__init__(
            f"image format {format_name} is not supported; send JPEG, PNG, WebP, BMP, GIF or TIFF"
        )
        self.format_name = format_name


class ImageTooLargeError(ImageError):
    """The header declares more pixels than the configured limit (checked before decoding).

    Attributes:
        size: ``(width, height)`` the header declares, in pixels; None if it could not be read.
        limit: the caller's ``max_pixels`` when that is the limit exceeded; None when Pillow's
            own decompression-bomb ceiling refused an image the caller's limit allowed.
    """

    code = "image_too_large"

    def __init__(
        self,
        message: str,
        *,
        size: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
