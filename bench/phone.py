"""Phone-sized photos: 12-megapixel JPEGs made from real test photos (the upload a shop gets)."""

from __future__ import annotations

import io

from PIL import Image

PHONE_SIZE = (4000, 3000)
"""Width x height of a 12 MP phone camera photo, pixels."""


def phone_jpegs(files: list[bytes], count: int = 4, quality: int = 90) -> list[tuple[str, bytes]]:
    """Upscale real photos to 4000 x 3000 (bicubic) and encode them as JPEG.

    Args:
        files: encoded real photos (any size); the first ``count`` are used.
        count: photos to make.
        quality: JPEG quality (90: a phone's usual setting; each file is ~2-4 MB).

    Returns:
        ``(filename, jpeg bytes)`` pairs, ``count`` of them (fewer if ``files`` is shorter).
    """
    made = []
    for n, data in enumerate(files[:count]):
        with Image.open(io.BytesIO(data)) as image:
            big = image.convert("RGB").resize(PHONE_SIZE, Image.Resampling.BICUBIC)
        out = io.BytesIO()
        big.save(out, "JPEG", quality=quality)
        made.append((f"phone-{n}.jpg", out.getvalue()))
    return made
