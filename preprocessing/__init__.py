"""Shared image preprocessing: bytes -> uint8 RGB model input. Used by training and the gateway.

Imports only Pillow and NumPy (never TensorFlow), so the gateway stays thin.
"""

from preprocessing.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedFormatError,
)
from preprocessing.image import DEFAULT_MAX_PIXELS, FORMATS, SPEC, decode, open_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SPEC",
    "CorruptImageError",
    "EmptyImageError",
    "ImageError",
    "ImageTooLargeError",
    "NotAnImageError",
    "UnsupportedFormatError",
    "decode",
    "FORMATS",
    "open_image",
]
